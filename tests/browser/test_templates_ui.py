"""The templates in the real ComfyUI frontend (headless Chromium, real server): each loads with no
missing node and no missing-model dialog (tiny random models sit under the templates' file
names), and the demo graph queued from the browser ends with its video playing in the combine node.

The demo graph is the T2V-A14B template with the native umT5 nodes swapped for the pack's (a tiny
random umT5 cannot load through native CLIPLoader, which builds the fixed umT5-XXL architecture)
and a small size, edited in the page the way a user would.
"""

from __future__ import annotations

import json
import shutil

import pytest

from scripts.build_workflows import WORKFLOWS_DIR
from scripts.demo import load_api, template_names
from scripts.demo_models import write_models
from wan_core.config import ModelKind

pytestmark = [pytest.mark.server, pytest.mark.browser]

TEMPLATES = {"wan22_t2v_a14b": ModelKind.T2V, "wan22_i2v_a14b": ModelKind.I2V, "wan22_ti2v_5b": ModelKind.TI2V,
             "wan22_t2v_a14b_lightning": ModelKind.T2V, "wan22_i2v_a14b_lightning": ModelKind.I2V,
             "wan22_flf2v_a14b": ModelKind.I2V, "wan22_i2v_a14b_extend": ModelKind.I2V}
WIDTH, HEIGHT, FRAMES, STEPS = 64, 64, 5, 4
# The frontend asks the online node registry about custom node types; this machine has no internet.
OFFLINE_NOISE = "api.comfy.org"


def our_problems(page) -> list[str]:
    return [p for p in page.problems() if "wan22" in p.lower() and OFFLINE_NOISE not in p]


@pytest.fixture(scope="module")
def tiny_models(comfy_server):
    """Tiny random models under every template's file names, and the start image ComfyUI ships."""
    from dit_factory import tiny_config
    from lora_factory import random_lora, write_lora

    for i, (name, kind) in enumerate(TEMPLATES.items()):
        prompt = load_api(name)
        write_models(comfy_server.base_dir / "models", kind, template_names(prompt), seed=100 + i)
        for node in prompt.values():  # the Lightning templates' LoRA files
            if node["class_type"] == "Wan22LoraLoader":
                for j, key in enumerate(("lora_high", "lora_low")):
                    write_lora(random_lora(tiny_config(kind), seed=j), comfy_server.base_dir / "models" / "loras" /
                               node["inputs"][key], "lightx2v_lora_AB")
    comfy_input = WORKFLOWS_DIR.parent / ".comfyui" / "input" / "example.png"
    shutil.copy(comfy_input, comfy_server.base_dir / "input" / "example.png")


@pytest.mark.parametrize("name", list(TEMPLATES))
def test_template_loads_in_the_frontend_with_nothing_missing(tiny_models, comfy_page, name):
    workflow = json.loads((WORKFLOWS_DIR / f"{name}.json").read_text(encoding="utf-8"))
    report = comfy_page.load_workflow(workflow)
    comfy_page.screenshot(f"template_{name}")
    assert report.missing_node_types == []
    assert report.dialogs == [], report.dialogs
    assert sorted(report.node_types) == sorted(n["type"] for n in workflow["nodes"])
    modes = comfy_page.evaluate("() => window.app.graph.nodes.map((n) => [n.type, n.mode])")
    assert sorted(modes) == sorted([n["type"], n["mode"]] for n in workflow["nodes"])
    assert not our_problems(comfy_page), our_problems(comfy_page)


# The user's edits of the demo: the pack's umT5 nodes in place of CLIPLoader + two CLIPTextEncode
# (same file, same prompts), a small size, few steps; then Queue.
_EDIT_AND_QUEUE = """async ([width, height, length, steps]) => {
  const g = window.app.graph;
  const LG = window.LiteGraph;
  const one = (type) => g.nodes.find((n) => n.type === type);
  const widget = (node, name) => node.widgets.find((w) => w.name === name);
  const set = (node, name, value) => { widget(node, name).value = value; };
  const sampler = one("Wan22Sampler");
  const clip = one("CLIPLoader");
  const pos = sampler.getInputNode(sampler.findInputSlot("positive"));
  const neg = sampler.getInputNode(sampler.findInputSlot("negative"));
  const loader = LG.createNode("Wan22TextEncoderLoader");
  loader.pos = [...clip.pos];
  g.add(loader);
  set(loader, "text_encoder_name", widget(clip, "clip_name").value);
  const encode = LG.createNode("Wan22TextEncode");
  encode.pos = [...pos.pos];
  g.add(encode);
  set(encode, "positive", widget(pos, "text").value);
  set(encode, "negative", widget(neg, "text").value);
  g.remove(pos); g.remove(neg); g.remove(clip);
  loader.connect(0, encode, encode.findInputSlot("text_encoder"));
  encode.connect(0, sampler, sampler.findInputSlot("positive"));
  encode.connect(1, sampler, sampler.findInputSlot("negative"));
  const latent = one("Wan22VideoLatent");
  set(latent, "width", width); set(latent, "height", height); set(latent, "length", length);
  set(sampler, "steps", steps);
  window.app.canvas.setDirty(true, true);
  await window.app.queuePrompt(0, 1);
  return one("Wan22VideoCombine").id;
}"""

_VIDEO_SHOWN = """(id) => {
  const node = window.app.graph.getNodeById(id);
  const video = node?.videoContainer?.querySelector("video");
  if (!video || video.readyState < 2 || !video.videoWidth) return null;
  return { src: decodeURIComponent(video.currentSrc || video.src), width: video.videoWidth,
           height: video.videoHeight, filename: node.wan22Video?.filename ?? null };
}"""


def test_demo_graph_queued_from_the_browser_shows_its_video(tiny_models, comfy_page):
    page = comfy_page
    report = page.load_workflow(WORKFLOWS_DIR / "wan22_t2v_a14b.json")
    assert report.missing_node_types == []
    combine_id = page.evaluate(_EDIT_AND_QUEUE, [WIDTH, HEIGHT, FRAMES, STEPS])
    shown = page.wait_for(_VIDEO_SHOWN, combine_id, timeout_ms=240_000)
    page.screenshot("template_demo_video")
    assert shown["filename"].endswith(".mp4") and f"filename={shown['filename']}" in shown["src"], shown
    assert "Wan2.2/wan22_t2v_a14b" in shown["src"] or "subfolder=Wan2.2" in shown["src"], shown
    assert (shown["width"], shown["height"]) == (WIDTH, HEIGHT)
    # The run's file is the server's: it is in the output folder with the template's prefix.
    outputs = list((page.server.base_dir / "output" / "Wan2.2").glob("wan22_t2v_a14b_*.mp4"))
    assert any(p.name == shown["filename"] for p in outputs), (outputs, shown)
    assert not our_problems(page), our_problems(page)
