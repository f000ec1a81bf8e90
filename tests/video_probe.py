"""Reading written videos back for tests: decoded frames, stream facts, audio, metadata boxes.

PyAV decodes mp4/webm/gif; FFmpeg has no animated-WebP decoder, so WebP goes through Pillow.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path

import av
import numpy as np
from PIL import Image


@dataclass
class Probe:
    frames: list[np.ndarray]  # uint8 RGB [H, W, 3]
    width: int
    height: int
    frame_rate: Fraction | None
    durations_ms: list[float]  # per frame
    metadata: dict
    audio_streams: int


def smooth_clip(n: int, height: int, width: int, seed: float = 0.0) -> np.ndarray:
    """A smooth, moving colour field: float32 [n, H, W, 3] in 0..1 (what codecs are tuned for)."""
    y, x = np.mgrid[0:height, 0:width] / max(height, width)
    out = np.empty((n, height, width, 3), np.float32)
    for i in range(n):
        t = seed + i / n
        out[i, ..., 0] = 0.5 + 0.4 * np.sin(2 * np.pi * (x + t))
        out[i, ..., 1] = 0.5 + 0.4 * np.cos(2 * np.pi * (y - t))
        out[i, ..., 2] = 0.5 + 0.3 * np.sin(2 * np.pi * (x + y + t))
    return out


def probe(path: str | Path) -> Probe:
    path = Path(path)
    if path.suffix == ".webp":
        return _probe_pillow(path)
    with av.open(str(path)) as container:
        stream = container.streams.video[0]
        frames, durations = [], []
        for frame in container.decode(video=0):
            frames.append(frame.to_ndarray(format="rgb24"))
            if frame.duration is not None and frame.time_base is not None:
                durations.append(float(frame.duration * frame.time_base) * 1000)
        return Probe(
            frames, stream.width, stream.height, stream.average_rate, durations, dict(container.metadata),
            len(container.streams.audio),
        )


def _probe_pillow(path: Path) -> Probe:
    with Image.open(path) as image:
        frames, durations = [], []
        for i in range(image.n_frames):
            image.seek(i)
            frames.append(np.asarray(image.convert("RGB")))
            durations.append(float(image.info.get("duration", 0)))
        exif = {v.split(":", 1)[0]: v.split(":", 1)[1] for v in image.getexif().values() if isinstance(v, str)}
        return Probe(frames, image.width, image.height, None, durations, exif, 0)


def psnr(a: np.ndarray, b: np.ndarray) -> float:
    mse = np.mean((a.astype(np.float64) - b.astype(np.float64)) ** 2)
    return float(10 * np.log10(255.0**2 / mse))


def decode_audio(path: str | Path) -> tuple[np.ndarray, int, float]:
    """(samples [C, S] float, sample rate, stream duration in seconds) of the first audio stream."""
    with av.open(str(path)) as container:
        stream = container.streams.audio[0]
        chunks = [f.to_ndarray().reshape(stream.channels, -1) for f in container.decode(audio=0)]
        samples = np.concatenate(chunks, axis=1).astype(np.float32)
        if stream.duration is not None:
            duration = float(stream.duration * stream.time_base)
        else:  # Matroska stores no per-stream duration; the decoded samples are the duration
            duration = samples.shape[1] / stream.sample_rate
        return samples, stream.sample_rate, duration


def mp4_boxes(data: bytes, start: int = 0, end: int | None = None) -> list[tuple[str, int, int]]:
    """Top-level ISO-BMFF boxes in data[start:end] as (type, payload start, box end)."""
    end = len(data) if end is None else end
    boxes, pos = [], start
    while pos + 8 <= end:
        size, kind = struct.unpack(">I4s", data[pos : pos + 8])
        header = 8
        if size == 1:
            size, header = struct.unpack(">Q", data[pos + 8 : pos + 16])[0], 16
        elif size == 0:
            size = end - pos
        boxes.append((kind.decode("latin-1"), pos + header, pos + size))
        pos += size
    return boxes


def mp4_metadata_keys(path: str | Path) -> tuple[list[str], dict[str, str]]:
    """Top-level box order and the moov/udta/meta (keys + ilst) entries: the place the ComfyUI
    frontend reads a dropped mp4's prompt and workflow from."""
    data = Path(path).read_bytes()
    top = mp4_boxes(data)
    order = [kind for kind, _, _ in top]
    boxes = {kind: (s, e) for kind, s, e in top}
    udta = {k: (s, e) for k, s, e in mp4_boxes(data, *boxes["moov"])}["udta"]
    meta_start, meta_end = {k: (s, e) for k, s, e in mp4_boxes(data, *udta)}["meta"]
    inner = {k: (s, e) for k, s, e in mp4_boxes(data, meta_start + 4, meta_end)}  # meta is a full box
    keys_start, keys_end = inner["keys"]
    count = struct.unpack(">I", data[keys_start + 4 : keys_start + 8])[0]
    names, pos = [], keys_start + 8
    for _ in range(count):
        size = struct.unpack(">I", data[pos : pos + 4])[0]
        names.append(data[pos + 8 : pos + size].decode())
        pos += size
    values = {}
    for kind, s, e in mp4_boxes(data, *inner["ilst"]):
        index = struct.unpack(">I", kind.encode("latin-1"))[0]
        data_box = mp4_boxes(data, s, e)[0]
        values[names[index - 1]] = data[data_box[1] + 8 : data_box[2]].decode()
    return order, values
