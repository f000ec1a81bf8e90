"""The drag-and-drop templates (workflows/): generated from their one description, listed by
ComfyUI, and each API twin runs on the real server with tiny random models placed under the
template's exact file names, giving an mp4 of the right frames, size and fps that holds its graph.

The runs swap the native CLIPLoader + CLIPTextEncode pair for the pack's umT5 nodes (same file
name, same prompts): native CLIPLoader type "wan" always builds the umT5-XXL architecture, so a
tiny random umT5 cannot load through it. Everything else is the template as committed, with the
size, length and steps made small.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
from video_probe import probe

from scripts.build_workflows import (
    API_SUBDIR,
    MODE_ALWAYS,
    WORKFLOWS_DIR,
    build_all,
    dumps,
    templates,
    to_api,
)
from scripts.demo import (
    load_api,
    load_ui,
    only,
    resize,
    run_template,
    swap_text_encoder,
    template_names,
)
from scripts.demo_models import write_models
from wan_core.config import KIND_DEFAULTS, ModelKind

pytestmark = pytest.mark.server

PACK_DIR_NAME = "comfyui-wan22"
TEMPLATES = {"wan22_t2v_a14b": ModelKind.T2V, "wan22_i2v_a14b": ModelKind.I2V, "wan22_ti2v_5b": ModelKind.TI2V,
             "wan22_flf2v_a14b": ModelKind.I2V}
# Graphs with two sampling runs, tested in their own file (test_long_video_template.py).
SEGMENT_TEMPLATES = {"wan22_i2v_a14b_extend"}
# 64 px is a multiple of both latent patch strides (16 for A14B, 32 for 5B); 5 frames = 2 latent frames.
WIDTH, HEIGHT, FRAMES, STEPS = 64, 64, 5, 4
COMFY_INPUT = Path(__file__).resolve().parents[2] / ".comfyui" / "input"


def test_committed_templates_are_what_the_generator_builds(comfy_server):
    files = build_all(comfy_server.get_json("/object_info"))
    stale = [str(p) for p, content in files.items()
             if (WORKFLOWS_DIR / p).read_text(encoding="utf-8") != dumps(content)]
    assert not stale, f"workflows/ differs from scripts/build_workflows.py for {stale}: run " \
                      f"`python -m scripts.build_workflows` and commit the result"
    committed = {p.relative_to(WORKFLOWS_DIR) for p in WORKFLOWS_DIR.rglob("*.json")}
    assert committed == set(files), "workflows/ holds json files the generator does not make"


def test_workflow_templates_route_lists_and_serves_the_pack_templates(comfy_server):
    listing = comfy_server.get_json("/api/workflow_templates")
    # Only the top level of workflows/ is listed: the API twins in workflows/api/ stay out of the browser.
    assert sorted(listing.get(PACK_DIR_NAME, [])) == sorted([*TEMPLATES, *SEGMENT_TEMPLATES]), listing
    for name in [*TEMPLATES, *SEGMENT_TEMPLATES]:
        served = json.loads(comfy_server.get(f"/api/workflow_templates/{PACK_DIR_NAME}/{name}.json"))
        assert served == load_ui(name)


def test_templates_use_the_release_defaults_and_repackaged_files():
    for name, kind in TEMPLATES.items():
        d = KIND_DEFAULTS[kind]
        prompt = load_api(name)
        sampler = prompt[only(prompt, "Wan22Sampler")]["inputs"]
        latent = prompt[only(prompt, "Wan22VideoLatent")]["inputs"]
        combine = prompt[only(prompt, "Wan22VideoCombine")]["inputs"]
        clip = prompt[only(prompt, "CLIPLoader")]["inputs"]
        size = (d.width, d.height) if kind == ModelKind.TI2V else (832, 480)
        assert (latent["width"], latent["height"], latent["length"]) == (*size, d.frames), name
        assert (sampler["steps"], sampler["sampler_name"], sampler["scheduler"]) == (d.steps, "wan_unipc", "wan")
        assert sampler["use_release_defaults"] is True
        assert (sampler["cfg"], sampler["cfg_low_noise"], sampler["shift"]) == (d.cfg_high, d.cfg_low, d.shift)
        assert combine["frame_rate"] == d.fps
        assert clip == {"clip_name": "umt5_xxl_fp8_e4m3fn_scaled.safetensors", "type": "wan", "device": "default"}
        names = template_names(prompt)
        expected_vae = "wan2.2_vae.safetensors" if kind == ModelKind.TI2V else "wan_2.1_vae.safetensors"
        assert names.vae == expected_vae
        if kind == ModelKind.TI2V:
            assert (names.high, names.low) == ("wan2.2_ti2v_5B_fp16.safetensors", None)
        else:
            assert names.high == f"wan2.2_{kind.value}_high_noise_14B_fp8_scaled.safetensors"
            assert names.low == f"wan2.2_{kind.value}_low_noise_14B_fp8_scaled.safetensors"
        # The note names every file the graph loads and the folder it goes in.
        ui = load_ui(name)
        note = next(n for n in ui["nodes"] if n["type"] in ("Note", "MarkdownNote"))["widgets_values"][0]
        for folder, file in (("diffusion_models", names.high), ("diffusion_models", names.low),
                             ("vae", names.vae), ("text_encoders", names.text_encoder)):
            if file:
                assert f"| `{file}` | `ComfyUI/models/{folder}/` |" in note, (name, file)


def test_ti2v_template_starts_text_to_video_with_the_image_one_toggle_away():
    ui = load_ui("wan22_ti2v_5b")
    image = next(n for n in ui["nodes"] if n["type"] == "LoadImage")
    latent = next(n for n in ui["nodes"] if n["type"] == "Wan22VideoLatent")
    assert image["mode"] == 4  # bypassed
    link = next(lk for lk in ui["links"] if lk[1] == image["id"])
    assert (link[3], latent["inputs"][link[4]]["name"]) == (latent["id"], "start_image")
    assert not [n for n in load_api("wan22_ti2v_5b").values() if n["class_type"] == "LoadImage"]


def _tiny_run(server, name: str, prompt: dict, seed: int):
    kind = TEMPLATES[name]
    write_models(server.base_dir / "models", kind, template_names(prompt), seed=seed)
    shutil.copy(COMFY_INPUT / "example.png", server.base_dir / "input" / "example.png")  # as ComfyUI ships it
    small = resize(swap_text_encoder(prompt), WIDTH, HEIGHT, FRAMES, steps=STEPS)
    return run_template(server, name, small, workflow=load_ui(name), timeout=300)


def _check_video(result, name: str, prompt: dict):
    kind = TEMPLATES[name]
    video = probe(result.video)
    assert result.video.suffix == ".mp4"
    assert (len(video.frames), video.width, video.height) == (FRAMES, WIDTH, HEIGHT)
    assert video.frame_rate == KIND_DEFAULTS[kind].fps
    # Dropping the mp4 on ComfyUI restores the graph: the frontend reads these two keys.
    assert json.loads(video.metadata["workflow"]) == load_ui(name)
    assert json.loads(video.metadata["prompt"])[only(prompt, "Wan22Sampler")]["class_type"] == "Wan22Sampler"
    summary = result.sampler
    assert summary["steps"] == STEPS
    if kind == ModelKind.TI2V:
        assert summary["boundary"] is None and "steps on one model" in summary["text"], summary
    else:
        assert 0 < summary["switch_step"] < STEPS, summary
        assert summary["boundary"] == KIND_DEFAULTS[kind].boundary


@pytest.mark.parametrize("name", list(TEMPLATES))
def test_template_runs_on_tiny_models_under_its_file_names(comfy_server, name):
    prompt = load_api(name)
    result = _tiny_run(comfy_server, name, prompt, seed=list(TEMPLATES).index(name) * 10)
    _check_video(result, name, swap_text_encoder(prompt))


def test_ti2v_template_with_its_start_image_switched_on(comfy_server):
    """What the graph queues after the user un-bypasses Load Image (Ctrl+B)."""
    graph = next(g for g in templates() if g.name == "wan22_ti2v_5b")
    next(n for n in graph.nodes if n.type == "LoadImage").mode = MODE_ALWAYS
    prompt = to_api(graph, comfy_server.get_json("/object_info"))
    assert prompt[only(prompt, "Wan22VideoLatent")]["inputs"]["start_image"] == [only(prompt, "LoadImage"), 0]
    result = _tiny_run(comfy_server, "wan22_ti2v_5b", prompt, seed=30)
    _check_video(result, "wan22_ti2v_5b", swap_text_encoder(prompt))


def test_api_twins_live_in_a_subfolder_the_template_browser_does_not_list():
    assert (WORKFLOWS_DIR / API_SUBDIR).is_dir()
    assert {p.stem for p in (WORKFLOWS_DIR / API_SUBDIR).glob("*.json")} == set(TEMPLATES) | SEGMENT_TEMPLATES
