"""Wan22VideoCombine on the real ComfyUI: native IMAGE in, an mp4 under the output folder with
counter naming, served by /view, decoding to the right frames, size and rate with the prompt and
workflow inside; its VIDEO feeds native SaveVideo; bad prefixes and rates are refused."""

from __future__ import annotations

import json

import pytest
from video_probe import probe

pytestmark = pytest.mark.server

SUBFOLDER = "video_combine_test"
WORKFLOW = {"nodes": [{"id": 2, "type": "Wan22VideoCombine"}], "links": [], "version": 0.4}


def graph(prefix=f"{SUBFOLDER}/clip", frame_rate=16.0, fmt="h264-mp4", save_video=False):
    prompt = {
        "1": {"class_type": "EmptyImage", "inputs": {"width": 64, "height": 48, "batch_size": 9, "color": 0x3366CC}},
        "2": {"class_type": "Wan22VideoCombine", "inputs": {
            "images": ["1", 0], "frame_rate": frame_rate, "filename_prefix": prefix, "format": fmt, "crf": 19,
            "save_output": True}},
    }
    if save_video:
        prompt["3"] = {"class_type": "SaveVideo", "inputs": {
            "video": ["2", 0], "filename_prefix": f"{SUBFOLDER}/native", "format": "auto", "codec": "auto"}}
    return prompt


def test_native_images_become_an_mp4_under_the_output_folder_with_counter_names(comfy_server):
    prompt = graph()
    first = comfy_server.run(prompt, workflow=WORKFLOW)
    second = comfy_server.run(prompt | {"2": {**prompt["2"], "inputs": {**prompt["2"]["inputs"], "crf": 20}}})
    results = first["outputs"]["2"]["images"] + second["outputs"]["2"]["images"]
    assert [r["filename"] for r in results] == ["clip_00001_.mp4", "clip_00002_.mp4"]
    assert all(r["subfolder"] == SUBFOLDER and r["type"] == "output" for r in results)
    assert first["outputs"]["2"]["animated"] == [True]  # the frontend plays it in a <video>
    on_disk = sorted(p.name for p in (comfy_server.base_dir / "output" / SUBFOLDER).iterdir())
    assert on_disk == ["clip_00001_.mp4", "clip_00002_.mp4"]  # no partial left beside them

    served = comfy_server.view("clip_00001_.mp4", SUBFOLDER)
    path = comfy_server.base_dir / "fetched.mp4"
    path.write_bytes(served)
    got = probe(path)
    assert (len(got.frames), got.width, got.height, got.frame_rate) == (9, 64, 48, 16)
    # EmptyImage's colour 0x3366CC survives (51, 102, 204) within codec rounding.
    assert abs(got.frames[4].reshape(-1, 3).mean(0) - [51, 102, 204]).max() < 3
    assert json.loads(got.metadata["workflow"]) == WORKFLOW
    assert json.loads(got.metadata["prompt"])["2"]["class_type"] == "Wan22VideoCombine"


def test_its_video_output_feeds_native_save_video(comfy_server):
    entry = comfy_server.run(graph(prefix=f"{SUBFOLDER}/for_native", save_video=True))
    saved = entry["outputs"]["3"]["images"][0]
    path = comfy_server.base_dir / "output" / saved["subfolder"] / saved["filename"]
    got = probe(path)
    assert (len(got.frames), got.width, got.height) == (9, 64, 48)


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"prefix": "../outside/clip"}, "filename_prefix '../outside/clip' contains '..'"),
        ({"prefix": "/tmp/clip"}, "is an absolute path"),
        ({"frame_rate": 0.0}, "frame_rate is 0.0: it must be a positive number"),
    ],
)
def test_bad_prefix_and_frame_rate_are_refused_with_a_clear_message(comfy_server, change, message):
    error = comfy_server.run_expecting_error(graph(**change))
    assert message in error
    assert not (comfy_server.base_dir / "outside").exists()
    # The server keeps serving after a user error.
    assert comfy_server.get_json("/system_stats")
