"""A Wan2.2 expert as ComfyUI's own model: `comfy.ldm.wan.model.WanModel` in a `WAN21`/`WAN22`.

The model config is the one ComfyUI's detection picks for the checkpoint's shape (WAN21_T2V for
both A14B kinds, the I2V experts being T2V-shaped with a 36-channel input, WAN22_T2V for the 5B),
the dtypes follow ComfyUI's rules (the `--*-unet` flags, `unet_manual_cast`), and the operations
are ComfyUI's choice (`comfy.ops.pick_operations`: scaled fp8, `--fast` fp8 matmul, casting).
So every patch, wrapper, attention choice and compile node acts on it as on a native Wan model.

What the pack adds is the loading: every release format is read lazily (checkpoints.py) and the
weights are assigned as views of the memory-mapped file, so an idle expert costs no RAM;
loading it for compute copies them off the file (to the GPU, or into process memory on a CPU:
resident_weights).
"""

from __future__ import annotations

import dataclasses
import logging
from pathlib import Path

import comfy.cli_args
import comfy.model_detection
import comfy.model_management as mm
import comfy.model_patcher
import torch

from ..checkpoints import FP8_DTYPES, DiTCheckpoint, inspect_dit, parse_weight_dtype, stored_tensors
from ..config import KIND_DEFAULTS
from .resident_weights import file_backed_patcher


def comfy_unet_config(ckpt: DiTCheckpoint) -> dict:
    """The unet_config ComfyUI's detection derives from a Wan2.2 state dict (plus the text width
    and head count, which detection assumes: 4096 and dim / 128)."""
    c = ckpt.config
    return {
        "image_model": "wan2.1", "model_type": "t2v", "patch_size": tuple(c.patch_size), "text_len": c.text_len,
        "in_dim": c.in_dim, "dim": c.dim, "ffn_dim": c.ffn_dim, "freq_dim": c.freq_dim, "text_dim": c.text_dim,
        "out_dim": c.out_dim, "num_heads": c.num_heads, "num_layers": c.num_layers, "window_size": (-1, -1),
        "qk_norm": True, "cross_attn_norm": True, "eps": c.eps,
    }


# The `--*-unet` command-line flags, which force the weights' dtype whatever the file holds.
_UNET_DTYPE_FLAGS = {
    "fp32_unet": torch.float32, "fp64_unet": torch.float64, "bf16_unet": torch.bfloat16,
    "fp16_unet": torch.float16, "fp8_e4m3fn_unet": torch.float8_e4m3fn, "fp8_e5m2_unet": torch.float8_e5m2,
    "fp8_e8m0fnu_unet": getattr(torch, "float8_e8m0fnu", None),
}


def _forced_dtype() -> torch.dtype | None:
    args = comfy.cli_args.args
    return next((dtype for flag, dtype in _UNET_DTYPE_FLAGS.items() if dtype and getattr(args, flag, False)), None)


def _storage_dtype(ckpt: DiTCheckpoint, chosen: torch.dtype | None, supported) -> torch.dtype:
    """The weights' dtype: the widget's choice, else a `--*-unet` flag, else the file's own dtype
    (the weights then stay views of the file); an fp32 file gets what ComfyUI picks for the device."""
    if chosen is not None:
        return chosen
    forced = _forced_dtype()
    if forced is not None:
        return forced
    if ckpt.file_dtype != torch.float32:
        return ckpt.file_dtype
    params = sum(int(torch.Size(ckpt.weights.shape(k)).numel()) for k in ckpt.weights.keys())
    return mm.unet_dtype(model_params=params, supported_dtypes=supported, weight_dtype=ckpt.file_dtype)


def _comfy_config(ckpt: DiTCheckpoint):
    """A fresh instance of the model config ComfyUI's detection picks for this checkpoint."""
    config = comfy.model_detection.model_config_from_unet_config(comfy_unet_config(ckpt))
    if config is None:  # cannot happen for a checkpoint inspect_dit accepted; say so if it does
        raise RuntimeError(f"{ckpt.path.name}: ComfyUI has no model config for {ckpt.description}")
    return config


def _model_config(ckpt: DiTCheckpoint, storage: torch.dtype, keep_scaled: bool, load_device):
    config = _comfy_config(ckpt)
    # The release's shift, so native samplers on the bare MODEL start from the right schedule.
    config.sampling_settings = {"shift": KIND_DEFAULTS[ckpt.kind].shift}
    if keep_scaled:
        config.scaled_fp8 = ckpt.scaled_fp8
        # As ComfyUI decides for such files: fp8 matrix multiplication (with the file's input
        # scales) where the marker asks for it and the device computes in fp8.
        config.optimizations["fp8"] = ckpt.fp8_matmul
    compute = mm.unet_manual_cast(storage, load_device, config.supported_inference_dtypes)
    config.set_inference_dtype(storage, compute)
    return config, compute


def load_expert(path: str | Path, weight_dtype: str = "default") -> comfy.model_patcher.ModelPatcher:
    """One Wan2.2 DiT file or folder -> a ModelPatcher, weights memory-mapped on the CPU."""
    return expert_from_checkpoint(inspect_dit(path), weight_dtype)


def expert_from_checkpoint(ckpt: DiTCheckpoint, weight_dtype: str = "default") -> comfy.model_patcher.ModelPatcher:
    load_device = mm.get_torch_device()
    offload_device = mm.unet_offload_device()
    chosen = parse_weight_dtype(weight_dtype)
    keep_scaled = ckpt.scaled_fp8 is not None and chosen is None and _forced_dtype() is None
    supported = _comfy_config(ckpt).supported_inference_dtypes
    storage = ckpt.scaled_fp8 if keep_scaled else _storage_dtype(ckpt, chosen, supported)
    model_config, compute = _model_config(ckpt if keep_scaled else _unscaled(ckpt), storage, keep_scaled, load_device)
    # Built on the meta device: the weights are assigned from the file below, nothing is allocated.
    model = model_config.get_model({}, "", device=torch.device("meta"))
    model.device = offload_device
    dit = model.diffusion_model
    # Tensors other than matrix weights (norm gains, biases, modulation tables) stay in the
    # compute dtype when the matrices are stored in fp8.
    other = storage if storage not in FP8_DTYPES else (compute or torch.float32)
    state = dict(stored_tensors(ckpt, storage, other, keep_scaled=keep_scaled, device=offload_device))
    _fill_scales(dit, state)
    dit.load_state_dict(state, strict=True, assign=True)
    dit.requires_grad_(False)
    model.eval()
    logging.info(
        "[ComfyUI-Wan22] %s: %s; weights %s, compute %s, ComfyUI %s", ckpt.path.name, ckpt.description, storage,
        compute or storage, type(model_config).__name__,
    )
    model.wan22_checkpoint = ckpt.path  # on the model, not the patcher: clones (LoRA) share it
    # File views only while idle, never page-locked: see resident_weights.
    return file_backed_patcher(model, ckpt.weights, load_device, offload_device)


def _fill_scales(dit: torch.nn.Module, state: dict) -> None:
    """ComfyUI's scaled-fp8 layers carry a scale per weight (and per input with fp8 matmul);
    layers the file left unscaled get 1, as ComfyUI's own loading leaves them."""
    for name, tensor in dit.state_dict(keep_vars=True).items():
        if name not in state and name.endswith(("scale_weight", "scale_input")):
            state[name] = torch.ones(tensor.shape, dtype=torch.float32)


def _unscaled(ckpt: DiTCheckpoint) -> DiTCheckpoint:
    """The same checkpoint seen without its fp8 scales (they are multiplied out while loading)."""
    return dataclasses.replace(ckpt, scaled_fp8=None)


def checkpoint_path_of(model: comfy.model_patcher.ModelPatcher) -> Path | None:
    """The file or folder a MODEL was loaded from by this pack, else None."""
    return getattr(getattr(model, "model", None), "wan22_checkpoint", None)
