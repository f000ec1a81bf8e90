"""Wan22VideoLatent: the empty video latent, with the release's image conditioning from start
frames (one image or a batch of frames) and, for I2V-A14B, end frames.

Encodes through the native VAE API (`vae.encode(frames [F, H, W, C] in 0..1)`), as native
WanImageToVideo / WanFirstLastFrameToVideo / Wan22ImageToVideoLatent do, so any native Wan VAE
works and the conditioning equals native's for the same images.
"""

from __future__ import annotations

import comfy.latent_formats
import comfy.model_management
import comfy.utils
import torch
from comfy_api.latest import io

from ..wan_core.errors import WanUserError
from ..wan_core.frame_conditioning import check_given_frames, i2v_concat_mask, latent_frame_count
from ..wan_core.vae import VAE_KINDS, WAN21, check_frame_count, check_frame_size
from .sampler import START_IMAGE_KEY

# How images of another size than the video are fitted (the combo's options, in order).
RESIZE_RELEASE, RESIZE_CROP, RESIZE_STRETCH = "release", "crop", "stretch"
RESIZE_MODES = [RESIZE_RELEASE, RESIZE_CROP, RESIZE_STRETCH]


class Wan22VideoLatent(io.ComfyNode):
    @classmethod
    def define_schema(cls):
        return io.Schema(
            node_id="Wan22VideoLatent",
            display_name="Wan2.2 Video Latent",
            category="Wan2.2",
            description=(
                "An empty latent for Wan2.2 sampling, with optional image conditioning. I2V-A14B (Wan2.1 VAE): "
                "start_image frames open the video and end_image frames close it, grey between, encoded with "
                "the release's mask (first-last-frame video, or continuing a clip from its last frames). "
                "TI2V-5B (Wan2.2 VAE): start_image frames are kept clean as the first latent frames."
            ),
            inputs=[
                io.Vae.Input("vae", tooltip="A Wan2.1 VAE (A14B experts) or Wan2.2 VAE (TI2V-5B), from any VAE loader."),
                io.Int.Input("width", default=832, min=16, max=8192, step=16),
                io.Int.Input("height", default=480, min=16, max=8192, step=16),
                io.Int.Input("length", default=81, min=1, max=4097, step=4, tooltip="Frames: 4k+1."),
                io.Int.Input("batch_size", default=1, min=1, max=64),
                io.Combo.Input(
                    "resize", options=RESIZE_MODES, default=RESIZE_RELEASE, optional=True,
                    tooltip="Images of another size than width x height. release: a single image is fitted as the "
                    "release does (A14B: stretched, 5B: scaled to cover and centre-cropped); a batch of several "
                    "frames must already have the video's size. crop: every image scaled to cover and centre-"
                    "cropped (as native WanImageToVideo). stretch: every image stretched to the size.",
                ),
                io.Image.Input("start_image", optional=True,
                               tooltip="One image, or a batch of N frames that open the video (e.g. the last "
                               "frames of a previous clip)."),
                io.Image.Input("end_image", optional=True,
                               tooltip="I2V-A14B only: one image (or a batch of frames) that closes the video."),
            ],
            outputs=[io.Latent.Output()],
        )

    @classmethod
    def execute(cls, vae, width, height, length, batch_size, resize=RESIZE_RELEASE, start_image=None,
                end_image=None) -> io.NodeOutput:
        kind = wan_vae_kind(vae)
        check_frame_count(length, "length")
        stride_t, stride_s, _ = kind.stride
        # The DiT patches 2x2 latent cells, so the size must be a multiple of twice the VAE stride.
        check_frame_size(height, width, stride_s * 2, "width/height", kind.name)
        shape = [batch_size, kind.z_dim, latent_frame_count(length), height // stride_s, width // stride_s]
        latent = torch.zeros(shape, device=comfy.model_management.intermediate_device())
        if start_image is None and end_image is None:
            return io.NodeOutput({"samples": latent})

        start = fit_frames(start_image, "start_image", width, height, resize, kind)
        end = fit_frames(end_image, "end_image", width, height, resize, kind)
        n_start = 0 if start is None else start.shape[0]
        n_end = 0 if end is None else end.shape[0]
        check_given_frames(length, n_start, n_end, "i2v" if kind is WAN21 else "ti2v")
        if kind is WAN21:
            out = {"samples": latent, START_IMAGE_KEY: i2v_conditioning(vae, start, end, length, shape)}
        else:
            out = ti2v_clean_frames(vae, start, shape)
        return io.NodeOutput(out)


NODES = [Wan22VideoLatent]


def wan_vae_kind(vae):
    """The Wan VAE kind of a native VAE, from its latent channels and spatial compression: read
    through the VAE API only, as native's Wan latent nodes use it, so any VAE they accept passes
    (vae_stream.wan_config, by contrast, needs ComfyUI's Wan modules to stream through them)."""
    channels = getattr(vae, "latent_channels", None)
    spatial = vae.spacial_compression_encode() if hasattr(vae, "spacial_compression_encode") else None
    for kind in VAE_KINDS.values():
        if getattr(vae, "latent_dim", 3) == 3 and channels == kind.z_dim and spatial == kind.stride[1]:
            return kind
    raise WanUserError(
        f"vae: a VAE with {channels} latent channels and {spatial}x spatial compression is not a Wan VAE. Load the "
        f"Wan2.1 VAE (wan_2.1_vae.safetensors) for the A14B experts or the Wan2.2 VAE (wan2.2_vae.safetensors) for "
        f"TI2V-5B."
    )


def rgb(images: torch.Tensor, name: str) -> torch.Tensor:
    """An IMAGE batch [frames, H, W, C] as float32 RGB (alpha dropped, gray repeated)."""
    if images.ndim != 4:
        raise WanUserError(
            f"{name}: an image shaped {list(images.shape)}, but an IMAGE batch is [frames, height, width, channels]: "
            f"connect a Load Image (or image batch) output."
        )
    channels = images.shape[-1]
    if channels in (3, 4):
        return images[..., :3].float()
    if channels in (1, 2):
        return images[..., :1].expand(*images.shape[:-1], 3).float()
    raise WanUserError(f"{name}: images with {channels} channels; give RGB images.")


def fit_frames(images, name: str, width: int, height: int, resize: str, kind) -> torch.Tensor | None:
    """The images at the video's size, per the `resize` widget; None stays None."""
    if images is None:
        return None
    images = rgb(images, name)
    frames, h, w = images.shape[:3]
    if (h, w) == (height, width):
        return images
    if resize == RESIZE_RELEASE:
        if frames > 1:
            raise WanUserError(
                f"{name}: {frames} frames of {w}x{h}, but the video is {width}x{height}. Frames of a clip are "
                f"not resized unless you say how: set resize to 'crop' or 'stretch', or resize them first."
            )
        # The release: I2V-A14B stretches its image (bicubic); TI2V-5B scales it to cover and crops the centre.
        method, crop = "bicubic", ("disabled" if kind is WAN21 else "center")
    elif resize == RESIZE_CROP:
        method, crop = "bilinear", "center"  # as the native Wan image-to-video nodes
    elif resize == RESIZE_STRETCH:
        method, crop = "bicubic", "disabled"
    else:
        raise WanUserError(f"resize: {resize!r} is not one of {RESIZE_MODES}.")
    return comfy.utils.common_upscale(images.movedim(-1, 1), width, height, method, crop).movedim(1, -1)


def i2v_conditioning(vae, start, end, length: int, shape) -> dict:
    """I2V-A14B: the video with its given frames in place and mid-grey between, encoded, and the
    mask marking the given frames (native's `concat_latent_image` / `concat_mask`)."""
    given = start if start is not None else end
    frames = torch.full((length, *given.shape[1:]), 0.5)  # 0.5 is mid-grey (0 in the VAE's [-1, 1])
    n_start = 0 if start is None else start.shape[0]
    n_end = 0 if end is None else end.shape[0]
    if n_start:
        frames[:n_start] = start
    if n_end:
        frames[length - n_end:] = end
    image_latent = vae.encode(frames)
    mask = i2v_concat_mask(length, n_start, n_end, shape[3], shape[4])
    return {"concat_latent_image": image_latent, "concat_mask": mask}


def ti2v_clean_frames(vae, start, shape) -> dict:
    """TI2V-5B: the start frames encoded into the first latent frames, which the noise mask keeps
    clean (timestep 0 on their tokens). The other frames hold the latent whose normalised value is
    0, as native Wan22ImageToVideoLatent leaves them."""
    batch, _, frames, h, w = shape
    given = vae.encode(start)  # [1, z, k, h, w]: k = 1 + (start frames - 1) / 4
    clean = given.shape[2]
    device = comfy.model_management.intermediate_device()
    latent = comfy.latent_formats.Wan22().process_out(torch.zeros(1, *shape[1:], device=device))
    latent[:, :, :clean] = given.to(latent)
    mask = torch.ones(1, 1, frames, h, w, device=device)
    mask[:, :, :clean] = 0.0
    return {
        "samples": latent.repeat(batch, 1, 1, 1, 1),
        "noise_mask": mask.repeat(batch, 1, 1, 1, 1),
        START_IMAGE_KEY: {"clean_latent_frames": clean},
    }
