"""The Wan2.1 (z16, 4x8x8) and Wan2.2 (z48, 4x16x16) VAEs' facts, file reading and streaming.

The model itself is ComfyUI's (comfy.ldm.wan.vae / vae2_2, inside a comfy.sd.VAE), built and
driven in wan_core.comfy_bridge; this package imports no ComfyUI:
- kinds: the two kinds' numbers; VaeConfig (kind + widths of one file);
- loading: every file format -> ComfyUI's key names + VaeConfig;
- streaming: memory-bounded decode/encode over any object that decodes one causal chunk;
- validation: input checks with errors that say what to do.
"""

from .kinds import VAE_KINDS, WAN21, WAN22, VaeConfig, VaeKind
from .loading import read_vae_state_dict
from .validation import check_frame_count, check_frame_size, check_latent, check_pixels, image_batch_to_video

__all__ = [
    "VAE_KINDS", "WAN21", "WAN22", "VaeConfig", "VaeKind", "check_frame_count", "check_frame_size",
    "check_latent", "check_pixels", "image_batch_to_video", "read_vae_state_dict",
]
