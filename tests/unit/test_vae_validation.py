"""The VAE's input checks: each a WanUserError naming the input and saying what to do."""

import logging

import pytest
import torch
from comfy_inprocess import comfy
from vae_factory import random_vae

comfy()
from wan_core.comfy_bridge import vae_stream  # noqa: E402
from wan_core.errors import WanUserError  # noqa: E402
from wan_core.vae import check_frame_count, image_batch_to_video  # noqa: E402


def test_frame_counts_must_be_4k_plus_1_and_the_message_says_which_are_valid():
    for ok in (1, 5, 81, 121):
        check_frame_count(ok)
    with pytest.raises(WanUserError, match=r"pixels: 10 frames.*4k\+1.*Use 9 or 13 frames"):
        check_frame_count(10, "pixels")


@pytest.mark.parametrize("kind,latent_channels,other", [("wan2.2", 16, "wan2.1"), ("wan2.1", 48, "wan2.2")])
def test_a_latent_of_the_other_kind_is_refused(kind, latent_channels, other):
    vae = random_vae(kind)
    with pytest.raises(WanUserError, match=f"samples: has {latent_channels} channels .a {other} latent.*{kind} VAE"):
        vae_stream.decode_iter(vae, torch.zeros(1, latent_channels, 1, 2, 2))


def test_sizes_not_multiple_of_the_stride_are_refused_with_a_suggestion():
    vae = random_vae("wan2.2")
    with pytest.raises(WanUserError, match=r"pixels: 40x36 is not a multiple of 16.*wan2.2.*32x32"):
        vae_stream.encode(vae, torch.zeros(1, 3, 5, 36, 40))
    with pytest.raises(WanUserError, match="pixels: 4 frames"):
        vae_stream.encode(vae, torch.zeros(1, 3, 4, 32, 32))


def test_alpha_and_grayscale_batches_are_converted_with_a_log_line(caplog):
    caplog.set_level(logging.WARNING)
    rgba = torch.rand(5, 8, 8, 4)
    assert torch.equal(image_batch_to_video(rgba), (rgba[..., :3].permute(3, 0, 1, 2)[None] * 2 - 1))
    assert "alpha channel is dropped" in caplog.text
    gray = torch.rand(5, 8, 8, 1)
    video = image_batch_to_video(gray, "start_image")
    assert video.shape == (1, 3, 5, 8, 8) and torch.equal(video[:, 0], video[:, 2])
    assert "start_image: grayscale frames: repeated to RGB" in caplog.text
    with pytest.raises(WanUserError, match="pixels: frames with 5 channels"):
        image_batch_to_video(torch.rand(1, 8, 8, 5))
