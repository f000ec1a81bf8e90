"""Causal chunked decode as a stream over ComfyUI's Wan VAE modules, exact strips, tile-major
spatial tiling with cross-fades, automatic strips and tiles and the out-of-memory retry; fp32 on
CPU, random weights."""

import gc
import json
import os
import subprocess
import sys
import weakref
from pathlib import Path

import pytest
import torch
from comfy_inprocess import comfy
from vae_factory import bigmem_lock, localize_, random_vae, smooth_latent

comfy()
from wan_core.comfy_bridge import vae_stream  # noqa: E402
from wan_core.comfy_bridge.vae_stream import WanChunkCodec  # noqa: E402
from wan_core.vae import streaming  # noqa: E402

TESTS = Path(__file__).resolve().parents[1]


def local_only_(vae):
    """Every 3x3 kernel reduced to its centre and attention switched off: a decoder with no spatial
    interaction, for which any correct tiling is exact."""
    return localize_(vae, spatial=0.0, attention=0.0)


def decode(vae, latent, **kw):
    return vae_stream.decode(vae, latent, **kw)


def encode(vae, pixels, **kw):
    return vae_stream.encode(vae, pixels, **kw)


@pytest.mark.parametrize("kind", ["wan2.1", "wan2.2"])
def test_decode_iter_streams_one_then_four_frames_equal_to_a_whole_decode(kind):
    vae = random_vae(kind, seed=2)
    z = vae.latent_channels
    latent = torch.randn(1, z, 3, 4, 5, generator=torch.Generator().manual_seed(0))
    chunks = list(vae_stream.decode_iter(vae, latent, tile=0))
    assert [c.shape[2] for c in chunks] == [1, 4, 4]
    assert all(c.dtype == torch.float32 and c.device.type == "cpu" for c in chunks)
    # ComfyUI's own whole-video decode of its module, clamped as native does when making images
    whole = vae.first_stage_model.decode(latent).clamp(-1, 1)
    assert (torch.cat(chunks, dim=2) - whole).abs().max() <= 1e-5
    assert whole.abs().max() <= 1.0


@pytest.mark.parametrize("kind", ["wan2.1", "wan2.2"])
def test_tiling_is_exact_for_a_decoder_without_spatial_interaction(kind):
    vae = local_only_(random_vae(kind, seed=4))
    s = vae.spacial_compression_decode()
    latent = torch.randn(1, vae.latent_channels, 2, 12, 15, generator=torch.Generator().manual_seed(1))
    whole = decode(vae, latent, tile=0)
    tiled = decode(vae, latent, tile=8 * s, overlap=3 * s)  # 2 x 3 tiles, uneven overlaps
    assert (tiled - whole).abs().max().item() <= 1e-5
    pixels = whole * 0.9
    assert (encode(vae, pixels, tile=8 * s, overlap=3 * s) - encode(vae, pixels, tile=0)).abs().max() <= 1e-5


def test_a_tile_as_large_as_the_frame_is_the_untiled_decode():
    vae = random_vae("wan2.1", seed=5)
    latent = torch.randn(1, 16, 2, 6, 7)
    assert torch.equal(decode(vae, latent, tile=64), decode(vae, latent, tile=0))


def test_tiled_decode_of_a_smooth_latent_is_within_2e_2_of_untiled():
    # localize_ gives the random decoder the locality of trained weights (see its docstring); with
    # fully random weights, border effects cross whole tiles and the error is O(1).
    vae = localize_(random_vae("wan2.1", seed=0), spatial=0.02, attention=0.003)
    latent = smooth_latent("wan2.1", 2, 16, 16)
    whole = decode(vae, latent, tile=0)
    tiled = decode(vae, latent, tile=10 * 8, overlap=5 * 8)  # 2 x 2 tiles
    err = (tiled - whole).abs().max().item()
    assert err <= 2e-2, err
    assert whole.std() > 0.05


def test_tile_spans_cover_the_axis_with_even_overlaps():
    assert streaming.tile_spans(40, 22, 4) == [(0, 22), (18, 40)]
    assert streaming.tile_spans(10, 16, 4) == [(0, 10)]
    spans = streaming.tile_spans(100, 16, 4)
    assert spans[0][0] == 0 and spans[-1][1] == 100
    assert all(b[0] <= a[1] - 4 for a, b in zip(spans, spans[1:]))


def test_automatic_tiles_follow_the_free_memory():
    codec = WanChunkCodec(random_vae("wan2.1"))
    per_px = streaming.decode_bytes_per_pixel(codec)
    frame_bytes = 64 * 64 * 64 * per_px
    assert streaming.auto_tile_cells(codec, 64, 64, int(4 * frame_bytes), per_px) == 0  # fits whole
    cells = streaming.auto_tile_cells(codec, 64, 64, int(frame_bytes / 8), per_px)
    assert streaming.MIN_TILE_CELLS <= cells < 64
    # with a budget too small even for the thinnest strips the decode really tiles (and says so),
    # streaming the same frame counts
    latent = smooth_latent("wan2.1", 2, 40, 40)
    budget = int(40 * 40 * 64 * per_px / 4)
    assert streaming.auto_plan(codec, 40, 40, 2, budget).tile
    chunks = list(streaming.decode_video(codec, latent, tile=None, overlap=None, free_memory=budget))
    assert [c.shape[2] for c in chunks] == [1, 4]


@pytest.mark.parametrize("kind", ["wan2.1", "wan2.2"])
@pytest.mark.parametrize("lh, lw", [(20, 13), (9, 30)])  # strips across the rows, then the columns
def test_exact_strips_equal_the_whole_frame_decode(kind, lh, lw):
    vae = random_vae(kind, seed=3)  # fully random: every layer reaches its neighbours
    latent = torch.randn(1, vae.latent_channels, 3, lh, lw, generator=torch.Generator().manual_seed(1))
    whole = decode(vae, latent, tile=0)
    for count in (2, 3, 5):
        strips = decode(vae, latent, tile=0, strips=count)
        assert strips.shape == whole.shape
        assert (strips - whole).abs().max().item() <= 1e-6, count


@pytest.mark.parametrize("kind", ["wan2.1", "wan2.2"])
def test_the_strip_halo_is_exactly_the_decoders_reach(kind):
    # One row fewer and the cut edges' padding reaches the kept rows: the halo is not a guess.
    vae = random_vae(kind, seed=3)
    codec = WanChunkCodec(vae)
    assert codec.strip_halo == 12  # both decoders: 6 convs at 2x, 6 at 4x, 6 at 8x + the upsamples'
    latent = torch.randn(1, vae.latent_channels, 3, 20, 40, generator=torch.Generator().manual_seed(1))
    whole = decode(vae, latent, tile=0)

    def strips_error():
        chunks = streaming.decode_video(codec, latent, tile=0, overlap=None, free_memory=None, strips=4)
        return (torch.cat(list(chunks), 2) - whole).abs().max().item()

    assert strips_error() == 0.0
    codec.strip_halo -= 1
    assert strips_error() > 1e-7


def test_automatic_strips_when_whole_frames_do_not_fit_the_free_memory(caplog):
    vae = random_vae("wan2.1", seed=7)
    codec = WanChunkCodec(vae)
    per_px = streaming.decode_bytes_per_pixel(codec)
    latent = torch.randn(1, 16, 2, 16, 48, generator=torch.Generator().manual_seed(4))
    whole_bytes = 16 * 48 * 64 * per_px
    budget = int(streaming.strips_bytes(codec, 16, 48, 2, 2, per_px) / streaming.MEMORY_SHARE) + 1
    assert streaming.strips_bytes(codec, 16, 48, 2, 2, per_px) < 0.8 * whole_bytes
    assert streaming.auto_plan(codec, 16, 48, 2, budget) == streaming.FramePlan(strips=2)
    with caplog.at_level("INFO"):
        chunks = list(streaming.decode_video(codec, latent, tile=None, overlap=None, free_memory=budget))
    assert "decoding in 2 exact strips" in caplog.text
    assert (torch.cat(chunks, 2) - decode(vae, latent, tile=0)).abs().max() <= 1e-6


class LimitedDeviceCodec(WanChunkCodec):
    """Stands in for a GPU with little memory (a CPU cannot run out on demand): raises
    torch.OutOfMemoryError for a 4-frame chunk (or a strip of one) wider than `limit` latent
    cells, as a device would, after the 1-frame first chunk went through."""

    def __init__(self, vae, limit):
        super().__init__(vae)
        self.limit, self.ooms = limit, 0

    def _check(self, width, state):
        if not state.first and width > self.limit:
            self.ooms += 1
            raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")

    def decode_chunk(self, latent, state):
        self._check(latent.shape[-1], state)
        return super().decode_chunk(latent, state)

    def decode_high(self, x, state):
        self._check(x.shape[-1] / self.low_scale, state)
        return super().decode_high(x, state)


def test_out_of_memory_retries_in_exact_strips_without_repeating_frames(caplog):
    vae = random_vae("wan2.1", seed=8)  # fully random: only an exact decode matches
    latent = torch.randn(1, 16, 3, 16, 32, generator=torch.Generator().manual_seed(3))
    limited = LimitedDeviceCodec(vae, limit=24)  # 2 strips read 22 of the 32 columns
    chunks = list(streaming.decode_video(limited, latent, tile=0, overlap=None, free_memory=None))
    assert limited.ooms == 1
    assert [c.shape[2] for c in chunks] == [1, 4, 4]  # the first frame was not handed out twice
    assert (torch.cat(chunks, 2) - decode(vae, latent, tile=0)).abs().max() <= 1e-6
    assert "retrying with 2 exact strips" in caplog.text


def test_out_of_memory_retries_with_more_strips_then_smaller_tiles(caplog):
    vae = local_only_(random_vae("wan2.1", seed=8))
    latent = torch.randn(1, 16, 3, 16, 32, generator=torch.Generator().manual_seed(3))
    limited = LimitedDeviceCodec(vae, limit=16)  # no strip fits: 4 strips still read 20 columns
    chunks = list(streaming.decode_video(limited, latent, tile=0, overlap=None, free_memory=None))
    assert limited.ooms == 3
    assert [c.shape[2] for c in chunks] == [1, 4, 4]
    assert (torch.cat(chunks, 2) - decode(vae, latent, tile=0)).abs().max() <= 1e-5
    for step in ("with whole frames; retrying with 2 exact strips", "with 2 exact strips; retrying with 4 exact strips",
                 "with 4 exact strips; retrying with 128px tiles"):
        assert step in caplog.text


def test_out_of_memory_at_the_smallest_tile_is_reported():
    vae = random_vae("wan2.1", seed=8)
    limited = LimitedDeviceCodec(vae, limit=0)
    with pytest.raises(torch.OutOfMemoryError, match="even with 64px tiles"):
        list(streaming.decode_video(limited, torch.randn(1, 16, 2, 16, 16), tile=0, overlap=None, free_memory=None))


def _peak(tile: int, overlap: int) -> dict:
    # A fixed mmap threshold makes glibc hand big blocks back at once, so RSS follows live tensors.
    env = dict(os.environ, MALLOC_MMAP_THRESHOLD_="131072")
    out = subprocess.run(
        [sys.executable, str(TESTS / "vae_peak_memory.py"), "wan2.1", "96", "320", "2", str(tile), str(overlap)],
        check=True, capture_output=True, text=True, timeout=600, env=env,
    )
    return json.loads(out.stdout.strip().splitlines()[-1])


@pytest.mark.slow
def test_tiled_decode_peaks_lower_than_untiled_on_the_real_size_wan21_vae():
    # 96x320 px, 2 latent frames (5 pixel frames); 120 px tiles with 16 px overlap = 3 tiles across.
    # On a CPU every tile's causal state stays in RAM (2 frames per causal conv), so tiling saves
    # only the activations of one chunk; on a GPU the idle tiles' states wait on the CPU.
    with bigmem_lock():
        untiled, tiled = _peak(0, 0), _peak(120, 16)
    assert untiled["frames"] == tiled["frames"] == 5
    assert tiled["peak_mib"] < 0.85 * untiled["peak_mib"], (untiled, tiled)


class StateCountingCodec(WanChunkCodec):
    """Counts the causal caches alive while each chunk (or strip of one) decodes, and records the
    height and width of each."""

    def __init__(self, vae):
        super().__init__(vae)
        self.alive, self.most_alive, self.seen = weakref.WeakSet(), 0, []

    def new_state(self):
        state = super().new_state()
        self.alive.add(state)
        return state

    def _count(self, x):
        gc.collect()
        self.most_alive = max(self.most_alive, len(self.alive))
        self.seen.append(tuple(x.shape[-2:]))

    def decode_chunk(self, latent, state):
        self._count(latent)
        return super().decode_chunk(latent, state)

    def decode_high(self, x, state):
        self._count(x)
        return super().decode_high(x, state)


def test_tiles_run_tile_major_with_one_causal_cache_alive_at_a_time():
    vae = local_only_(random_vae("wan2.1", seed=6))
    latent = torch.randn(1, 16, 3, 16, 24, generator=torch.Generator().manual_seed(2))
    codec = StateCountingCodec(vae)
    tiled = torch.cat(list(streaming.decode_video(codec, latent, tile=64, overlap=16, free_memory=None)), 2)
    assert codec.most_alive == 1
    # each tile goes through all 3 latent frames before the next tile starts
    tiles = codec.seen
    assert len(tiles) % 3 == 0 and len(tiles) // 3 > 1
    assert tiled.shape == (1, 3, 9, 128, 192)
    assert (tiled - decode(vae, latent, tile=0)).abs().max() <= 1e-5  # exact for a local decoder


def test_strips_run_strip_major_with_one_causal_cache_alive_at_a_time():
    vae = random_vae("wan2.1", seed=6)
    latent = torch.randn(1, 16, 3, 8, 40, generator=torch.Generator().manual_seed(2))
    codec = StateCountingCodec(vae)
    out = torch.cat(list(streaming.decode_video(codec, latent, tile=0, overlap=None, free_memory=None, strips=3)), 2)
    assert codec.most_alive == 1  # the low layers' cache is freed before the first strip
    # columns (the longer side) at 2x the latent: keep 27/26/27, read the halo of 12 inside the frame
    assert [w for _, w in codec.seen] == [39] * 3 + [50] * 3 + [39] * 3
    assert (out - decode(vae, latent, tile=0)).abs().max() <= 1e-6


def test_the_decode_nodes_exact_strips_widget_decodes_in_strips(monkeypatch):
    from comfy_inprocess import PACK_MODULE, pack

    nodes = pack().nodes
    strips = sys.modules[f"{PACK_MODULE}.wan_core.vae.strips"]
    counts = []

    def counting(codec, latent, spans, count, check):
        counts.append(count)
        yield from strips_decode(codec, latent, spans, count, check)

    strips_decode = strips.decode_strip_major
    monkeypatch.setattr(strips, "decode_strip_major", counting)
    vae = random_vae("wan2.1", seed=9)
    samples = {"samples": torch.randn(1, 16, 2, 8, 40, generator=torch.Generator().manual_seed(5))}

    def images(exact_strips):
        return nodes.vae.Wan22VAEDecode.execute(vae=vae, samples=samples, exact_strips=exact_strips).result[0]

    whole = images(0)
    assert counts == []
    assert (images(3) - whole).abs().max() <= 1e-6
    assert counts == [3]


def test_more_strips_than_a_frame_is_worth_are_cut_to_the_most(caplog):
    vae = random_vae("wan2.1", seed=3)
    latent = torch.randn(1, 16, 2, 8, 20, generator=torch.Generator().manual_seed(6))  # 40 columns at 2x
    with caplog.at_level("INFO"):
        out = decode(vae, latent, tile=0, strips=16)
    assert "worth at most 3" in caplog.text  # 40 // the 12-row halo
    assert (out - decode(vae, latent, tile=0)).abs().max() <= 1e-6
