"""`python -m bench` (`make bench BENCH_ARGS="..."`): the pack against native ComfyUI.

  --suite cpu|gpu|smoke   which cases (default cpu)
  --parts a,b             only cases whose name contains one of these; "vae" is the VAE decode
                          benchmark (bench/vae_bench.py), "lightning" the 4-step LoRA run beside
                          the 40-step one (bench/lightning.py); both run in the cpu suite by default
  --sizes WxHxF           override every case's video size; --steps N the step count
  --out DIR               results: DIR/report.md, DIR/results.json, DIR/runs/ (default bench_out)
  --cache DIR             model files, written once and reused (default OUT/cache)
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import platform
import subprocess
import sys
import time
from pathlib import Path

from .cases import select
from .models import REPO, ModelCache
from .report import render
from .suite import run_case
from .vae_bench import LOCK_HELD_ENV

VAE_PART = "vae"
LIGHTNING_PART = "lightning"


def machine() -> str:
    cores = len(os.sched_getaffinity(0))
    mem = "?"
    try:
        with open("/proc/meminfo") as f:
            mem = f"{int(f.readline().split()[1]) / 2**20:.0f} GB RAM"
    except OSError:
        pass
    cpu = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo") as f:
            cpu = next((line.split(":", 1)[1].strip() for line in f if line.startswith("model name")), cpu)
    except OSError:
        pass
    import torch

    gpu = torch.cuda.get_device_name(0) if torch.cuda.is_available() else "no GPU"
    return f"{cpu}, {cores} cores, {mem}, {gpu}; Python {platform.python_version()}, torch {torch.__version__}"


def vae_section(out: Path) -> str:
    """The VAE decode benchmark lives in bench/vae_bench.py (the VAE's own); run it as it is."""
    script = REPO / "bench" / "vae_bench.py"
    if not script.exists():
        return "VAE decode (bench/vae_bench.py): not run, the script is not in this checkout yet.\n"
    started = time.perf_counter()
    # The whole bench runs under the caller's bigmem lock; the child must not queue behind it.
    env = dict(os.environ, **{LOCK_HELD_ENV: "1"})
    proc = subprocess.run([sys.executable, "-m", "bench.vae_bench"], cwd=REPO, capture_output=True, text=True,
                          env=env)
    (out / "vae_bench.log").write_text(proc.stdout + proc.stderr)
    took = time.perf_counter() - started
    if proc.returncode != 0:
        return f"VAE decode (bench/vae_bench.py): failed with exit code {proc.returncode}, see {out / 'vae_bench.log'}\n"
    return f"VAE decode (bench/vae_bench.py, {took:.0f} s):\n\n{proc.stdout.strip()}\n"


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--suite", choices=["cpu", "gpu", "smoke"], default="cpu")
    parser.add_argument("--parts", default=None)
    parser.add_argument("--sizes", default=None)
    parser.add_argument("--steps", type=int, default=None)
    parser.add_argument("--out", type=Path, default=REPO / "bench_out")
    parser.add_argument("--cache", type=Path, default=None)
    parser.add_argument("--timeout", type=float, default=7200, help="per graph, seconds")
    parser.add_argument("--shared-server", action="store_true",
                        help="run a case's graphs in one server, resetting the peaks between them "
                             "(quicker; the smoke suite's default; peaks are then not fully separate)")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")

    out = args.out.resolve()
    out.mkdir(parents=True, exist_ok=True)
    cache = ModelCache(args.cache or out / "cache")
    cases = select(args.suite, args.parts, args.steps, args.sizes)
    parts = {p.strip() for p in (args.parts or "").split(",") if p.strip()}
    run_vae = (args.suite == "cpu" and not parts) or VAE_PART in parts
    run_lightning = (args.suite == "cpu" and not parts) or LIGHTNING_PART in parts

    started = time.perf_counter()
    results = []
    for case in cases:
        results.append(run_case(case, cache, out, timeout=args.timeout,
                                shared_server=args.shared_server or args.suite == "smoke",
                                gpu=args.suite == "gpu"))
        (out / "results.json").write_text(json.dumps([r.to_json() for r in results], indent=1, default=str))
    command = "python -m bench " + " ".join(argv if argv is not None else sys.argv[1:])
    header = f"Suite {args.suite} on {machine()}\nCommand: `{command.strip()}`\n"
    text = render(results, header) if results else header
    if run_vae:
        text += "\n" + vae_section(out)
    if run_lightning:
        from .lightning import section as lightning_section

        text += "\n" + lightning_section(cache, out, timeout=args.timeout)
    text += f"\nWhole run: {time.perf_counter() - started:.0f} s\n"
    (out / "report.md").write_text(text)
    print(text)
    failed = [f"{r.case.name}: {run.label}" for r in results for run in r.runs if not run.ok]
    return 1 if failed and args.suite == "smoke" else 0


if __name__ == "__main__":
    sys.exit(main())
