"""Exact strips: a decode in less memory with the same numbers as a whole-frame decode.

The Wan decoders are convolutions after their first temporal upsample: an output pixel there
reads only `strip_halo` rows (and columns) of that layer's input on each side, in every past frame
through the causal caches as in the present one. So the codec's `decode_low` runs the layers up
to that point whole-frame over the video (low resolution; the middle attention, the one layer that
sees the whole frame, is among them) and keeps their features, then each strip of rows runs
`decode_high` through all latent frames with its own causal cache, reading its rows plus the halo
and keeping only its rows. Garbage from the cut edge (zero padding where the frame goes on) moves
one row further in per convolution, in time as in space, and never reaches the kept rows.

Memory: the high layers' caches and activations of the largest strip, instead of the whole frame
(they are most of a decode's memory), plus the kept low features, which grow with the clip (for
Wan2.1, 6 values per output pixel per frame, against ~2230 per pixel of caches that the strips
divide). Time: the halo rows are computed twice.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any, NamedTuple

import torch

Codec = Any  # streaming.py's codec, with decode_low / decode_high / strip_halo


class Strip(NamedTuple):
    keep: tuple[int, int]  # [start, end) of the rows it outputs
    read: tuple[int, int]  # [start, end) of the rows it reads: `keep` plus the halo inside the frame


def strip_spans(length: int, count: int, halo: int) -> list[Strip]:
    """`count` strips of about equal height covering `length` rows."""
    cuts = [round(i * length / count) for i in range(count + 1)]
    return [Strip((a, b), (max(0, a - halo), min(length, b + halo))) for a, b in zip(cuts, cuts[1:])]


def most_strips(length: int, halo: int) -> int:
    """The most strips worth cutting: each keeps at least `halo` rows (with thinner ones the high
    layers would run over three times)."""
    return max(1, length // max(1, halo))


def strip_share(length: int, count: int, halo: int) -> float:
    """The largest strip's rows read, as a share of the frame's: its share of the memory."""
    return max(s.read[1] - s.read[0] for s in strip_spans(length, count, halo)) / length


def strip_axis(height: int, width: int) -> int:
    """The tensor axis cut into strips: the longer side (fewer halo rows per pixel)."""
    return 4 if width >= height else 3


def decode_strip_major(codec: Codec, latent: torch.Tensor, spans: list[tuple[int, int]], count: int,
                       check) -> Iterator[torch.Tensor]:
    """Raw latent [B, z, T, h, w] -> the whole-frame decode's pixel chunks (`spans`: the [start,
    end) pixel frames of each latent frame), float32 on the CPU, computed in `count` exact strips."""
    b, _, frames, lh, lw = latent.shape
    s = codec.cfg.kind.stride[1]
    axis = strip_axis(lh, lw)
    low_state = codec.new_state()
    lows = []
    for k in range(frames):
        lows.append(codec.decode_low(latent[:, :, k : k + 1].to(codec.device, codec.dtype), low_state))
        check()
    del low_state
    length = lows[0].shape[axis]
    scale = (lw if axis == 4 else lh) * s // length  # output rows per low-resolution row
    out = torch.empty(b, 3, spans[-1][1], lh * s, lw * s)
    for strip in strip_spans(length, count, codec.strip_halo):
        (k0, k1), (r0, r1) = strip.keep, strip.read
        state = codec.new_state()
        for (t0, t1), low in zip(spans, lows):
            px = codec.decode_high(low.narrow(axis, r0, r1 - r0).contiguous(), state)
            kept = px.narrow(axis, (k0 - r0) * scale, (k1 - k0) * scale)
            out[:, :, t0:t1].narrow(axis, k0 * scale, (k1 - k0) * scale).copy_(kept)
            del px, kept
            check()
        del state
    del lows
    for t0, t1 in spans:
        yield out[:, :, t0:t1]
