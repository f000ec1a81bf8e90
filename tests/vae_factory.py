"""Random Wan VAEs of both kinds, tiny or real-size, on ComfyUI's own Wan VAE modules, written in
every format users have.

Every parameter is random (seeded), so parity tests exercise all of them:
- `random_release_state_dict(kind, size, seed)`: the release's names (= ComfyUI's; official .pth).
- `random_vae(kind, size, seed)`: a native comfy.sd.VAE holding those weights (ComfyUI's module).
- `write_vae(path, kind, fmt, size, dtype, seed)`: fmt "comfy" (.safetensors), "official" (.pth)
  or "diffusers" (an AutoencoderKLWan folder saved by diffusers itself); returns the path to load.
- `diffusers_vae(kind, size, seed)`: the same weights as a diffusers AutoencoderKLWan.

Sizes: "tiny" (widths of a few channels: milliseconds), "real" (the released widths: Wan2.1
127 M parameters, Wan2.2 705 M = 2.8 GB in fp32: run under the bigmem lock).
"""

from __future__ import annotations

import contextlib
import fcntl
import math
from pathlib import Path

import torch
from comfy_inprocess import comfy

from wan_core.vae.kinds import VAE_KINDS, WAN21, WAN22, VaeConfig
from wan_core.vae.loading import diffusers_to_release_key

SIZES = {
    ("wan2.1", "tiny"): (4, 4),
    ("wan2.2", "tiny"): (4, 4),
    ("wan2.1", "real"): (96, 96),
    ("wan2.2", "real"): (160, 256),
}


def vae_config(kind: str, size: str = "tiny") -> VaeConfig:
    enc, dec = SIZES[(kind, size)]
    return VaeConfig(kind=VAE_KINDS[kind], enc_dim=enc, dec_dim=dec)


def _bridge():
    comfy()
    from wan_core.comfy_bridge import vae_patcher

    return vae_patcher


def randomize_(module: torch.nn.Module, seed: int) -> torch.nn.Module:
    """Every parameter drawn at random; conv weights scaled by fan-in so activations stay O(1)."""
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in sorted(module.named_parameters()):
            noise = torch.randn(p.shape, generator=gen, dtype=torch.float32)
            if name.endswith("gamma"):
                value = 1.0 + 0.2 * noise
            elif p.dim() > 1:
                value = noise / math.sqrt(p[0].numel())
            else:
                value = 0.05 * noise
            p.copy_(value.to(p.dtype))
    return module


def random_module(kind: str, size: str = "tiny", seed: int = 0) -> torch.nn.Module:
    """ComfyUI's Wan VAE module (comfy.ldm.wan) of this kind and size, every parameter random."""
    module = _bridge().build_module(vae_config(kind, size))
    module.to(torch.float32)  # built in the default dtype; parameters are filled next
    return randomize_(module, seed).eval().requires_grad_(False)


def random_vae(kind: str, size: str = "tiny", seed: int = 0, dtype: torch.dtype = torch.float32):
    """A native comfy.sd.VAE around random_module(kind, size, seed) (fp32 unless told)."""
    bridge = _bridge()
    return bridge.wrap_module(vae_config(kind, size), random_module(kind, size, seed), dtype=dtype)


def localize_(vae, spatial: float = 0.05, attention: float = 0.01):
    """Damps the off-centre taps of every 3x3 kernel and the attention output, in place.

    Spatial tiling relies on trained VAEs being local: a pixel depends little on latents far away.
    Random weights are not: tile-border effects travel through the decoder's ~17-latent-cell
    receptive field and its per-frame global attention at full strength. This gives a random VAE
    (still every parameter random) the locality that tiling tests need. Takes a comfy.sd.VAE or
    its module."""
    module = getattr(vae, "first_stage_model", vae)
    with torch.no_grad():
        for name, p in module.named_parameters():
            if p.dim() >= 4 and p.shape[-1] == 3 and p.shape[-2] == 3:
                centre = p[..., 1:2, 1:2].clone()
                p.mul_(spatial)
                p[..., 1:2, 1:2] = centre
            elif name.endswith("proj.weight"):
                p.mul_(attention)
    return vae


def random_release_state_dict(kind: str, size: str = "tiny", seed: int = 0) -> dict[str, torch.Tensor]:
    return random_module(kind, size, seed).state_dict()


def diffusers_config(kind: str, size: str = "tiny") -> dict:
    enc, dec = SIZES[(kind, size)]
    k = VAE_KINDS[kind]
    cfg = dict(base_dim=enc, decoder_base_dim=dec, z_dim=k.z_dim, temperal_downsample=[False, True, True],
               latents_mean=list(k.latent_mean), latents_std=list(k.latent_std))
    if k is WAN22:
        cfg.update(is_residual=True, in_channels=12, out_channels=12, patch_size=2,
                   scale_factor_temporal=4, scale_factor_spatial=16)
    return cfg


def diffusers_vae(kind: str, size: str = "tiny", seed: int = 0):
    """A diffusers AutoencoderKLWan holding exactly the weights of random_vae(kind, size, seed)."""
    from diffusers import AutoencoderKLWan

    model = AutoencoderKLWan(**diffusers_config(kind, size))
    release = random_release_state_dict(kind, size, seed)
    residual = VAE_KINDS[kind].residual
    mapped = {k: release[diffusers_to_release_key(k, residual)] for k in model.state_dict()}
    model.load_state_dict(mapped, strict=True)
    return model.eval()


def write_vae(path, kind: str = "wan2.1", fmt: str = "comfy", size: str = "tiny",
              dtype: torch.dtype = torch.float32, seed: int = 0) -> Path:
    """Writes a random VAE; returns what to pass to the loader (a file, or a folder for diffusers)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    if fmt == "diffusers":
        diffusers_vae(kind, size, seed).to(dtype).save_pretrained(path, safe_serialization=True)
        return path
    sd = {k: v.to(dtype).contiguous() for k, v in random_release_state_dict(kind, size, seed).items()}
    if fmt == "comfy":
        from safetensors.torch import save_file

        save_file(sd, str(path))
    elif fmt == "official":
        torch.save(sd, path)
    else:
        raise ValueError(fmt)
    return path


def smooth_latent(kind: str, frames: int, height: int, width: int, seed: int = 0) -> torch.Tensor:
    """A latent that varies slowly in space (low-frequency cosines), for tiling tests."""
    z = VAE_KINDS[kind].z_dim
    gen = torch.Generator().manual_seed(seed)
    amp = torch.randn(z, 1, 1, 1, generator=gen)
    phase = torch.rand(z, 1, 1, 1, generator=gen) * 6.28
    ys = torch.linspace(0, 1, height).view(1, 1, height, 1)
    xs = torch.linspace(0, 1, width).view(1, 1, 1, width)
    ts = torch.linspace(0, 1, frames).view(1, frames, 1, 1)
    return (amp * torch.cos(2.0 * ys + 1.5 * xs + 0.5 * ts + phase)).unsqueeze(0)


__all__ = ["SIZES", "WAN21", "WAN22", "bigmem_lock", "diffusers_vae", "localize_", "random_module",
           "random_release_state_dict", "random_vae", "randomize_", "smooth_latent", "vae_config", "write_vae"]


@contextlib.contextmanager
def bigmem_lock(path: str = "/tmp/wan22-bigmem.lock"):
    """Holds the machine-wide lock that big-memory jobs of this checkout share."""
    with open(path, "a") as f:
        fcntl.flock(f, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(f, fcntl.LOCK_UN)
