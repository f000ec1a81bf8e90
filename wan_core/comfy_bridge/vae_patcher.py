"""The Wan VAE as a citizen of comfy.model_management.

The model is built from comfy.ops layers and wrapped in a ModelPatcher, so encode and decode load
it through load_models_gpu (it shows in current_loaded_models and other models' memory decisions
see it, and it is evicted like any model), and the tile budget is the device memory that model
management reports free after loading it. This is the WAN22_VAE object the nodes pass around.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import comfy.model_management as mm
import comfy.model_patcher
import comfy.ops
import torch

from ..vae import WanVAE, load_vae, streaming

# Dtypes the Wan VAEs run well in, best first (as ComfyUI's own Wan VAE); fp32 on a CPU.
WORKING_DTYPES = [torch.bfloat16, torch.float16, torch.float32]
# Working memory asked of model management per call: one tile of at most this many pixels.
WORKING_TILE_PIXELS = 512 * 512


class ComfyWanVAE:
    """A loaded Wan VAE: `model` (wan_core WanVAE), `patcher` (its ModelPatcher), and encode /
    decode entry points that place it on the device first."""

    def __init__(self, model: WanVAE, name: str, load_device, offload_device):
        self.model = model
        self.name = name
        self.patcher = comfy.model_patcher.ModelPatcher(model, load_device=load_device, offload_device=offload_device)

    @property
    def kind(self) -> str:
        return self.model.kind

    def _working_bytes(self, per_pixel: float) -> int:
        return int(per_pixel * WORKING_TILE_PIXELS)

    def _load(self, working_bytes: int) -> None:
        mm.load_models_gpu([self.patcher], memory_required=working_bytes)

    def encode(self, pixels: torch.Tensor, tile: int | None = None, overlap: int | None = None) -> torch.Tensor:
        """Pixels [B, 3, T, H, W] in [-1, 1] -> raw latent, float32 on ComfyUI's intermediate device."""
        self._load(self._working_bytes(streaming.decode_bytes_per_pixel(self.model)))
        try:
            latent = self.model.encode(pixels, tile=tile, overlap=overlap)
        finally:
            mm.soft_empty_cache()
        return latent.to(mm.intermediate_device())

    def decode_iter(
        self, latent: torch.Tensor, tile: int | None = None, overlap: int | None = None
    ) -> Iterator[torch.Tensor]:
        """Pixel-frame chunks [B, 3, t, H, W] in [-1, 1] (float32, CPU), 1 frame then 4 per latent frame."""
        self._load(self._working_bytes(streaming.decode_bytes_per_pixel(self.model)))
        free = mm.get_free_memory(self.model.device) if tile is None else None
        chunks = self.model.decode_iter(latent, tile=tile, overlap=overlap, free_memory=free)
        try:
            for chunk in chunks:
                mm.throw_exception_if_processing_interrupted()
                yield chunk
        finally:
            mm.soft_empty_cache()

    def decode(self, latent: torch.Tensor, tile: int | None = None, overlap: int | None = None) -> torch.Tensor:
        return torch.cat(list(self.decode_iter(latent, tile=tile, overlap=overlap)), dim=2)


def load_comfy_vae(path: str | Path, dtype: torch.dtype | None = None) -> ComfyWanVAE:
    """Reads a Wan VAE file for ComfyUI: comfy.ops layers, the dtype model management picks for the
    VAE device (fp32 on a CPU) unless `dtype` is given, weights kept on the offload device."""
    load_device, offload_device = mm.vae_device(), mm.vae_offload_device()
    dtype = dtype or mm.vae_dtype(load_device, WORKING_DTYPES)
    model = load_vae(path, dtype=dtype, ops=comfy.ops.disable_weight_init, device=offload_device)
    return ComfyWanVAE(model, Path(path).name, load_device, offload_device)
