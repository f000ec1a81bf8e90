"""`python -m bench.lightning` (also in `make bench`): the 4-step Lightning run beside the release's
40-step run on the same tiny A14B pair, the pack against native ComfyUI's equivalent graph.

Clip 128x128x9 on the cpu suite's tiny pair (dim 512, 4 layers, bf16 files).
- 40-step row: the release's T2V settings (40 steps, cfg 4/3, shift 12, boundary 0.875).
- Lightning row: a random distill-style LoRA on each expert, 4 steps, cfg 1 on both, shift 5,
  boundary 0.875 (2 high + 2 low steps).
Both graphs use euler/simple (native has no `wan_dpm`; on this grid both give the same sigmas).
pack:   Wan22ModelLoader -> Wan22LoraLoader -> Wan22Sampler
native: UNETLoader -> LoraLoaderModelOnly -> ModelSamplingSD3, per expert -> two KSamplerAdvanced
The LoRA files use ComfyUI's own layout (lora_down/lora_up + alpha, diff, diff_b), which native
reads completely, so both graphs compute the same thing. Each graph counts its DiT evaluations
in the server (bench hook BenchCountEvaluations: forward calls and batch rows, per expert).
Figures: evaluations, median s/step, sampling seconds (both samplers' node time), whole graph.
"""

from __future__ import annotations

import argparse
import logging
import sys
from dataclasses import dataclass, field, replace
from pathlib import Path

from .cases import Case, _a14b, _tiny_a14b_config
from .graphs import complete_inputs, model_files, native_graph, pack_graph
from .measure import BenchServer, GraphRun
from .models import REPO, ModelCache

if str(REPO / "tests") not in sys.path:
    sys.path.insert(0, str(REPO / "tests"))

import torch  # noqa: E402

log = logging.getLogger("wan22.bench")

LORA_FOLDER = "loras"
LORA_LAYOUT = "comfy_no_diff_m"  # read completely by native LoraLoaderModelOnly too


@dataclass
class Row:
    case: Case
    graph: str  # "pack" | "native"
    lora: bool
    run: GraphRun
    evaluations: dict = field(default_factory=dict)  # label -> {"calls", "rows"}
    sampling_seconds: float | None = None

    @property
    def rows(self) -> int:
        return sum(v["rows"] for v in self.evaluations.values())

    @property
    def calls(self) -> int:
        return sum(v["calls"] for v in self.evaluations.values())


def lightning_cases() -> list[tuple[Case, bool]]:
    """(case, with LoRAs): the same tiny pair as the cpu suite's a14b-tiny, at 128x128x9 (192 tokens)
    so that 40 steps with CFG take minutes, not half an hour, on a 2-core CPU."""
    tiny = _tiny_a14b_config(512, 4, 1536)
    base = _a14b("a14b-tiny-40step", tiny, torch.bfloat16, 128, 128, 9, 40, "tiny", pack_only=())
    lightning = replace(base, name="a14b-tiny-lightning", steps=4, cfg_high=1.0, cfg_low=1.0, shift=5.0)
    return [(base, False), (lightning, True)]


def lora_files(case: Case, cache: ModelCache) -> dict[str, str]:
    from lora_factory import random_lora, write_lora

    names = {}
    for expert, spec, seed in (("high", case.high, 11), ("low", case.low, 12)):
        name = f"bench_lightning_{spec.config.dim}_l{spec.config.num_layers}_{expert}.safetensors"
        path = cache.models / LORA_FOLDER / name
        if not path.exists():
            write_lora(random_lora(spec.config, seed=seed), path, LORA_LAYOUT)
        names[expert] = name
    return names


def _counted(g: dict, model: list, label: str) -> list:
    g[f"count_{label}"] = {"class_type": "BenchCountEvaluations", "inputs": {"model": model, "label": label}}
    return [f"count_{label}", 0]


def lightning_pack_graph(case: Case, files: dict, loras: dict | None) -> dict:
    g = pack_graph(case, files, case.sampler, case.scheduler)
    high, low = ["model", 0], ["model", 1]
    if loras:
        g["lora"] = {"class_type": "Wan22LoraLoader", "inputs": {
            "model": high, "low_noise_model": low, "lora_high": loras["high"], "strength_high": 1.0,
            "lora_low": loras["low"], "strength_low": 1.0}}
        high, low = ["lora", 0], ["lora", 1]
    g["sampler"]["inputs"]["model"] = _counted(g, high, "high")
    g["sampler"]["inputs"]["low_noise_model"] = _counted(g, low, "low")
    return g


def lightning_native_graph(case: Case, files: dict, switch_step: int, loras: dict | None) -> dict:
    g = native_graph(case, files, switch_step)
    for expert in ("high", "low"):
        if loras:
            g[f"lora_{expert}"] = {"class_type": "LoraLoaderModelOnly", "inputs": {
                "model": [f"unet_{expert}", 0], "lora_name": loras[expert], "strength_model": 1.0}}
            g[f"shift_{expert}"]["inputs"]["model"] = [f"lora_{expert}", 0]
        g[f"sampler_{expert}"]["inputs"]["model"] = _counted(g, [f"shift_{expert}", 0], expert)
    return g


def run_row(case: Case, graph_name: str, with_lora: bool, cache: ModelCache, out: Path, timeout: float) -> Row:
    files = model_files(case, cache)
    loras = lora_files(case, cache) if with_lora else None
    run = GraphRun(graph_name, case.sampler, case.scheduler)
    workdir = out / "runs" / "lightning" / case.name / graph_name
    with BenchServer(workdir, cache.models, case.server_args) as server:
        switch = server.switch_step(case.steps, case.shift, case.boundary, case.scheduler)
        if graph_name == "pack":
            graph, samplers = lightning_pack_graph(case, files, loras), ["sampler"]
        else:
            graph, samplers = lightning_native_graph(case, files, switch, loras), ["sampler_high", "sampler_low"]
        complete_inputs(graph, server.object_info)
        server.run(graph, run, samplers, switch, timeout)
        row = Row(case, graph_name, with_lora, run)
        if run.ok:
            row.evaluations = server.server.get_json("/wan22_bench/evaluations")
            row.sampling_seconds = sum(run.node_seconds.get(n, 0.0) for n in samplers)
            run.switch_step = switch
    log.info("[bench] %s %s: %s", case.name, graph_name, "ok" if run.ok else run.error)
    return row


def run_all(cache: ModelCache, out: Path, timeout: float = 7200) -> list[Row]:
    rows = []
    for case, with_lora in lightning_cases():
        for graph in ("pack", "native"):
            rows.append(run_row(case, graph, with_lora, cache, out, timeout))
    return rows


def _f(v, fmt=".2f"):
    return "–" if v is None else format(v, fmt)


def render(rows: list[Row]) -> str:
    lines = [
        "| case | graph | LoRA | steps (high+low) | cfg | DiT evaluations: rows (calls) | s/step (median) | "
        "sampling s | total s |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        c, run = r.case, r.run
        if not run.ok:
            lines.append(f"| {c.name} | {r.graph} | {'yes' if r.lora else 'no'} | – | – | failed: {run.error} | | | |")
            continue
        k = run.switch_step
        per = ", ".join(f"{lbl} {v['rows']}" for lbl, v in sorted(r.evaluations.items()))
        lines.append(
            f"| {c.name} | {r.graph} | {'yes' if r.lora else 'no'} | {k}+{c.steps - k} | {c.cfg_high:g}/{c.cfg_low:g} | "
            f"{r.rows} ({r.calls}; {per}) | {_f(run.step_median, '.3f')} | {_f(r.sampling_seconds, '.1f')} | "
            f"{_f(run.total_seconds, '.1f')} |"
        )
    by = {(r.case.name, r.graph): r for r in rows if r.run.ok}
    lines += ["", "| ratio | DiT evaluations | sampling s | total s |", "|---|---|---|---|"]
    for graph in ("pack", "native"):
        a, b = by.get(("a14b-tiny-lightning", graph)), by.get(("a14b-tiny-40step", graph))
        if a and b:
            lines.append(f"| {graph}: Lightning / 40-step | {a.rows / b.rows:.3f}x | "
                         f"{a.sampling_seconds / b.sampling_seconds:.3f}x | {a.run.total_seconds / b.run.total_seconds:.3f}x |")
    for case in ("a14b-tiny-40step", "a14b-tiny-lightning"):
        a, b = by.get((case, "pack")), by.get((case, "native"))
        if a and b:
            lines.append(f"| {case}: pack / native | {a.rows / b.rows:.3f}x | "
                         f"{a.sampling_seconds / b.sampling_seconds:.3f}x | {a.run.total_seconds / b.run.total_seconds:.3f}x |")
    return "\n".join(lines) + "\n"


def section(cache: ModelCache, out: Path, timeout: float = 7200) -> str:
    rows = run_all(cache, out, timeout)
    return "Lightning (bench/lightning.py): 4 steps cfg 1 with a LoRA per expert vs 40 steps cfg 4/3\n\n" + render(rows)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.lightning", description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, default=REPO / "bench_out")
    parser.add_argument("--cache", type=Path, default=None)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    out = args.out.resolve()
    out.mkdir(parents=True, exist_ok=True)
    cache = ModelCache(args.cache or out / "cache")
    text = section(cache, out)
    (out / "lightning.md").write_text(text)
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())

