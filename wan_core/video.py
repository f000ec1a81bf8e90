"""Frames -> a finished video file, streamed through PyAV.

Frames arrive chunk by chunk (a VAE decodes one latent frame at a time) and are encoded as they
come, so nobody holds the whole video. The file is written under a hidden temporary name beside
its final name and renamed only when complete; any error deletes it, so nothing half-written
ever looks finished.

Colour: the video codecs get yuv420p converted with the BT.709 matrix into limited (tv) range,
and the stream is tagged BT.709 primaries / transfer / matrix, limited range, so players do not
guess. WebP's lossy format is defined on BT.601 limited range, so it gets that matrix. 4:2:0 needs
even sizes for h264/h265/vp9/av1: odd sizes are padded by one edge-copied row or column (never
cropped: no pixel of the input is lost), and the log says so.

Metadata: the prompt and workflow go into the container the way ComfyUI's SaveVideo does (mp4
`use_metadata_tags` keys, Matroska tags for webm; WebP gets ComfyUI's EXIF strings), which is
where the ComfyUI frontend looks when a file is dropped on it.
"""

from __future__ import annotations

import json
import logging
import math
import os
import struct
from collections.abc import Iterable
from dataclasses import dataclass, field
from fractions import Fraction
from pathlib import Path
from typing import Any

import av
import numpy as np
import torch
from av.video.reformatter import ColorPrimaries, ColorRange, Colorspace, ColorTrc

from .errors import WanUserError

log = logging.getLogger(__name__)

CRF_MIN, CRF_MAX = 0, 63
DEFAULT_CRF = 19
DEFAULT_FORMAT = "h264-mp4"
# Frames converted to uint8 at a time when a whole IMAGE batch is given (bounds the extra memory).
IMAGE_CHUNK = 16


@dataclass(frozen=True)
class VideoFormat:
    name: str
    extension: str
    muxer: str  # FFmpeg container format
    codec: str  # FFmpeg encoder
    pix_fmt: str
    audio_codec: str | None  # None: the container carries no audio
    matrix: Colorspace | None  # RGB -> YUV matrix; None for palette formats
    even_size: bool  # the encoder needs even width and height (4:2:0)
    options: dict[str, str] = field(default_factory=dict)  # fixed encoder options
    mime: str = ""
    min_width: int = 1


FORMATS: dict[str, VideoFormat] = {
    f.name: f
    for f in (
        VideoFormat("h264-mp4", "mp4", "mp4", "libx264", "yuv420p", "aac", Colorspace.ITU709, True,
                    {"preset": "medium"}, "video/mp4"),
        VideoFormat("h265-mp4", "mp4", "mp4", "libx265", "yuv420p", "aac", Colorspace.ITU709, True,
                    # hvc1 is the tag Apple players and browsers accept for HEVC in mp4.
                    {"preset": "medium", "x265-params": "log-level=error", "tag": "hvc1"}, "video/mp4",
                    # The libx265 of PyAV's wheel corrupts the heap on widths of 34..48 (found by
                    # encoding twice in one process); one 64-pixel CTU wide is safe.
                    min_width=64),
        VideoFormat("vp9-webm", "webm", "webm", "libvpx-vp9", "yuv420p", "libopus", Colorspace.ITU709, True,
                    # b=0 makes crf a constant-quality target instead of a cap on a bitrate.
                    {"b": "0", "deadline": "good", "cpu-used": "4", "row-mt": "1"}, "video/webm"),
        VideoFormat("av1-webm", "webm", "webm", "libsvtav1", "yuv420p", "libopus", Colorspace.ITU709, True,
                    {"preset": "8"}, "video/webm"),
        VideoFormat("gif", "gif", "gif", "gif", "pal8", None, None, False, {}, "image/gif"),
        VideoFormat("webp", "webp", "webp", "libwebp_anim", "yuv420p", None, Colorspace.ITU601, False,
                    {"lossless": "0"}, "image/webp"),
    )
}

# The muxer's flags that keep custom keys (prompt, workflow) and put the index first, so the
# frontend finds the metadata and browsers start playing before the whole file is loaded.
_MP4_OPTIONS = {"movflags": "use_metadata_tags+faststart"}


def available_formats() -> list[str]:
    """The formats whose encoders this PyAV build has."""
    have = av.codecs_available
    return [f.name for f in FORMATS.values() if f.codec in have and (f.audio_codec or "aac") in have]


def check_format(name: str) -> VideoFormat:
    spec = FORMATS.get(name)
    if spec is None:
        raise WanUserError(f"format {name!r} is not one of {', '.join(FORMATS)}: pick one of those.")
    if spec.codec not in av.codecs_available:
        raise WanUserError(
            f"format {name!r} needs the {spec.codec} encoder, which this PyAV build (FFmpeg "
            f"{av.ffmpeg_version_info}) lacks. Available here: {', '.join(available_formats())}."
        )
    return spec


def check_frame_rate(frame_rate: float) -> Fraction:
    """A positive, finite frame rate as the exact fraction the container stores."""
    try:
        value = float(frame_rate)
    except (TypeError, ValueError):
        raise WanUserError(f"frame_rate {frame_rate!r} is not a number: give frames per second, e.g. 16.") from None
    if not math.isfinite(value) or value <= 0:
        raise WanUserError(f"frame_rate is {frame_rate}: it must be a positive number of frames per second, e.g. 16.")
    # NTSC-style rates are typed rounded (23.976, 29.97) but mean n*1000/1001 exactly.
    ntsc = round(value * 1.001)
    if value != int(value) and abs(value - ntsc * 1000 / 1001) < 5e-4:
        return Fraction(ntsc * 1000, 1001)
    return Fraction(value).limit_denominator(1000)


def check_crf(crf: int) -> int:
    if isinstance(crf, bool) or not isinstance(crf, (int, np.integer)) or not CRF_MIN <= crf <= CRF_MAX:
        raise WanUserError(f"crf is {crf!r}: it must be a whole number from {CRF_MIN} (best) to {CRF_MAX}.")
    return int(crf)


def encoder_options(spec: VideoFormat, crf: int) -> dict[str, str]:
    """Fixed options of the format plus what `crf` means for its encoder."""
    options = dict(spec.options)
    if spec.codec in ("libx264", "libx265"):
        options["crf"] = str(min(crf, 51))  # x264/x265 stop at 51
    elif spec.codec == "libvpx-vp9":
        options["crf"] = str(crf)
    elif spec.codec == "libsvtav1":
        options["crf"] = str(max(crf, 1))  # SVT-AV1 starts at 1
    elif spec.codec == "libwebp_anim":
        options["quality"] = str(100 - crf)  # libwebp: 0..100, higher is better
    return options  # gif: a palette per frame, nothing to tune


# --- audio -----------------------------------------------------------------------------------


@dataclass(frozen=True)
class AudioTrack:
    """One clip of audio: float32 samples [channels, samples] at `sample_rate`."""

    samples: np.ndarray
    sample_rate: int

    @classmethod
    def from_comfy(cls, audio: Any) -> AudioTrack:
        """From ComfyUI's AUDIO dict {"waveform": [B, C, S], "sample_rate": int}; batch item 0."""
        if not isinstance(audio, dict) or "waveform" not in audio or "sample_rate" not in audio:
            raise WanUserError("audio must be a ComfyUI AUDIO (a dict with 'waveform' and 'sample_rate'): "
                               "connect a native audio node such as LoadAudio.")
        waveform = torch.as_tensor(audio["waveform"])
        if waveform.ndim == 2:
            waveform = waveform.unsqueeze(0)
        if waveform.ndim != 3 or waveform.shape[0] < 1:
            raise WanUserError(f"audio waveform has shape {tuple(waveform.shape)}: expected [batch, channels, samples].")
        if waveform.shape[0] > 1:
            log.warning("audio has a batch of %d clips: muxing the first one", waveform.shape[0])
        channels = waveform.shape[1]
        if channels not in (1, 2):
            raise WanUserError(f"audio has {channels} channels: the video gets mono or stereo, so mix it down first.")
        rate = int(audio["sample_rate"])
        if rate <= 0:
            raise WanUserError(f"audio sample_rate is {audio['sample_rate']}: it must be positive.")
        samples = waveform[0].detach().to("cpu", torch.float32).contiguous().numpy()
        return cls(samples, rate)

    @property
    def layout(self) -> str:
        return "mono" if self.samples.shape[0] == 1 else "stereo"

    def segment(self, start: int, stop: int) -> np.ndarray:
        """Samples [start, stop), zero-padded past the end of the clip (silence)."""
        out = np.zeros((self.samples.shape[0], stop - start), np.float32)
        have = self.samples[:, start:stop]
        out[:, : have.shape[1]] = have
        return out


def _encoder_rate(codec: str, wanted: int) -> int:
    """The clip's own rate when the encoder takes it, else 48 kHz (PyAV resamples the frames)."""
    rates = av.codec.Codec(codec, "w").audio_rates
    return wanted if not rates or wanted in rates else 48000


# --- frames ----------------------------------------------------------------------------------


def frames_to_uint8(frames: torch.Tensor | np.ndarray) -> np.ndarray:
    """[n, H, W, 3] (or one [H, W, 3]) floats in 0..1 or uint8 -> uint8 numpy [n, H, W, 3]."""
    if isinstance(frames, np.ndarray):
        frames = torch.from_numpy(frames)
    if frames.ndim == 3:
        frames = frames.unsqueeze(0)
    if frames.ndim != 4 or frames.shape[-1] != 3:
        raise WanUserError(f"frames have shape {tuple(frames.shape)}: expected images [frames, height, width, 3].")
    if frames.dtype == torch.uint8:
        return frames.cpu().numpy()
    # Round, not truncate: truncation darkens every pixel by half a level on average.
    return (frames.detach().float().clamp(0, 1) * 255).round().to("cpu", torch.uint8).numpy()


def iter_image_chunks(images: torch.Tensor, chunk: int = IMAGE_CHUNK) -> Iterable[torch.Tensor]:
    """An IMAGE batch as views of `chunk` frames (no copy of the batch)."""
    return images.split(chunk) if images.shape[0] else iter(())


def _pal8_frame(rgb: np.ndarray) -> av.VideoFrame:
    """A palette frame for GIF with its own 256-colour palette (a fixed 3-3-2 palette bands badly).
    Fast octree: 832x480 frames quantise ~10x faster than median cut for ~3 dB less."""
    from PIL import Image

    image = Image.fromarray(rgb).quantize(256, method=Image.Quantize.FASTOCTREE)
    palette = np.zeros((256, 4), np.uint8)
    rgb_palette = np.asarray(image.getpalette()[: 256 * 3], np.uint8).reshape(-1, 3)
    palette[: len(rgb_palette), 1:] = rgb_palette
    palette[:, 0] = 255  # ARGB, opaque
    return av.VideoFrame.from_ndarray((np.asarray(image), palette), format="pal8")


# --- the writer ------------------------------------------------------------------------------


@dataclass(frozen=True)
class VideoInfo:
    path: Path
    format: str
    frames: int
    width: int  # as encoded (after padding to even)
    height: int
    source_width: int
    source_height: int
    frame_rate: Fraction
    audio: bool


def partial_path(path: Path) -> Path:
    """Where a file is written until complete: hidden, and not matching ComfyUI's counter names."""
    return path.with_name(f".{path.name}.partial")


class VideoWriter:
    """Streams frames into one video file; use as a context manager or call finish()/abort().

    `write` takes chunks [n, H, W, 3] (floats in 0..1 or uint8) as they are produced; `finish`
    flushes, renames the file into place and returns what was written. Any exception inside the
    `with` block (or from write/finish) deletes the temporary file.
    """

    def __init__(
        self,
        path: str | os.PathLike,
        *,
        frame_rate: float,
        format: str = DEFAULT_FORMAT,
        crf: int = DEFAULT_CRF,
        metadata: dict[str, Any] | None = None,
        audio: dict | AudioTrack | None = None,
    ):
        self.spec = check_format(format)
        self.rate = check_frame_rate(frame_rate)
        self.options = encoder_options(self.spec, check_crf(crf))
        self.metadata = {k: v if isinstance(v, str) else json.dumps(v) for k, v in (metadata or {}).items()}
        self.audio = audio if isinstance(audio, AudioTrack) or audio is None else AudioTrack.from_comfy(audio)
        if self.audio is not None and self.spec.audio_codec is None:
            log.warning("%s carries no audio: the audio input is left out of %s", self.spec.name, path)
            self.audio = None
        self.path = Path(path)
        self.temp_path = partial_path(self.path)
        self._container: av.container.OutputContainer | None = None
        self._video = None
        self._audio_stream = None
        self._audio_written = 0
        self._frames = 0
        self._source_size: tuple[int, int] | None = None  # (height, width) of the input frames
        self._pad = (0, 0)  # rows, columns added at the bottom / right
        self._done = False

    # --- public -------------------------------------------------------------------------
    def write(self, frames: torch.Tensor | np.ndarray) -> None:
        if self._done:
            raise RuntimeError("write after finish/abort")
        try:
            pixels = frames_to_uint8(frames)
            if pixels.shape[0] == 0:
                return
            if self._container is None:
                self._open(pixels.shape[1], pixels.shape[2])
            elif pixels.shape[1:3] != self._source_size:
                raise WanUserError(
                    f"frames change size within one video: {self._source_size[1]}x{self._source_size[0]} "
                    f"then {pixels.shape[2]}x{pixels.shape[1]}. Resize them to one size before combining."
                )
            for rgb in pixels:
                self._encode_frame(rgb)
            self._write_audio_until(self._frames)
        except BaseException:
            self.abort()
            raise

    def finish(self) -> VideoInfo:
        if self._done:
            raise RuntimeError("finish after finish/abort")
        try:
            if self._frames == 0:
                raise WanUserError(f"no frames to write to {self.path.name}: the images (or latent) input is empty.")
            for packet in self._video.encode(None):
                self._container.mux(packet)
            if self._audio_stream is not None:
                self._write_audio_until(self._frames)
                for packet in self._audio_stream.encode(None):
                    self._container.mux(packet)
            self._container.close()
            if self.spec.name == "webp" and self.metadata:
                add_webp_exif(self.temp_path, self.metadata)
            os.replace(self.temp_path, self.path)
        except BaseException:
            self.abort()
            raise
        self._done = True
        height, width = self._source_size
        return VideoInfo(
            self.path, self.spec.name, self._frames, width + self._pad[1], height + self._pad[0], width, height,
            self.rate, self._audio_stream is not None,
        )

    def abort(self) -> None:
        """Drops the unfinished file. Safe to call more than once."""
        self._done = True
        if self._container is not None:
            try:
                self._container.close()
            except Exception:  # the file is deleted next; a failing trailer does not matter
                pass
            self._container = None
        self.temp_path.unlink(missing_ok=True)

    def __enter__(self) -> VideoWriter:
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        if exc_type is not None:
            self.abort()
        elif not self._done:
            self.finish()

    # --- internals ----------------------------------------------------------------------
    def _open(self, height: int, width: int) -> None:
        self._source_size = (height, width)
        if self.spec.even_size:
            self._pad = (height % 2, width % 2)
        if any(self._pad):
            log.info(
                "%s: %dx%d is odd; padded to %dx%d by repeating the last row/column (4:2:0 needs even sizes)",
                self.path.name, width, height, width + self._pad[1], height + self._pad[0],
            )
        if width + self._pad[1] < self.spec.min_width:
            raise WanUserError(
                f"{self.spec.name} needs frames at least {self.spec.min_width} pixels wide, these are {width}: "
                "use h264-mp4 or a larger size."
            )
        self.path.parent.mkdir(parents=True, exist_ok=True)
        options = _MP4_OPTIONS if self.spec.muxer == "mp4" else {}
        self._container = av.open(str(self.temp_path), "w", format=self.spec.muxer, options=options)
        for key, value in self.metadata.items():
            self._container.metadata[key] = value
        try:
            self._add_streams(width + self._pad[1], height + self._pad[0])
        except av.FFmpegError as e:
            raise WanUserError(
                f"the {self.spec.codec} encoder refused {width}x{height} frames ({e}): try another format or size."
            ) from None

    def _add_streams(self, width: int, height: int) -> None:
        video = self._container.add_stream(self.spec.codec, rate=self.rate, options=self.options)
        video.width, video.height, video.pix_fmt = width, height, self.spec.pix_fmt
        if self.spec.matrix is not None:
            cc = video.codec_context
            cc.color_range = ColorRange.MPEG
            cc.colorspace = self.spec.matrix
            if self.spec.matrix == Colorspace.ITU709:
                cc.color_primaries, cc.color_trc = ColorPrimaries.BT709, ColorTrc.BT709
        video.codec_context.open()  # fail here, on the size, rather than at the first frame
        self._video = video
        if self.audio is not None:
            rate = _encoder_rate(self.spec.audio_codec, self.audio.sample_rate)
            self._audio_stream = self._container.add_stream(self.spec.audio_codec, rate=rate, layout=self.audio.layout)

    def _encode_frame(self, rgb: np.ndarray) -> None:
        if any(self._pad):
            rgb = np.pad(rgb, ((0, self._pad[0]), (0, self._pad[1]), (0, 0)), mode="edge")
        if self.spec.pix_fmt == "pal8":
            frame = _pal8_frame(rgb)
        else:
            frame = av.VideoFrame.from_ndarray(rgb, format="rgb24").reformat(
                format=self.spec.pix_fmt, dst_colorspace=self.spec.matrix, dst_color_range=ColorRange.MPEG
            )
        frame.pts = self._frames
        frame.time_base = 1 / self.rate
        for packet in self._video.encode(frame):
            self._container.mux(packet)
        self._frames += 1

    def _write_audio_until(self, frames: int) -> None:
        """Audio up to the end of `frames` video frames: trimmed there, silence past its end."""
        if self._audio_stream is None:
            return
        rate = self.audio.sample_rate
        target = round(frames * rate / self.rate)
        if target <= self._audio_written:
            return
        chunk = av.AudioFrame.from_ndarray(
            self.audio.segment(self._audio_written, target), format="fltp", layout=self.audio.layout
        )
        chunk.sample_rate = rate
        chunk.pts = self._audio_written
        chunk.time_base = Fraction(1, rate)
        for packet in self._audio_stream.encode(chunk):
            self._container.mux(packet)
        self._audio_written = target


def encode_video(path: str | os.PathLike, chunks: Iterable[torch.Tensor | np.ndarray], **kwargs) -> VideoInfo:
    """Writes every chunk of `chunks` into one file at `path`; see VideoWriter for the arguments."""
    with VideoWriter(path, **kwargs) as writer:
        for chunk in chunks:
            writer.write(chunk)
            del chunk  # so the producer can free it before it makes the next one
        return writer.finish()


# --- WebP metadata ---------------------------------------------------------------------------


def add_webp_exif(path: Path, metadata: dict[str, str]) -> None:
    """Appends an EXIF chunk with ComfyUI's "key:json" strings (what its frontend reads from WebP)."""
    from PIL import Image

    exif = Image.Exif()
    # ComfyUI's own WebP saver: prompt in Make (0x010f), the rest from ImageDescription (0x010e) down.
    tag = 0x010E
    for key, value in metadata.items():
        if key == "prompt":
            exif[0x010F] = f"prompt:{value}"
        else:
            exif[tag] = f"{key}:{value}"
            tag -= 1
    payload = exif.tobytes()
    if payload.startswith(b"Exif\x00\x00"):
        payload = payload[6:]
    data = bytearray(Path(path).read_bytes())
    if data[:4] != b"RIFF" or data[8:12] != b"WEBP" or data[12:16] != b"VP8X":
        raise RuntimeError(f"{path} is not an extended WebP file; cannot add metadata")
    data[20] |= 0x08  # VP8X flag: an EXIF chunk is present
    data += b"EXIF" + struct.pack("<I", len(payload)) + payload + (b"\x00" if len(payload) % 2 else b"")
    data[4:8] = struct.pack("<I", len(data) - 8)
    Path(path).write_bytes(bytes(data))
