"""The long-video template (workflows/wan22_i2v_a14b_extend.json) on the real server with tiny random
models under its exact file names: segment 1 (81 frames) from the start image, segment 2 (85 frames)
opened by segment 1's last 5 frames, the 5 repeated frames dropped and the two joined into one mp4
of 161 frames, decoded back with PyAV.

As in test_templates.py, native CLIPLoader + CLIPTextEncode become the pack's umT5 nodes (a tiny
random umT5 cannot load through CLIPLoader); everything else is the template as committed, with the
size and steps made small and the frame counts kept.
"""

from __future__ import annotations

import copy
import shutil
from pathlib import Path

import pytest
from comfy_server import output_files
from video_probe import probe

from scripts.build_workflows import EXTEND_CARRIED_FRAMES, EXTEND_SEGMENT_FRAMES
from scripts.demo import load_api, load_ui, nodes_of, only, template_names
from scripts.demo_models import write_models
from wan_core.config import KIND_DEFAULTS, ModelKind

pytestmark = pytest.mark.server

NAME = "wan22_i2v_a14b_extend"
WIDTH, HEIGHT, STEPS = 64, 64, 4
COMFY_INPUT = Path(__file__).resolve().parents[2] / ".comfyui" / "input"


def pack_text_encoders(prompt: dict) -> dict:
    """CLIPLoader -> Wan22TextEncoderLoader (same file); every CLIPTextEncode -> Wan22TextEncode whose
    first output (the positive embedding of its text) feeds what the native node fed."""
    prompt = copy.deepcopy(prompt)
    clip_id = only(prompt, "CLIPLoader")
    prompt[clip_id] = {"class_type": "Wan22TextEncoderLoader",
                       "inputs": {"text_encoder_name": prompt[clip_id]["inputs"]["clip_name"], "device": "default",
                                  "weight_dtype": "default"}}
    for nid in nodes_of(prompt, "CLIPTextEncode"):
        text = prompt[nid]["inputs"]["text"]
        prompt[nid] = {"class_type": "Wan22TextEncode",
                       "inputs": {"text_encoder": [clip_id, 0], "positive": text, "negative": text}}
    return prompt


def small(prompt: dict) -> dict:
    prompt = copy.deepcopy(prompt)
    for nid in nodes_of(prompt, "Wan22VideoLatent"):
        prompt[nid]["inputs"].update(width=WIDTH, height=HEIGHT)
    for nid in nodes_of(prompt, "Wan22Sampler"):
        prompt[nid]["inputs"]["steps"] = STEPS
    return prompt


def test_the_template_chains_two_segments_through_the_last_frames():
    prompt = load_api(NAME)
    latents = sorted(prompt[nid]["inputs"]["length"] for nid in nodes_of(prompt, "Wan22VideoLatent"))
    assert tuple(latents) == EXTEND_SEGMENT_FRAMES == (81, 85)
    last = prompt[only(prompt, "Wan22LastFrames")]["inputs"]
    drop = prompt[only(prompt, "ImageFromBatch")]["inputs"]
    assert last["frames"] == drop["batch_index"] == EXTEND_CARRIED_FRAMES == 5
    samplers = [prompt[nid]["inputs"] for nid in nodes_of(prompt, "Wan22Sampler")]
    assert len(samplers) == 2 and all(s["use_release_defaults"] and s["scheduler"] == "wan" for s in samplers)
    # Segment 2's latent starts from the carried frames; the join takes segment 1 whole, then the rest.
    second = next(nid for nid in nodes_of(prompt, "Wan22VideoLatent") if prompt[nid]["inputs"]["length"] == 85)
    assert prompt[second]["inputs"]["start_image"] == [only(prompt, "Wan22LastFrames"), 0]
    join = prompt[only(prompt, "ImageBatch")]["inputs"]
    assert join["image2"] == [only(prompt, "ImageFromBatch"), 0]
    assert join["image1"] == last["images"]


def test_the_template_makes_a_161_frame_video_on_tiny_models(comfy_server):
    prompt = load_api(NAME)
    write_models(comfy_server.base_dir / "models", ModelKind.I2V, template_names(prompt), seed=50)
    shutil.copy(COMFY_INPUT / "example.png", comfy_server.base_dir / "input" / "example.png")
    history = comfy_server.run(small(pack_text_encoders(prompt)), timeout=900, workflow=load_ui(NAME))

    videos = [f for f in output_files(history) if f["filename"].endswith(".mp4")]
    assert len(videos) == 1, videos
    ref = videos[0]
    video = probe(comfy_server.base_dir / ref["type"] / ref.get("subfolder", "") / ref["filename"])
    first, second = EXTEND_SEGMENT_FRAMES
    assert len(video.frames) == first + second - EXTEND_CARRIED_FRAMES == 161
    assert (video.width, video.height) == (WIDTH, HEIGHT)
    assert video.frame_rate == KIND_DEFAULTS[ModelKind.I2V].fps
    summaries = [history["outputs"][nid]["wan22_sampler"][0] for nid in nodes_of(prompt, "Wan22Sampler")]
    assert all(0 < s["switch_step"] < STEPS for s in summaries), summaries
