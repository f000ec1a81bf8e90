"""Wan VAE files -> a native ComfyUI VAE (`comfy.sd.VAE`), the object native VAELoader gives.

The model inside is ComfyUI's own (comfy.ldm.wan.vae.WanVAE for Wan2.1, vae2_2.WanVAE for Wan2.2),
so native nodes (VAEDecode, VAEDecodeTiled, WanImageToVideo, ...) work on it, and it is loaded
and evicted by comfy.model_management through its ModelPatcher like any VAE.

Where native's constructor can build the file's widths (every Wan2.1 VAE with equal encoder and
decoder widths; the Wan2.2 VAE at the release's widths), it is used as it is. Native hard-codes the
Wan2.2 widths, so other widths (the small random VAEs of tests and demos) get ComfyUI's module with
the widths read from the weights, inside a comfy.sd.VAE set up with the same facts native's Wan
branch sets (ratios, channels, dtypes, native's memory estimates); a unit test compares the two
setups on a VAE both can build.
"""

from __future__ import annotations

import contextlib
import logging
from pathlib import Path

import comfy.ldm.wan.vae
import comfy.ldm.wan.vae2_2
import comfy.model_management as mm
import comfy.model_patcher
import comfy.sd
import torch

from ..errors import WanUserError
from ..vae.kinds import DIM_MULT, NUM_RES_BLOCKS, RELEASE_WIDTHS, TEMPORAL_DOWNSAMPLE, VaeConfig
from ..vae.loading import check_against_model, read_vae_state_dict

# Native's memory estimates (comfy/sd.py, Wan branch) are per latent cell at the release's widths:
# (encode per pixel, decode per latent cell x stride^2), as multiples of the dtype size.
_NATIVE_MEMORY = {"wan2.1": (6000, 7000), "wan2.2": (3300, 8000)}


def build_module(cfg: VaeConfig) -> torch.nn.Module:
    """ComfyUI's Wan VAE module of this kind and these widths (weights not initialised)."""
    common = dict(z_dim=cfg.z_dim, dim_mult=list(DIM_MULT), num_res_blocks=NUM_RES_BLOCKS, attn_scales=[],
                  temperal_downsample=list(TEMPORAL_DOWNSAMPLE), dropout=0.0)
    if cfg.kind.residual:
        return comfy.ldm.wan.vae2_2.WanVAE(dim=cfg.enc_dim, dec_dim=cfg.dec_dim, **common)
    if cfg.enc_dim != cfg.dec_dim:
        raise WanUserError(
            f"a Wan2.1 VAE with encoder width {cfg.enc_dim} and decoder width {cfg.dec_dim}: ComfyUI's Wan2.1 "
            "VAE has one width for both. Use the release's Wan2.1 VAE file."
        )
    return comfy.ldm.wan.vae.WanVAE(dim=cfg.enc_dim, **common)


def native_builds(cfg: VaeConfig) -> bool:
    """Whether comfy.sd.VAE's own Wan branch builds a VAE of these widths."""
    if cfg.kind.residual:
        return (cfg.enc_dim, cfg.dec_dim) == RELEASE_WIDTHS["wan2.2"]
    return cfg.enc_dim == cfg.dec_dim


def load_comfy_vae(path: str | Path, dtype: torch.dtype | None = None) -> comfy.sd.VAE:
    """Reads any Wan VAE file the pack knows (official .pth, ComfyUI .safetensors, diffusers folder;
    Wan2.1 or Wan2.2; any width) into a native comfy.sd.VAE. dtype: as native's (default: what
    model management picks for the VAE device, fp32 on a CPU)."""
    sd, cfg, name = read_vae_state_dict(path)
    with torch.device("meta"):
        shapes = {k: tuple(v.shape) for k, v in build_module(cfg).state_dict().items()}
    return vae_from_state_dict(check_against_model(sd, shapes, cfg, name), cfg, dtype)


def vae_from_state_dict(sd: dict[str, torch.Tensor], cfg: VaeConfig, dtype: torch.dtype | None = None) -> comfy.sd.VAE:
    """A comfy.sd.VAE from a checked state dict in ComfyUI's names: native's constructor where it
    builds these widths, else ComfyUI's module of these widths wrapped the same way."""
    if native_builds(cfg):
        return comfy.sd.VAE(sd=sd, dtype=dtype)
    model = build_module(cfg).eval()
    model.load_state_dict(sd, strict=True)
    return wrap_module(cfg, model, dtype)


class _DropRecord(logging.Filter):
    def __init__(self, text: str):
        super().__init__()
        self.text = text

    def filter(self, record: logging.LogRecord) -> bool:
        return self.text not in record.getMessage()


@contextlib.contextmanager
def _without_log_line(text: str):
    root = logging.getLogger()
    f = _DropRecord(text)
    root.addFilter(f)
    try:
        yield
    finally:
        root.removeFilter(f)


def set_wan_facts(vae: comfy.sd.VAE, cfg: VaeConfig) -> None:
    """The attributes comfy.sd.VAE's Wan branch sets, for this kind (native's memory estimates are
    those of the release's widths; for smaller test VAEs they only over-reserve)."""
    kind = cfg.kind
    st, s, _ = kind.stride
    vae.upscale_ratio = (lambda a: max(0, a * st - (st - 1)), s, s)
    vae.upscale_index_formula = (st, s, s)
    vae.downscale_ratio = (lambda a: max(0, (a + st - 1) // st), s, s)
    vae.downscale_index_formula = (st, s, s)
    vae.latent_dim = 3
    vae.latent_channels = kind.z_dim
    vae.working_dtypes = [torch.bfloat16, torch.float16, torch.float32]
    enc_per_px, dec_per_cell = _NATIVE_MEMORY[kind.name]
    vae.memory_used_encode = lambda shape, dtype: enc_per_px * shape[3] * shape[4] * mm.dtype_size(dtype)
    vae.memory_used_decode = lambda shape, dtype: dec_per_cell * shape[3] * shape[4] * s * s * mm.dtype_size(dtype)


def wrap_module(cfg: VaeConfig, model: torch.nn.Module, dtype: torch.dtype | None = None) -> comfy.sd.VAE:
    """A comfy.sd.VAE holding `model` (ComfyUI's Wan module of these widths, weights loaded), set
    up as native sets up its own Wan VAEs (for widths native's constructor cannot build)."""
    vae = comfy.sd.VAE.__new__(comfy.sd.VAE)
    # ComfyUI's constructor with no weights sets every default attribute of this ComfyUI version
    # and stops before building a model; its "no VAE weights" warning is expected here.
    with _without_log_line("No VAE weights detected"):
        comfy.sd.VAE.__init__(vae, sd={})
    set_wan_facts(vae, cfg)
    vae.first_stage_model = model = model.eval()
    vae.device = mm.vae_device()
    offload_device = mm.vae_offload_device()
    vae.vae_dtype = dtype or mm.vae_dtype(vae.device, vae.working_dtypes)
    model.to(vae.vae_dtype)
    vae.output_device = mm.intermediate_device()
    vae.patcher = comfy.model_patcher.ModelPatcher(model, load_device=vae.device, offload_device=offload_device)
    vae.size = None
    vae.model_size()
    logging.info("Wan VAE (%s, widths %d/%d) load device: %s, offload device: %s, dtype: %s", cfg.kind.name,
                 cfg.enc_dim, cfg.dec_dim, vae.device, offload_device, vae.vae_dtype)
    return vae
