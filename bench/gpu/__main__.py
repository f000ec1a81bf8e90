"""`python -m bench.gpu` (normally through `bash bench/gpu/run.sh`): the GPU check of issue 15.

  --rehearse      the same code on the CPU with tiny random models (tests run this)
  --out DIR       results.json (rewritten after every run) and report.md; default $OUT, else
                  bench_out/gpu (rehearsal: bench_out/gpu-rehearsal)
  --work DIR      where the random model files are written (deleted at the end unless --keep-files)
  --comfyui DIR   the ComfyUI tree to import (run.sh passes .gpu-kit/comfyui)
  --cases a,b     only cases whose name contains one of these
  --budget-s S    start no further run after S seconds (default 450: the check fits 8 minutes)
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

from ..models import REPO, ModelCache
from ..report import _f, _gb, _ratio
from .cases import gpu_cases, rehearsal_cases
from .runtime import import_comfy, import_pack, machine, missing_modules, preflight

log = logging.getLogger("wan22.bench.gpu")


def table(results, header: str) -> str:
    head = ("| case | impl | s/step (n) | TFLOP/s | load s | switch s | peak VRAM GiB | expert GiB (on device "
            "at its 1st step) | peak RSS GiB | VAE decode s | decode peak VRAM GiB | final latents vs native |")
    rows = [header, "", head, "|" + "---|" * 12]
    for res in results:
        if res.skipped:
            rows.append(f"| {res.case} | – | {res.skipped} |" + " |" * 9)
            continue
        for run in res.runs:
            if not run.ok:
                rows.append(f"| {res.case} | {run.impl} | {run.error} |" + " |" * 9)
                continue
            experts = ", ".join(
                f"{k} {_gb(v['model_bytes'])}" + (f" ({v['loaded_bytes_first_step'] / v['model_bytes']:.0%})"
                                                  if v.get("loaded_bytes_first_step") is not None else "")
                for k, v in run.experts.items())
            decode = run.decode_error or _f(run.decode_s, "{:.2f}")
            diff = "–"
            if run.impl == "pack" and res.latent_max_abs_diff is not None:
                diff = (f"max abs {res.latent_max_abs_diff:.2e}, rel L2 {res.latent_rel_l2:.2e} "
                        f"(native std {res.latent_native_std:.3f})")
            rows.append(f"| {res.case} | {run.impl} | {_f(run.s_per_step)} (n={len(run.steps)}) | "
                        f"{_f(run.tflops, '{:.0f}')} | {_f(run.load_s, '{:.2f}')} | {_f(run.switch_s, '{:.2f}')} | "
                        f"{_gb(run.peak_vram)} | {experts} | {_gb(run.peak_rss)} | {decode} | "
                        f"{_gb(run.decode_peak_vram)} | {diff} |")
        p, n = res.run("pack"), res.run("native")
        if p and n and p.ok and n.ok:
            video = "" if res.video_max_abs_diff is None else f"decoded video max abs {res.video_max_abs_diff:.2e}"
            rows.append(f"| {res.case} | pack/native | {_ratio(p.s_per_step, n.s_per_step)} | | "
                        f"{_ratio(p.load_s, n.load_s)} | {_ratio(p.switch_s, n.switch_s)} | "
                        f"{_ratio(p.peak_vram, n.peak_vram)} | | {_ratio(p.peak_rss, n.peak_rss)} | "
                        f"{_ratio(p.decode_s, n.decode_s)} | {_ratio(p.decode_peak_vram, n.decode_peak_vram)} | "
                        f"{video} |")
    return "\n".join(rows)


def targets(results) -> str:
    """Issue 15's compass, read off the runs (met / missed / not measured)."""
    lines = ["Targets (pack, same run):"]
    activations = None
    for res in results:
        n = res.run("native")
        if not res.cap_gb and n and n.ok and n.peak_vram and len(n.experts) == 2:
            weights = sum(e["loaded_bytes_first_step"] or 0 for e in n.experts.values())
            activations = max(0, n.peak_vram - weights)
            break

    def verdict(ok):
        return "met" if ok else "**missed**"

    for res in results:
        p, n = res.run("pack"), res.run("native")
        if not (p and n):
            continue
        if res.cap_gb:
            lines.append(f"- {res.case}: no OOM under the {res.cap_gb:g} GB cap (cap applied: {res.cap_applied}): "
                         f"pack {'ran' if p.ok else p.error}, native {'ran' if n.ok else n.error}")
        if not p.ok:
            continue
        if n.ok and p.s_per_step and n.s_per_step:
            lines.append(f"- {res.case}: s/step {p.s_per_step / n.s_per_step:.2f}x native (<= 1.0x): "
                         f"{verdict(p.s_per_step <= n.s_per_step)}")
        if p.switch_s is not None and p.s_per_step:
            lines.append(f"- {res.case}: switch {p.switch_s:.2f} s under one step ({p.s_per_step:.2f} s): "
                         f"{verdict(p.switch_s < p.s_per_step)}")
        if len(p.experts) == 2 and p.peak_vram and activations is not None:
            bound = 1.1 * (max(e["model_bytes"] for e in p.experts.values()) + activations)
            lines.append(f"- {res.case}: peak VRAM {_gb(p.peak_vram)} GiB <= one expert + activations + 10 % "
                         f"({_gb(bound)} GiB): {verdict(p.peak_vram <= bound)}")
    if activations is not None:
        lines.append(f"  (activations {_gb(activations)} GiB: the uncapped native pair run's peak less its two "
                     f"experts, which native keeps on the device; the pack also keeps both when both fit)")
    return "\n".join(lines) if len(lines) > 1 else ""


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.gpu", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rehearse", action="store_true")
    parser.add_argument("--out", type=Path, default=None)
    parser.add_argument("--work", type=Path, default=None)
    parser.add_argument("--comfyui", type=Path, default=REPO / ".comfyui")
    parser.add_argument("--cases", default=None)
    parser.add_argument("--budget-s", type=float, default=450.0)
    parser.add_argument("--keep-files", action="store_true")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    started = time.perf_counter()

    default_out = REPO / "bench_out" / ("gpu-rehearsal" if args.rehearse else "gpu")
    out = (args.out or (Path(os.environ["OUT"]) if os.environ.get("OUT") else default_out)).resolve()
    out.mkdir(parents=True, exist_ok=True)
    missing = missing_modules()
    if missing:
        print("bench.gpu: these modules do not import, nothing was run:\n  " + "\n  ".join(missing), file=sys.stderr)
        return 2
    import torch

    if not args.rehearse and not torch.cuda.is_available():
        print("bench.gpu: no CUDA device; use --rehearse for the CPU rehearsal", file=sys.stderr)
        return 2
    import_comfy(args.comfyui, cpu=args.rehearse)
    import_pack()
    preflight()
    from .runner import release_memory, run_case, warm_up

    cases = rehearsal_cases() if args.rehearse else gpu_cases()
    if args.cases:
        wanted = [w.strip() for w in args.cases.split(",") if w.strip()]
        cases = [c for c in cases if any(w in c.name for w in wanted)]
    work = args.work or Path(tempfile.mkdtemp(prefix="wan22-gpu-bench-"))
    cache = ModelCache(work, device="cuda" if torch.cuda.is_available() and not args.rehearse else "cpu")
    # The rehearsal's real-size Wan2.2 VAE (1.4 GB) is written once and kept, in `make bench`'s cache.
    vae_cache = ModelCache(REPO / "bench_out" / "cache") if args.rehearse else cache
    command = "bash bench/gpu/run.sh " + " ".join(argv if argv is not None else sys.argv[1:])
    header = (f"Wan2.2 pack vs native ComfyUI in one process{' (CPU rehearsal, tiny models)' if args.rehearse else ''}"
              f" on {machine()}; {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}\nCommand: `{command.strip()}`")
    results = []

    def save(_current=None):
        payload = {"machine": machine(), "command": command.strip(), "rehearsal": args.rehearse,
                   "elapsed_s": time.perf_counter() - started, "cases": [r.to_json() for r in results]}
        (out / "results.json").write_text(json.dumps(payload, indent=1, default=str))

    warm_up()
    try:
        for i, gc_ in enumerate(cases):
            if time.perf_counter() - started > args.budget_s:
                from .runner import CaseResult

                results.append(CaseResult(gc_.name, gc_.case.size, "", skipped=f"not run: past the {args.budget_s:.0f} s budget"))
                save()
                continue
            log.info("[gpu] case %s", gc_.name)
            results.append(None)

            def update(result):
                results[-1] = result  # the case in progress is the last one
                save()

            results[-1] = run_case(gc_, cache, vae_cache, i, update)
            save()
            # Files no later case needs go now (the machine's disk holds one case's models at a time).
            later = {s.filename for c in cases[i + 1:] for s in (c.case.high, c.case.low) if s is not None}
            for f in (cache.models / "diffusion_models").glob("*.safetensors"):
                if f.name not in later:
                    f.unlink()
            log.info("[gpu] case %s done at %.0f s", gc_.name, time.perf_counter() - started)
    finally:
        release_memory()
        if not args.keep_files:
            shutil.rmtree(work, ignore_errors=True)
    results = [r for r in results if r is not None]
    text = table(results, header) + "\n\n" + targets(results) + f"\n\nWhole run: {time.perf_counter() - started:.0f} s\n"
    save()
    (out / "report.md").write_text(text)
    print(text)
    failed = [f"{r.case} {run.impl}: {run.error}" for r in results for run in r.runs if not run.ok]
    failed += [f"{r.case} {run.impl} decode: {run.decode_error}" for r in results for run in r.runs if run.decode_error]
    if failed:
        print("failed:\n  " + "\n  ".join(failed), file=sys.stderr)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
