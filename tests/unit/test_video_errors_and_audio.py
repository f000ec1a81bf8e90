"""wan_core.video: bad input gives a WanUserError and leaves no file that looks finished; audio is
muxed and trimmed or padded to the video's length."""

from __future__ import annotations

import av
import numpy as np
import pytest
import torch
from video_probe import decode_audio, smooth_clip

from wan_core.errors import WanUserError
from wan_core.video import VideoWriter, available_formats, encode_video


def leftovers(tmp_path):
    return sorted(p.name for p in tmp_path.iterdir())


def test_frames_of_different_sizes_are_refused_and_nothing_is_left(tmp_path):
    chunks = [smooth_clip(2, 16, 16), smooth_clip(2, 16, 24)]
    with pytest.raises(WanUserError, match=r"change size within one video: 16x16 then 24x16"):
        encode_video(tmp_path / "mixed.mp4", chunks, frame_rate=16)
    assert leftovers(tmp_path) == []


@pytest.mark.parametrize("chunks", [[], [np.zeros((0, 16, 16, 3), np.float32)]], ids=["no-chunks", "empty-chunk"])
def test_zero_frames_are_refused_and_nothing_is_left(tmp_path, chunks):
    with pytest.raises(WanUserError, match="no frames"):
        encode_video(tmp_path / "empty.mp4", chunks, frame_rate=16)
    assert leftovers(tmp_path) == []


@pytest.mark.parametrize("rate", [0, -5, float("nan"), float("inf"), "fast"])
def test_frame_rate_must_be_positive(tmp_path, rate):
    with pytest.raises(WanUserError, match="frame_rate"):
        VideoWriter(tmp_path / "x.mp4", frame_rate=rate)
    assert leftovers(tmp_path) == []


def test_unknown_format_and_bad_crf_are_refused(tmp_path):
    with pytest.raises(WanUserError, match="'mov' is not one of h264-mp4, h265-mp4"):
        VideoWriter(tmp_path / "x.mov", frame_rate=16, format="mov")
    with pytest.raises(WanUserError, match="crf"):
        VideoWriter(tmp_path / "x.mp4", frame_rate=16, crf=99)


def test_a_codec_this_pyav_lacks_is_refused_naming_the_available_ones(tmp_path, monkeypatch):
    # The encoder cannot be uninstalled for a test: hide it from the build's codec list instead.
    monkeypatch.setattr(av, "codecs_available", av.codecs_available - {"libsvtav1"})
    assert "av1-webm" not in available_formats()
    with pytest.raises(WanUserError) as err:
        VideoWriter(tmp_path / "x.webm", frame_rate=16, format="av1-webm")
    assert "libsvtav1" in str(err.value) and "Available here: h264-mp4, h265-mp4, vp9-webm, gif, webp" in str(err.value)
    assert leftovers(tmp_path) == []


def test_an_error_while_frames_arrive_deletes_the_partial_file(tmp_path):
    path = tmp_path / "broken.mp4"

    def produce():
        yield smooth_clip(4, 16, 16)
        assert not path.exists()
        raise RuntimeError("the decoder failed")

    with pytest.raises(RuntimeError, match="decoder failed"):
        encode_video(path, produce(), frame_rate=16)
    assert leftovers(tmp_path) == []


def test_an_encoder_that_refuses_the_size_gives_a_user_error(tmp_path):
    with pytest.raises(WanUserError, match="libx264 encoder refused 2x70000"):
        encode_video(tmp_path / "huge.mp4", [np.zeros((1, 70000, 2, 3), np.uint8)], frame_rate=16)
    assert leftovers(tmp_path) == []


# --- audio ----------------------------------------------------------------------------------

FPS, FRAMES = 16, 33  # 2.0625 s of video


def tone(seconds: float, rate: int, channels: int) -> dict:
    t = torch.arange(int(seconds * rate)) / rate
    wave = 0.3 * torch.sin(2 * torch.pi * 440 * t)
    return {"waveform": wave.expand(1, channels, -1).clone(), "sample_rate": rate}


def write_with_audio(path, audio, fmt):
    clip = smooth_clip(FRAMES, 16, 16)
    return encode_video(path, (clip[i : i + 8] for i in range(0, FRAMES, 8)), frame_rate=FPS, format=fmt, audio=audio)


@pytest.mark.parametrize(("fmt", "codec"), [("h264-mp4", "aac"), ("vp9-webm", "opus")])
@pytest.mark.parametrize("seconds", [3.0, 0.5], ids=["trimmed", "padded"])
def test_audio_is_muxed_and_fitted_to_the_video_length(tmp_path, fmt, codec, seconds):
    path = tmp_path / f"a.{fmt.split('-')[1]}"
    info = write_with_audio(path, tone(seconds, 44100, 2), fmt)
    assert info.audio
    with av.open(str(path)) as c:
        assert c.streams.audio[0].codec_context.name == codec and c.streams.audio[0].channels == 2
    samples, rate, duration = decode_audio(path)
    video_seconds = FRAMES / FPS
    # Within one codec frame (aac 1024 samples, opus 20 ms) of the video, never the clip's own length.
    assert abs(duration - video_seconds) <= 0.025, (duration, video_seconds)
    rms = lambda a: float(np.sqrt(np.mean(a**2)))  # noqa: E731
    assert rms(samples[:, : int(0.4 * rate)]) > 0.15  # the tone (0.3 amplitude sine: rms 0.21)
    if seconds < video_seconds:  # padded with silence after the clip ends
        assert rms(samples[:, int(0.7 * rate) : int(1.9 * rate)]) < 0.01
    else:  # trimmed: the tone runs to the end
        assert rms(samples[:, int(1.5 * rate) : int(1.9 * rate)]) > 0.15


def test_mono_audio_at_an_odd_rate_is_resampled_for_opus(tmp_path):
    write_with_audio(tmp_path / "m.webm", tone(1.0, 22050, 1), "vp9-webm")
    samples, rate, duration = decode_audio(tmp_path / "m.webm")
    assert rate == 48000 and samples.shape[0] == 1 and abs(duration - FRAMES / FPS) <= 0.025


def test_gif_drops_audio_with_a_warning(tmp_path, caplog):
    info = write_with_audio(tmp_path / "a.gif", tone(1.0, 44100, 1), "gif")
    assert not info.audio and "carries no audio" in caplog.text


@pytest.mark.parametrize(
    ("audio", "match"),
    [
        ({"waveform": torch.zeros(1, 6, 100), "sample_rate": 48000}, "6 channels"),
        ({"waveform": torch.zeros(1, 2, 100), "sample_rate": 0}, "sample_rate"),
        ({"samples": torch.zeros(1, 2, 100)}, "ComfyUI AUDIO"),
    ],
)
def test_bad_audio_is_refused_before_any_file(tmp_path, audio, match):
    with pytest.raises(WanUserError, match=match):
        VideoWriter(tmp_path / "x.mp4", frame_rate=16, audio=audio)
    assert leftovers(tmp_path) == []


def test_h265_refuses_widths_its_encoder_corrupts_memory_on(tmp_path):
    with pytest.raises(WanUserError, match="h265-mp4 needs frames at least 64 pixels wide, these are 40"):
        encode_video(tmp_path / "narrow.mp4", [smooth_clip(2, 64, 40)], frame_rate=16, format="h265-mp4")
    assert leftovers(tmp_path) == []
