"""Wan22VideoLatent in ComfyUI's runtime (in-process, CPU, tiny random VAEs of both kinds): the
empty latent's shape, the release's start-image conditioning for I2V-A14B (Wan2.1 VAE) and
TI2V-5B (Wan2.2 VAE), and clear errors for sizes and lengths the VAE cannot take."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import comfy_inprocess  # noqa: E402
from vae_factory import write_vae  # noqa: E402

comfy_inprocess.pack()

from comfyui_wan22.nodes.latent import Wan22VideoLatent  # noqa: E402
from comfyui_wan22.nodes.sampler import START_IMAGE_KEY  # noqa: E402
from comfyui_wan22.wan_core.comfy_bridge.vae_patcher import load_comfy_vae  # noqa: E402
from comfyui_wan22.wan_core.comfy_bridge.vae_stream import encode  # noqa: E402
from comfyui_wan22.wan_core.errors import WanUserError  # noqa: E402


@pytest.fixture(scope="module")
def vaes(tmp_path_factory):
    folder = tmp_path_factory.mktemp("vaes")
    return {kind: load_comfy_vae(write_vae(folder / f"{kind}.safetensors", kind, "comfy", "tiny", seed=1))
            for kind in ("wan2.1", "wan2.2")}


def make_latent(vae, width, height, length, batch_size=1, start_image=None):
    return Wan22VideoLatent.execute(vae=vae, width=width, height=height, length=length, batch_size=batch_size,
                                    start_image=start_image).result[0]


def gradient_image(height, width):
    y = torch.linspace(0, 1, height).view(height, 1, 1)
    x = torch.linspace(0, 1, width).view(1, width, 1)
    return torch.cat([y.expand(height, width, 1), x.expand(height, width, 1), (x * y).expand(height, width, 1)],
                     dim=-1).unsqueeze(0)  # IMAGE [1, H, W, 3]


def test_empty_latents_have_each_vae_shape(vaes):
    assert make_latent(vaes["wan2.1"], 64, 48, 9, batch_size=2)["samples"].shape == (2, 16, 3, 6, 8)
    assert make_latent(vaes["wan2.2"], 64, 96, 9)["samples"].shape == (1, 48, 3, 6, 4)


def test_i2v_conditioning_is_the_image_then_grey_frames_encoded(vaes):
    vae = vaes["wan2.1"]
    image = gradient_image(24, 40)  # stretched to 48x32, as the release does
    latent = make_latent(vae, 48, 32, 9, start_image=image)
    assert torch.count_nonzero(latent["samples"]) == 0  # the noise goes here; the image rides beside
    start = latent[START_IMAGE_KEY]
    # The release stretches with bicubic interpolation and no clamp.
    stretched = torch.nn.functional.interpolate(image.movedim(-1, 1), size=(32, 48), mode="bicubic")
    video = torch.cat([stretched.unsqueeze(2) * 2 - 1, torch.zeros(1, 3, 8, 32, 48)], dim=2)
    torch.testing.assert_close(start["concat_latent_image"], encode(vae, video), atol=1e-4, rtol=0)
    assert start["concat_mask"].shape == (1, 1, 3, 4, 6)
    assert start["concat_mask"][:, :, 0].eq(0).all() and start["concat_mask"][:, :, 1:].eq(1).all()


def test_ti2v_first_latent_frame_is_the_encoded_image_with_a_noise_mask(vaes):
    vae = vaes["wan2.2"]
    image = gradient_image(64, 32)  # already covers 32x32: only the centre crop applies
    latent = make_latent(vae, 32, 32, 9, start_image=image)
    first = encode(vae, image.movedim(-1, 1)[:, :, 16:48, :].unsqueeze(2) * 2 - 1)
    torch.testing.assert_close(latent["samples"][:, :, :1], first, atol=1e-4, rtol=0)
    assert torch.count_nonzero(latent["samples"][:, :, 1:]) == 0
    mask = latent["noise_mask"]
    assert mask[:, :, 0].eq(0).all() and mask[:, :, 1:].eq(1).all()


@pytest.mark.parametrize(("kind", "width", "height", "length", "message"), [
    ("wan2.1", 48, 32, 8, r"length: 8 frames.*4k\+1.*Use 5 or 9"),
    ("wan2.1", 40, 32, 9, r"40x32 is not a multiple of 16"),
    ("wan2.2", 48, 32, 9, r"48x32 is not a multiple of 32"),
])
def test_sizes_and_lengths_the_model_cannot_take(vaes, kind, width, height, length, message):
    with pytest.raises(WanUserError, match=message):
        make_latent(vaes[kind], width, height, length)
