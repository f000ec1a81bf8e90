"""Tiny umT5 text encoders in every release format, and a tiny sentencepiece tokenizer.

The reference model is transformers' `UMT5EncoderModel` with every parameter randomised; the same
weights are written as the official Wan `.pth` (Wan names), as ComfyUI's single safetensors
(Hugging Face names + embedded `spiece_model`, optionally scaled fp8) and as a Hugging Face folder
(`save_pretrained` + spiece.model). The tokenizer is trained here with sentencepiece's trainer on a
generated corpus, with T5's special ids (pad 0, end 1, unknown 2).
"""

from __future__ import annotations

import io
import random
from functools import lru_cache
from pathlib import Path

import torch
from safetensors.torch import save_file

TINY = dict(vocab_size=256, d_model=32, num_heads=4, d_kv=8, d_ff=48, num_layers=2)
TINY_SPIECE_VOCAB = 150

_WORDS: tuple[str, ...] = tuple(
    "a cat walks slowly across the sunny garden while birds sing in tall green trees near old stone "
    "houses river water flows under bridge camera pans left right zoom close wide shot night city "
    "lights rain falls on red umbrella woman smiles dog runs beach waves sunset cinematic colour "
    "mountain snow clouds drift blue sky children play ball street market busy people food".split()
)
# Made-up words widen the corpus enough for a few hundred pieces.
_SYLLABLES = ["ka", "lo", "mi", "ren", "tas", "vu", "zen", "qui", "bor", "ell", "ni", "stra", "ph", "ou"]
_WORDS += tuple(
    "".join(random.Random(i).choice(_SYLLABLES) for _ in range(2 + i % 3)) for i in range(300)
)


def sample_text(words: int, seed: int = 0) -> str:
    rng = random.Random(seed)
    return " ".join(rng.choice(_WORDS) for _ in range(words))


@lru_cache(maxsize=1)
def tiny_spiece_model() -> bytes:
    """A serialized sentencepiece unigram model trained in-process (well under a second)."""
    import sentencepiece

    corpus = [sample_text(12, seed) for seed in range(1500)] + ["&amp; <b>tag</b> 123 456 Ünïcödé café"]
    out = io.BytesIO()
    sentencepiece.SentencePieceTrainer.train(
        sentence_iterator=iter(corpus), model_writer=out, vocab_size=TINY_SPIECE_VOCAB, model_type="unigram",
        pad_id=0, eos_id=1, unk_id=2, bos_id=-1, character_coverage=1.0, minloglevel=2,
    )
    return out.getvalue()


def spiece_tensor(model_proto: bytes) -> torch.Tensor:
    """The tokenizer as ComfyUI embeds it: the proto's bytes as a uint8 tensor."""
    return torch.frombuffer(bytearray(model_proto), dtype=torch.uint8).clone()


def write_tokenizer_folder(folder: Path, model_proto: bytes | None = None) -> Path:
    """The release's tokenizer folder layout (google/umt5-xxl): spiece.model plus its json files."""
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "spiece.model").write_bytes(model_proto or tiny_spiece_model())
    (folder / "special_tokens_map.json").write_text('{"eos_token": "</s>", "pad_token": "<pad>", "unk_token": "<unk>"}')
    (folder / "tokenizer_config.json").write_text('{"tokenizer_class": "T5Tokenizer", "extra_ids": 0}')
    return folder


def reference_model(seed: int = 0, **overrides):
    """transformers.UMT5EncoderModel, fp32, every parameter random (no zero or unit init left)."""
    from transformers import UMT5Config, UMT5EncoderModel

    cfg = UMT5Config(**{**TINY, **overrides}, feed_forward_proj="gated-gelu", dropout_rate=0.0,
                     relative_attention_num_buckets=32, relative_attention_max_distance=128,
                     is_encoder_decoder=False, tie_word_embeddings=True)
    torch.manual_seed(seed)
    model = UMT5EncoderModel(cfg).eval()
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "layer_norm" in name:
                p.copy_(1.0 + 0.2 * torch.randn(p.shape, generator=gen))
            elif "relative_attention_bias" in name:
                p.copy_(torch.randn(p.shape, generator=gen))
            elif "shared" in name:
                p.copy_(torch.randn(p.shape, generator=gen))
            else:
                p.copy_(torch.randn(p.shape, generator=gen) / p.shape[-1] ** 0.5)
    return model


def hf_state_dict(model) -> dict[str, torch.Tensor]:
    """The Hugging Face names ComfyUI's umt5 files use (`shared` and `encoder.*`)."""
    sd = {k: v.detach().clone().contiguous() for k, v in model.state_dict().items()}
    sd.pop("encoder.embed_tokens.weight", None)  # tied to shared; ComfyUI files keep only shared
    return sd


_OFFICIAL = {
    "layer.0.SelfAttention.q": "attn.q", "layer.0.SelfAttention.k": "attn.k",
    "layer.0.SelfAttention.v": "attn.v", "layer.0.SelfAttention.o": "attn.o",
    "layer.0.SelfAttention.relative_attention_bias": "pos_embedding.embedding",
    "layer.0.layer_norm": "norm1", "layer.1.layer_norm": "norm2",
    "layer.1.DenseReluDense.wi_0": "ffn.gate.0", "layer.1.DenseReluDense.wi_1": "ffn.fc1",
    "layer.1.DenseReluDense.wo": "ffn.fc2",
}


def official_state_dict(hf_sd: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """The same weights under the names of Wan's own T5 (wan/modules/t5.py), written independently
    of the pack's mapping so the test checks it."""
    out = {}
    for key, value in hf_sd.items():
        if key == "shared.weight":
            out["token_embedding.weight"] = value
        elif key == "encoder.final_layer_norm.weight":
            out["norm.weight"] = value
        else:
            _, _, layer, *part, leaf = key.split(".")
            out[f"blocks.{layer}.{_OFFICIAL['.'.join(part)]}.{leaf}"] = value
    return out


def write_official_pth(path: Path, model, dtype=torch.float32) -> Path:
    sd = {k: v.to(dtype) for k, v in official_state_dict(hf_state_dict(model)).items()}
    torch.save(sd, path)
    return path


def _scaled_fp8(sd: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    out = {}
    for key, value in sd.items():
        if ".DenseReluDense." in key or (".SelfAttention." in key and "relative_attention_bias" not in key):
            scale = value.abs().max().float() / 448.0
            out[key] = (value.float() / scale).to(torch.float8_e4m3fn)
            out[key[: -len("weight")] + "scale_weight"] = scale.reshape(())
        else:
            out[key] = value.to(torch.float16)
    out["scaled_fp8"] = torch.empty(0, dtype=torch.float8_e4m3fn)
    return out


def write_comfy_safetensors(path: Path, model, dtype=torch.float16, fp8_scaled: bool = False,
                            model_proto: bytes | None = None, embed_tokenizer: bool = True) -> Path:
    """ComfyUI's umt5_xxl_fp16 / umt5_xxl_fp8_e4m3fn_scaled layout."""
    sd = hf_state_dict(model)
    sd = _scaled_fp8(sd) if fp8_scaled else {k: v.to(dtype) for k, v in sd.items()}
    if embed_tokenizer:
        sd["spiece_model"] = spiece_tensor(model_proto or tiny_spiece_model())
    save_file(sd, str(path))
    return path


def dequantized_fp8_model(path: Path):
    """The reference model with the weights a scaled-fp8 file really holds (for exact comparison)."""
    from safetensors.torch import load_file

    sd = load_file(str(path))
    model = reference_model()
    weights = {}
    for key, value in sd.items():
        if key in ("scaled_fp8", "spiece_model") or key.endswith("scale_weight"):
            continue
        scale = sd.get(key[: -len("weight")] + "scale_weight")
        weights[key] = value.float() * (scale.float() if scale is not None else 1.0)
    weights["encoder.embed_tokens.weight"] = weights["shared.weight"]
    model.load_state_dict(weights, strict=True)
    return model


def write_hf_folder(folder: Path, model, model_proto: bytes | None = None) -> Path:
    """A Hugging Face UMT5EncoderModel folder (save_pretrained + spiece.model)."""
    model.save_pretrained(folder)
    write_tokenizer_folder(folder, model_proto)
    return folder
