"""Headless Chromium on the real ComfyUI frontend, for browser tests (reusable by any test).

Playwright drives Debian's system Chromium (/usr/bin/chromium, installed by `make dev` through
scripts/install_browser.sh): Playwright's own browser download cannot be fetched here.

    browser = ChromiumSession.start()            # one browser per pytest session
    page = browser.open_app(comfy_server)        # a fresh tab on the server's UI, app ready
    report = page.load_workflow(json.load(...))  # app.loadGraphData; missing node types, dialogs
    page.evaluate("() => window.app.graph.nodes.length")
    page.screenshot("name")                      # PNG under the screenshot folder
    page.problems()                              # console errors and page errors so far
    page.close(); browser.stop()

Every page gets fresh browser storage (its own context). Opening the app costs seconds (the frontend
loads and sets up), so tests may share one page and call `page.reset()` between them.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path

CHROMIUM = "/usr/bin/chromium"
# Flags that work on these machines (no GPU, no sandbox for root, no network beyond loopback).
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--disable-dev-shm-usage",
]
VIEWPORT = {"width": 1400, "height": 900}
APP_READY_TIMEOUT_MS = 90_000
# Settings written on the server before the UI opens: no first-run template browser over the canvas,
# the classic canvas renderer (the default, stated so a changed default does not change the tests).
UI_SETTINGS = {"Comfy.TutorialCompleted": True, "Comfy.VueNodes.Enabled": False}
SCREENSHOT_DIR = Path(os.environ.get("WAN22_SCREENSHOT_DIR", Path(__file__).resolve().parents[2] / ".cache" /
                                     "screenshots"))

# The frontend is set up: graph, LiteGraph's node registry, and this pack's extension registered.
_APP_READY = """(ext) => !!(window.app && window.app.graph && window.app.canvas && window.LiteGraph
    && window.LiteGraph.registered_node_types && Object.keys(window.LiteGraph.registered_node_types).length
    && (window.app.extensions || []).some((e) => e.name === ext))"""

# Registers (once) a probe extension that records what loadGraphData reports as missing.
_INSTALL_PROBE = """() => {
  if (window.__wan22Probe) return;
  window.__wan22Probe = { missing: null };
  window.app.registerExtension({
    name: "comfyui-wan22.test-probe",
    afterConfigureGraph(missing) {
      window.__wan22Probe.missing = (missing || []).map((m) => (typeof m === "string" ? m : m.type));
    },
  });
}"""

# Text of the dialogs the UI shows (missing nodes or models, errors).
_OPEN_DIALOGS = """() => Array.from(document.querySelectorAll('.p-dialog')).filter((d) => d.offsetParent !== null)
    .map((d) => d.innerText.trim())"""


class BrowserUnavailable(RuntimeError):
    """Chromium or Playwright is missing: `make dev` installs both."""


@dataclass
class LoadReport:
    missing_node_types: list[str]
    dialogs: list[str]
    node_types: list[str] = field(default_factory=list)


class ChromiumSession:
    def __init__(self, playwright, browser):
        self._playwright = playwright
        self.browser = browser

    @classmethod
    def start(cls) -> ChromiumSession:
        try:
            from playwright.sync_api import sync_playwright
        except ImportError as e:
            raise BrowserUnavailable(f"the Python package playwright is missing ({e}): run `make dev`") from None
        if not os.access(CHROMIUM, os.X_OK):
            raise BrowserUnavailable(f"{CHROMIUM} is missing: run `make dev` (scripts/install_browser.sh)")
        playwright = sync_playwright().start()
        try:
            # Playwright gives the browser a fresh temporary --user-data-dir of its own.
            browser = playwright.chromium.launch(executable_path=CHROMIUM, headless=True, args=CHROMIUM_ARGS)
        except Exception:
            playwright.stop()
            raise
        return cls(playwright, browser)

    def stop(self) -> None:
        self.browser.close()
        self._playwright.stop()

    def open_app(self, server, settings: dict | None = None) -> ComfyPage:
        """A new tab on `server`'s UI (a tests.comfy_server.ComfyServer), returned once the app is ready."""
        server.post_json("/settings", {**UI_SETTINGS, **(settings or {})})
        context = self.browser.new_context(viewport=VIEWPORT)
        page = ComfyPage(context.new_page(), context, server)
        page.goto_app()
        return page


class ComfyPage:
    def __init__(self, page, context, server):
        self.page = page
        self.context = context
        self.server = server
        self.console_errors: list[str] = []
        self.page_errors: list[str] = []
        page.on("console", self._on_console)
        page.on("pageerror", lambda err: self.page_errors.append(str(err)))

    def _on_console(self, message) -> None:
        if message.type == "error":
            self.console_errors.append(f"{message.text} ({message.location.get('url', '')})")

    def goto_app(self) -> None:
        self.page.goto(self.server.url + "/", wait_until="domcontentloaded")
        self.page.wait_for_function(_APP_READY, arg="comfyui-wan22", timeout=APP_READY_TIMEOUT_MS)
        self.page.evaluate(_INSTALL_PROBE)

    def evaluate(self, script: str, arg=None):
        return self.page.evaluate(script, arg)

    def wait_for(self, script: str, arg=None, timeout_ms: int = 15_000):
        """Waits until the JS function `script(arg)` returns a truthy value; returns that value."""
        return self.page.wait_for_function(script, arg=arg, timeout=timeout_ms).json_value()

    def load_workflow(self, workflow: dict | str | Path) -> LoadReport:
        """Loads a UI-format workflow as dropping it on the canvas would (app.loadGraphData)."""
        if isinstance(workflow, (str, Path)):
            workflow = json.loads(Path(workflow).read_text())
        self.evaluate("() => { window.__wan22Probe.missing = null; }")
        self.evaluate("async (graph) => { await window.app.loadGraphData(graph); }", workflow)
        missing = self.wait_for("() => window.__wan22Probe.missing")
        node_types = self.evaluate("() => window.app.graph.nodes.map((n) => n.type)")
        return LoadReport(missing_node_types=missing, dialogs=self.dialogs(), node_types=node_types)

    def clear_graph(self) -> None:
        """An empty canvas (the UI opens on ComfyUI's default graph)."""
        self.evaluate("() => { window.app.clean(); window.app.graph.clear(); window.app.canvas.setDirty(true, true); }")

    def add_node(self, node_type: str, pos=(100, 100)) -> int:
        """Adds a node the way the node search does; returns its id."""
        return self.evaluate(
            """([type, pos]) => {
                const node = window.LiteGraph.createNode(type);
                if (!node) throw new Error(`no node type ${type}`);
                node.pos = pos;
                window.app.graph.add(node);
                window.app.canvas.setDirty(true, true);
                return node.id;
            }""",
            [node_type, list(pos)],
        )

    def set_widget(self, node_id: int, name: str, value) -> None:
        """Sets a widget as a user edit does: value, callback, the node's onWidgetChanged."""
        self.evaluate(
            """([id, name, value]) => {
                const node = window.app.graph.getNodeById(id);
                const widget = node.widgets.find((w) => w.name === name);
                if (!widget) throw new Error(`node ${id} has no widget ${name}`);
                const old = widget.value;
                widget.value = value;
                widget.callback?.(value, window.app.canvas, node);
                node.onWidgetChanged?.(name, value, old, widget);
                window.app.canvas.setDirty(true, true);
            }""",
            [node_id, name, value],
        )

    def screenshot(self, name: str) -> Path:
        SCREENSHOT_DIR.mkdir(parents=True, exist_ok=True)
        path = SCREENSHOT_DIR / f"{name}.png"
        self.page.screenshot(path=str(path))
        return path

    def dialogs(self) -> list[str]:
        """The text of each dialog open now."""
        return self.evaluate(_OPEN_DIALOGS)

    def close_dialogs(self) -> None:
        for _ in range(5):
            if not self.dialogs():
                return
            self.page.keyboard.press("Escape")
            self.page.wait_for_timeout(200)  # the dialog's closing animation
        raise AssertionError(f"dialogs stay open after Escape: {self.dialogs()}")

    def reset(self) -> None:
        """Ready for the next test on the same tab: dialogs closed, empty graph, problems forgotten."""
        self.close_dialogs()
        self.clear_graph()
        self.console_errors.clear()
        self.page_errors.clear()

    def problems(self) -> list[str]:
        """Console errors and uncaught page errors seen so far."""
        return [*self.page_errors, *self.console_errors]

    def close(self) -> None:
        self.context.close()
