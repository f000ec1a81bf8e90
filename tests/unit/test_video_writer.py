"""wan_core.video: every format decodes back to the frames, size and rate written; h264 keeps a
smooth clip above 35 dB at the default crf; colour is BT.709 limited range and says so; the
prompt and workflow sit where ComfyUI's frontend reads them; frames stream through."""

from __future__ import annotations

import gc
import json
import logging
import weakref
from fractions import Fraction

import av
import numpy as np
import pytest
import torch
from video_probe import mp4_metadata_keys, probe, psnr, smooth_clip

from wan_core.video import DEFAULT_CRF, FORMATS, VideoWriter, encode_video, partial_path

VIDEO_CODEC_FORMATS = ["h264-mp4", "h265-mp4", "vp9-webm", "av1-webm"]
PROMPT = {"3": {"class_type": "Wan22VideoCombine", "inputs": {"frame_rate": 16}}}
WORKFLOW = {"nodes": [{"id": 3, "type": "Wan22VideoCombine"}], "links": [], "version": 0.4}


def chunks_of(clip: np.ndarray, size: int = 4):
    for i in range(0, len(clip), size):
        yield torch.from_numpy(clip[i : i + size])


@pytest.mark.parametrize("fmt", list(FORMATS))
def test_each_format_decodes_to_the_written_frame_count_size_and_rate(tmp_path, fmt):
    clip = smooth_clip(9, 32, 64)
    path = tmp_path / f"clip.{FORMATS[fmt].extension}"
    info = encode_video(path, chunks_of(clip), frame_rate=16, format=fmt)
    got = probe(path)
    assert len(got.frames) == 9 == info.frames
    assert (got.width, got.height) == (64, 32) == (info.width, info.height)
    if fmt in VIDEO_CODEC_FORMATS:
        assert got.frame_rate == 16
    else:  # gif stores centiseconds, webp milliseconds per frame: 62.5 ms rounds to 60-70
        assert all(abs(d - 62.5) <= 7.5 for d in got.durations_ms), got.durations_ms
        assert abs(sum(got.durations_ms) - 9 * 62.5) <= 30
    # Every format keeps the picture: a loose floor that a wrong matrix, range or palette fails.
    assert min(psnr(a, b) for a, b in zip(got.frames, (clip * 255).round().astype(np.uint8))) > 26
    assert not partial_path(path).exists()


def test_fractional_frame_rate_is_stored_exactly(tmp_path):
    encode_video(tmp_path / "ntsc.mp4", chunks_of(smooth_clip(5, 16, 16)), frame_rate=23.976)
    assert probe(tmp_path / "ntsc.mp4").frame_rate == Fraction(24000, 1001)


def test_h264_round_trip_of_a_smooth_clip_is_at_least_35_db_at_the_default_crf(tmp_path):
    clip = smooth_clip(17, 96, 160)
    encode_video(tmp_path / "rt.mp4", chunks_of(clip), frame_rate=16)  # default format and crf
    got = probe(tmp_path / "rt.mp4").frames
    source = (clip * 255).round().astype(np.uint8)
    scores = [psnr(a, b) for a, b in zip(got, source)]
    assert DEFAULT_CRF == 19
    assert len(scores) == 17 and min(scores) >= 35.0, scores  # measured: ~39.9 dB mean


@pytest.mark.parametrize("fmt", VIDEO_CODEC_FORMATS)
def test_video_codecs_write_bt709_limited_range_and_tag_it(tmp_path, fmt):
    path = tmp_path / f"red.{FORMATS[fmt].extension}"
    red = np.zeros((5, 32, 64, 3), np.uint8)
    red[..., 0] = 255
    encode_video(path, [red], frame_rate=8, format=fmt, crf=10)
    with av.open(str(path)) as container:
        cc = container.streams.video[0].codec_context
        assert (cc.color_primaries, cc.color_trc, cc.colorspace, cc.color_range) == (1, 1, 1, 1)  # 709, tv
        luma = next(container.decode(video=0)).to_ndarray(format="yuv420p")[:32].astype(float)
    # Pure red: Y = 16 + 219 * 0.2126 = 62.6 with BT.709 in limited range (BT.601 gives 81.5,
    # full range 54.2).
    assert abs(luma.mean() - 62.6) < 2.5, luma.mean()


def test_odd_sizes_are_padded_by_edge_copy_for_420_and_logged(tmp_path, caplog):
    clip = smooth_clip(5, 33, 47)
    with caplog.at_level(logging.INFO, logger="wan_core.video"):
        info = encode_video(tmp_path / "odd.mp4", [clip], frame_rate=16, crf=0)
    got = probe(tmp_path / "odd.mp4")
    assert (got.width, got.height) == (48, 34) == (info.width, info.height)
    assert (info.source_width, info.source_height) == (47, 33)
    assert "47x33 is odd; padded to 48x34" in caplog.text
    # The added column and row repeat the last ones (crf 0 is lossless in luma; chroma is shared).
    frame = got.frames[0].astype(int)
    assert np.abs(frame[:, 47] - frame[:, 46]).mean() < 4 and np.abs(frame[33] - frame[32]).mean() < 4
    # The picture sits at the top left, unscaled: it matches there and not one pixel over
    # (4:2:0 chroma of this busy 47x33 clip caps the match near 34 dB even at crf 0).
    source = (clip[0] * 255).round().astype(np.uint8)
    in_place = psnr(frame[:33, :47].astype(np.uint8), source)
    assert in_place > 30 and in_place > psnr(frame[:33, 1:48].astype(np.uint8), source) + 3  # 34.5 vs 29.8 dB


@pytest.mark.parametrize("fmt", ["gif", "webp"])
def test_image_formats_keep_odd_sizes(tmp_path, fmt):
    encode_video(tmp_path / f"odd.{fmt}", [smooth_clip(3, 33, 47)], frame_rate=10, format=fmt)
    got = probe(tmp_path / f"odd.{fmt}")
    assert (got.width, got.height, len(got.frames)) == (47, 33, 3)


def test_mp4_carries_prompt_and_workflow_in_the_box_the_frontend_reads(tmp_path):
    path = tmp_path / "meta.mp4"
    encode_video(path, [smooth_clip(3, 16, 16)], frame_rate=16, metadata={"prompt": PROMPT, "workflow": WORKFLOW})
    order, values = mp4_metadata_keys(path)
    # faststart: the index (with the metadata) comes before the media data, so the frontend's
    # 64 MiB read of a long video still sees it and browsers start playing at once.
    assert order.index("moov") < order.index("mdat"), order
    assert json.loads(values["prompt"]) == PROMPT and json.loads(values["workflow"]) == WORKFLOW
    assert json.loads(probe(path).metadata["workflow"]) == WORKFLOW  # what ComfyUI's VideoFromFile sees


@pytest.mark.parametrize("fmt", ["vp9-webm", "webp"])
def test_webm_and_webp_carry_prompt_and_workflow(tmp_path, fmt):
    path = tmp_path / f"meta.{FORMATS[fmt].extension}"
    encode_video(path, [smooth_clip(3, 16, 16)], frame_rate=16, format=fmt,
                 metadata={"prompt": PROMPT, "workflow": WORKFLOW})
    meta = probe(path).metadata
    # Matroska tags are upper case, which is what the frontend's webm reader matches;
    # WebP holds ComfyUI's EXIF "key:json" strings.
    key = str.upper if fmt == "vp9-webm" else str.lower
    assert json.loads(meta[key("prompt")]) == PROMPT and json.loads(meta[key("workflow")]) == WORKFLOW


def test_frames_stream_through_without_being_kept(tmp_path):
    """Each chunk is encoded and dropped before the next is asked for: the writer never holds the video."""
    path = tmp_path / "stream.mp4"
    refs: list[weakref.ref] = []

    def produce():
        for i in range(6):
            chunk = None  # this generator's own reference to the chunk it gave last
            gc.collect()
            assert all(r() is None for r in refs), "an earlier chunk is still referenced"
            assert not path.exists(), "the final name exists before the video is complete"
            chunk = torch.from_numpy(smooth_clip(4, 32, 32, seed=i))
            refs.append(weakref.ref(chunk))
            yield chunk

    info = encode_video(path, produce(), frame_rate=16)
    assert info.frames == 24 and len(probe(path).frames) == 24


def test_uint8_and_single_frame_chunks_are_accepted(tmp_path):
    clip = (smooth_clip(3, 16, 16) * 255).round().astype(np.uint8)
    with VideoWriter(tmp_path / "u8.mp4", frame_rate=16) as writer:
        for frame in clip:
            writer.write(frame)  # [H, W, 3]
    assert len(probe(tmp_path / "u8.mp4").frames) == 3
