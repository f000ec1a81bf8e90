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
RELEASE_TEMPLATES = {"wan22_t2v_a14b": ModelKind.T2V, "wan22_i2v_a14b": ModelKind.I2V, "wan22_ti2v_5b": ModelKind.TI2V,
                     "wan22_flf2v_a14b": ModelKind.I2V}
# The 4-step Lightning variants: Wan22LoraLoader between the loader and the sampler, 4 steps, cfg 1.
LIGHTNING_TEMPLATES = {"wan22_t2v_a14b_lightning": ModelKind.T2V, "wan22_i2v_a14b_lightning": ModelKind.I2V}
LIGHTNING_TIMESTEPS = [1000, 937, 833, 625]  # the timesteps the distill LoRAs were trained on; 2 + 2
TEMPLATES = {**RELEASE_TEMPLATES, **LIGHTNING_TEMPLATES}
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
    for name, kind in RELEASE_TEMPLATES.items():
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


@pytest.mark.parametrize("name", list(LIGHTNING_TEMPLATES))
def test_lightning_templates_chain_the_repackaged_loras_into_a_4_step_cfg_1_run(name):
    kind = LIGHTNING_TEMPLATES[name]
    d = KIND_DEFAULTS[kind]
    prompt = load_api(name)
    loader_id, lora_id, sampler_id = (only(prompt, t) for t in ("Wan22ModelLoader", "Wan22LoraLoader", "Wan22Sampler"))
    lora, sampler = prompt[lora_id]["inputs"], prompt[sampler_id]["inputs"]
    version = "v1.1" if kind == ModelKind.T2V else "v1"
    assert (lora["lora_high"], lora["lora_low"]) == (
        f"wan2.2_{kind.value}_lightx2v_4steps_lora_{version}_high_noise.safetensors",
        f"wan2.2_{kind.value}_lightx2v_4steps_lora_{version}_low_noise.safetensors")
    assert (lora["strength_high"], lora["strength_low"]) == (1.0, 1.0)
    assert (lora["model"], lora["low_noise_model"]) == ([loader_id, 0], [loader_id, 1])
    assert (sampler["model"], sampler["low_noise_model"]) == ([lora_id, 0], [lora_id, 1])
    assert sampler["use_release_defaults"] is False
    assert (sampler["steps"], sampler["cfg"], sampler["cfg_low_noise"], sampler["shift"], sampler["boundary"]) == (
        4, 1.0, 1.0, 5.0, d.boundary)
    assert (sampler["sampler_name"], sampler["scheduler"]) == ("euler", "wan_dpm")
    note = next(n for n in load_ui(name)["nodes"] if n["type"] == "MarkdownNote")["widgets_values"][0]
    for file in (lora["lora_high"], lora["lora_low"]):
        assert f"| `{file}` | `ComfyUI/models/loras/` |" in note
        assert f"Comfy-Org/Wan_2.2_ComfyUI_Repackaged/resolve/main/split_files/loras/{file}" in note
    assert "2 high-noise steps (t 1000, 937) then 2 low-noise steps (t 833, 625)" in note


@pytest.mark.parametrize("name", list(LIGHTNING_TEMPLATES))
def test_schedule_route_shows_the_lightning_2_plus_2_split(comfy_server, name):
    """What the sampler node's plot draws for the template's widgets."""
    import urllib.parse

    sampler = load_api(name)[only(load_api(name), "Wan22Sampler")]["inputs"]
    query = {k: sampler[k] for k in ("steps", "shift", "boundary", "scheduler", "denoise")}
    query["use_release_defaults"] = "false"
    answer = comfy_server.get_json(f"/wan22/schedule?{urllib.parse.urlencode(query)}")
    assert answer["timesteps"] == LIGHTNING_TIMESTEPS
    assert answer["switch_step"] == 2
    assert answer["sigmas"] == pytest.approx([1.0, 0.9375, 0.8333333, 0.625, 0.0])


def test_ti2v_template_starts_text_to_video_with_the_image_one_toggle_away():
    ui = load_ui("wan22_ti2v_5b")
    image = next(n for n in ui["nodes"] if n["type"] == "LoadImage")
    latent = next(n for n in ui["nodes"] if n["type"] == "Wan22VideoLatent")
    assert image["mode"] == 4  # bypassed
    link = next(lk for lk in ui["links"] if lk[1] == image["id"])
    assert (link[3], latent["inputs"][link[4]]["name"]) == (latent["id"], "start_image")
    assert not [n for n in load_api("wan22_ti2v_5b").values() if n["class_type"] == "LoadImage"]


def _write_tiny_loras(server, prompt: dict, kind: ModelKind, seed: int) -> None:
    """Random LoRAs for the tiny models under the template's LoRA file names (lightx2v layout,
    with diff_m), as the Lightning templates load them."""
    from dit_factory import tiny_config
    from lora_factory import random_lora, write_lora

    lora = prompt[only(prompt, "Wan22LoraLoader")]["inputs"]
    for i, file in enumerate((lora["lora_high"], lora["lora_low"])):
        write_lora(random_lora(tiny_config(kind), seed=seed + i), server.base_dir / "models" / "loras" / file,
                   "lightx2v_lora_AB")


def _tiny_run(server, name: str, prompt: dict, seed: int):
    kind = TEMPLATES[name]
    write_models(server.base_dir / "models", kind, template_names(prompt), seed=seed)
    if name in LIGHTNING_TEMPLATES:
        _write_tiny_loras(server, prompt, kind, seed)
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
    if name in LIGHTNING_TEMPLATES:
        assert (summary["timesteps"], summary["switch_step"], summary["cfg"]) == (LIGHTNING_TIMESTEPS, 2, [1.0, 1.0])
        assert summary["experts_used"] == ["high", "high", "low", "low"], summary
        lora_ui = result.history["outputs"][only(prompt, "Wan22LoraLoader")]["wan22_lora"][0]
        assert lora_ui["warnings"] == [] and len(lora_ui["applied"]) == 2, lora_ui


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
