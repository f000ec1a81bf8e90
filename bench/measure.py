"""Runs one graph in a fresh ComfyUI server and measures it.

A fresh server per graph makes the process's peak RSS (VmHWM) that graph's own (a shared server
resets it before each graph instead). Times come from
the websocket: the client stamps every message as it arrives. A sampler's "progress" tick marks
the end of a step; "executing" marks a node's start (the next one marks its end).

- time per step: the gaps between consecutive ticks of one sampler node. The first tick of each
  sampler node is left out (it includes loading the model), and so is the expert switch.
- switch time: from the last high-noise tick to the first low-noise tick, minus one median step,
  so it is the time the switch adds (unload + load + first-step overhead).
- decode time: the VAE decode node's start to the next node's start.
- memory over the run (MemoryWatch): the RSS of the server's process tree, polled, each sample
  labelled with its phase (the node executing; the sampler's phases by the expert it announced),
  with the models ComfyUI holds loaded at that moment (the bench hook's /wan22_bench/loaded).
"""

from __future__ import annotations

import os
import statistics
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

from .models import REPO

if str(REPO / "tests") not in sys.path:
    sys.path.insert(0, str(REPO / "tests"))

from comfy_server import ComfyServer, PromptFailed  # noqa: E402

HOOK_DIR = Path(__file__).resolve().parent / "comfy_hook"
CAP_ENV = "WAN22_BENCH_VRAM_CAP_GB"


@dataclass
class GraphRun:
    label: str  # "pack", "native", "pack wan_unipc/wan"
    sampler: str
    scheduler: str
    ok: bool = False
    error: str | None = None
    step_seconds: list[float] = field(default_factory=list)
    switch_step: int | None = None  # first low-noise step seen in the ticks
    switch_seconds: float | None = None
    decode_seconds: float | None = None
    node_seconds: dict[str, float] = field(default_factory=dict)
    total_seconds: float | None = None
    idle_rss: int | None = None  # bytes, the server before the prompt
    peak_rss: int | None = None  # bytes, VmHWM of the server after the prompt
    device_peak: int | None = None  # bytes, torch.cuda.max_memory_allocated (GPU only)
    device_name: str | None = None
    latent_path: str | None = None
    reported: dict = field(default_factory=dict)  # the pack sampler's own summary
    notes: str = ""
    tree_peak_rss: int | None = None  # bytes, the highest polled RSS of the server's process tree
    phase_peak_rss: dict[str, int] = field(default_factory=dict)  # phase -> highest polled tree RSS
    most_experts_resident: int | None = None  # the most pack experts held in RAM at once (polled)
    rss_after_prompts: list[int] = field(default_factory=list)  # bytes, VmRSS after each prompt of a series

    @property
    def step_median(self) -> float | None:
        return statistics.median(self.step_seconds) if self.step_seconds else None


def proc_status_bytes(pid: int, field_name: str) -> int | None:
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith(field_name + ":"):
                    return int(line.split()[1]) * 1024
    except OSError:
        return None
    return None


def tree_rss(pid: int) -> int:
    """VmRSS of a process and all its descendants, bytes."""
    total, todo = 0, [pid]
    while todo:
        p = todo.pop()
        total += proc_status_bytes(p, "VmRSS") or 0
        try:
            for task in os.listdir(f"/proc/{p}/task"):
                with open(f"/proc/{p}/task/{task}/children") as f:
                    todo += [int(c) for c in f.read().split()]
        except OSError:
            pass
    return total


class MemoryWatch(threading.Thread):
    """Polls the server's process-tree RSS and the models it holds loaded while a prompt runs."""

    def __init__(self, server, timeline: Timeline, interval: float = 0.25):
        super().__init__(daemon=True)
        self.server, self.timeline, self.interval = server, timeline, interval
        self.samples: list[tuple[str, int, list]] = []  # (phase, tree RSS, loaded models)
        self._done = threading.Event()
        # A phase shorter than the interval still gets a sample: one at each phase change.
        timeline.on_phase = lambda phase: self.samples.append((phase, tree_rss(server.proc.pid), []))

    def run(self) -> None:
        while not self._done.is_set():
            phase = self.timeline.phase()
            try:
                loaded = self.server.get_json("/wan22_bench/loaded", timeout=5)["loaded"]
            except Exception:  # noqa: BLE001 - a busy or older server: RSS alone still counts
                loaded = []
            self.samples.append((phase, tree_rss(self.server.proc.pid), loaded))
            self._done.wait(self.interval)

    def stop(self) -> None:
        self._done.set()
        self.join(timeout=10)

    def fill(self, run: GraphRun) -> None:
        for phase, rss, _ in self.samples:
            run.phase_peak_rss[phase] = max(run.phase_peak_rss.get(phase, 0), rss)
        if self.samples:
            run.tree_peak_rss = max(rss for _, rss, _ in self.samples)
            run.most_experts_resident = max(sum(map(_resident, loaded)) for _, _, loaded in self.samples)


def _resident(model: dict) -> bool:
    """A Wan DiT whose weights are in process memory: the pack's experts say how many bytes are no
    longer file views; any other Wan model counts when ComfyUI holds it loaded."""
    if "resident_bytes" in model:
        return model["resident_bytes"] > 0
    return model.get("class", "").startswith("WAN") and model.get("loaded_bytes", 0) > 0


class Timeline:
    """Arrival times of one prompt's websocket messages."""

    def __init__(self):
        self.started = time.perf_counter()
        self.prompt_id: str | None = None
        self.executing: list[tuple[float, str | None]] = []
        self.ticks: dict[str, list[float]] = {}
        self.events: list[tuple[float, dict]] = []
        self.node: str | None = None  # executing now
        self.expert: str | None = None  # the pack sampler's expert now
        self.on_phase = None  # called with the new phase when it changes

    def phase(self) -> str:
        if self.node is None:
            return "idle"
        return f"{self.node}:{self.expert}" if self.expert else self.node

    def __call__(self, msg: dict) -> None:
        now = time.perf_counter()
        kind, data = msg.get("type"), msg.get("data", {})
        if not isinstance(data, dict):  # binary latent previews
            return
        self.prompt_id = data.get("prompt_id") or self.prompt_id
        if kind == "executing":
            self.executing.append((now, data.get("node")))
            self.node, self.expert = data.get("node"), None
            if self.on_phase:
                self.on_phase(self.phase())
        elif kind == "wan22.sampler.expert":
            self.expert = data.get("expert")
            if self.on_phase:
                self.on_phase(self.phase())
        elif kind in ("execution_success",):
            self.executing.append((now, None))
        elif kind == "progress" and data.get("node") is not None:
            self.ticks.setdefault(str(data["node"]), []).append(now)
        elif kind == "wan22.sampler.step":
            self.events.append((now, data))

    def node_seconds(self) -> dict[str, float]:
        out = {}
        for (t0, node), (t1, _) in zip(self.executing, self.executing[1:]):
            if node is not None:
                out[str(node)] = out.get(str(node), 0.0) + (t1 - t0)
        return out


def analyse_steps(run: GraphRun, timeline: Timeline, sampler_nodes: list[str], switch_step: int | None,
                  decode_node: str) -> None:
    """Per-step gaps, the switch and the decode time, from the timeline. `sampler_nodes` in order
    (native: high then low; pack: its one node); `switch_step` = number of high-noise steps."""
    ticks = [timeline.ticks.get(n, []) for n in sampler_nodes]
    steps, switch_gap = [], None
    if len(sampler_nodes) == 1:
        t = ticks[0]
        gaps = [b - a for a, b in zip(t, t[1:])]  # gap i = end of step i+1 - end of step i (1-based i+1)
        for i, gap in enumerate(gaps):
            # gaps[k-1] spans step k+1, the first low-noise step (k high steps).
            if switch_step is not None and 0 < switch_step < len(t) and i == switch_step - 1:
                switch_gap = gap
            else:
                steps.append(gap)
    else:
        for t in ticks:
            steps += [b - a for a, b in zip(t, t[1:])]
        if all(ticks):
            switch_gap = ticks[1][0] - ticks[0][-1]
    run.step_seconds = steps
    if switch_gap is not None and steps:
        run.switch_seconds = switch_gap - statistics.median(steps)
    nodes = timeline.node_seconds()
    run.node_seconds = nodes
    run.decode_seconds = nodes.get(decode_node)
    if timeline.executing:
        run.total_seconds = timeline.executing[-1][0] - timeline.started


class BenchServer:
    """A ComfyUI server on `base_dir` with the models folder linked to `models_dir` and the pack
    and the bench hook linked into custom_nodes. One per graph (peaks are then the graph's own),
    or one for several graphs, with the peaks reset before each (quicker; for the smoke run)."""

    def __init__(self, base_dir: Path, models_dir: Path, server_args: tuple[str, ...] = (),
                 vram_cap_gb: float | None = None, gpu: bool = False):
        base_dir.mkdir(parents=True, exist_ok=True)
        (base_dir / "custom_nodes").mkdir(exist_ok=True)
        for link, target in ((base_dir / "models", models_dir),
                             (base_dir / "custom_nodes" / "wan22_bench_hook", HOOK_DIR)):
            if not link.exists():
                link.symlink_to(target.resolve(), target_is_directory=True)
        self.base_dir = base_dir
        self.vram_cap_gb = vram_cap_gb
        self.server = ComfyServer(base_dir, extra_args=tuple(server_args), cpu=not gpu)
        self.graphs_run = 0
        self.object_info: dict = {}

    def __enter__(self) -> BenchServer:
        if self.vram_cap_gb:
            os.environ[CAP_ENV] = str(self.vram_cap_gb)
        try:
            self.server.start()
        finally:
            os.environ.pop(CAP_ENV, None)
        self.object_info = self.server.get_json("/object_info")
        return self

    def __exit__(self, *exc) -> None:
        self.server.stop()

    def switch_step(self, steps: int, shift: float, boundary: float, scheduler: str) -> int:
        q = f"steps={steps}&shift={shift}&boundary={boundary}&scheduler={scheduler}"
        return int(self.server.get_json(f"/wan22_bench/switch_step?{q}")["switch_step"])

    def run(self, graph: dict, run: GraphRun, sampler_nodes: list[str], switch_step: int | None,
            timeout: float = 7200) -> GraphRun:
        pid = self.server.proc.pid
        if self.graphs_run:  # a shared server: this graph's peak starts from now
            self.server.get_json("/wan22_bench/reset_peak")
        self.graphs_run += 1
        run.idle_rss = proc_status_bytes(pid, "VmRSS")
        timeline = Timeline()
        watch = MemoryWatch(self.server, timeline)
        watch.start()
        try:
            history = self.server.run(graph, timeout=timeout, on_message=timeline)
        except (PromptFailed, AssertionError, TimeoutError) as e:
            text = str(e).strip()
            run.error = text.splitlines()[0][:300] if text else type(e).__name__
            return run
        finally:
            watch.stop()
            watch.fill(run)
        run.peak_rss = proc_status_bytes(pid, "VmHWM")
        peaks = self.server.get_json("/wan22_bench/peaks")
        run.device_peak = peaks.get("device_peak_allocated_bytes")
        run.device_name = peaks.get("device")
        analyse_steps(run, timeline, sampler_nodes, switch_step, "decode")
        outputs = history.get("outputs", {})
        for item in outputs.get("save_latent", {}).get("latents", []):
            run.latent_path = str(self.base_dir / "output" / item.get("subfolder", "") / item["filename"])
        summary = outputs.get("sampler", {}).get("wan22_sampler")
        if summary:
            run.reported = summary[0]
        run.ok = True
        return run



def read_latent(path: str):
    from safetensors.torch import load_file

    return load_file(path)["latent_tensor"].float()
