"""Wan22VideoLatent in ComfyUI's runtime (in-process, CPU) on native VAEs (comfy.sd.VAE) with tiny
random weights: the empty latent's shape; start frames (one image or a batch), end frames, both,
equal to what native WanImageToVideo / WanFirstLastFrameToVideo (I2V-A14B, Wan2.1 VAE) and
Wan22ImageToVideoLatent (TI2V-5B, Wan2.2 VAE) build from the same images and VAE; the release's
resizing of a single image; clear errors for frame counts, sizes and VAEs the model cannot take.

The VAEs are tests/native_vae.py's (the Wan2.1 one as native VAELoader builds it; the Wan2.2 one
ComfyUI's own class at tiny widths, since native VAELoader only builds the real widths).
"""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import comfy_inprocess  # noqa: E402

comfy_inprocess.pack()

import comfy.latent_formats  # noqa: E402
import comfy.sd  # noqa: E402
from comfy_extras.nodes_wan import (  # noqa: E402
    Wan22ImageToVideoLatent,
    WanFirstLastFrameToVideo,
    WanImageToVideo,
)
from comfyui_wan22.nodes.latent import Wan22VideoLatent  # noqa: E402
from comfyui_wan22.nodes.sampler import START_IMAGE_KEY  # noqa: E402
from comfyui_wan22.wan_core.errors import WanUserError  # noqa: E402
from native_vae import native_wan21_vae, native_wan22_vae  # noqa: E402


@pytest.fixture(scope="module")
def vaes():
    return {"wan2.1": native_wan21_vae(), "wan2.2": native_wan22_vae()}


def make_latent(vae, width, height, length, batch_size=1, start_image=None, end_image=None, resize="release"):
    return Wan22VideoLatent.execute(vae=vae, width=width, height=height, length=length, batch_size=batch_size,
                                    resize=resize, start_image=start_image, end_image=end_image).result[0]


def frames(n, height, width, seed=0):
    return torch.rand(n, height, width, 3, generator=torch.Generator().manual_seed(seed))


def gradient_image(height, width):
    y = torch.linspace(0, 1, height).view(height, 1, 1)
    x = torch.linspace(0, 1, width).view(1, width, 1)
    return torch.cat([y.expand(height, width, 1), x.expand(height, width, 1), (x * y).expand(height, width, 1)],
                     dim=-1).unsqueeze(0)  # IMAGE [1, H, W, 3]


def text():
    return [[torch.zeros(1, 7, 32), {}]]


def native_i2v(node, vae, width, height, length, **images):
    positive, _, latent = node.execute(positive=text(), negative=text(), vae=vae, width=width, height=height,
                                       length=length, batch_size=1, **images).result
    return latent, positive[0][1]


def assert_same_conditioning(ours: dict, native_cond: dict):
    torch.testing.assert_close(ours["concat_latent_image"], native_cond["concat_latent_image"], atol=0, rtol=0)
    # Native WanImageToVideo's mask has 1 channel (broadcast to the 4 the model reads); ours has 4.
    native_mask = native_cond["concat_mask"].expand_as(ours["concat_mask"])
    torch.testing.assert_close(ours["concat_mask"], native_mask, atol=0, rtol=0)


def test_empty_latents_have_each_vae_shape(vaes):
    assert make_latent(vaes["wan2.1"], 64, 48, 9, batch_size=2)["samples"].shape == (2, 16, 3, 6, 8)
    assert make_latent(vaes["wan2.2"], 64, 96, 9)["samples"].shape == (1, 48, 3, 6, 4)


@pytest.mark.parametrize("start_frames", [1, 5, 9])
def test_i2v_start_frames_equal_native_wan_image_to_video(vaes, start_frames):
    vae = vaes["wan2.1"]
    start = frames(start_frames, 32, 48, seed=start_frames)
    latent = make_latent(vae, 48, 32, 13, start_image=start)
    native_latent, native_cond = native_i2v(WanImageToVideo, vae, 48, 32, 13, start_image=start)
    assert torch.equal(latent["samples"], native_latent["samples"])  # the noise goes here; the images ride beside
    assert_same_conditioning(latent[START_IMAGE_KEY], native_cond)
    known = 1 + (start_frames - 1) // 4
    mask = latent[START_IMAGE_KEY]["concat_mask"]
    assert mask[:, :, :known].eq(0).all() and mask[:, :, known:].eq(1).all()


@pytest.mark.parametrize(("start_frames", "end_frames"), [(1, 1), (2, 1), (5, 3), (0, 1), (3, 0)])
def test_i2v_start_and_end_frames_equal_native_first_last_frame(vaes, start_frames, end_frames):
    vae = vaes["wan2.1"]
    images = {}
    if start_frames:
        images["start_image"] = frames(start_frames, 32, 48, seed=10 + start_frames)
    if end_frames:
        images["end_image"] = frames(end_frames, 32, 48, seed=20 + end_frames)
    latent = make_latent(vae, 48, 32, 13, **images)
    native_latent, native_cond = native_i2v(WanFirstLastFrameToVideo, vae, 48, 32, 13, **images)
    assert torch.equal(latent["samples"], native_latent["samples"])
    assert_same_conditioning(latent[START_IMAGE_KEY], native_cond)


def test_i2v_mask_channels_mark_each_given_pixel_frame(vaes):
    """2 start frames, 1 end frame, 13 frames: latent frame 0 = pixel frame 0 on all 4 channels;
    latent frame i > 0 = pixel frames 4i-3..4i, one channel each."""
    latent = make_latent(vaes["wan2.1"], 48, 32, 13, start_image=frames(2, 32, 48), end_image=frames(1, 32, 48))
    mask = latent[START_IMAGE_KEY]["concat_mask"][0, :, :, 0, 0]  # [4 channels, 4 latent frames]
    expected = torch.ones(4, 4)
    expected[:, 0] = 0  # pixel frame 0
    expected[0, 1] = 0  # pixel frame 1
    expected[3, 3] = 0  # pixel frame 12, the last
    assert torch.equal(mask, expected)


def test_crop_resize_equals_native_for_images_of_another_size(vaes):
    vae = vaes["wan2.1"]
    start, end = frames(5, 40, 40, seed=3), frames(1, 24, 64, seed=4)
    latent = make_latent(vae, 48, 32, 13, start_image=start, end_image=end, resize="crop")
    _, native_cond = native_i2v(WanFirstLastFrameToVideo, vae, 48, 32, 13, start_image=start, end_image=end)
    assert_same_conditioning(latent[START_IMAGE_KEY], native_cond)


def test_i2v_single_image_is_stretched_as_the_release_does(vaes):
    vae = vaes["wan2.1"]
    image = gradient_image(24, 40)  # stretched to 48x32 (not cropped), bicubic, no clamp
    latent = make_latent(vae, 48, 32, 9, start_image=image)
    stretched = torch.nn.functional.interpolate(image.movedim(-1, 1), size=(32, 48), mode="bicubic").movedim(1, -1)
    video = torch.cat([stretched, torch.full((8, 32, 48, 3), 0.5)])
    torch.testing.assert_close(latent[START_IMAGE_KEY]["concat_latent_image"], vae.encode(video), atol=1e-6, rtol=0)


@pytest.mark.parametrize("start_frames", [1, 5])
def test_ti2v_start_frames_equal_native_wan22_image_to_video_latent(vaes, start_frames):
    vae = vaes["wan2.2"]
    start = frames(start_frames, 32, 64, seed=30 + start_frames)
    latent = make_latent(vae, 64, 32, 13, batch_size=2, start_image=start)
    native = Wan22ImageToVideoLatent.execute(vae=vae, width=64, height=32, length=13, batch_size=2,
                                             start_image=start).result[0]
    torch.testing.assert_close(latent["samples"], native["samples"], atol=0, rtol=0)
    torch.testing.assert_close(latent["noise_mask"], native["noise_mask"], atol=0, rtol=0)
    clean = 1 + (start_frames - 1) // 4
    assert latent["noise_mask"][:, :, :clean].eq(0).all() and latent["noise_mask"][:, :, clean:].eq(1).all()
    torch.testing.assert_close(latent["samples"][:1, :, :clean], vae.encode(start), atol=0, rtol=0)
    # Generated frames hold the latent the model sees as 0 (the latent format's mean), as native.
    normalised = comfy.latent_formats.Wan22().process_in(latent["samples"][:, :, clean:])
    assert normalised.abs().max() < 1e-6


def test_ti2v_single_image_is_scaled_to_cover_and_centre_cropped(vaes):
    vae = vaes["wan2.2"]
    image = gradient_image(64, 32)  # already covers 32x32: only the centre crop applies
    latent = make_latent(vae, 32, 32, 9, start_image=image)
    torch.testing.assert_close(latent["samples"][:, :, :1], vae.encode(image[:, 16:48]), atol=1e-6, rtol=0)


@pytest.mark.parametrize(("kind", "width", "height", "length", "message"), [
    ("wan2.1", 48, 32, 8, r"length: 8 frames.*4k\+1.*Use 5 or 9"),
    ("wan2.1", 40, 32, 9, r"40x32 is not a multiple of 16"),
    ("wan2.2", 48, 32, 9, r"48x32 is not a multiple of 32"),
])
def test_sizes_and_lengths_the_model_cannot_take(vaes, kind, width, height, length, message):
    with pytest.raises(WanUserError, match=message):
        make_latent(vaes[kind], width, height, length)


class TestBadFrames:
    def test_more_start_frames_than_the_video(self, vaes):
        with pytest.raises(WanUserError, match=r"start_image has 10 frames but the video is only 9 frames long"):
            make_latent(vaes["wan2.1"], 48, 32, 9, start_image=frames(10, 32, 48))

    def test_start_and_end_frames_that_overlap(self, vaes):
        with pytest.raises(WanUserError, match=r"start_image \(6 frames\) and end_image \(4 frames\).*9-frame"):
            make_latent(vaes["wan2.1"], 48, 32, 9, start_image=frames(6, 32, 48), end_image=frames(4, 32, 48))

    def test_a_batch_of_another_size_is_not_resized_unless_asked(self, vaes):
        with pytest.raises(WanUserError, match=r"start_image: 5 frames of 40x40.*48x32.*resize to 'crop' or 'stretch'"):
            make_latent(vaes["wan2.1"], 48, 32, 9, start_image=frames(5, 40, 40))
        # Said: they are resized.
        stretched = make_latent(vaes["wan2.1"], 48, 32, 9, start_image=frames(5, 40, 40), resize="stretch")
        assert stretched[START_IMAGE_KEY]["concat_latent_image"].shape == (1, 16, 3, 4, 6)

    def test_an_end_frame_for_ti2v(self, vaes):
        with pytest.raises(WanUserError, match=r"end_image: the TI2V-5B model cannot take an end frame.*I2V-A14B"):
            make_latent(vaes["wan2.2"], 64, 32, 9, start_image=frames(1, 32, 64), end_image=frames(1, 32, 64))

    def test_ti2v_start_frames_that_are_not_whole_latent_frames(self, vaes):
        with pytest.raises(WanUserError, match=r"start_image has 3 frames.*TI2V-5B.*1, 5, 9.*\(here 1 or 5\)"):
            make_latent(vaes["wan2.2"], 64, 32, 9, start_image=frames(3, 32, 64))

    def test_a_vae_that_is_not_wan(self, vaes):
        pixel_space = comfy.sd.VAE(sd={"pixel_space_vae": torch.tensor(1.0)})  # a real native VAE, 3 channels
        with pytest.raises(WanUserError, match=r"vae: a VAE with 3 latent channels.*not a Wan VAE"):
            make_latent(pixel_space, 48, 32, 9)


class TestLastFrames:
    """Wan22LastFrames: the tail of a clip, whatever its length (native ImageFromBatch counts from the front)."""

    def test_the_last_frames_of_clips_of_any_length(self):
        from comfyui_wan22.nodes.segments import Wan22LastFrames

        for length in (9, 81):
            clip = frames(length, 8, 8, seed=length)
            tail = Wan22LastFrames.execute(images=clip, frames=5).result[0]
            assert torch.equal(tail, clip[length - 5:])

    def test_more_frames_than_the_clip(self):
        from comfyui_wan22.nodes.segments import Wan22LastFrames

        with pytest.raises(WanUserError, match=r"frames: 10 frames asked, but the clip has only 9"):
            Wan22LastFrames.execute(images=frames(9, 8, 8), frames=10)
