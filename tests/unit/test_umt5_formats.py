"""Every release format of the umT5 loads onto the same module and gives the same embeddings."""

from __future__ import annotations

import pytest
import text_factory as tf
import torch

from wan_core.text_encoder_files import load_text_encoder

PROMPTS = ["a cat walks slowly across the sunny garden", tf.sample_text(150, seed=7)]
PARITY_ATOL = 1e-5


@pytest.fixture(scope="module")
def ref():
    return tf.reference_model(seed=1)


@pytest.fixture(scope="module")
def release(tmp_path_factory, ref):
    """The official layout: the .pth with the google/umt5-xxl tokenizer folder beside it."""
    root = tmp_path_factory.mktemp("release")
    tf.write_tokenizer_folder(root / "google" / "umt5-xxl")
    return root


def expected(ref, encoder):
    outs = []
    for ids in encoder.tokenizer(PROMPTS):
        with torch.no_grad():
            outs.append(ref(input_ids=torch.tensor([ids])).last_hidden_state[0])
    return outs


def assert_same(a: list[torch.Tensor], b: list[torch.Tensor], atol: float = 0.0):
    for x, y in zip(a, b):
        assert x.shape == y.shape
        assert (x.float() - y.float()).abs().max().item() <= atol


def test_official_comfy_and_huggingface_formats_give_identical_embeddings(tmp_path, release, ref):
    official = load_text_encoder(tf.write_official_pth(release / "models_t5_umt5-xxl-enc-bf16.pth", ref))
    comfy = load_text_encoder(tf.write_comfy_safetensors(tmp_path / "umt5.safetensors", ref, dtype=torch.float32))
    hf = load_text_encoder(tf.write_hf_folder(tmp_path / "hf", ref))
    outs = [official.encode(PROMPTS), comfy.encode(PROMPTS), hf.encode(PROMPTS)]
    assert official.config == comfy.config == hf.config
    assert_same(outs[0], outs[1])
    assert_same(outs[0], outs[2])
    assert_same(outs[0], expected(ref, official), PARITY_ATOL)


def test_sharded_huggingface_folder_loads_from_any_of_its_shards(tmp_path, ref):
    folder = tmp_path / "hf_sharded"
    ref.save_pretrained(folder, max_shard_size="20KB")
    tf.write_tokenizer_folder(folder)
    shards = sorted(folder.glob("model-*.safetensors"))
    assert len(shards) > 1
    # ComfyUI lists files, so the user picks one shard: it stands for the folder.
    encoder = load_text_encoder(shards[-1])
    assert_same(encoder.encode(PROMPTS), expected(ref, encoder), PARITY_ATOL)


def test_bf16_release_and_comfy_bf16_file_agree_bit_for_bit(tmp_path, release, ref):
    official = load_text_encoder(tf.write_official_pth(release / "te_bf16.pth", ref, dtype=torch.bfloat16))
    comfy = load_text_encoder(tf.write_comfy_safetensors(tmp_path / "bf16.safetensors", ref, dtype=torch.bfloat16))
    assert official.token_embedding.weight.dtype == torch.bfloat16
    a, b = official.encode(PROMPTS), comfy.encode(PROMPTS)
    assert a[0].dtype == torch.bfloat16
    assert_same(a, b)
    # bf16 end to end stays close to the fp32 reference (release numerics): measured ~0.05 of |x|~4.
    assert_same(a, expected(ref, official), 0.25)


def test_scaled_fp8_file_dequantizes_exactly(tmp_path, ref):
    path = tf.write_comfy_safetensors(tmp_path / "umt5_fp8_scaled.safetensors", ref, fp8_scaled=True)
    encoder = load_text_encoder(path, dtype=torch.float32)
    truth = tf.dequantized_fp8_model(path)
    assert_same(encoder.encode(PROMPTS), expected(truth, encoder), PARITY_ATOL)
    # and fp8 storage approximates the original weights (measured 0.48 on outputs of |x| ~ 4)
    assert_same(encoder.encode(PROMPTS), expected(ref, encoder), 1.0)


def test_default_dtype_follows_the_file(tmp_path, ref):
    fp16 = load_text_encoder(tf.write_comfy_safetensors(tmp_path / "fp16.safetensors", ref, dtype=torch.float16))
    fp8 = load_text_encoder(tf.write_comfy_safetensors(tmp_path / "fp8.safetensors", ref, fp8_scaled=True))
    assert fp16.blocks[0].attn.q.weight.dtype == torch.float16
    assert fp8.blocks[0].attn.q.weight.dtype == torch.bfloat16  # fp8 computes in bf16, as the release


def test_weights_in_their_file_dtype_stay_memory_mapped(tmp_path, ref):
    path = tf.write_comfy_safetensors(tmp_path / "mapped.safetensors", ref, dtype=torch.float32)
    encoder = load_text_encoder(path)
    # A parameter that needed no cast is a view of the file's mapping, not a private copy.
    storages = {p.untyped_storage().data_ptr() for p in encoder.parameters()}
    assert len(storages) == 1
