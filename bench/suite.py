"""Runs the cases of a suite: for each, the pack's graph, native ComfyUI's graph and the pack-only
rows (each in a fresh server, or all in one with `shared_server`); then compares the final latents."""

from __future__ import annotations

import contextlib
import json
import logging
import statistics
from dataclasses import asdict, dataclass, field
from pathlib import Path

from .cases import Case
from .graphs import PACK_VAE_NODES, complete_inputs, missing_nodes, model_files, native_graph, pack_graph
from .measure import BenchServer, GraphRun, read_latent
from .models import ModelCache

log = logging.getLogger("wan22.bench")


@dataclass
class CaseResult:
    case: Case
    switch_step: int | None = None  # high-noise steps, from the boundary on the case's schedule
    shared_server: bool = False
    runs: list[GraphRun] = field(default_factory=list)
    latent_max_abs_diff: float | None = None
    latent_native_std: float | None = None

    def run(self, label: str) -> GraphRun | None:
        return next((r for r in self.runs if r.label == label), None)

    def pack(self) -> GraphRun | None:
        """The pack's row on native's sampler and scheduler (the one compared with native)."""
        return next((r for r in self.runs if r.label.startswith("pack") and r.sampler == self.case.sampler
                     and r.scheduler == self.case.scheduler), None)

    def to_json(self) -> dict:
        case = asdict(self.case)
        case["kind"] = self.case.kind.value
        for spec in ("high", "low"):
            if case[spec] is not None:
                case[spec]["dtype"] = str(case[spec]["dtype"])
        return {"case": case, "switch_step": self.switch_step, "shared_server": self.shared_server,
                "runs": [asdict(r) for r in self.runs], "latent_max_abs_diff": self.latent_max_abs_diff,
                "latent_native_std": self.latent_native_std}


def _slug(label: str) -> str:
    return label.replace(" ", "_").replace("/", "-")


def run_case(case: Case, cache: ModelCache, out: Path, timeout: float = 7200, shared_server: bool = False,
             gpu: bool = False) -> CaseResult:
    files = model_files(case, cache)
    result = CaseResult(case, shared_server=shared_server)
    workdir = out / "runs" / case.name
    rows = [("pack", case.sampler, case.scheduler), ("native", case.sampler, case.scheduler)]
    rows += [(f"pack {s}/{sch}", s, sch) for s, sch in case.pack_only]
    if case.repeat_prompts:
        rows = rows[:2]

    def server_for(label: str) -> BenchServer:
        return BenchServer(workdir / ("shared" if shared_server else _slug(label)), cache.models,
                           case.server_args, case.vram_cap_gb, gpu=gpu)

    with contextlib.ExitStack() as stack:
        shared = stack.enter_context(server_for("shared")) if shared_server else None
        for label, sampler, scheduler in rows:
            with (contextlib.nullcontext(shared) if shared else server_for(label)) as server:
                result.runs.append(_run_row(case, files, label, sampler, scheduler, server, result, timeout,
                                            workdir / _slug(label)))
    _compare_latents(result)
    return result


def _run_row(case, files, label, sampler, scheduler, server: BenchServer, result: CaseResult, timeout,
             rowdir: Path) -> GraphRun:
    log.info("[bench] %s: %s (%s/%s)", case.name, label, sampler, scheduler)
    run = GraphRun(label, sampler, scheduler)
    if case.low is not None and result.switch_step is None:
        result.switch_step = server.switch_step(case.steps, case.shift, case.boundary, case.scheduler)
    native = label == "native"
    if native and case.native_not_run:
        run.error = f"not run: {case.native_not_run}"
        log.info("[bench] %s: %s -> %s", case.name, label, run.error)
        return run
    if native:
        graph = native_graph(case, files, result.switch_step)
    else:
        native_vae = any(n not in server.object_info for n in PACK_VAE_NODES)
        graph = pack_graph(case, files, sampler, scheduler, native_vae=native_vae)
        if native_vae:
            run.label = label = label + " (native VAE nodes)"
            run.notes = "the pack's VAE nodes are not in this ComfyUI: its graph used native VAELoader/VAEDecode"
    missing = missing_nodes(graph, server.object_info)
    if missing:
        run.error = f"not run: this ComfyUI has no {', '.join(missing)} (not landed yet)"
        log.info("[bench] %s: %s -> %s", case.name, label, run.error)
        return run
    complete_inputs(graph, server.object_info)
    rowdir.mkdir(parents=True, exist_ok=True)
    (rowdir / "prompt.json").write_text(json.dumps(graph, indent=1))
    same_grid = scheduler == case.scheduler
    sampler_nodes = ["sampler"] if not native or case.low is None else ["sampler_high", "sampler_low"]
    server.run(graph, run, sampler_nodes, result.switch_step if same_grid else None, timeout)
    if run.ok and case.repeat_prompts:
        _repeat(case, graph, run, server, timeout)
    if run.ok:
        run.switch_step = run.reported.get("switch_step", result.switch_step if native else None)
        if not same_grid and case.low is not None:
            _take_out_switch_gap(run)
        if label.startswith("pack") and same_grid and case.low is not None and run.switch_step != result.switch_step:
            log.warning("[bench] %s: the pack switched after step %s, native is split at %s", case.name,
                        run.switch_step, result.switch_step)
    log.info("[bench] %s: %s -> %s", case.name, label, "ok" if run.ok else run.error)
    return run


def _repeat(case: Case, graph: dict, run: GraphRun, server: BenchServer, timeout: float) -> None:
    """RAM across runs: the same graph again in the same server with a new seed each time, the
    server's RSS after each prompt (the first prompt's is already measured)."""
    from .measure import proc_status_bytes

    pid = server.server.proc.pid
    run.rss_after_prompts.append(proc_status_bytes(pid, "VmRSS"))
    for i in range(1, case.repeat_prompts):
        graph["sampler"]["inputs"]["seed"] = case.seed + i
        server.server.run(graph, timeout=timeout)
        run.rss_after_prompts.append(proc_status_bytes(pid, "VmRSS"))
        log.info("[bench] %s: prompt %d, RSS %.2f GB", case.name, i + 1, run.rss_after_prompts[-1] / 2**30)
    run.peak_rss = proc_status_bytes(pid, "VmHWM")


def _take_out_switch_gap(run: GraphRun) -> None:
    """Rows on another grid switch where the pack reports; their gaps were read without a switch."""
    k = run.switch_step
    if not k or k > len(run.step_seconds):
        return
    gap = run.step_seconds.pop(k - 1)
    if run.step_seconds:
        run.switch_seconds = gap - statistics.median(run.step_seconds)


def _compare_latents(result: CaseResult) -> None:
    pack, native = result.pack(), result.run("native")
    if not (pack and native and pack.latent_path and native.latent_path):
        return
    a, b = read_latent(pack.latent_path), read_latent(native.latent_path)
    if a.shape == b.shape:
        result.latent_max_abs_diff = float((a - b).abs().max())
        result.latent_native_std = float(b.std())
