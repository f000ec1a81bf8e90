"""The whole pack in the real ComfyUI server on tiny random models of the real architectures:
text encoder -> loader -> latent -> dual-expert sampler -> VAE decode -> video, the switch step
reported, umT5 gone from model management after encoding, and interruption mid-run followed by
a prompt that runs."""

from __future__ import annotations

import io as bytes_io
import sys
import threading
import time
from pathlib import Path

import av
import pytest
import torch
from PIL import Image

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from comfy_server import PromptFailed, output_files  # noqa: E402
from dit_factory import random_state_dict, tiny_config, write_comfy_file  # noqa: E402
from text_factory import reference_model, write_comfy_safetensors  # noqa: E402
from vae_factory import write_vae  # noqa: E402

pytestmark = pytest.mark.server

T2V_HIGH, T2V_LOW = "pipeline_t2v_high.safetensors", "pipeline_t2v_low.safetensors"
I2V_HIGH, I2V_LOW = "pipeline_i2v_high.safetensors", "pipeline_i2v_low.safetensors"
TEXT = "pipeline_umt5_tiny.safetensors"
VAE21 = "pipeline_wan21_vae_tiny.safetensors"


@pytest.fixture(scope="module")
def models(comfy_server):
    dit_dir = comfy_server.models_dir("diffusion_models")
    for kind, high, low in (("t2v", T2V_HIGH, T2V_LOW), ("i2v", I2V_HIGH, I2V_LOW)):
        cfg = tiny_config(kind)
        write_comfy_file(random_state_dict(cfg, seed=1), dit_dir / high)
        write_comfy_file(random_state_dict(cfg, seed=2), dit_dir / low)
    write_comfy_safetensors(comfy_server.models_dir("text_encoders") / TEXT, reference_model(seed=3),
                            dtype=torch.float32)
    write_vae(comfy_server.models_dir("vae") / VAE21, "wan2.1", "comfy", "tiny", seed=4)
    image = Image.new("RGB", (40, 24), (200, 80, 30))
    image.save(comfy_server.base_dir / "input" / "pipeline_start.png")
    return comfy_server


def graph(high, low, steps=4, start_image=False, sampler_out="6"):
    prompt = {
        "1": {"class_type": "Wan22TextEncoderLoader",
              "inputs": {"text_encoder_name": TEXT, "device": "default", "weight_dtype": "default"}},
        "2": {"class_type": "Wan22TextEncode",
              "inputs": {"text_encoder": ["1", 0], "positive": "ka lo mi ren tas", "negative": ""}},
        "3": {"class_type": "Wan22ModelLoader",
              "inputs": {"model": high, "low_noise_model": low, "weight_dtype": "default"}},
        "4": {"class_type": "Wan22VAELoader", "inputs": {"vae_name": VAE21}},
        "5": {"class_type": "Wan22VideoLatent",
              "inputs": {"vae": ["4", 0], "width": 48, "height": 32, "length": 5, "batch_size": 1}},
        "6": {"class_type": "Wan22Sampler", "inputs": {
            "model": ["3", 0], "low_noise_model": ["3", 1], "positive": ["2", 0], "negative": ["2", 1],
            "latent": ["5", 0], "seed": 7,
            "steps": steps, "use_release_defaults": True, "cfg": 4.0, "cfg_low_noise": 3.0, "shift": 12.0,
            "boundary": 0.875, "sampler_name": "wan_unipc", "scheduler": "wan", "denoise": 1.0}},
        "7": {"class_type": "Wan22VAEDecode", "inputs": {"vae": ["4", 0], "samples": [sampler_out, 0]}},
        "8": {"class_type": "Wan22VideoCombine", "inputs": {
            "images": ["7", 0], "frame_rate": 16.0, "filename_prefix": "pipeline/t2v", "format": "h264-mp4",
            "crf": 19, "save_output": True}},
    }
    if start_image:
        prompt["9"] = {"class_type": "LoadImage", "inputs": {"image": "pipeline_start.png"}}
        prompt["5"]["inputs"]["start_image"] = ["9", 0]
    return prompt


def decode_video(data: bytes):
    with av.open(bytes_io.BytesIO(data)) as container:
        frames = [f.to_ndarray(format="rgb24") for f in container.decode(video=0)]
    return frames


def test_t2v_pair_end_to_end(models):
    history = models.run(graph(T2V_HIGH, T2V_LOW, steps=10))
    summary = history["outputs"]["6"]["wan22_sampler"][0]
    # 10 steps at shift 12 with boundary 0.875: the release grid switches after step 7.
    assert summary["kind"] == "t2v" and summary["steps"] == 10
    assert summary["experts_used"] == ["high"] * summary["switch_step"] + ["low"] * (10 - summary["switch_step"])
    assert 0 < summary["switch_step"] < 10
    assert f"after step {summary['switch_step']} of 10" in summary["text"]
    videos = [f for f in output_files(history) if f["filename"].endswith(".mp4")]
    assert len(videos) == 1
    frames = decode_video(models.view(videos[0]["filename"], videos[0]["subfolder"], videos[0]["type"]))
    assert len(frames) == 5 and frames[0].shape == (32, 48, 3)
    loaded = [row["model"] for row in models.get_json("/wan22/loaded_models")]
    assert "UMT5Encoder" not in loaded, loaded
    assert "WAN21" in loaded, loaded  # the experts (ComfyUI's own Wan model) stay cached, like native models


def test_i2v_pair_with_a_start_image(models):
    history = models.run(graph(I2V_HIGH, I2V_LOW, steps=6, start_image=True))
    summary = history["outputs"]["6"]["wan22_sampler"][0]
    assert summary["kind"] == "i2v" and summary["boundary"] == 0.9


def test_bad_pairings_are_clear_errors_and_the_server_keeps_serving(models):
    error = models.run_expecting_error(graph(T2V_HIGH, T2V_LOW, start_image=True))
    assert "text-to-video pair" in error and "I2V-A14B" in error
    error = models.run_expecting_error(graph(I2V_HIGH, I2V_LOW))
    assert "need a start image" in error
    models.run(graph(T2V_HIGH, T2V_LOW, steps=2))


def test_interrupt_mid_run_then_the_next_prompt_runs(models):
    steps_seen = []
    interrupted = threading.Event()

    def on_message(msg):
        if msg.get("type") == "progress" and msg["data"].get("node") == "6":
            steps_seen.append(msg["data"]["value"])
            if len(steps_seen) == 2 and not interrupted.is_set():
                interrupted.set()
                models.post_json("/interrupt", {})

    started = time.monotonic()
    with pytest.raises(PromptFailed, match="interrupted"):
        models.run(graph(T2V_HIGH, T2V_LOW, steps=400), on_message=on_message)
    assert interrupted.is_set() and max(steps_seen) < 400
    assert time.monotonic() - started < 300
    history = models.run(graph(T2V_HIGH, T2V_LOW, steps=3))
    assert history["outputs"]["6"]["wan22_sampler"][0]["steps"] == 3
