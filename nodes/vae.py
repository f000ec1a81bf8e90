"""Wan22VAELoader, Wan22VAEEncode, Wan22VAEDecode.

LATENT follows ComfyUI's convention for Wan: `samples` [B, C, T, H, W] in the VAE's raw latent
space, as native VAEEncode returns, so native and pack VAE nodes are interchangeable.
"""

from __future__ import annotations

import logging

import comfy.utils
import folder_paths
import torch
from comfy_api.latest import io

from ..wan_core.comfy_bridge.vae_patcher import load_comfy_vae
from ..wan_core.errors import WanUserError
from ..wan_core.vae import check_latent, check_pixels, image_batch_to_video
from .types import Wan22Vae

log = logging.getLogger("ComfyUI-Wan22")


class Wan22VAELoader(io.ComfyNode):
    @classmethod
    def define_schema(cls):
        return io.Schema(
            node_id="Wan22VAELoader",
            display_name="Wan2.2 VAE Loader",
            category="Wan2.2",
            description=(
                "Loads a Wan2.1 VAE (z16, for the A14B experts) or Wan2.2 VAE (z48, for TI2V-5B) from "
                "models/vae: official .pth, ComfyUI .safetensors, or a diffusers folder. The kind is read "
                "from the weights."
            ),
            inputs=[io.Combo.Input("vae_name", options=folder_paths.get_filename_list("vae"))],
            outputs=[Wan22Vae.Output()],
        )

    @classmethod
    def execute(cls, vae_name) -> io.NodeOutput:
        path = folder_paths.get_full_path("vae", vae_name)
        if path is None:
            raise WanUserError(f"vae_name: {vae_name!r} is not in models/vae. Put the VAE file there and refresh.")
        vae = load_comfy_vae(path)
        log.info("[ComfyUI-Wan22] %s: %s VAE (z%d, stride %s).", vae_name, vae.kind, vae.model.z_dim,
                 "x".join(map(str, vae.model.stride)))
        return io.NodeOutput(vae)


class Wan22VAEEncode(io.ComfyNode):
    @classmethod
    def define_schema(cls):
        return io.Schema(
            node_id="Wan22VAEEncode",
            display_name="Wan2.2 VAE Encode",
            category="Wan2.2",
            description="Encodes an IMAGE batch (the frames of one video, 4k+1 of them) into a Wan video latent.",
            inputs=[Wan22Vae.Input("vae"), io.Image.Input("pixels")],
            outputs=[io.Latent.Output()],
        )

    @classmethod
    def execute(cls, vae, pixels) -> io.NodeOutput:
        video = image_batch_to_video(pixels, "pixels")
        check_pixels(video, vae.model.stride, vae.kind, "pixels")
        return io.NodeOutput({"samples": vae.encode(video, tile=None)})


class Wan22VAEDecode(io.ComfyNode):
    @classmethod
    def define_schema(cls):
        return io.Schema(
            node_id="Wan22VAEDecode",
            display_name="Wan2.2 VAE Decode",
            category="Wan2.2",
            description=(
                "Decodes a Wan video latent one latent frame at a time (1 frame, then 4 per latent frame), "
                "in spatial tiles sized to the free memory unless tile_size is set; on out-of-memory it "
                "retries with smaller tiles."
            ),
            inputs=[
                Wan22Vae.Input("vae"),
                io.Latent.Input("samples"),
                io.Int.Input("tile_size", default=0, min=0, max=8192, step=32, optional=True,
                             tooltip="Spatial tile in pixels. 0 = automatic (from free memory)."),
                io.Int.Input("tile_overlap", default=0, min=0, max=4096, step=16, optional=True,
                             tooltip="Overlap of neighbouring tiles in pixels. 0 = automatic (a quarter tile)."),
            ],
            outputs=[io.Image.Output()],
        )

    @classmethod
    def execute(cls, vae, samples, tile_size=0, tile_overlap=0) -> io.NodeOutput:
        latent = samples.get("samples") if isinstance(samples, dict) else None
        if not isinstance(latent, torch.Tensor):
            raise WanUserError("samples: not a LATENT. Connect a sampler's or VAE encode's LATENT.")
        check_latent(latent, vae.model.z_dim, vae.kind, "samples")
        pbar = comfy.utils.ProgressBar(latent.shape[2])
        frames = []
        for chunk in vae.decode_iter(latent, tile=tile_size or None, overlap=tile_overlap or None):
            frames.append(((chunk + 1.0) / 2.0).clamp_(0.0, 1.0).permute(0, 2, 3, 4, 1))  # [B, t, H, W, 3]
            pbar.update(1)
        video = torch.cat(frames, dim=1)
        # ComfyUI's IMAGE is a flat batch of frames (as native VAEDecode gives for videos).
        return io.NodeOutput(video.reshape(-1, *video.shape[2:]))


NODES = [Wan22VAELoader, Wan22VAEEncode, Wan22VAEDecode]
