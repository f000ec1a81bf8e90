"""Wan2.1 (z16, 4x8x8) and Wan2.2 (z48, 4x16x16) VAEs with causal, tiled, memory-bounded
encode and decode. `load_vae(path)` reads any supported file; see model.WanVAE for the API."""

from .kinds import VAE_KINDS, WAN21, WAN22, VaeKind
from .loading import load_vae
from .model import VaeConfig, WanVAE
from .validation import check_frame_count, check_frame_size, check_latent, check_pixels, image_batch_to_video

__all__ = [
    "VAE_KINDS", "WAN21", "WAN22", "VaeConfig", "VaeKind", "WanVAE", "check_frame_count", "check_frame_size",
    "check_latent", "check_pixels", "image_batch_to_video", "load_vae",
]
