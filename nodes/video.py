"""Wan22VideoCombine: frames, or a latent decoded chunk by chunk, -> a video file in ComfyUI's
output (or temp) folder with ComfyUI's counter naming, a native VIDEO, and a preview the
frontend plays. The encoding itself is wan_core.video."""

from __future__ import annotations

import logging
import math
import os
import re
from collections.abc import Iterator
from pathlib import Path

import comfy.model_management
import comfy.utils
import folder_paths
import torch
from comfy.cli_args import args
from comfy_api.latest import InputImpl, io, ui

from ..wan_core.comfy_bridge import vae_stream
from ..wan_core.config import KIND_DEFAULTS, ModelKind
from ..wan_core.errors import WanUserError
from ..wan_core.video import (
    CRF_MAX,
    CRF_MIN,
    DEFAULT_CRF,
    DEFAULT_FORMAT,
    FORMATS,
    IMAGE_CHUNK,
    VideoWriter,
    check_format,
    check_frame_rate,
    iter_image_chunks,
)

log = logging.getLogger("ComfyUI-Wan22")

# The frontend plays mp4/webm in a <video> and animates webp in an <img> when told "animated";
# a gif given to the <video> would not play, so it goes as a plain image.
_NOT_ANIMATED_IN_UI = {"gif"}


def check_filename_prefix(prefix: str) -> str:
    """A prefix relative to the output folder: no absolute path, no `..`, not empty."""
    if not isinstance(prefix, str) or not prefix.strip():
        raise WanUserError("filename_prefix is empty: give a name such as 'Wan2.2/video'.")
    if os.path.isabs(prefix) or prefix.startswith(("/", "\\")) or re.match(r"^[A-Za-z]:", prefix):
        raise WanUserError(
            f"filename_prefix {prefix!r} is an absolute path: give a name relative to ComfyUI's output "
            "folder, such as 'Wan2.2/video'."
        )
    if ".." in re.split(r"[\\/]", prefix):
        raise WanUserError(
            f"filename_prefix {prefix!r} contains '..': files stay inside ComfyUI's output folder, so use "
            "a plain name or subfolder such as 'Wan2.2/video'."
        )
    return prefix


def _latent_videos(samples: dict, vae) -> tuple[int, int, Iterator[list[torch.Tensor]]]:
    """(videos in the batch, progress steps, iterator of per-video frame chunks [t, H, W, 3] in 0..1)."""
    latent = samples.get("samples") if isinstance(samples, dict) else None
    if not isinstance(latent, torch.Tensor) or latent.ndim != 5:
        shape = tuple(latent.shape) if isinstance(latent, torch.Tensor) else None
        raise WanUserError(f"samples must be a video latent [batch, channels, frames, h, w], got {shape}: "
                           "connect the Wan2.2 sampler's LATENT.")
    pixel_chunks = vae_stream.decode_iter(vae, latent)  # checks vae and samples before any file exists

    def chunks():
        for pixels in pixel_chunks:  # [B, 3, t, H, W] in [-1, 1], one latent frame's worth
            frames = ((pixels.float() + 1) / 2).clamp(0, 1).permute(0, 2, 3, 4, 1)
            yield list(frames)  # one [t, H, W, 3] per video
            del pixels, frames  # not kept alive while the next latent frame decodes

    return latent.shape[0], latent.shape[2], chunks()


def _image_videos(images: torch.Tensor) -> tuple[int, int, Iterator[list[torch.Tensor]]]:
    if not isinstance(images, torch.Tensor) or images.ndim != 4 or images.shape[-1] != 3:
        shape = tuple(images.shape) if isinstance(images, torch.Tensor) else type(images).__name__
        raise WanUserError(f"images must be an IMAGE batch [frames, height, width, 3], got {shape}.")
    if images.shape[0] == 0:
        raise WanUserError("images has zero frames: nothing to put in a video.")
    return 1, math.ceil(images.shape[0] / IMAGE_CHUNK), ([c] for c in iter_image_chunks(images))


def _write_chunk(writers: list[VideoWriter], chunk: list[torch.Tensor]) -> None:
    for writer, frames in zip(writers, chunk):
        writer.write(frames)


class Wan22VideoCombine(io.ComfyNode):
    @classmethod
    def define_schema(cls):
        return io.Schema(
            node_id="Wan22VideoCombine",
            display_name="Wan2.2 Video Combine",
            category="Wan2.2",
            description=(
                "Encodes frames into a video file as they come: IMAGE frames, or a Wan2.2 latent decoded by "
                "the VAE one latent frame at a time, so the whole video is never held in memory. Writes the "
                "prompt and workflow into the file (drop it on ComfyUI to get the graph back)."
            ),
            inputs=[
                io.Float.Input("frame_rate", default=float(KIND_DEFAULTS[ModelKind.T2V].fps), min=0.0, max=240.0,
                               step=1.0, tooltip="Frames per second (A14B releases: 16, TI2V-5B: 24)."),
                io.String.Input("filename_prefix", default="Wan2.2/video",
                                tooltip="Name (and subfolders) under ComfyUI's output folder; a counter is added."),
                io.Combo.Input("format", options=list(FORMATS), default=DEFAULT_FORMAT),
                io.Int.Input("crf", default=DEFAULT_CRF, min=CRF_MIN, max=CRF_MAX,
                             tooltip="Quality, lower is better: h264/h265 use 0-51, vp9/av1 0-63, "
                                     "webp quality = 100 - crf; gif ignores it."),
                io.Boolean.Input("save_output", default=True,
                                 tooltip="On: ComfyUI's output folder. Off: the temp folder (a preview)."),
                io.Image.Input("images", optional=True, tooltip="Frames to encode; or give samples + vae."),
                io.Latent.Input("samples", optional=True, tooltip="A video latent, decoded chunk by chunk by vae."),
                io.Vae.Input("vae", optional=True,
                             tooltip="A Wan2.1 or Wan2.2 VAE (this pack's loader or native Load VAE)."),
                io.Audio.Input("audio", optional=True,
                               tooltip="Muxed in (aac in mp4, opus in webm), trimmed or padded to the video."),
            ],
            outputs=[io.Video.Output()],
            hidden=[io.Hidden.prompt, io.Hidden.extra_pnginfo],
            is_output_node=True,
        )

    @classmethod
    def execute(cls, frame_rate, filename_prefix, format, crf, save_output, images=None, samples=None, vae=None,
                audio=None) -> io.NodeOutput:
        # Everything the user can get wrong is checked before any file exists.
        spec = check_format(format)
        check_frame_rate(frame_rate)
        prefix = check_filename_prefix(filename_prefix)
        if images is not None and samples is not None:
            raise WanUserError("connect either images or samples (+ vae), not both.")
        if images is not None:
            count, steps, videos = _image_videos(images)
        elif samples is not None:
            if vae is None:
                raise WanUserError("samples need a vae to decode them: connect the Wan2.2 VAE.")
            count, steps, videos = _latent_videos(samples, vae)
        else:
            raise WanUserError("nothing to encode: connect images, or samples and a vae.")

        first = next(videos, None)  # the size is known once the first frames exist
        if first is None or first[0].shape[0] == 0:
            raise WanUserError("the input has zero frames: nothing to put in a video.")
        height, width = first[0].shape[1:3]

        folder_type = io.FolderType.output if save_output else io.FolderType.temp
        root = folder_paths.get_output_directory() if save_output else folder_paths.get_temp_directory()
        folder, name, counter, subfolder, _ = folder_paths.get_save_image_path(prefix, root, width, height)
        files = [f"{name}_{counter + i:05}_.{spec.extension}" for i in range(count)]
        writers = [
            VideoWriter(Path(folder) / f, frame_rate=frame_rate, format=format, crf=crf,
                        metadata=cls._metadata(), audio=audio)
            for f in files
        ]
        progress = comfy.utils.ProgressBar(steps)
        try:
            chunk, first = first, None
            while chunk is not None:
                _write_chunk(writers, chunk)
                chunk = None  # freed before the next chunk is decoded
                progress.update(1)
                comfy.model_management.throw_exception_if_processing_interrupted()
                chunk = next(videos, None)
            infos = [w.finish() for w in writers]
        except BaseException:
            for writer in writers:
                writer.abort()
            raise
        for info in infos:
            log.info("Wan22VideoCombine: %s (%d frames, %dx%d, %s fps, %s)", info.path, info.frames, info.width,
                     info.height, info.frame_rate, info.format)
        results = [ui.SavedResult(f, subfolder, folder_type) for f in files]
        preview = ui.SavedImages(results, is_animated=spec.name not in _NOT_ANIMATED_IN_UI)
        return io.NodeOutput(InputImpl.VideoFromFile(str(infos[0].path)), ui=preview)

    @classmethod
    def _metadata(cls) -> dict | None:
        """The prompt and the UI workflow, as ComfyUI's SaveVideo writes them (unless disabled)."""
        if args.disable_metadata:
            return None
        metadata = dict(cls.hidden.extra_pnginfo or {})
        if cls.hidden.prompt is not None:
            metadata["prompt"] = cls.hidden.prompt
        return metadata or None


NODES = [Wan22VideoCombine]
