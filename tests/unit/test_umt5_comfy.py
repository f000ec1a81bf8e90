"""The umT5 inside ComfyUI's runtime (in-process, CPU): conditioning equal to native
CLIPTextEncode's on the same weights, the encoder out of current_loaded_models after encoding,
and unchanged prompts served from the cache without touching the encoder."""

from __future__ import annotations

import pytest
import text_factory as tf
import torch
from comfy_inprocess import pack

PARITY_ATOL = 1e-5


@pytest.fixture(scope="module")
def runtime():
    pack()
    import comfy.model_management as mm
    from comfyui_wan22.nodes import text as text_nodes
    from comfyui_wan22.wan_core.comfy_bridge.text_encoder import TextEncoderHandle

    return mm, text_nodes, TextEncoderHandle


@pytest.fixture(scope="module")
def te_file(tmp_path_factory):
    return tf.write_comfy_safetensors(tmp_path_factory.mktemp("te") / "umt5_tiny.safetensors", tf.reference_model(),
                                      dtype=torch.float32)


def native_conditioning(te_file, text: str) -> torch.Tensor:
    """What ComfyUI's own umT5 path (SDTokenizer min_length 512 + SDClipModel over comfy's T5 with
    zero_out_masked) gives on the same file: native CLIPTextEncode with a "wan" CLIPLoader, tiny."""
    from comfy import sd1_clip
    from comfy.text_encoders.spiece_tokenizer import SPieceTokenizer
    from comfy.text_encoders.t5 import T5
    from safetensors.torch import load_file

    sd = load_file(str(te_file))
    cfg = dict(d_ff=tf.TINY["d_ff"], d_kv=tf.TINY["d_kv"], d_model=tf.TINY["d_model"], num_heads=tf.TINY["num_heads"],
               num_layers=tf.TINY["num_layers"], vocab_size=tf.TINY["vocab_size"], dense_act_fn="gelu_pytorch_tanh",
               is_gated_act=True, model_type="umt5", layer_norm_epsilon=1e-6)
    model = sd1_clip.SDClipModel(textmodel_json_config=cfg, dtype=torch.float32, special_tokens={"end": 1, "pad": 0},
                                 model_class=T5, enable_attention_masks=True, zero_out_masked=True, layer="last")
    model.load_sd(sd)
    tokenizer = sd1_clip.SDTokenizer(sd["spiece_model"], pad_with_end=False, embedding_size=tf.TINY["d_model"],
                                     embedding_key="umt5xxl", tokenizer_class=SPieceTokenizer, has_start_token=False,
                                     pad_to_max_length=False, max_length=99999999, min_length=512, pad_token=0)
    return model.encode_token_weights(tokenizer.tokenize_with_weights(text))[0]


def test_conditioning_equals_native_clip_text_encode(runtime, te_file):
    _, text_nodes, Handle = runtime
    text = "a cat walks slowly across the sunny garden"
    out = text_nodes.Wan22TextEncode.execute(Handle(te_file), text, "dog runs beach")
    (cond, extra), = out.result[0]
    native = native_conditioning(te_file, text)
    assert cond.shape == native.shape == (1, 512, tf.TINY["d_model"])
    assert extra == {"pooled_output": None}
    assert (cond - native).abs().max().item() <= PARITY_ATOL


def test_conditioning_is_the_trimmed_encoding_zero_padded(runtime, te_file):
    _, text_nodes, Handle = runtime
    handle = Handle(te_file)
    (cond, _), = text_nodes.Wan22TextEncode.execute(handle, "a cat", "").result[0]
    from comfyui_wan22.wan_core.text_encoder_files import load_text_encoder

    (trimmed,) = load_text_encoder(te_file).encode(["a cat"])
    # batched with the (longer) default negative, so equal to the lone encode up to float rounding
    assert (cond[0, : len(trimmed)] - trimmed).abs().max().item() <= PARITY_ATOL
    assert not cond[0, len(trimmed):].any()


def test_encoder_is_unloaded_after_encoding_and_cache_skips_it(runtime, te_file):
    mm, _, Handle = runtime
    handle = Handle(te_file)
    seen = []
    original = mm.load_models_gpu

    def spy(models, *a, **k):
        original(models, *a, **k)
        seen.append([lm.model for lm in mm.current_loaded_models])
        return None

    mm.load_models_gpu = spy
    try:
        first = handle.encode(["a cat", "a dog"])
        assert handle.patcher is None and seen and any(m is not None for m in seen[0])
        assert not handle.is_loaded()
        assert all(type(lm.model.model).__name__ != "UMT5Encoder" for lm in mm.current_loaded_models)
        again = handle.encode(["a dog", "a cat"])  # unchanged prompts: no load at all
        assert handle.loads == 1 and len(seen) == 1
        assert torch.equal(again[0], first[1]) and torch.equal(again[1], first[0])
        handle.encode(["a cat", "a bird"])  # one new prompt: one load
        assert handle.loads == 2 and not handle.is_loaded()
    finally:
        mm.load_models_gpu = original


def test_keep_loaded_leaves_it_with_model_management(runtime, te_file):
    mm, _, Handle = runtime
    handle = Handle(te_file)
    handle.encode(["kept"], keep_loaded=True)
    assert handle.is_loaded()
    assert any(lm.model is handle.patcher for lm in mm.current_loaded_models)
    handle.release()
    assert not handle.is_loaded()


def test_empty_positive_prompt_is_refused_and_empty_negative_uses_the_release_default(runtime, te_file):
    _, text_nodes, Handle = runtime
    from comfyui_wan22.wan_core.config import DEFAULT_NEGATIVE_PROMPT
    from comfyui_wan22.wan_core.errors import WanUserError

    handle = Handle(te_file)
    with pytest.raises(WanUserError, match="positive prompt is empty"):
        text_nodes.Wan22TextEncode.execute(handle, "  \n", "")
    (_, (neg, _)) = [c[0] for c in text_nodes.Wan22TextEncode.execute(handle, "a cat", " ").result]
    (default,) = handle.encode([DEFAULT_NEGATIVE_PROMPT])
    assert (neg[0, : len(default)] - default).abs().max().item() <= PARITY_ATOL


def test_loader_reports_a_wrong_file_at_once(runtime, tmp_path):
    _, _, Handle = runtime
    from comfyui_wan22.wan_core.errors import WanUserError

    path = tf.write_official_pth(tmp_path / "models_t5_umt5-xxl-enc-bf16.pth", tf.reference_model())
    with pytest.raises(WanUserError, match="no spiece.model was found"):
        Handle(path)
