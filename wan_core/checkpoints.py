"""Wan2.2 DiT checkpoints: find the format from the contents, normalise keys to the official
names, read the config from the tensor shapes, and load without inflating the file in RAM.

Formats (never guessed from a file name):
- official release folder: config.json + sharded safetensors + *.safetensors.index.json;
- ComfyUI single file (.safetensors or .pth), keys with or without `model.diffusion_model.`;
- diffusers folder (`transformer/`, `transformer_2/`, or the pipeline folder above them), keys
  renamed back to the official names;
- fp32 / fp16 / bf16 / fp8 e4m3fn / fp8 e5m2 tensors, and ComfyUI scaled fp8 (an fp32
  `scale_weight` per Linear and a top-level `scaled_fp8` marker).

The head count is dim / 128 (every released Wan2.2 DiT) unless the folder's config.json, or a
single file's safetensors metadata entry `num_heads`, says otherwise; a model whose dim is not a
multiple of 128 without either is refused with a message saying so.

Loading builds the model on the meta device and assigns each tensor straight from the memory
map: a tensor kept in its file dtype is a view of the file, not a copy.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path

import torch

from .config import DiTConfig, ModelKind, kind_from_channels
from .errors import WanUserError
from .weights import WEIGHT_DTYPES, RenamedStateDict, open_state_dict, tensor_shape

COMFY_PREFIXES = ("model.diffusion_model.", "diffusion_model.")
SCALED_FP8_MARKER = "scaled_fp8"
FP8_DTYPES = (torch.float8_e4m3fn, torch.float8_e5m2)
DTYPE_NAMES = {
    torch.float32: "fp32", torch.float16: "fp16", torch.bfloat16: "bf16",
    torch.float8_e4m3fn: "fp8 e4m3fn", torch.float8_e5m2: "fp8 e5m2",
}
# Pipeline folders that hold both experts: (high-noise subfolder, low-noise subfolder).
EXPERT_SUBFOLDERS = (("high_noise_model", "low_noise_model"), ("transformer", "transformer_2"))

# Official name -> diffusers name (diffusers' WanTransformer3DModel). A row renames a key's start;
# "N" stands for any block index and "$" marks a whole name. Both directions are built from it.
_KEY_MAP = [
    ("text_embedding.0.", "condition_embedder.text_embedder.linear_1."),
    ("text_embedding.2.", "condition_embedder.text_embedder.linear_2."),
    ("time_embedding.0.", "condition_embedder.time_embedder.linear_1."),
    ("time_embedding.2.", "condition_embedder.time_embedder.linear_2."),
    ("time_projection.1.", "condition_embedder.time_proj."),
    ("head.modulation$", "scale_shift_table$"),
    ("head.head.", "proj_out."),
    ("blocks.N.modulation$", "blocks.N.scale_shift_table$"),
    ("blocks.N.self_attn.q.", "blocks.N.attn1.to_q."),
    ("blocks.N.self_attn.k.", "blocks.N.attn1.to_k."),
    ("blocks.N.self_attn.v.", "blocks.N.attn1.to_v."),
    ("blocks.N.self_attn.o.", "blocks.N.attn1.to_out.0."),
    ("blocks.N.self_attn.norm_", "blocks.N.attn1.norm_"),
    ("blocks.N.cross_attn.q.", "blocks.N.attn2.to_q."),
    ("blocks.N.cross_attn.k.", "blocks.N.attn2.to_k."),
    ("blocks.N.cross_attn.v.", "blocks.N.attn2.to_v."),
    ("blocks.N.cross_attn.o.", "blocks.N.attn2.to_out.0."),
    ("blocks.N.cross_attn.norm_", "blocks.N.attn2.norm_"),
    ("blocks.N.norm3.", "blocks.N.norm2."),
    ("blocks.N.ffn.0.", "blocks.N.ffn.net.0.proj."),
    ("blocks.N.ffn.2.", "blocks.N.ffn.net.2."),
]
_BLOCK = "blocks.N."


def _rules(pairs) -> list[tuple[str, str]]:
    """(from, to) rows -> anchored regex rules; the block index is carried over."""
    rules = []
    for source, target in pairs:
        whole = source.endswith("$")
        pattern = re.escape(source.rstrip("$")).replace(re.escape(_BLOCK), r"(blocks\.\d+\.)")
        rules.append((pattern + ("$" if whole else ""), target.rstrip("$").replace(_BLOCK, r"\1")))
    return rules


_OFFICIAL_TO_DIFFUSERS = _rules(_KEY_MAP)
_DIFFUSERS_TO_OFFICIAL = _rules((diffusers, official) for official, diffusers in _KEY_MAP)


def _rename(key: str, rules) -> str:
    for pattern, replacement in rules:
        new, n = re.subn("^" + pattern, replacement, key)
        if n:
            return new
    return key


def official_to_diffusers_key(key: str) -> str:
    return _rename(key, _OFFICIAL_TO_DIFFUSERS)


def diffusers_to_official_key(key: str) -> str:
    return _rename(key, _DIFFUSERS_TO_OFFICIAL)


# ---------------------------------------------------------------------------------------------
# Inspection: what a path holds, read from headers only.


@dataclass
class DiTCheckpoint:
    path: Path
    layout: str  # "official folder", "ComfyUI single file", "diffusers folder"
    weights: Mapping[str, torch.Tensor]  # official key names; lazy, memory-mapped
    config: DiTConfig
    kind: ModelKind
    file_dtype: torch.dtype  # dtype of the matrix weights in the file
    scaled_fp8: torch.dtype | None  # the fp8 dtype of a ComfyUI scaled fp8 file
    scales: dict[str, str] = field(default_factory=dict)  # official "<layer>.weight" -> source scale key
    notes: list[str] = field(default_factory=list)

    @property
    def description(self) -> str:
        dtype = DTYPE_NAMES.get(self.file_dtype, str(self.file_dtype))
        scaled = " scaled" if self.scaled_fp8 is not None else ""
        extra = f", {', '.join(self.notes)}" if self.notes else ""
        return (
            f"{self.layout}, {dtype}{scaled}{extra}: {self.kind.value} DiT dim {self.config.dim}, "
            f"{self.config.num_layers} layers, {self.config.num_heads} heads"
        )


def _not_wan(path: Path, keys: list[str]) -> WanUserError:
    sample = ", ".join(keys[:3]) or "no tensors"
    hint = ""
    if any("lora" in k.lower() for k in keys[:200]):
        hint = " It looks like a LoRA: load it with a LoRA loader on the experts' MODEL outputs."
    elif any(k.startswith(("encoder.", "decoder.", "conv1.")) for k in keys[:200]):
        hint = " It looks like a VAE: put it in models/vae and use the VAE loader."
    elif any("shared.weight" in k or k.startswith("encoder.block") for k in keys[:200]):
        hint = " It looks like a text encoder: put it in models/text_encoders."
    return WanUserError(
        f"{path.name}: not a Wan2.2 diffusion model (its keys start {sample}; a Wan DiT has "
        f"patch_embedding, blocks.N and head.modulation).{hint} Pick a Wan2.2 T2V/I2V expert or the "
        f"TI2V-5B model."
    )


def _strip_prefix(keys: list[str]) -> tuple[str, list[str]]:
    for prefix in COMFY_PREFIXES:
        if any(k.startswith(prefix + "patch_embedding.") for k in keys):
            return prefix, [k for k in keys if k.startswith(prefix)]
    return "", keys


def _read_json(path: Path) -> dict:
    try:
        data = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as e:
        raise WanUserError(f"{path}: not valid JSON ({e}). Restore the file from the release.") from None
    return data if isinstance(data, dict) else {}


def resolve_checkpoint_path(path: Path) -> Path:
    """A pipeline folder (release root or diffusers root) -> its high-noise/only expert folder."""
    if path.is_dir():
        for high, _low in EXPERT_SUBFOLDERS:
            if (path / high).is_dir():
                return path / high
    return path


def partner_in_folder(path: Path) -> Path | None:
    """The low-noise expert folder of a pipeline folder holding both experts, else None."""
    if path.is_dir():
        for high, low in EXPERT_SUBFOLDERS:
            if (path / high).is_dir() and (path / low).is_dir():
                return path / low
    return None


def _count_blocks(keys) -> int:
    found = {int(m.group(1)) for k in keys if (m := re.match(r"blocks\.(\d+)\.", k))}
    if found and found != set(range(len(found))):
        return -1
    return len(found)


def inspect_dit(path: str | Path) -> DiTCheckpoint:
    """Opens a DiT file or folder lazily and tells what it is. Raises WanUserError if it is not a
    loadable Wan2.2 DiT."""
    path = resolve_checkpoint_path(Path(path))
    raw = open_state_dict(path)
    raw_keys = list(raw)
    metadata = getattr(raw, "metadata", None) or {}
    prefix, keys = _strip_prefix(raw_keys)
    names = {k[len(prefix):]: k for k in keys}
    diffusers_naming = "condition_embedder.time_proj.weight" in names or "proj_out.weight" in names
    if diffusers_naming:
        names = {diffusers_to_official_key(k): src for k, src in names.items()}
    if "patch_embedding.weight" not in names or "head.modulation" not in names:
        raise _not_wan(path, raw_keys)
    marker = names.pop(SCALED_FP8_MARKER, None)
    scale_keys = {k: v for k, v in names.items() if k.endswith((".scale_weight", ".scale_input"))}
    for k in scale_keys:
        del names[k]
    weights = RenamedStateDict(raw, names)

    if path.is_dir():
        config_json = _read_json(path / "config.json") if (path / "config.json").is_file() else {}
        layout = "diffusers folder" if diffusers_naming else "official folder"
    else:
        config_json = {}
        layout = "ComfyUI single file" if not diffusers_naming else "diffusers-named single file"
    notes = [f"prefix {prefix}"] if prefix else []

    config = _config_from_shapes(path, weights, config_json, metadata)
    kind = kind_from_channels(config.in_dim, config.out_dim)
    if kind is None:
        raise WanUserError(
            f"{path.name}: a Wan DiT with {config.in_dim} input and {config.out_dim} output channels, which "
            f"is no Wan2.2 model (T2V 16/16, I2V 36/16, TI2V-5B 48/48). Pick a Wan2.2 model file."
        )
    if any(k.startswith("img_emb.") for k in names):
        raise WanUserError(
            f"{path.name}: has a CLIP image branch (img_emb), so it is a Wan2.1 image-to-video model, not "
            f"Wan2.2. Use a Wan2.2 I2V-A14B expert, or ComfyUI's native loader for Wan2.1."
        )
    _check_complete(path, weights, config)

    scaled_fp8 = None
    scales: dict[str, str] = {}
    if marker is not None:
        marker_dtype = raw[marker].dtype
        scaled_fp8 = marker_dtype if marker_dtype in FP8_DTYPES else torch.float8_e4m3fn
        scales = {k[: -len("scale_weight")] + "weight": v for k, v in scale_keys.items() if k.endswith("scale_weight")}
    file_dtype = _dtype_of(raw, names["blocks.0.ffn.0.weight"])
    return DiTCheckpoint(path, layout, weights, config, kind, file_dtype, scaled_fp8, scales, notes)


def _dtype_of(raw: Mapping, key: str) -> torch.dtype:
    return raw[key].dtype  # a lazy view: nothing is read


def _config_from_shapes(path: Path, sd: Mapping, config_json: dict, metadata: dict) -> DiTConfig:
    def shape(key: str) -> tuple[int, ...]:
        if key not in sd:
            raise WanUserError(
                f"{path.name}: the Wan DiT is missing tensor {key}. The file is incomplete or from another "
                f"model: download it again."
            )
        return tensor_shape(sd, key)

    dim, in_dim, *patch = shape("patch_embedding.weight")
    patch = tuple(patch)
    num_layers = _count_blocks(sd.keys())
    if num_layers <= 0:
        raise WanUserError(
            f"{path.name}: the transformer blocks are missing or not numbered 0..N-1. The file is "
            f"incomplete: download it again."
        )
    heads = config_json.get("num_heads") or config_json.get("num_attention_heads") or metadata.get("num_heads")
    if heads is None:
        if dim % 128:
            raise WanUserError(
                f"{path.name}: dim {dim} is not a multiple of 128 and nothing says its head count. Released "
                f"Wan2.2 models use 128-wide heads; for a custom model add a config.json with num_heads "
                f"(folders) or safetensors metadata num_heads (single files)."
            )
        heads = dim // 128
    return DiTConfig(
        dim=dim,
        ffn_dim=shape("blocks.0.ffn.0.weight")[0],
        num_heads=int(heads),
        num_layers=num_layers,
        in_dim=in_dim,
        out_dim=shape("head.head.weight")[0] // math.prod(patch),
        text_dim=shape("text_embedding.0.weight")[1],
        freq_dim=shape("time_embedding.0.weight")[1],
        patch_size=patch,
        eps=float(config_json.get("eps", 1e-6)),
        text_len=int(config_json.get("text_len", 512)),
    )


def expected_shapes(config: DiTConfig) -> dict[str, tuple[int, ...]]:
    """Official key -> shape of every tensor of a Wan DiT with this config (ComfyUI's WanModel
    names its parameters the same way)."""
    D, F, p, out = config.dim, config.ffn_dim, config.patch_size, config.out_dim
    shapes = {
        "patch_embedding.weight": (D, config.in_dim, *p), "patch_embedding.bias": (D,),
        "text_embedding.0.weight": (D, config.text_dim), "text_embedding.0.bias": (D,),
        "text_embedding.2.weight": (D, D), "text_embedding.2.bias": (D,),
        "time_embedding.0.weight": (D, config.freq_dim), "time_embedding.0.bias": (D,),
        "time_embedding.2.weight": (D, D), "time_embedding.2.bias": (D,),
        "time_projection.1.weight": (6 * D, D), "time_projection.1.bias": (6 * D,),
        "head.head.weight": (p[0] * p[1] * p[2] * out, D), "head.head.bias": (p[0] * p[1] * p[2] * out,),
        "head.modulation": (1, 2, D),
    }
    for i in range(config.num_layers):
        b = f"blocks.{i}."
        for attn in ("self_attn", "cross_attn"):
            for lin in "qkvo":
                shapes[f"{b}{attn}.{lin}.weight"] = (D, D)
                shapes[f"{b}{attn}.{lin}.bias"] = (D,)
            shapes[f"{b}{attn}.norm_q.weight"] = (D,)
            shapes[f"{b}{attn}.norm_k.weight"] = (D,)
        shapes.update({
            f"{b}norm3.weight": (D,), f"{b}norm3.bias": (D,),
            f"{b}ffn.0.weight": (F, D), f"{b}ffn.0.bias": (F,),
            f"{b}ffn.2.weight": (D, F), f"{b}ffn.2.bias": (D,),
            f"{b}modulation": (1, 6, D),
        })
    return shapes


def _check_complete(path: Path, sd: Mapping, config: DiTConfig) -> None:
    expected = expected_shapes(config)
    missing = sorted(set(expected) - set(sd.keys()))
    if missing:
        raise WanUserError(
            f"{path.name}: {len(missing)} tensors of the Wan DiT are missing (e.g. {', '.join(missing[:3])}). "
            f"The file is incomplete or a different model: download it again."
        )
    wrong = [k for k, s in expected.items() if tensor_shape(sd, k) != s]
    if wrong:
        k = wrong[0]
        raise WanUserError(
            f"{path.name}: tensor {k} has shape {tensor_shape(sd, k)}, expected {expected[k]} for a Wan DiT "
            f"of dim {config.dim}. The file is damaged or not a Wan2.2 model."
        )


# ---------------------------------------------------------------------------------------------
# Loading


def parse_weight_dtype(name: str) -> torch.dtype | None:
    if name not in WEIGHT_DTYPES:
        raise WanUserError(f"weight_dtype {name!r}: choose one of {', '.join(WEIGHT_DTYPES)}.")
    return WEIGHT_DTYPES[name]


def is_matrix_weight(key: str, shape: tuple[int, ...]) -> bool:
    """Linear weights: the tensors fp8 storage applies to (norms, biases, tables stay wider)."""
    return key.endswith(".weight") and len(shape) == 2


def stored_tensors(ckpt: DiTCheckpoint, storage: torch.dtype, other: torch.dtype, keep_scaled: bool,
                   device="cpu") -> Iterator[tuple[str, torch.Tensor]]:
    """(official key, tensor) in the dtype it is kept in: matrix weights in `storage`, every other
    tensor in `other`. Scaled fp8 weights are either kept as fp8 with their `scale_weight`
    (`keep_scaled`, for comfy's scaled fp8 layers) or multiplied out. A tensor already in its
    target dtype and device is the memory-mapped view itself, not a copy."""
    for key in ckpt.weights.keys():
        t = ckpt.weights[key]
        scale_key = ckpt.scales.get(key)
        if scale_key is not None and keep_scaled:
            yield key, t.to(device)
            yield key[: -len("weight")] + "scale_weight", ckpt.weights.source[scale_key].to(device, torch.float32)
            continue
        if scale_key is not None:
            scale = ckpt.weights.source[scale_key].to(torch.float32)
            t = t.to(torch.float32) * scale
        target = storage if is_matrix_weight(key, tuple(t.shape)) else other
        yield key, t.to(device=device, dtype=target)
