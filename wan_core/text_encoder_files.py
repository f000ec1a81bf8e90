"""umT5 weight files of every release format, read onto the one `UMT5Encoder` module tree.

Formats (detected from the keys, not the file name):
- official: `models_t5_umt5-xxl-enc-bf16.pth`, Wan's own names (`token_embedding`, `blocks.N.attn.q`,
  ...), tokenizer in a separate `google/umt5-xxl` folder;
- Hugging Face names (`shared`, `encoder.block.N.layer.0.SelfAttention.q`, ...): ComfyUI's
  `umt5_xxl_fp16` / `umt5_xxl_fp8_e4m3fn_scaled` single files (tokenizer embedded as the uint8
  tensor `spiece_model`; scaled fp8 = fp8 weight + fp32 `scale_weight` per Linear and a
  `scaled_fp8` marker) and `UMT5EncoderModel` folders (config.json, weights, spiece.model).
"""

from __future__ import annotations

import logging
import os
import re
from collections.abc import Mapping
from pathlib import Path

import torch

from .errors import WanUserError
from .layers import TorchOps
from .tokenizer import TOKENIZER_MODEL_NAMES, UMT5Tokenizer
from .umt5 import UMT5Config, UMT5Encoder, config_from_state_dict
from .weights import RenamedStateDict, open_state_dict, tensor_shape

log = logging.getLogger(__name__)

UMT5_XXL_VOCAB = 256384
UMT5_XXL_DIM = 4096
EMBEDDED_TOKENIZER_KEY = "spiece_model"
FP8_DTYPES = (torch.float8_e4m3fn, torch.float8_e5m2)

_HF_BLOCK_NAMES = {
    "layer.0.SelfAttention.q": "attn.q",
    "layer.0.SelfAttention.k": "attn.k",
    "layer.0.SelfAttention.v": "attn.v",
    "layer.0.SelfAttention.o": "attn.o",
    "layer.0.SelfAttention.relative_attention_bias": "pos_embedding.embedding",
    "layer.0.layer_norm": "norm1",
    "layer.1.DenseReluDense.wi_0": "ffn.gate.0",
    "layer.1.DenseReluDense.wi_1": "ffn.fc1",
    "layer.1.DenseReluDense.wo": "ffn.fc2",
    "layer.1.layer_norm": "norm2",
}
_HF_BLOCK_KEY = re.compile(r"encoder\.block\.(\d+)\.(.+)\.(weight|scale_weight|scale_input)$")
_HF_TOP_NAMES = {
    "shared.weight": "token_embedding.weight",
    "encoder.final_layer_norm.weight": "norm.weight",
}
_LINEAR_NAMES = ("attn.q", "attn.k", "attn.v", "attn.o", "ffn.gate.0", "ffn.fc1", "ffn.fc2")


def _hf_prefix(keys: list[str]) -> str | None:
    for key in keys:
        at = key.find("encoder.block.0.layer.0.SelfAttention.q.weight")
        if at >= 0:
            return key[:at]
    return None


def normalize_keys(sd: Mapping[str, torch.Tensor], name: str) -> RenamedStateDict:
    """Detects the naming of a umT5 state dict and maps it onto the official names."""
    keys = list(sd)
    if "token_embedding.weight" in sd and "blocks.0.attn.q.weight" in sd:
        names = {k: k for k in keys if k.startswith(("token_embedding.", "blocks.", "norm."))}
        fmt = "official"
    else:
        prefix = _hf_prefix(keys)
        if prefix is None:
            raise WanUserError(
                f"{name}: not a T5 text encoder (no attention weights under the official Wan names or "
                f"the Hugging Face T5 names). Choose umt5_xxl_fp16.safetensors, "
                f"umt5_xxl_fp8_e4m3fn_scaled.safetensors or the release's models_t5_umt5-xxl-enc-bf16.pth."
            )
        names = {}
        for key in keys:
            if not key.startswith(prefix):
                continue
            rest = key[len(prefix):]
            match = _HF_BLOCK_KEY.match(rest)
            if match and match.group(2) in _HF_BLOCK_NAMES:
                layer, part, leaf = match.groups()
                names[f"blocks.{layer}.{_HF_BLOCK_NAMES[part]}.{leaf}"] = key
            elif rest in _HF_TOP_NAMES:
                names[_HF_TOP_NAMES[rest]] = key
            elif rest == "encoder.embed_tokens.weight":  # tied to `shared` in HF files
                names.setdefault("token_embedding.weight", key)
        fmt = "huggingface"
    _check_umt5_shaped(names, sd, name)
    return RenamedStateDict(sd, names, fmt)


def _check_umt5_shaped(names: dict[str, str], sd: Mapping, name: str) -> None:
    layers = {int(k.split(".")[1]) for k in names if k.startswith("blocks.")}
    missing = [k for k in ("token_embedding.weight", "norm.weight") if k not in names]
    if missing:
        raise WanUserError(f"{name}: the text encoder lacks {', '.join(missing)}; the file is incomplete.")
    shared_bias = [i for i in layers if f"blocks.{i}.pos_embedding.embedding.weight" not in names]
    if shared_bias:
        raise WanUserError(
            f"{name}: is a T5 with one shared position bias (layers {sorted(shared_bias)[:3]}... have none), "
            f"not umT5. Wan2.2 needs umT5-XXL (google/umt5-xxl): choose umt5_xxl_fp16.safetensors or the "
            f"release's models_t5_umt5-xxl-enc-bf16.pth."
        )
    vocab, dim = tensor_shape(sd, names["token_embedding.weight"])
    if dim == UMT5_XXL_DIM and vocab != UMT5_XXL_VOCAB:
        raise WanUserError(
            f"{name}: has width {dim} but a vocabulary of {vocab} tokens; umT5-XXL has {UMT5_XXL_VOCAB}. "
            f"This is another T5 (e.g. t5xxl of Flux/SD3): Wan2.2 needs umt5_xxl."
        )


def check_text_dim(encoder_dim: int, dit_text_dim: int, what: str = "the text encoder") -> None:
    """Conditioning width must match the DiT's text_dim (4096 for every Wan2.2 release)."""
    if encoder_dim != dit_text_dim:
        raise WanUserError(
            f"{what} gives {encoder_dim}-wide embeddings but the Wan model expects text_dim {dit_text_dim}. "
            f"Encode the prompt with umT5-XXL (umt5_xxl_*.safetensors or models_t5_umt5-xxl-enc-bf16.pth)."
        )


def _tokenizer_candidates(path: Path) -> list[Path]:
    base = path if path.is_dir() else path.parent
    return [base, base / "tokenizer", base / "google" / "umt5-xxl", base / "umt5-xxl", base.parent / "google" / "umt5-xxl"]


def find_tokenizer(path: Path, sd: Mapping, tokenizer_path: str | os.PathLike | None) -> UMT5Tokenizer:
    if tokenizer_path is not None:
        return UMT5Tokenizer.from_folder(tokenizer_path)
    if EMBEDDED_TOKENIZER_KEY in sd:
        return UMT5Tokenizer.from_tensor(sd[EMBEDDED_TOKENIZER_KEY], f"{path.name} (embedded spiece_model)")
    candidates = _tokenizer_candidates(path)
    for folder in candidates:
        if any((folder / n).is_file() for n in TOKENIZER_MODEL_NAMES):
            return UMT5Tokenizer.from_folder(folder)
    raise WanUserError(
        f"{path.name}: has no embedded tokenizer and no spiece.model was found beside it (looked in "
        f"{', '.join(str(c) for c in candidates)}). Put the release's google/umt5-xxl folder next to the "
        f"file, or use ComfyUI's umt5_xxl_*.safetensors, which embeds its tokenizer."
    )


def resolve_weights_path(path: str | os.PathLike) -> Path:
    """A file inside a Hugging Face folder (config.json + shards) stands for the whole folder."""
    path = Path(path)
    if path.is_file() and (path.parent / "config.json").is_file() and (
        any(path.parent.glob("*.safetensors.index.json")) or path.name.startswith("model")
    ):
        return path.parent
    return path


def _dequantize(sd: RenamedStateDict, key: str) -> torch.Tensor:
    tensor = sd[key]
    scale_key = key[: -len("weight")] + "scale_weight"
    if tensor.dtype in FP8_DTYPES:
        tensor = tensor.float()
        if scale_key in sd:
            tensor = tensor * sd[scale_key].float()
    return tensor


def default_dtype(sd: RenamedStateDict) -> torch.dtype:
    """The file's own dtype; fp8 files compute in bf16 as the release does."""
    dtype = sd["blocks.0.attn.q.weight"].dtype
    return torch.bfloat16 if dtype in FP8_DTYPES else dtype


def build_encoder(sd: RenamedStateDict, cfg: UMT5Config, dtype: torch.dtype, ops=TorchOps,
                  compute_dtype: torch.dtype | None = None) -> UMT5Encoder:
    """The encoder with the file's tensors, without a random init: built on the meta device, then
    each parameter assigned (a tensor already in `dtype` stays a view of the memory-mapped file).

    `dtype` fp8 keeps the Linear weights in fp8 (scaled files are dequantized then re-cast) and
    needs a casting `ops` set such as comfy.ops.manual_cast; every other tensor uses compute_dtype.
    """
    compute_dtype = compute_dtype or (torch.bfloat16 if dtype in FP8_DTYPES else dtype)
    if dtype in FP8_DTYPES and ops is TorchOps:
        raise WanUserError("fp8 text encoder weights need ComfyUI's casting layers; choose bf16 or fp16 here.")
    model = UMT5Encoder(cfg, ops=ops, dtype=compute_dtype, device="meta", compute_dtype=compute_dtype)
    tensors = {}
    for key in model.state_dict():
        if key not in sd:
            raise WanUserError(f"the text encoder file lacks {key}; it is incomplete or not umT5.")
        is_linear = key.endswith(".weight") and any(f".{n}.weight" in f".{key}" for n in _LINEAR_NAMES)
        target = dtype if is_linear else compute_dtype
        tensors[key] = _dequantize(sd, key).to(target)
    model.load_state_dict(tensors, assign=True, strict=True)
    return model.eval().requires_grad_(False)


def inspect_text_encoder(path: str | os.PathLike, tokenizer_path: str | os.PathLike | None = None
                         ) -> tuple[Path, RenamedStateDict, UMT5Config, UMT5Tokenizer]:
    """Everything about a text encoder file short of its weights (headers only): the checks a
    loader node runs up front, so a wrong file is reported where it was chosen."""
    path = resolve_weights_path(path)
    raw = open_state_dict(path)
    sd = normalize_keys(raw, path.name)
    cfg = config_from_state_dict({k: sd.shape(k) for k in sd})
    tokenizer = find_tokenizer(path, raw, tokenizer_path)
    if tokenizer.vocab_size > cfg.vocab_size:
        raise WanUserError(
            f"{tokenizer.source}: the tokenizer has {tokenizer.vocab_size} tokens but {path.name} embeds only "
            f"{cfg.vocab_size}: they are not from the same model. Use the umt5-xxl tokenizer with umT5-XXL."
        )
    return path, sd, cfg, tokenizer


def load_text_encoder(path: str | os.PathLike, tokenizer_path: str | os.PathLike | None = None,
                      dtype: torch.dtype | None = None, ops=TorchOps,
                      compute_dtype: torch.dtype | None = None) -> UMT5Encoder:
    """A umT5 encoder with its tokenizer from any release format (file or folder)."""
    path, sd, cfg, tokenizer = inspect_text_encoder(path, tokenizer_path)
    model = build_encoder(sd, cfg, dtype or default_dtype(sd), ops=ops, compute_dtype=compute_dtype)
    model.tokenizer = tokenizer
    log.info("[ComfyUI-Wan22] umT5 %s: %s (%s layers, width %s)", sd.format, path.name, cfg.num_layers, cfg.dim)
    return model
