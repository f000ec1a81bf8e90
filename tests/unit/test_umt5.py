"""The pack's umT5 against transformers.UMT5EncoderModel on the same random weights, and its
answers to bad input."""

from __future__ import annotations

import logging

import pytest
import text_factory as tf
import torch
from safetensors.torch import save_file

from wan_core.errors import WanUserError
from wan_core.text_encoder_files import check_text_dim, load_text_encoder
from wan_core.umt5 import pad_context, relative_position_buckets

# fp32 on CPU; measured ~1e-6 (SDPA vs transformers' explicit matmul + softmax).
PARITY_ATOL = 1e-5


@pytest.fixture(scope="module")
def ref():
    return tf.reference_model(seed=0)


@pytest.fixture(scope="module")
def encoder(ref, tmp_path_factory):
    path = tf.write_comfy_safetensors(tmp_path_factory.mktemp("te") / "umt5.safetensors", ref, dtype=torch.float32)
    return load_text_encoder(path)


def reference_output(ref, ids: list[int]) -> torch.Tensor:
    with torch.no_grad():
        return ref(input_ids=torch.tensor([ids])).last_hidden_state[0]


def test_relative_buckets_match_transformers_beyond_max_distance():
    from transformers.models.umt5.modeling_umt5 import UMT5Attention

    length = 300
    positions = torch.arange(length)
    relative = positions[None, :] - positions[:, None]
    attention = UMT5Attention.__new__(UMT5Attention)
    attention.is_decoder, attention.relative_attention_num_buckets = False, 32
    attention.relative_attention_max_distance = 128
    expected = attention._relative_position_bucket(relative)
    ours = relative_position_buckets(length, 32, 128)
    assert torch.equal(ours, expected)
    assert {0, 1, 15, 17, 31} <= set(ours.unique().tolist())  # near and far, both directions


@pytest.mark.parametrize("words", [3, 160])
def test_matches_transformers_umt5(encoder, ref, words):
    text = tf.sample_text(words, seed=words)
    (ids,) = encoder.tokenizer([text])
    if words > 100:
        assert len(ids) > 140, "the long prompt must reach the far relative-position buckets"
    (ours,) = encoder.encode([text])
    expected = reference_output(ref, ids)
    assert ours.shape == (len(ids), tf.TINY["d_model"])
    err = (ours - expected).abs().max().item()
    assert err <= PARITY_ATOL, err


def test_batched_prompts_of_different_lengths_match_single_encodes(encoder, ref):
    texts = [tf.sample_text(40, 1), "a cat", tf.sample_text(9, 2)]
    outputs = encoder.encode(texts)
    for text, out in zip(texts, outputs):
        (ids,) = encoder.tokenizer([text])
        assert out.shape[0] == len(ids)  # trimmed to the real tokens, end token included
        assert (out - reference_output(ref, ids)).abs().max().item() <= PARITY_ATOL


def test_context_is_zero_padded_to_512(encoder):
    (out,) = encoder.encode(["a cat walks"])
    padded = pad_context(out, 512)
    assert padded.shape == (512, out.shape[1])
    assert torch.equal(padded[: out.shape[0]], out)
    assert not padded[out.shape[0]:].any()


def test_prompt_over_512_tokens_is_cut_with_a_warning(encoder, caplog):
    text = tf.sample_text(900, seed=5)
    full = len(encoder.tokenizer.sp.encode(text)) + 1
    assert full > 512
    with caplog.at_level(logging.WARNING):
        (out,) = encoder.encode([text])
    assert out.shape[0] == 512
    assert f"the last {full - 512} tokens were cut" in caplog.text
    assert encoder.tokenizer([text])[0][-1] == encoder.tokenizer.eos_id


def test_empty_prompt_encodes_as_the_end_token_alone(encoder, ref):
    (out,) = encoder.encode(["   "])
    assert out.shape[0] == 1
    assert (out - reference_output(ref, [1])).abs().max().item() <= PARITY_ATOL


def test_plain_t5_is_refused_as_not_umt5(tmp_path):
    from transformers import T5Config, T5EncoderModel

    t5 = T5EncoderModel(T5Config(vocab_size=256, d_model=32, num_heads=4, d_kv=8, d_ff=48, num_layers=2,
                                 feed_forward_proj="gated-gelu"))
    sd = {k: v.contiguous() for k, v in t5.state_dict().items() if k != "encoder.embed_tokens.weight"}
    save_file(sd, str(tmp_path / "t5.safetensors"))
    with pytest.raises(WanUserError, match="not umT5"):
        load_text_encoder(tmp_path / "t5.safetensors")


def test_xxl_width_with_a_t5_vocabulary_is_refused(tmp_path):
    # A 4096-wide T5 with the wrong vocabulary (Flux/SD3's t5xxl has 32128 tokens); tiny elsewhere.
    sd = tf.hf_state_dict(tf.reference_model(d_model=4096, d_ff=8, num_layers=1, d_kv=2, vocab_size=300))
    save_file({k: v.half() for k, v in sd.items()}, str(tmp_path / "t5xxl.safetensors"))
    with pytest.raises(WanUserError, match="vocabulary of 300 tokens; umT5-XXL has 256384"):
        load_text_encoder(tmp_path / "t5xxl.safetensors")


def test_tokenizer_larger_than_the_embedding_is_refused(tmp_path):
    small = tf.reference_model(vocab_size=100)
    path = tf.write_comfy_safetensors(tmp_path / "small.safetensors", small)
    with pytest.raises(WanUserError, match="150 tokens but small.safetensors embeds only 100"):
        load_text_encoder(path)


def test_missing_tokenizer_names_where_it_looked(tmp_path, ref):
    path = tf.write_official_pth(tmp_path / "models_t5_umt5-xxl-enc-bf16.pth", ref)
    with pytest.raises(WanUserError, match="no spiece.model was found beside it.*google/umt5-xxl"):
        load_text_encoder(path)


def test_not_a_text_encoder_is_refused(tmp_path):
    save_file({"head.modulation": torch.zeros(1, 2, 8)}, str(tmp_path / "dit.safetensors"))
    with pytest.raises(WanUserError, match="dit.safetensors: not a T5 text encoder"):
        load_text_encoder(tmp_path / "dit.safetensors")


def test_width_mismatch_with_the_dit_says_so():
    with pytest.raises(WanUserError, match="gives 32-wide embeddings but the Wan model expects text_dim 4096"):
        check_text_dim(32, 4096)
    check_text_dim(4096, 4096)


def test_real_xxl_config_and_size_from_shapes_alone():
    # The release's shapes (read from headers in practice); the module is built on the meta device.
    from wan_core.umt5 import UMT5Encoder, config_from_state_dict

    shapes = {"token_embedding.weight": (256384, 4096), "norm.weight": (4096,)}
    for i in range(24):
        shapes |= {f"blocks.{i}.attn.q.weight": (4096, 4096), f"blocks.{i}.ffn.fc1.weight": (10240, 4096),
                   f"blocks.{i}.pos_embedding.embedding.weight": (32, 64)}
    cfg = config_from_state_dict(shapes)
    assert (cfg.num_layers, cfg.dim, cfg.num_heads, cfg.head_dim, cfg.ffn_dim, cfg.vocab_size, cfg.num_buckets) == (
        24, 4096, 64, 64, 10240, 256384, 32)
    params = sum(p.numel() for p in UMT5Encoder(cfg, device="meta").parameters())
    assert 5.6e9 < params < 5.8e9  # umT5-XXL encoder: 5.7 B
