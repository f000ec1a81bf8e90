"""Wan22VideoCombine in-process: ComfyUI's counter naming under the output (or temp) folder, a
native VIDEO of the written file, the preview the frontend plays, refused prefixes and inputs,
and the LATENT path decoding through the VAE chunk by chunk, frame-exact."""

from __future__ import annotations

import json

import av
import numpy as np
import pytest
import torch
from comfy_inprocess import pack
from vae_factory import random_vae
from video_probe import probe, smooth_clip

PROMPT = {"7": {"class_type": "Wan22VideoCombine", "inputs": {}}}
WORKFLOW = {"nodes": [{"id": 7, "type": "Wan22VideoCombine"}], "links": []}


@pytest.fixture
def dirs(tmp_path):
    pack()
    import folder_paths

    saved = folder_paths.get_output_directory(), folder_paths.get_temp_directory()
    out, temp = tmp_path / "output", tmp_path / "temp"
    out.mkdir(), temp.mkdir()
    folder_paths.set_output_directory(str(out))
    folder_paths.set_temp_directory(str(temp))
    yield out, temp
    folder_paths.set_output_directory(saved[0])
    folder_paths.set_temp_directory(saved[1])


def combine(**inputs):
    """Runs the node the way ComfyUI's executor does (a class clone holding the hidden inputs)."""
    from comfy_api.latest import io

    node = pack().nodes.video.Wan22VideoCombine
    clone = node.PREPARE_CLASS_CLONE({io.Hidden.prompt: PROMPT, io.Hidden.extra_pnginfo: {"workflow": WORKFLOW}})
    args = {"frame_rate": 16.0, "filename_prefix": "Wan2.2/clip", "format": "h264-mp4", "crf": 19,
            "save_output": True}
    return clone.execute(**{**args, **inputs})


def user_error():
    return pack().wan_core.errors.WanUserError


def test_images_land_in_the_output_folder_with_comfyui_counter_names(dirs):
    out, _ = dirs
    images = torch.from_numpy(smooth_clip(21, 32, 48))  # 21 frames: two chunks of 16 and 5
    first, second = combine(images=images), combine(images=images)
    assert sorted(p.name for p in (out / "Wan2.2").iterdir()) == ["clip_00001_.mp4", "clip_00002_.mp4"]
    ui = first.ui.as_dict()
    assert ui == {"images": [{"filename": "clip_00001_.mp4", "subfolder": "Wan2.2", "type": "output"}],
                  "animated": (True,)}
    assert second.ui.as_dict()["images"][0]["filename"] == "clip_00002_.mp4"
    video = first.args[0]  # a native VIDEO of the written file
    assert video.get_dimensions() == (48, 32) and video.get_frame_count() == 21 and video.get_frame_rate() == 16
    got = probe(out / "Wan2.2" / "clip_00001_.mp4")
    assert json.loads(got.metadata["prompt"]) == PROMPT and json.loads(got.metadata["workflow"]) == WORKFLOW


def test_save_output_off_writes_a_temp_preview(dirs):
    out, temp = dirs
    result = combine(images=torch.from_numpy(smooth_clip(5, 16, 16)), save_output=False, format="webp")
    assert result.ui.as_dict()["images"][0] == {"filename": "clip_00001_.webp", "subfolder": "Wan2.2", "type": "temp"}
    assert (temp / "Wan2.2" / "clip_00001_.webp").is_file() and not any(out.iterdir())


def test_gif_preview_is_a_plain_image_because_the_frontend_would_put_it_in_a_video_tag(dirs):
    result = combine(images=torch.from_numpy(smooth_clip(5, 16, 16)), format="gif")
    assert "animated" not in result.ui.as_dict()
    assert len(probe(dirs[0] / "Wan2.2" / "clip_00001_.gif").frames) == 5


@pytest.mark.parametrize("prefix", ["../escape", "Wan2.2/../../escape", "..\\escape", "/tmp/abs", "C:\\x", " "])
def test_prefixes_leaving_the_output_folder_are_refused(dirs, prefix):
    with pytest.raises(user_error(), match="filename_prefix"):
        combine(images=torch.from_numpy(smooth_clip(2, 16, 16)), filename_prefix=prefix)
    assert not any(dirs[0].parent.rglob("*.mp4*"))


@pytest.mark.parametrize(
    ("inputs", "match"),
    [
        ({"images": torch.zeros(0, 16, 16, 3)}, "zero frames"),
        ({"images": torch.zeros(2, 16, 16, 3), "frame_rate": 0.0}, "frame_rate"),
        ({"images": torch.zeros(2, 16, 16, 3), "format": "mkv"}, "not one of"),
        ({}, "nothing to encode"),
        ({"samples": {"samples": torch.zeros(1, 16, 2, 2, 2)}}, "need a vae"),
        ({"samples": {"samples": torch.zeros(1, 16, 2, 2)}, "vae": object()}, "video latent"),
        ({"samples": {"samples": torch.zeros(1, 16, 2, 2, 2)}, "vae": object()}, "vae: a object, not a Wan VAE"),
    ],
)
def test_bad_inputs_are_user_errors_and_leave_no_file(dirs, inputs, match):
    with pytest.raises(user_error(), match=match):
        combine(**inputs)
    assert not any(p.is_file() for p in dirs[0].parent.rglob("*") if "output" in p.parts or "temp" in p.parts)


def _frames(path):
    with av.open(str(path)) as container:
        return np.stack([f.to_ndarray(format="rgb24") for f in container.decode(video=0)]).astype(np.int16)


def test_latent_is_decoded_chunk_by_chunk_into_the_frames_native_decode_gives(dirs, monkeypatch):
    pack()
    codec = pack().wan_core.comfy_bridge.vae_stream.WanChunkCodec
    calls = []
    original = codec.decode_chunk
    monkeypatch.setattr(codec, "decode_chunk", lambda self, z, state: calls.append(z.shape) or original(self, z, state))
    vae = random_vae("wan2.1", seed=3)  # a native comfy.sd.VAE
    latent = torch.randn(2, 16, 3, 4, 6, generator=torch.Generator().manual_seed(0))  # 2 videos, 9 frames
    with torch.no_grad():
        native = vae.decode(latent)  # native VAEDecode's frames: [2, 9, 32, 48, 3] in 0..1
        result = combine(samples={"samples": latent}, vae=vae, crf=0)
    assert len(calls) == 3  # one per latent frame (1 + 4 + 4 pixel frames), no whole-video decode
    files = [r["filename"] for r in result.ui.as_dict()["images"]]
    assert files == ["clip_00001_.mp4", "clip_00002_.mp4"]
    for b, name in enumerate(files):
        from_images = combine(images=native[b], crf=0, filename_prefix=f"Wan2.2/images{b}")
        images_file = dirs[0] / "Wan2.2" / from_images.ui.as_dict()["images"][0]["filename"]
        got, want = _frames(dirs[0] / "Wan2.2" / name), _frames(images_file)
        assert got.shape == want.shape == (9, 32, 48, 3)
        # the same writer on the same frames (ours within 1e-5 of native's): equal up to a rounding step
        assert np.abs(got - want).max() <= 1
        assert got.std() > 5
