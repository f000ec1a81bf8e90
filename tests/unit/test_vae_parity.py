"""The pack's streaming encode/decode on ComfyUI's own Wan VAE modules vs diffusers'
AutoencoderKLWan 0.42.1 and vs ComfyUI's native comfy.sd.VAE encode/decode, fp32 on CPU, every
parameter random. Tolerances: 1e-5 max abs error against diffusers; 1e-5 against native (the
issue allows 1e-4), in [-1, 1] pixel units."""

import pytest
import torch
from comfy_inprocess import comfy
from vae_factory import bigmem_lock, diffusers_vae, random_vae

comfy()
from wan_core.comfy_bridge import vae_stream  # noqa: E402

TOL = 1e-5


def clip(frames, height, width, seed=1):
    gen = torch.Generator().manual_seed(seed)
    return torch.rand(1, 3, frames, height, width, generator=gen) * 2 - 1


@pytest.mark.parametrize("kind", ["wan2.1", "wan2.2"])
def test_encode_and_decode_match_diffusers(kind):
    vae, ref = random_vae(kind, seed=3), diffusers_vae(kind, seed=3)
    z_dim, s = vae.latent_channels, vae.spacial_compression_decode()
    pixels = clip(9, 2 * s, 3 * s)
    with torch.no_grad():
        latent = vae_stream.encode(vae, pixels, tile=0)
        ref_latent = ref.encode(pixels).latent_dist.mode()
        assert latent.shape == (1, z_dim, 3, 2, 3) == ref_latent.shape
        assert (latent - ref_latent).abs().max().item() <= TOL
        z = torch.randn(1, z_dim, 3, 2, 3, generator=torch.Generator().manual_seed(5))
        video = vae_stream.decode(vae, z, tile=0)
        ref_video = ref.decode(z).sample
    assert video.shape == (1, 3, 9, 2 * s, 3 * s) == ref_video.shape
    assert (video - ref_video).abs().max().item() <= TOL
    assert 0.05 < video.std().item()  # a real signal, not a clamped or constant output


def _compare_with_native(vae, pixels):
    """Ours vs comfy.sd.VAE's own encode/decode on the same object; returns our video."""
    with torch.no_grad():
        latent = vae_stream.encode(vae, pixels, tile=0)
        native_latent = vae.encode(((pixels + 1) / 2)[0].movedim(0, -1))  # IMAGE frames [T, H, W, 3]
        assert (latent - native_latent).abs().max().item() <= TOL
        video = vae_stream.decode(vae, native_latent, tile=0)
        native_images = vae.decode(native_latent)  # [B, T, H, W, 3] in 0..1
    ours_images = ((video + 1) / 2).clamp(0, 1).permute(0, 2, 3, 4, 1)
    assert ours_images.shape == native_images.shape
    assert (ours_images - native_images).abs().max().item() <= TOL
    return video


@pytest.mark.parametrize("kind", ["wan2.1", "wan2.2"])
def test_streaming_matches_comfyui_native_encode_and_decode(kind):
    vae = random_vae(kind, seed=7)
    s = vae.spacial_compression_decode()
    video = _compare_with_native(vae, clip(9, 3 * s, 4 * s))
    assert video.shape == (1, 3, 9, 3 * s, 4 * s)


@pytest.mark.slow
@pytest.mark.parametrize("kind", ["wan2.1", "wan2.2"])
def test_streaming_matches_native_at_the_real_size(kind):
    # The released widths (Wan2.2: 705 M parameters): the frame-by-frame late stages at real width.
    with bigmem_lock():
        vae = random_vae(kind, "real", seed=11)
        video = _compare_with_native(vae, clip(5, 64, 64))
    assert video.shape == (1, 3, 5, 64, 64)
