"""Tiny random Wan VAEs as native ComfyUI VAEs (comfy.sd.VAE), for tests that compare the pack's
nodes with native nodes on one VAE object.

The Wan2.1 VAE is built from the file's state dict as native VAELoader builds it. ComfyUI hard-codes
the Wan2.2 VAE's widths (160/256), so the tiny Wan2.2 VAE is ComfyUI's own vae2_2.WanVAE class at the
tiny widths inside a comfy.sd.VAE. Import after comfy_inprocess.comfy() (ComfyUI on sys.path).
"""

from __future__ import annotations

import comfy.ldm.wan.vae2_2
import comfy.sd
from vae_factory import SIZES, random_release_state_dict


def native_wan21_vae(seed: int = 1) -> comfy.sd.VAE:
    return comfy.sd.VAE(sd=random_release_state_dict("wan2.1", "tiny", seed=seed))


def native_wan22_vae(seed: int = 2) -> comfy.sd.VAE:
    enc, dec = SIZES[("wan2.2", "tiny")]
    real = comfy.ldm.wan.vae2_2.WanVAE
    comfy.ldm.wan.vae2_2.WanVAE = lambda **cfg: real(**{**cfg, "dim": enc, "dec_dim": dec})
    try:
        return comfy.sd.VAE(sd=random_release_state_dict("wan2.2", "tiny", seed=seed))
    finally:
        comfy.ldm.wan.vae2_2.WanVAE = real
