"""Our Wan VAEs vs diffusers.AutoencoderKLWan 0.42.1 and vs ComfyUI's own Wan VAEs, fp32 on CPU,
all parameters random. Tolerances: 1e-5 max abs error (diffusers and ComfyUI alike)."""

import pytest
import torch
from comfy_inprocess import comfy
from vae_factory import bigmem_lock, diffusers_vae, random_release_state_dict, random_vae, vae_config

from wan_core.vae import WanVAE

TOL = 1e-5


def clip(kind, frames, height, width, seed=1):
    gen = torch.Generator().manual_seed(seed)
    return torch.rand(1, 3, frames, height, width, generator=gen) * 2 - 1


@pytest.mark.parametrize("kind", ["wan2.1", "wan2.2"])
def test_encode_and_decode_match_diffusers(kind):
    ours, ref = random_vae(kind, seed=3), diffusers_vae(kind, seed=3)
    s = ours.stride[1]
    pixels = clip(kind, 9, 2 * s, 3 * s)
    with torch.no_grad():
        latent = ours.encode(pixels)
        ref_latent = ref.encode(pixels).latent_dist.mode()
        assert latent.shape == (1, ours.z_dim, 3, 2, 3) == ref_latent.shape
        assert (latent - ref_latent).abs().max().item() <= TOL
        z = torch.randn(1, ours.z_dim, 3, 2, 3, generator=torch.Generator().manual_seed(5))
        video = ours.decode(z)
        ref_video = ref.decode(z).sample
    assert video.shape == (1, 3, 9, 2 * s, 3 * s) == ref_video.shape
    assert (video - ref_video).abs().max().item() <= TOL
    assert 0.05 < video.std().item()  # a real signal, not a clamped or constant output


def _comfy_vae(kind, sd, cfg):
    comfy()
    if kind == "wan2.1":
        from comfy.ldm.wan.vae import WanVAE as Native

        native = Native(dim=cfg.enc_dim, z_dim=16, dim_mult=[1, 2, 4, 4], num_res_blocks=2, attn_scales=[],
                        temperal_downsample=[False, True, True])
    else:
        from comfy.ldm.wan.vae2_2 import WanVAE as Native

        native = Native(dim=cfg.enc_dim, dec_dim=cfg.dec_dim, z_dim=48, dim_mult=[1, 2, 4, 4], num_res_blocks=2,
                        attn_scales=[], temperal_downsample=[False, True, True])
    native.load_state_dict(sd, strict=True, assign=True)
    return native.eval()


def _compare_with_comfy(ours: WanVAE, native, pixels):
    with torch.no_grad():
        latent = ours.encode(pixels)
        native_latent = native.encode(pixels)
        assert (latent - native_latent).abs().max().item() <= TOL
        video = ours.decode(latent)
        native_video = native.decode(native_latent).clamp(-1, 1)  # ComfyUI clamps when converting to images
    assert (video - native_video).abs().max().item() <= TOL
    return video


def test_wan21_matches_comfyui_native_vae_at_a_small_width():
    cfg = vae_config("wan2.1", "tiny")
    sd = random_release_state_dict("wan2.1", "tiny", seed=7)
    ours = WanVAE(cfg)
    ours.load_state_dict(sd)
    video = _compare_with_comfy(ours.eval(), _comfy_vae("wan2.1", sd, cfg), clip("wan2.1", 9, 24, 32))
    assert video.shape == (1, 3, 9, 24, 32)


@pytest.mark.slow
def test_wan22_matches_comfyui_native_vae_at_the_real_size():
    # ComfyUI's Wan2.2 VAE has its widths fixed to the release's, so this one runs at 705 M parameters.
    with bigmem_lock():
        ours = random_vae("wan2.2", "real", seed=11)
        native = _comfy_vae("wan2.2", ours.state_dict(), ours.cfg)  # shares our tensors
        video = _compare_with_comfy(ours, native, clip("wan2.2", 5, 64, 64))
    assert video.shape == (1, 3, 5, 64, 64)
