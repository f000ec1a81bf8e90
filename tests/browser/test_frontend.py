"""The pack's frontend extension in the real ComfyUI UI (headless Chromium, real server).

- The sampler node carries a schedule plot: its switch step for steps/shift/boundary, checked in
  the drawn pixels (every step's point has its expert's colour, the boundary line and the switch
  line are there), and it follows widget edits.
- During a run the plot names the active expert and step; the run's end leaves a finished or
  stopped line; the last run's kind gives the release values under use_release_defaults.
- The combine node's result plays inline: a real prompt (EmptyImage -> Wan22VideoCombine) runs on
  the server and its mp4 plays in the node; a GIF gets the animated preview.

Screenshots land in .cache/screenshots/ (WAN22_SCREENSHOT_DIR) to look at.
"""

from __future__ import annotations

import pytest

from wan_core.schedule import wan_schedule

pytestmark = [pytest.mark.server, pytest.mark.browser]

PLOT_COLORS = {"high": (240, 160, 64), "low": (79, 163, 247), "boundary": (224, 90, 90), "switch": (242, 242, 242)}

# Waits until the node's published plot has the expected fields; returns the plot.
_PLOT_IS = """([id, expect]) => {
  const plot = window.app.graph.getNodeById(id)?.wan22Plot;
  if (!plot) return null;
  const same = Object.entries(expect).every(([k, v]) => JSON.stringify(plot[k]) === JSON.stringify(v));
  return same ? plot : null;
}"""

# The plot canvas' pixels where the plot says it drew: each point's colour, and how many pixels of
# the boundary line's row and the switch line's column have those lines' colours.
_DRAWN_PIXELS = """([id, colors]) => {
  const node = window.app.graph.getNodeById(id);
  const canvas = node.wan22.canvas;
  const geometry = node.wan22Plot.geometry;
  const ratio = canvas.width / canvas.clientWidth;
  const data = canvas.getContext("2d").getImageData(0, 0, canvas.width, canvas.height).data;
  const at = (x, y) => {
    const i = (Math.floor(y * ratio) * canvas.width + Math.floor(x * ratio)) * 4;
    return [data[i], data[i + 1], data[i + 2]];
  };
  const near = (rgb, c) => rgb.every((v, i) => Math.abs(v - c[i]) <= 24);
  const count = (coords, c) => coords.filter(([x, y]) => near(at(x, y), c)).length;
  const box = canvas.getBoundingClientRect();
  const row = [], column = [];
  for (let x = geometry.area.left; x <= geometry.area.right; x += 1) row.push([x, geometry.boundaryY]);
  for (let y = geometry.area.top; y <= geometry.area.bottom; y += 1) column.push([geometry.switchX, y]);
  return {
    points: geometry.points.map(([x, y]) => (near(at(x, y), colors.high) ? "high" : near(at(x, y), colors.low) ? "low" : "?")),
    boundaryPixels: geometry.boundaryY === null ? 0 : count(row, colors.boundary),
    switchPixels: geometry.switchX === null ? 0 : count(column, colors.switch),
    visible: canvas.isConnected && box.width > 100 && box.height > 100 && canvas.offsetParent !== null,
  };
}"""


def wait_plot(page, node_id: int, **expect) -> dict:
    return page.wait_for(_PLOT_IS, [node_id, expect])


def drawn(page, node_id: int) -> dict:
    return page.evaluate(_DRAWN_PIXELS, [node_id, PLOT_COLORS])


def add_sampler(page, **widgets) -> int:
    page.clear_graph()
    node_id = page.add_node("Wan22Sampler", pos=(120, 120))
    for name, value in widgets.items():
        page.set_widget(node_id, name, value)
    return node_id


def api_event(page, event: str, detail: dict) -> None:
    """Feeds the frontend's api event bus a message as the server's websocket would deliver it."""
    page.evaluate("([type, detail]) => window.comfyAPI.api.api.dispatchCustomEvent(type, detail)", [event, detail])


def our_problems(page) -> list[str]:
    return [p for p in page.problems() if "wan22" in p.lower()]


def test_sampler_node_plots_the_schedule_with_the_switch_step(comfy_page):
    page = comfy_page
    node_id = add_sampler(page, use_release_defaults=False, steps=40, shift=12.0, boundary=0.875)
    plot = wait_plot(page, node_id, state="plot", steps=40, shift=12, boundary=0.875)
    assert plot["switch_step"] == 26
    assert plot["label"] == "switch after step 26 of 40"
    assert plot["timesteps"][25] >= 875 > plot["timesteps"][26]
    pixels = drawn(page, node_id)
    page.screenshot("sampler_plot_t2v")
    assert pixels["visible"]
    assert pixels["points"] == ["high"] * 26 + ["low"] * 14
    assert pixels["boundaryPixels"] > 20 and pixels["switchPixels"] > 10, pixels

    # The I2V release values: the plot follows the edits.
    page.set_widget(node_id, "shift", 5.0)
    page.set_widget(node_id, "boundary", 0.9)
    plot = wait_plot(page, node_id, state="plot", shift=5, boundary=0.9)
    assert (plot["switch_step"], plot["label"]) == (15, "switch after step 15 of 40")
    assert drawn(page, node_id)["points"] == ["high"] * 15 + ["low"] * 25

    # Partial denoise keeps the schedule's tail: at shift 5 every step is below the boundary.
    page.set_widget(node_id, "steps", 20)
    page.set_widget(node_id, "denoise", 0.5)
    plot = wait_plot(page, node_id, state="plot", steps=20, denoise=0.5)
    assert plot["switch_step"] == 0
    assert plot["label"] == "no high-noise step: the low-noise expert runs all 20 steps"
    assert drawn(page, node_id)["points"] == ["low"] * 20
    page.set_widget(node_id, "shift", 12.0)
    page.set_widget(node_id, "denoise", 0.9)
    plot = wait_plot(page, node_id, state="plot", steps=20, shift=12, denoise=0.9)
    k = wan_schedule(20, 12.0, 0.9).switch_step(0.9)
    assert 0 < k < 20 and plot["switch_step"] == k
    assert plot["label"] == f"switch after step {k} of 20"
    assert drawn(page, node_id)["points"] == ["high"] * k + ["low"] * (20 - k)
    page.screenshot("sampler_plot_partial_denoise")
    assert not our_problems(page), our_problems(page)

    # A value the server refuses (a workflow from elsewhere can carry any combo value) shows the
    # server's message instead of a stale plot.
    page.set_widget(node_id, "scheduler", "no_such_scheduler")
    plot = wait_plot(page, node_id, state="error")
    assert plot["label"].startswith("scheduler must be one of wan, "), plot["label"]


def test_release_defaults_plot_the_loaded_kind_or_say_the_widgets_are_ignored(comfy_page):
    page = comfy_page
    node_id = add_sampler(page, use_release_defaults=True, steps=40, shift=5.0, boundary=0.9)
    plot = wait_plot(page, node_id, state="ignored")
    assert "are ignored" in plot["label"] and "shift" in plot["label"]
    page.screenshot("sampler_plot_release_unknown")

    # A finished run says the model's kind (the sampler's executed UI output, as the server sends it).
    summary = {"text": "t2v: ...", "kind": "t2v", "steps": 40, "switch_step": 26, "boundary": 0.875, "shift": 12.0,
               "cfg": [4.0, 3.0], "timesteps": [], "experts_used": [], "switch_seconds": 0.5}
    api_event(page, "executed", {"node": str(node_id), "display_node": str(node_id), "prompt_id": "p",
                                 "output": {"wan22_sampler": [summary]}})
    plot = wait_plot(page, node_id, state="plot", kind="t2v")
    assert (plot["shift"], plot["boundary"], plot["switch_step"]) == (12, 0.875, 26)  # not the widgets' 5 / 0.9
    assert plot["title"].startswith("T2V-A14B release values")
    assert plot["run"]["state"] == "finished" and "high-noise expert 1-26" in plot["run"]["text"]
    assert drawn(page, node_id)["points"] == ["high"] * 26 + ["low"] * 14

    # Off again: the widgets count.
    page.set_widget(node_id, "use_release_defaults", False)
    plot = wait_plot(page, node_id, state="plot", shift=5, boundary=0.9)
    assert plot["switch_step"] == 15


def test_a_run_shows_the_active_expert_and_step(comfy_page):
    page = comfy_page
    node_id = add_sampler(page, use_release_defaults=False, steps=40, shift=12.0, boundary=0.875)
    wait_plot(page, node_id, state="plot", switch_step=26)
    node = str(node_id)

    api_event(page, "wan22.sampler.step", {"node": node, "step": 3, "total": 40, "expert": "high"})
    wait_plot(page, node_id, run={"state": "running", "step": 3, "total": 40, "expert": "high"})
    page.screenshot("sampler_running_high")
    api_event(page, "wan22.sampler.expert", {"node": node, "expert": "low"})
    wait_plot(page, node_id, run={"state": "running", "step": 3, "total": 40, "expert": "low"})
    api_event(page, "wan22.sampler.step", {"node": node, "step": 27, "total": 40, "expert": "low"})
    wait_plot(page, node_id, run={"state": "running", "step": 27, "total": 40, "expert": "low"})
    # An interrupted prompt leaves the step it stopped at.
    api_event(page, "execution_interrupted", {"prompt_id": "p", "node_id": node, "node_type": "Wan22Sampler",
                                              "executed": []})
    wait_plot(page, node_id, run={"state": "stopped", "step": 27, "total": 40, "expert": "low"})
    page.screenshot("sampler_stopped")
    # Steps of another node do not touch this one.
    api_event(page, "wan22.sampler.step", {"node": "999", "step": 5, "total": 40, "expert": "high"})
    assert page.evaluate("(id) => window.app.graph.getNodeById(id).wan22Plot.run.state", node_id) == "stopped"
    assert not our_problems(page), our_problems(page)


# EmptyImage (native) -> Wan22VideoCombine, queued from the UI: a real run on the server.
_QUEUE_COMBINE = """async ([format, width, height, frames]) => {
  const app = window.app;
  const source = window.LiteGraph.createNode("EmptyImage");
  source.pos = [60, 120];
  app.graph.add(source);
  const set = (node, name, value) => { node.widgets.find((w) => w.name === name).value = value; };
  set(source, "width", width); set(source, "height", height); set(source, "batch_size", frames);
  set(source, "color", 0x3366cc);
  const combine = window.LiteGraph.createNode("Wan22VideoCombine");
  combine.pos = [400, 120];
  app.graph.add(combine);
  set(combine, "format", format); set(combine, "frame_rate", 8); set(combine, "save_output", false);
  set(combine, "filename_prefix", "wan22_browser/preview");
  source.connect(0, combine, combine.inputs.findIndex((i) => i.name === "images"));
  await app.queuePrompt(0, 1);
  return combine.id;
}"""

_VIDEO_PLAYING = """(id) => {
  const node = window.app.graph.getNodeById(id);
  const video = node.videoContainer?.querySelector("video");
  if (!node.wan22Video?.playing || !video) return null;
  const ok = !video.paused && video.readyState >= 2 && video.currentTime > 0;
  return ok ? { src: video.currentSrc, width: video.videoWidth, height: video.videoHeight,
                filename: node.wan22Video.filename, muted: video.muted, loop: video.loop } : null;
}"""

_GIF_ANIMATED = """(id) => {
  const node = window.app.graph.getNodeById(id);
  const widget = node.widgets?.find((w) => w.name === "$$comfy_animation_preview" || w.type === "img");
  const img = widget?.element?.querySelector("img");
  return node.wan22Video?.playing && node.animatedImages && img?.complete && img.naturalWidth > 0
    ? { filename: node.wan22Video.filename, width: img.naturalWidth } : null;
}"""


def test_the_combine_nodes_video_plays_inline(comfy_page):
    page = comfy_page
    page.clear_graph()
    node_id = page.evaluate(_QUEUE_COMBINE, ["h264-mp4", 96, 64, 17])
    playing = page.wait_for(_VIDEO_PLAYING, node_id, timeout_ms=60_000)
    page.screenshot("combine_mp4_playing")
    assert playing["filename"].endswith(".mp4") and (playing["width"], playing["height"]) == (96, 64)
    assert playing["muted"] and playing["loop"]

    page.clear_graph()
    node_id = page.evaluate(_QUEUE_COMBINE, ["gif", 64, 48, 9])
    gif = page.wait_for(_GIF_ANIMATED, node_id, timeout_ms=60_000)
    page.screenshot("combine_gif_animated")
    assert gif["filename"].endswith(".gif") and gif["width"] == 64
    assert not our_problems(page), our_problems(page)


def test_a_saved_workflow_loads_back_with_its_plot_and_missing_nodes_are_reported(comfy_page):
    page = comfy_page
    node_id = add_sampler(page, use_release_defaults=False, steps=33, shift=12.0, boundary=0.875)
    wait_plot(page, node_id, state="plot", steps=33)
    saved = page.evaluate("() => window.app.graph.serialize()")

    # The plot is not a saved widget value: the workflow's widgets_values line up with the inputs.
    report = page.load_workflow(saved)
    assert report.missing_node_types == [] and report.node_types == ["Wan22Sampler"], report
    node_id = page.evaluate("() => window.app.graph.nodes[0].id")
    values = page.evaluate("(id) => Object.fromEntries(window.app.graph.getNodeById(id).widgets"
                           ".filter((w) => w.serialize !== false).map((w) => [w.name, w.value]))", node_id)
    assert (values["steps"], values["shift"], values["use_release_defaults"]) == (33, 12, False)
    plot = wait_plot(page, node_id, state="plot", steps=33)
    assert plot["switch_step"] == wan_schedule(33, 12.0).switch_step(0.875)

    saved["nodes"][0]["type"] = "NoSuchWan22Node"
    report = page.load_workflow(saved)
    assert report.missing_node_types == ["NoSuchWan22Node"]
    assert any("NoSuchWan22Node" in d for d in report.dialogs), report.dialogs
    page.screenshot("missing_node_dialog")
    page.reset()  # what the next test on this tab starts from
    assert page.dialogs() == [] and page.evaluate("() => window.app.graph.nodes.length") == 0
