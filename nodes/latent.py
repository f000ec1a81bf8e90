"""Wan22VideoLatent: the empty video latent, with the release's start-image conditioning."""

from __future__ import annotations

import logging

import comfy.model_management
import comfy.utils
import torch
from comfy_api.latest import io

from ..wan_core.comfy_bridge.vae_stream import encode, wan_vae_kind
from ..wan_core.vae import WAN21, check_frame_count, check_frame_size, image_batch_to_video
from .sampler import START_IMAGE_KEY

log = logging.getLogger("ComfyUI-Wan22")


class Wan22VideoLatent(io.ComfyNode):
    @classmethod
    def define_schema(cls):
        return io.Schema(
            node_id="Wan22VideoLatent",
            display_name="Wan2.2 Video Latent",
            category="Wan2.2",
            description=(
                "An empty latent for Wan2.2 sampling. With a start image: for the I2V-A14B experts (Wan2.1 "
                "VAE) the image is stretched to the size and encoded with grey frames after it, as the "
                "release's mask + image-latent conditioning; for TI2V-5B (Wan2.2 VAE) it is resized, "
                "centre-cropped and kept clean as the first latent frame."
            ),
            inputs=[
                io.Vae.Input("vae"),
                io.Int.Input("width", default=832, min=16, max=8192, step=16),
                io.Int.Input("height", default=480, min=16, max=8192, step=16),
                io.Int.Input("length", default=81, min=1, max=4097, step=4, tooltip="Frames: 4k+1."),
                io.Int.Input("batch_size", default=1, min=1, max=64),
                io.Image.Input("start_image", optional=True),
            ],
            outputs=[io.Latent.Output()],
        )

    @classmethod
    def execute(cls, vae, width, height, length, batch_size, start_image=None) -> io.NodeOutput:
        model = wan_vae_kind(vae, "vae")  # z_dim, stride, name of a native Wan VAE (else a clear error)
        check_frame_count(length, "length")
        stride_t, stride_s, _ = model.stride
        # The DiT patches 2x2 latent cells, so the size must be a multiple of twice the VAE stride.
        check_frame_size(height, width, stride_s * 2, "width/height", model.name)
        shape = [batch_size, model.z_dim, (length - 1) // stride_t + 1, height // stride_s, width // stride_s]
        latent = torch.zeros(shape, device=comfy.model_management.intermediate_device())
        out = {"samples": latent}
        if start_image is None:
            return io.NodeOutput(out)
        if start_image.shape[0] > 1:
            log.info("[ComfyUI-Wan22] start_image: %d images given, the first is used.", start_image.shape[0])
        first = start_image[:1]
        if model.name == WAN21.name:
            out[START_IMAGE_KEY] = i2v_conditioning(vae, first, width, height, length, shape)
        else:
            out.update(ti2v_first_frame(vae, first, width, height, latent))
        return io.NodeOutput(out)


NODES = [Wan22VideoLatent]


def i2v_conditioning(vae, image, width, height, length, shape) -> dict:
    """I2V-A14B: [image stretched to size, then mid-grey frames] encoded; mask on frame 0."""
    image = comfy.utils.common_upscale(image.movedim(-1, 1), width, height, "bicubic", "disabled").movedim(1, -1)
    video = image_batch_to_video(image, "start_image")  # [1, 3, 1, H, W] in [-1, 1]
    grey = torch.zeros(1, 3, length - 1, height, width)  # 0 in [-1, 1] is mid-grey
    image_latent = encode(vae, torch.cat([video, grey], dim=2))
    # ComfyUI's convention (as native WanImageToVideo): 0 where the image is known; the model
    # inverts it into the release's mask channels (1 on latent frame 0).
    mask = torch.ones(1, 1, shape[2], shape[3], shape[4])
    mask[:, :, :1] = 0.0
    return {"concat_latent_image": image_latent, "concat_mask": mask}


def ti2v_first_frame(vae, image, width, height, latent) -> dict:
    """TI2V-5B: the image resized to cover the size, centre-cropped, encoded as one frame; that
    latent frame stays clean (timestep 0 on its tokens) through sampling via the noise mask."""
    image = comfy.utils.common_upscale(image.movedim(-1, 1), width, height, "bicubic", "center").movedim(1, -1)
    first = encode(vae, image_batch_to_video(image, "start_image"))  # [1, z, 1, h, w]
    latent[:, :, :1] = first.to(latent)
    mask = torch.ones(1, 1, latent.shape[2], latent.shape[3], latent.shape[4])
    mask[:, :, :1] = 0.0
    return {"samples": latent, "noise_mask": mask, START_IMAGE_KEY: {"first_frame": True}}
