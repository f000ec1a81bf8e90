"""Memory-bounded encode and decode: causal time chunks x spatial strips or tiles, over any
"codec" that runs one causal chunk of a Wan VAE (wan_core.comfy_bridge.vae_stream drives
ComfyUI's modules).

A codec has `cfg` (VaeConfig), `device`, `dtype`, `new_state()` (an empty causal cache for one
stream: one video, or one strip or tile of it), `decode_chunk(latent_frame, state)` (one latent
frame -> 1 pixel frame first, then 4; [B, 3, t, H, W] in [-1, 1]), the same split in two for
strips (`decode_low`, `decode_high`, `strip_halo`, `low_scale`, `low_channels`: wan_core.vae.strips)
and `encode_chunk(pixels, state)` (frame 0 alone, then 4 frames -> latent frames).

Decode, whole frames (the default whenever the frame fits): frame-major, each latent frame's
pixels yielded before the next starts, so a consumer (the video writer) never holds the video.
This is exactly the release's computation (equal to ComfyUI's native decode).
Decode, exact strips (asked for, or chosen because the whole frame does not fit the free memory):
the decoder's low-resolution layers run whole-frame over the video first (`decode_low`, their
features kept: a few percent of the memory), then strip-major: each strip of rows (or columns)
runs the high-resolution layers through all latent frames with its own causal cache, which is
freed before the next strip starts. Each strip reads `strip_halo` extra rows on each cut side and
keeps only its own rows, so the result equals the whole-frame decode; the memory is that of the
largest strip, the extra time that of the halos.
Decode, tiled (asked for, or chosen when even the smallest strips do not fit): tile-major like
strips, but through the whole decoder, cross-faded into one preallocated result. Tiles change
the numbers near seams (the decoder is not local), so they are never used silently when strips
fit. Encode is tile-major (the input video is in memory anyway).

An out-of-memory error restarts with more strips, then tiles half as large, instead of failing
the run.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Iterator
from typing import Any, NamedTuple

import torch

from . import strips as strips_mod
from .validation import check_latent, check_pixels

log = logging.getLogger(__name__)

Codec = Any  # see the module docstring

# Smallest tile side, in latent cells: below this the overlap costs more than the tile.
MIN_TILE_CELLS = 8
# Share of the free memory a tile's working set may use (the rest: fragmentation, other users).
MEMORY_SHARE = 0.5
# Working-set elements per output pixel, per unit of the decoder's full-resolution width: the
# causal caches of every stage plus one frame's activations (bench/vae_bench.py, CPU fp32, with
# headroom).
DECODE_ELEMS_PER_PIXEL_PER_WIDTH = 40
ENCODE_ELEMS_PER_PIXEL_PER_WIDTH = 40


def is_out_of_memory(error: BaseException) -> bool:
    if isinstance(error, torch.OutOfMemoryError):
        return True
    text = str(error)
    return isinstance(error, RuntimeError) and ("can't allocate memory" in text or "out of memory" in text)


def free_memory_of(device: torch.device) -> int:
    """Bytes free on the device now (CUDA: driver free + cached; CPU: the kernel's MemAvailable)."""
    if device.type == "cuda":
        free, _ = torch.cuda.mem_get_info(device)
        return free + torch.cuda.memory_reserved(device) - torch.cuda.memory_allocated(device)
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_AVPHYS_PAGES")


def _release_cached_memory(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.empty_cache()


# --- tile geometry ---------------------------------------------------------------------------
def tile_spans(length: int, tile: int, overlap: int) -> list[tuple[int, int]]:
    """Overlapping [start, end) spans covering `length`; the last one is aligned to the end."""
    if tile <= 0 or tile >= length:
        return [(0, length)]
    overlap = min(overlap, tile // 2)
    count = -(-(length - overlap) // (tile - overlap))  # fewest tiles with at least `overlap`
    # Starts spread evenly, so every seam gets the same (or a larger) overlap.
    starts = [round(i * (length - tile) / (count - 1)) for i in range(count)]
    return [(s, s + tile) for s in starts]


def _axis_weights(spans: list[tuple[int, int]], scale: int) -> list[torch.Tensor]:
    """Per span, weights along the axis (in output units): 1 inside, a linear ramp across each
    overlap with a neighbour, so neighbours cross-fade."""
    weights = []
    for i, (start, end) in enumerate(spans):
        w = torch.ones((end - start) * scale)
        if i > 0:
            n = (spans[i - 1][1] - start) * scale
            if n > 0:
                w[:n] = torch.arange(1, n + 1) / (n + 1)
        if i + 1 < len(spans):
            n = (end - spans[i + 1][0]) * scale
            if n > 0:
                w[-n:] = torch.minimum(w[-n:], torch.arange(n, 0, -1) / (n + 1))
        weights.append(w)
    return weights


class TileGrid:
    """The tiles of a latent plane [lh, lw] and their blend weights at `scale` output units per cell."""

    def __init__(self, lh: int, lw: int, tile: int, overlap: int, scale: int):
        self.rows = tile_spans(lh, tile, overlap)
        self.cols = tile_spans(lw, tile, overlap)
        self.scale = scale
        row_w, col_w = _axis_weights(self.rows, scale), _axis_weights(self.cols, scale)
        self.tiles = [(r, c) for r in range(len(self.rows)) for c in range(len(self.cols))]
        self.weights = {(r, c): row_w[r][:, None] * col_w[c][None, :] for r, c in self.tiles}
        total = torch.zeros(lh * scale, lw * scale)
        for r, c in self.tiles:
            total[self.out_slice(r, c)] += self.weights[(r, c)]
        self.total = total

    def __len__(self) -> int:
        return len(self.tiles)

    def latent_slice(self, r: int, c: int) -> tuple[slice, slice]:
        (y0, y1), (x0, x1) = self.rows[r], self.cols[c]
        return slice(y0, y1), slice(x0, x1)

    def out_slice(self, r: int, c: int) -> tuple[slice, slice]:
        s = self.scale
        (y0, y1), (x0, x1) = self.rows[r], self.cols[c]
        return slice(y0 * s, y1 * s), slice(x0 * s, x1 * s)


def _tile_cells(tile_px: int | None, stride: int) -> int:
    return 0 if not tile_px else max(MIN_TILE_CELLS, tile_px // stride)


def _overlap_cells(overlap_px: int | None, tile_cells: int, stride: int) -> int:
    if overlap_px is None:
        return max(1, tile_cells // 4)
    return overlap_px // stride


# --- memory budget ---------------------------------------------------------------------------
def _full_res_width(codec: Codec) -> float:
    """Decoder channels per output pixel at the last stage (Wan2.2 runs it at half resolution)."""
    return codec.cfg.dec_dim / codec.cfg.kind.patch**2


def decode_bytes_per_pixel(codec: Codec) -> float:
    return DECODE_ELEMS_PER_PIXEL_PER_WIDTH * _full_res_width(codec) * codec.dtype.itemsize


def encode_bytes_per_pixel(codec: Codec) -> float:
    return ENCODE_ELEMS_PER_PIXEL_PER_WIDTH * codec.cfg.enc_dim * codec.dtype.itemsize


def auto_tile_cells(codec: Codec, lh: int, lw: int, free_memory: int, bytes_per_pixel: float) -> int:
    """The largest square tile (latent cells) whose working set fits the budget; 0 = whole frame."""
    budget = MEMORY_SHARE * free_memory
    s = codec.cfg.kind.stride[1]
    if lh * lw * s * s * bytes_per_pixel <= budget:
        return 0
    side = int((budget / bytes_per_pixel) ** 0.5) // s
    return max(MIN_TILE_CELLS, side)


def _smaller(tile: int, lh: int, lw: int) -> int | None:
    current = tile or max(lh, lw)
    smaller = current // 2
    return smaller if smaller >= MIN_TILE_CELLS else None


# --- decode ----------------------------------------------------------------------------------
def output_frames(latent_frames: int, stride_t: int) -> list[tuple[int, int]]:
    """[start, end) pixel frames of each latent frame: 1 for the first, then stride_t each."""
    return [(0, 1)] + [(1 + stride_t * (k - 1), 1 + stride_t * k) for k in range(1, latent_frames)]


def _no_check() -> None:
    pass


def _decode_whole_frames(codec: Codec, latent: torch.Tensor, check=_no_check) -> Iterator[torch.Tensor]:
    state = codec.new_state()
    for k in range(latent.shape[2]):
        z = latent[:, :, k : k + 1].to(codec.device, codec.dtype)
        px = codec.decode_chunk(z, state)
        check()
        del z
        yield px.float().cpu()
        del px


def _decode_tile_major(codec: Codec, latent: torch.Tensor, grid: TileGrid, check=_no_check) -> Iterator[torch.Tensor]:
    """Every tile through all latent frames with its own cache (freed after the tile), blended
    into one float32 result that is then handed out in the usual chunks."""
    b, _, frames, _, _ = latent.shape
    spans = output_frames(frames, codec.cfg.kind.stride[0])
    out = torch.zeros(b, 3, spans[-1][1], *grid.total.shape)
    for r, c in grid.tiles:
        ys, xs = grid.latent_slice(r, c)
        oy, ox = grid.out_slice(r, c)
        weight = grid.weights[(r, c)]
        state = codec.new_state()
        for k, (t0, t1) in enumerate(spans):
            z = latent[:, :, k : k + 1, ys, xs].to(codec.device, codec.dtype)
            px = codec.decode_chunk(z, state).float().cpu()
            out[:, :, t0:t1, oy, ox] += px * weight
            del z, px
            check()
        del state
    out /= grid.total
    for t0, t1 in spans:
        yield out[:, :, t0:t1]


class FramePlan(NamedTuple):
    """How a decode covers the frame: whole frames (both 0), `strips` exact strips, or tiles of
    `tile` latent cells."""

    strips: int = 0
    tile: int = 0

    def describe(self, stride: int) -> str:
        if self.tile:
            return f"{self.tile * stride}px tiles"
        return f"{self.strips} exact strips" if self.strips else "whole frames"


def _strip_length(codec: Codec, lh: int, lw: int) -> int:
    """Rows of decode_low's features along the axis cut into strips."""
    return codec.low_scale * (lw if strips_mod.strip_axis(lh, lw) == 4 else lh)


def _most_strips(codec: Codec, lh: int, lw: int) -> int:
    return strips_mod.most_strips(_strip_length(codec, lh, lw), codec.strip_halo)


def strips_bytes(codec: Codec, lh: int, lw: int, frames: int, count: int, bytes_per_pixel: float) -> float:
    """Working set of a decode in `count` exact strips: the largest strip's share of a whole-frame
    decode's, plus decode_low's features of the video (about 2 low-resolution frames per latent frame)."""
    s = codec.cfg.kind.stride[1]
    share = strips_mod.strip_share(_strip_length(codec, lh, lw), count, codec.strip_halo)
    low = codec.low_channels * lh * lw * codec.low_scale**2 * 2 * frames * codec.dtype.itemsize
    return lh * lw * s * s * bytes_per_pixel * share + low


def auto_plan(codec: Codec, lh: int, lw: int, frames: int, free_memory: int) -> FramePlan:
    """Whole frames when they fit the budget; else the fewest exact strips that fit; else tiles."""
    per_px = decode_bytes_per_pixel(codec)
    cells = auto_tile_cells(codec, lh, lw, free_memory, per_px)
    if not cells:
        return FramePlan()
    budget = MEMORY_SHARE * free_memory
    for count in range(2, _most_strips(codec, lh, lw) + 1):
        if strips_bytes(codec, lh, lw, frames, count, per_px) <= budget:
            return FramePlan(strips=count)
    return FramePlan(tile=cells)


def decode_video(
    codec: Codec, latent: torch.Tensor, tile: int | None, overlap: int | None, free_memory: int | None,
    name: str = "samples", check=_no_check, strips: int = 0,
) -> Iterator[torch.Tensor]:
    """Raw latent [B, z, T, h, w] -> pixel chunks [B, 3, t, H, W] in [-1, 1], float32 on the CPU,
    in order (1 frame, then 4 per latent frame).

    tile: spatial tile in pixels; 0 = whole frames (or `strips`); None = whole frames when they fit
    `free_memory` (default: the device's free memory now), else the fewest exact strips that fit,
    else the largest tile that fits. strips: >= 2 = that many exact strips (unless tile > 0).
    check: called after every decoded chunk (the caller's interruption check raises from it)."""
    kind = codec.cfg.kind
    check_latent(latent, kind.z_dim, kind.name, name)
    s = kind.stride[1]
    lh, lw = latent.shape[3], latent.shape[4]
    if tile:
        plan = FramePlan(tile=_tile_cells(tile, s))
    elif strips > 1:
        most = _most_strips(codec, lh, lw)
        if strips > most:
            log.info("VAE decode: %d exact strips asked for; a %dx%d frame is worth at most %d (each keeps at "
                     "least the %d-row halo).", strips, lw * s, lh * s, most, codec.strip_halo)
        plan = FramePlan(strips=min(strips, most)) if most > 1 else FramePlan()
    elif tile is None:
        free = free_memory if free_memory is not None else free_memory_of(codec.device)
        plan = auto_plan(codec, lh, lw, latent.shape[2], free)
        if plan.tile:
            log.warning("VAE decode: a %dx%d frame does not fit the free memory even in exact strips; decoding "
                        "in %s (seams differ slightly from an untiled decode).", lw * s, lh * s, plan.describe(s))
        elif plan.strips:
            log.info("VAE decode: a %dx%d frame does not fit the free memory whole; decoding in %s (the same "
                     "numbers, more time).", lw * s, lh * s, plan.describe(s))
    else:
        plan = FramePlan()
    return _decode_with_retry(codec, latent, plan, overlap, check)


def _plan_after_out_of_memory(codec, what: str, plan: FramePlan, lh: int, lw: int, failed: str,
                              most_strips: int = 0) -> FramePlan:
    """After an out-of-memory error: twice the exact strips while they are worth cutting
    (`most_strips`; 0 for encode, which has none), then tiles half as large, or the final error
    when no smaller tile is left. Frees the device's cached memory first."""
    s = codec.cfg.kind.stride[1]
    _release_cached_memory(codec.device)
    more = max(2, 2 * plan.strips)
    if not plan.tile and more <= most_strips:
        after = FramePlan(strips=more)
    else:
        smaller = _smaller(plan.tile, lh, lw)
        if smaller is None:
            raise torch.OutOfMemoryError(
                f"VAE {what} ran out of memory even with {plan.describe(s)} ({failed}). Free memory (unload "
                f"models) or {what} a smaller video."
            )
        after = FramePlan(tile=smaller)
    log.warning("VAE %s ran out of memory with %s; retrying with %s (%s).", what, plan.describe(s),
                after.describe(s), failed)
    return after


def _decode_chunks(codec, latent, plan: FramePlan, overlap, check) -> Iterator[torch.Tensor]:
    if plan.strips and not plan.tile:
        spans = output_frames(latent.shape[2], codec.cfg.kind.stride[0])
        return strips_mod.decode_strip_major(codec, latent, spans, plan.strips, check)
    s = codec.cfg.kind.stride[1]
    grid = TileGrid(latent.shape[3], latent.shape[4], plan.tile, _overlap_cells(overlap, plan.tile, s), s)
    if len(grid) == 1:
        return _decode_whole_frames(codec, latent, check)
    return _decode_tile_major(codec, latent, grid, check)


def _decode_with_retry(codec, latent, plan: FramePlan, overlap, check=_no_check) -> Iterator[torch.Tensor]:
    lh, lw = latent.shape[3], latent.shape[4]
    most = _most_strips(codec, lh, lw)
    done = 0  # latent frames already handed out
    while True:
        failed = None
        try:
            with torch.no_grad():
                for k, chunk in enumerate(_decode_chunks(codec, latent, plan, overlap, check)):
                    if k >= done:  # after a retry, frames already handed out are recomputed, not repeated
                        done = k + 1
                        yield chunk
            return
        except (torch.OutOfMemoryError, RuntimeError) as e:
            if not is_out_of_memory(e):
                raise
            failed = str(e).splitlines()[0]
        plan = _plan_after_out_of_memory(codec, "decode", plan, lh, lw, failed, most)


# --- encode ----------------------------------------------------------------------------------
def time_chunks(frames: int) -> list[tuple[int, int]]:
    """The encoder's causal chunks: frame 0 alone, then 4 frames at a time."""
    return [(0, 1)] + [(t, t + 4) for t in range(1, frames, 4)]


def _encode_tiles(codec: Codec, pixels: torch.Tensor, grid: TileGrid) -> torch.Tensor:
    s = codec.cfg.kind.stride[1]
    b, _, frames, _, _ = pixels.shape
    out = None
    for r, c in grid.tiles:
        ys, xs = grid.latent_slice(r, c)
        py, px = slice(ys.start * s, ys.stop * s), slice(xs.start * s, xs.stop * s)
        state = codec.new_state()
        parts = [
            codec.encode_chunk(pixels[:, :, t0:t1, py, px].to(codec.device, codec.dtype), state).float().cpu()
            for t0, t1 in time_chunks(frames)
        ]
        del state
        lat = torch.cat(parts, dim=2)
        if len(grid) == 1:
            return lat
        if out is None:
            out = torch.zeros(b, lat.shape[1], lat.shape[2], *grid.total.shape)
        out[:, :, :, ys, xs] += lat * grid.weights[(r, c)]
    return out / grid.total


def encode_video(codec: Codec, pixels: torch.Tensor, tile: int | None, overlap: int | None,
                 free_memory: int | None = None, name: str = "pixels") -> torch.Tensor:
    """Pixels [B, 3, T, H, W] in [-1, 1] -> raw latent (mean), float32 on the CPU.
    tile: as decode_video's (tiled encodes change numbers near seams too)."""
    kind = codec.cfg.kind
    check_pixels(pixels, kind.stride, kind.name, name)
    s = kind.stride[1]
    lh, lw = pixels.shape[3] // s, pixels.shape[4] // s
    if tile is None:
        free = free_memory if free_memory is not None else free_memory_of(codec.device)
        cells = auto_tile_cells(codec, lh, lw, free, encode_bytes_per_pixel(codec))
    else:
        cells = _tile_cells(tile, s)
    while True:
        grid = TileGrid(lh, lw, cells, _overlap_cells(overlap, cells, s), 1)
        failed = None
        try:
            with torch.no_grad():
                return _encode_tiles(codec, pixels, grid)
        except (torch.OutOfMemoryError, RuntimeError) as e:
            if not is_out_of_memory(e):
                raise
            failed = str(e).splitlines()[0]
        cells = _plan_after_out_of_memory(codec, "encode", FramePlan(tile=cells), lh, lw, failed).tile
