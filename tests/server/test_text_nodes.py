"""The text nodes in the real ComfyUI: every release format encodes, umT5 leaves
current_loaded_models after encoding (seen through the pack's /wan22/loaded_models route), and bad
input gets a clear error while the server keeps serving.

Conditioning from Wan22TextEncode driving Wan22Sampler, with umT5 gone from model management after
the run, is tested end to end in tests/server/test_pipeline.py."""

from __future__ import annotations

import pytest
import text_factory as tf
import torch

pytestmark = pytest.mark.server


@pytest.fixture(scope="module")
def text_encoders(comfy_server):
    folder = comfy_server.models_dir("text_encoders")
    ref = tf.reference_model(seed=4)
    tf.write_comfy_safetensors(folder / "umt5_tiny_fp16.safetensors", ref, dtype=torch.float16)
    tf.write_comfy_safetensors(folder / "umt5_tiny_fp8_scaled.safetensors", ref, fp8_scaled=True)
    release = folder / "wan_release"
    release.mkdir(exist_ok=True)
    tf.write_official_pth(release / "models_t5_umt5-xxl-enc-bf16.pth", ref, dtype=torch.bfloat16)
    tf.write_tokenizer_folder(release / "google" / "umt5-xxl")
    lonely = folder / "lonely"
    lonely.mkdir(exist_ok=True)
    tf.write_official_pth(lonely / "no_tokenizer.pth", ref)
    return folder


def encode_prompt(name: str, positive: str = "a cat walks slowly", keep_loaded: bool = False) -> dict:
    return {
        "1": {"class_type": "Wan22TextEncoderLoader",
              "inputs": {"text_encoder_name": name, "device": "default", "weight_dtype": "default"}},
        "2": {"class_type": "Wan22TextEncode",
              "inputs": {"text_encoder": ["1", 0], "positive": positive, "negative": "", "keep_loaded": keep_loaded}},
        "3": {"class_type": "PreviewAny", "inputs": {"source": ["2", 0]}},
        "4": {"class_type": "PreviewAny", "inputs": {"source": ["2", 1]}},
    }


def loaded_model_names(server) -> list[str]:
    return [row["model"] for row in server.get_json("/wan22/loaded_models")]


@pytest.mark.parametrize("name", [
    "umt5_tiny_fp16.safetensors",
    "umt5_tiny_fp8_scaled.safetensors",
    "wan_release/models_t5_umt5-xxl-enc-bf16.pth",
])
def test_each_format_encodes_and_the_encoder_is_unloaded_after(comfy_server, text_encoders, name):
    history = comfy_server.run(encode_prompt(name, positive=f"a cat walks slowly ({name})"))
    assert history["status"]["status_str"] == "success"
    assert "UMT5Encoder" not in loaded_model_names(comfy_server)


def test_keep_loaded_keeps_it_visible_to_model_management(comfy_server, text_encoders):
    # The route does see the encoder when it stays: the check above can fail.
    comfy_server.run(encode_prompt("umt5_tiny_fp16.safetensors", positive="kept loaded", keep_loaded=True))
    assert "UMT5Encoder" in loaded_model_names(comfy_server)
    comfy_server.post_json("/free", {"unload_models": True})
    comfy_server.run(encode_prompt("umt5_tiny_fp16.safetensors", positive="released again"))
    assert "UMT5Encoder" not in loaded_model_names(comfy_server)


def test_empty_positive_prompt_is_a_clear_error_and_the_server_keeps_serving(comfy_server, text_encoders):
    message = comfy_server.run_expecting_error(encode_prompt("umt5_tiny_fp16.safetensors", positive="   "))
    assert "positive prompt is empty" in message
    assert comfy_server.get_json("/system_stats")


def test_missing_tokenizer_is_a_clear_error(comfy_server, text_encoders):
    message = comfy_server.run_expecting_error(encode_prompt("lonely/no_tokenizer.pth"))
    assert "no spiece.model was found beside it" in message
    assert comfy_server.get_json("/system_stats")
