"""Wan22VAELoader, Wan22VAEEncode, Wan22VAEDecode.

The VAE is a native ComfyUI VAE (the loader builds a comfy.sd.VAE around ComfyUI's own Wan
module), and encode/decode take any native Wan2.1/Wan2.2 VAE, native VAELoader's too. LATENT
follows ComfyUI's convention for Wan: `samples` [B, C, T, H, W] in the VAE's raw latent space, as
native VAEEncode returns, so native and pack VAE nodes are interchangeable.
"""

from __future__ import annotations

import logging

import comfy.utils
import folder_paths
import torch
from comfy_api.latest import io

from ..wan_core.comfy_bridge import vae_stream
from ..wan_core.comfy_bridge.vae_patcher import load_comfy_vae
from ..wan_core.errors import WanUserError
from ..wan_core.vae import image_batch_to_video

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
            outputs=[io.Vae.Output()],
        )

    @classmethod
    def execute(cls, vae_name) -> io.NodeOutput:
        path = folder_paths.get_full_path("vae", vae_name)
        if path is None:
            raise WanUserError(f"vae_name: {vae_name!r} is not in models/vae. Put the VAE file there and refresh.")
        vae = load_comfy_vae(path)
        kind = vae_stream.wan_vae_kind(vae)
        log.info("[ComfyUI-Wan22] %s: %s VAE (z%d, stride %s).", vae_name, kind.name, kind.z_dim,
                 "x".join(map(str, kind.stride)))
        return io.NodeOutput(vae)


class Wan22VAEEncode(io.ComfyNode):
    @classmethod
    def define_schema(cls):
        return io.Schema(
            node_id="Wan22VAEEncode",
            display_name="Wan2.2 VAE Encode",
            category="Wan2.2",
            description="Encodes an IMAGE batch (the frames of one video, 4k+1 of them) into a Wan video latent.",
            inputs=[io.Vae.Input("vae", tooltip="A Wan2.1 or Wan2.2 VAE (this pack's loader or native Load VAE)."),
                    io.Image.Input("pixels")],
            outputs=[io.Latent.Output()],
        )

    @classmethod
    def execute(cls, vae, pixels) -> io.NodeOutput:
        vae_stream.wan_config(vae, "vae")  # a clear error for a VAE that is not Wan, before any work
        video = image_batch_to_video(pixels, "pixels")
        return io.NodeOutput({"samples": vae_stream.encode(vae, video, tile=None)})


class Wan22VAEDecode(io.ComfyNode):
    @classmethod
    def define_schema(cls):
        return io.Schema(
            node_id="Wan22VAEDecode",
            display_name="Wan2.2 VAE Decode",
            category="Wan2.2",
            description=(
                "Decodes a Wan video latent one latent frame at a time (1 frame, then 4 per latent frame), "
                "the full-resolution stages one frame at a time: the same numbers as native VAE Decode in "
                "less memory. Whole frames unless they do not fit the free memory or exact_strips / "
                "tile_size is set. Exact strips (each strip through all frames, then freed) keep the same "
                "numbers in less memory and more time; tiles change the numbers slightly near seams. On "
                "out-of-memory it retries with more strips, then smaller tiles."
            ),
            inputs=[
                io.Vae.Input("vae", tooltip="A Wan2.1 or Wan2.2 VAE (this pack's loader or native Load VAE)."),
                io.Latent.Input("samples"),
                io.Int.Input("tile_size", default=0, min=0, max=8192, step=32, optional=True,
                             tooltip="Spatial tile in pixels (tiles change the numbers near seams). 0 = automatic: "
                                     "whole frames when they fit the free memory, else exact strips, else tiles."),
                io.Int.Input("tile_overlap", default=0, min=0, max=4096, step=16, optional=True,
                             tooltip="Overlap of neighbouring tiles in pixels. 0 = automatic (a quarter tile)."),
                io.Int.Input("exact_strips", default=0, min=0, max=16, optional=True,
                             tooltip="Decode in this many strips, each through the whole video, then freed: the "
                                     "same numbers as whole frames in less memory and more time (2 strips of a "
                                     "384 px frame: see docs/benchmarks.md). 0 = automatic: strips only when "
                                     "whole frames do not fit. Ignored when tile_size is set."),
            ],
            outputs=[io.Image.Output()],
        )

    @classmethod
    def execute(cls, vae, samples, tile_size=0, tile_overlap=0, exact_strips=0) -> io.NodeOutput:
        latent = samples.get("samples") if isinstance(samples, dict) else None
        if not isinstance(latent, torch.Tensor):
            raise WanUserError("samples: not a LATENT. Connect a sampler's or VAE encode's LATENT.")
        chunks = vae_stream.decode_iter(vae, latent, tile=tile_size or None, overlap=tile_overlap or None,
                                        strips=exact_strips)
        pbar = comfy.utils.ProgressBar(latent.shape[2])
        b, _, frames, _, _ = latent.shape
        video = None  # [B, T, H, W, 3], filled chunk by chunk (no list of chunks and no final copy)
        t = 0
        for chunk in chunks:
            if video is None:
                video = torch.empty(b, _pixel_frames(frames, vae), chunk.shape[3], chunk.shape[4], 3)
            n = chunk.shape[2]
            video[:, t : t + n] = chunk.permute(0, 2, 3, 4, 1)
            video[:, t : t + n].add_(1.0).mul_(0.5).clamp_(0.0, 1.0)
            t += n
            del chunk
            pbar.update(1)
        # ComfyUI's IMAGE is a flat batch of frames (as native VAEDecode gives for videos).
        return io.NodeOutput(video.reshape(-1, *video.shape[2:]))


def _pixel_frames(latent_frames: int, vae) -> int:
    stride_t = vae_stream.wan_vae_kind(vae).stride[0]
    return 1 + stride_t * (latent_frames - 1)


NODES = [Wan22VAELoader, Wan22VAEEncode, Wan22VAEDecode]
