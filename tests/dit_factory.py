"""Tiny (and real-size) random Wan2.2 DiTs written in every checkpoint format users have.

Reused by the DiT, sampler, demo and benchmark tests. Every parameter is random (the official
init zeroes the head, which would hide errors). Tiny models keep the release's head width of 128
(dim 256 = 2 heads), so they load by the same rules as real files (heads = dim / 128).

Writers (all take an official-names state dict from `random_state_dict`):
- `write_official_folder`: config.json + sharded safetensors + index json (the release layout)
- `write_comfy_file`: one .safetensors, optional `model.diffusion_model.` prefix, optional dtype
  cast (fp16/bf16/fp8), optional ComfyUI scaled fp8 (`scale_weight` + `scaled_fp8` marker)
- `write_diffusers_folder`: a diffusers `transformer/` folder (config.json + renamed keys)
- `write_pth`: a plain torch state dict
"""

from __future__ import annotations

import json
from pathlib import Path

import torch
from safetensors.torch import save_file

from wan_core.checkpoints import expected_shapes, official_to_diffusers_key
from wan_core.config import KIND_DEFAULTS, DiTConfig, ModelKind

TINY_DIM = 256
TINY_TEXT_DIM = 32


def tiny_config(kind: ModelKind | str = "t2v", *, dim: int = TINY_DIM, num_heads: int | None = None,
                num_layers: int = 2, ffn_dim: int = 256, text_dim: int = TINY_TEXT_DIM) -> DiTConfig:
    d = KIND_DEFAULTS[ModelKind(kind)]
    return DiTConfig(
        dim=dim, ffn_dim=ffn_dim, num_heads=num_heads or dim // 128, num_layers=num_layers,
        in_dim=d.in_channels, out_dim=d.out_channels, text_dim=text_dim,
    )


def real_config(kind: ModelKind | str = "ti2v", num_layers: int | None = None) -> DiTConfig:
    """The released sizes (TI2V-5B or an A14B expert); `num_layers` to cut it short."""
    kind = ModelKind(kind)
    d = KIND_DEFAULTS[kind]
    dim, ffn, layers = (3072, 14336, 30) if kind == ModelKind.TI2V else (5120, 13824, 40)
    return DiTConfig(dim=dim, ffn_dim=ffn, num_heads=dim // 128, num_layers=num_layers or layers,
                     in_dim=d.in_channels, out_dim=d.out_channels)


def state_dict_shapes(cfg: DiTConfig) -> dict[str, tuple[int, ...]]:
    """Official key -> shape, for any config."""
    return expected_shapes(cfg)


def random_state_dict(cfg: DiTConfig, seed: int = 0, dtype: torch.dtype = torch.float32) -> dict[str, torch.Tensor]:
    """Every parameter random: weights ~ U(+-1/sqrt(fan_in)), norm gains ~ 1 + noise, biases and
    modulation tables small noise, so activations stay O(1) through the blocks."""
    g = torch.Generator().manual_seed(seed)
    sd = {}
    for key, shape in state_dict_shapes(cfg).items():
        if key.endswith("modulation"):
            t = torch.randn(shape, generator=g) * 0.1
        elif ".norm" in key and key.endswith("weight"):
            t = 1 + torch.randn(shape, generator=g) * 0.1
        elif key.endswith("bias"):
            t = torch.randn(shape, generator=g) * 0.05
        else:
            fan_in = int(torch.tensor(shape[1:]).prod())
            t = (torch.rand(shape, generator=g) * 2 - 1) / fan_in**0.5
        sd[key] = t.to(dtype)
    return sd


def random_inputs(cfg: DiTConfig, frames: int = 3, height: int = 4, width: int = 6, text_tokens: int = 7,
                  batch: int = 1, seed: int = 1):
    """(x [B, in, F, H, W], context [B, L, text_dim]) with a real-length-ish prompt."""
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(batch, cfg.in_dim, frames, height, width, generator=g)
    context = torch.randn(batch, text_tokens, cfg.text_dim, generator=g)
    return x, context


# ---------------------------------------------------------------------------------------------
# Writers


def official_config_json(cfg: DiTConfig, kind: str) -> dict:
    """The release's config.json fields (the official repo writes these for each expert)."""
    return {
        "_class_name": "WanModel", "model_type": kind, "dim": cfg.dim, "ffn_dim": cfg.ffn_dim,
        "freq_dim": cfg.freq_dim, "num_heads": cfg.num_heads, "num_layers": cfg.num_layers,
        "in_dim": cfg.in_dim, "out_dim": cfg.out_dim, "text_len": cfg.text_len, "eps": cfg.eps,
        "patch_size": list(cfg.patch_size), "window_size": [-1, -1], "qk_norm": True, "cross_attn_norm": True,
    }


def write_official_folder(sd: dict, cfg: DiTConfig, folder: Path, shards: int = 2, kind: str = "t2v") -> Path:
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    keys = list(sd)
    per = -(-len(keys) // shards)
    weight_map = {}
    for i in range(shards):
        name = f"diffusion_pytorch_model-{i + 1:05d}-of-{shards:05d}.safetensors"
        part = {k: sd[k].contiguous() for k in keys[i * per:(i + 1) * per]}
        save_file(part, str(folder / name))
        weight_map.update(dict.fromkeys(part, name))
    (folder / "diffusion_pytorch_model.safetensors.index.json").write_text(
        json.dumps({"metadata": {}, "weight_map": weight_map}, indent=1)
    )
    (folder / "config.json").write_text(json.dumps(official_config_json(cfg, kind), indent=1))
    return folder


def to_scaled_fp8(sd: dict, fp8: torch.dtype = torch.float8_e4m3fn) -> dict:
    """ComfyUI's scaled fp8 layout: each Linear weight (2-D) stored as fp8 with an fp32 scalar
    `scale_weight` (absmax / fp8 max); everything else kept; a `scaled_fp8` marker tensor."""
    out = {}
    fmax = torch.finfo(fp8).max
    for key, t in sd.items():
        if t.ndim == 2 and key.endswith(".weight"):
            scale = (t.abs().max().float() / fmax).clamp(min=1e-12)
            out[key] = (t.float() / scale).to(fp8)
            out[key[: -len("weight")] + "scale_weight"] = scale.reshape(())
        else:
            out[key] = t
    out["scaled_fp8"] = torch.empty(0, dtype=fp8)
    return out


def write_comfy_file(sd: dict, path: Path, *, prefix: bool = False, dtype: torch.dtype | None = None,
                     scaled_fp8: torch.dtype | None = None, metadata: dict | None = None) -> Path:
    """A ComfyUI single file. `dtype` casts every tensor (fp16, bf16, fp8); `scaled_fp8` writes
    ComfyUI's scaled fp8 layout instead."""
    out = {k: (v.to(dtype) if dtype is not None else v) for k, v in sd.items()}
    if scaled_fp8 is not None:
        out = to_scaled_fp8(sd, scaled_fp8)
    if prefix:
        out = {"model.diffusion_model." + k: v for k, v in out.items()}
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    save_file({k: v.contiguous() for k, v in out.items()}, str(path), metadata=metadata)
    return path


def diffusers_config_json(cfg: DiTConfig) -> dict:
    return {
        "_class_name": "WanTransformer3DModel", "_diffusers_version": "0.42.1",
        "patch_size": list(cfg.patch_size), "num_attention_heads": cfg.num_heads,
        "attention_head_dim": cfg.head_dim, "in_channels": cfg.in_dim, "out_channels": cfg.out_dim,
        "text_dim": cfg.text_dim, "freq_dim": cfg.freq_dim, "ffn_dim": cfg.ffn_dim, "num_layers": cfg.num_layers,
        "cross_attn_norm": True, "qk_norm": "rms_norm_across_heads", "eps": cfg.eps, "image_dim": None,
        "added_kv_proj_dim": None, "rope_max_seq_len": 1024, "pos_embed_seq_len": None,
    }


def to_diffusers_state_dict(sd: dict) -> dict:
    return {official_to_diffusers_key(k): v for k, v in sd.items()}


def write_diffusers_folder(sd: dict, cfg: DiTConfig, folder: Path) -> Path:
    """A diffusers `transformer/` folder: config.json + one safetensors of renamed keys."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    save_file({k: v.contiguous() for k, v in to_diffusers_state_dict(sd).items()},
              str(folder / "diffusion_pytorch_model.safetensors"))
    (folder / "config.json").write_text(json.dumps(diffusers_config_json(cfg), indent=1))
    return folder


def write_pth(sd: dict, path: Path) -> Path:
    torch.save(sd, str(path))
    return Path(path)


# ---------------------------------------------------------------------------------------------
# References


def diffusers_model(cfg: DiTConfig, sd: dict):
    """diffusers.WanTransformer3DModel with the same weights (fp32, eval)."""
    from diffusers import WanTransformer3DModel

    model = WanTransformer3DModel(
        patch_size=cfg.patch_size, num_attention_heads=cfg.num_heads, attention_head_dim=cfg.head_dim,
        in_channels=cfg.in_dim, out_channels=cfg.out_dim, text_dim=cfg.text_dim, freq_dim=cfg.freq_dim,
        ffn_dim=cfg.ffn_dim, num_layers=cfg.num_layers, cross_attn_norm=True,
        qk_norm="rms_norm_across_heads", eps=cfg.eps,
    )
    model.load_state_dict({k: v.float() for k, v in to_diffusers_state_dict(sd).items()}, strict=True)
    return model.eval()


def write_large_comfy_file(cfg: DiTConfig, path: Path, dtype: torch.dtype = torch.bfloat16,
                           values: str = "uniform", seed: int = 0) -> Path:
    """A ComfyUI single file of any size (real sizes for benchmarks), streamed to disk one tensor
    at a time so writing it needs no more RAM than its largest tensor.

    values "uniform": U(+-1/sqrt(fan_in)) weights, small biases/tables, unit-ish norm gains (a
    model that runs sanely); "raw": random bytes, the fastest fill, for load and memory tests only.
    """
    import os
    import struct

    from wan_core.weights import SAFETENSORS_DTYPES

    names = {v: k for k, v in SAFETENSORS_DTYPES.items()}
    shapes = state_dict_shapes(cfg)
    itemsize = torch.empty(0, dtype=dtype).element_size()
    header, offset = {}, 0
    for key, shape in shapes.items():
        nbytes = int(torch.Size(shape).numel()) * itemsize
        header[key] = {"dtype": names[dtype], "shape": list(shape), "data_offsets": [offset, offset + nbytes]}
        offset += nbytes
    blob = json.dumps(header, separators=(",", ":")).encode()
    blob += b" " * (-len(blob) % 8)  # keep tensors 8-byte aligned
    g = torch.Generator().manual_seed(seed)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "wb") as f:
        f.write(struct.pack("<Q", len(blob)) + blob)
        for key, shape in shapes.items():
            if values == "raw":
                f.write(os.urandom(int(torch.Size(shape).numel()) * itemsize))
                continue
            if key.endswith("modulation") or key.endswith("bias"):
                t = torch.randn(shape, generator=g) * 0.05
            elif ".norm" in key:
                t = 1 + torch.randn(shape, generator=g) * 0.1
            else:
                t = (torch.rand(shape, generator=g) * 2 - 1) / int(torch.Size(shape[1:]).numel()) ** 0.5
            f.write(t.to(dtype).contiguous().view(torch.uint8).numpy().tobytes())
    return path
