"""The GPU check (bench/gpu) rehearsed on this CPU, so it cannot rot between GPU loans.

1. `bash bench/gpu/run.sh --rehearse` runs the check's own code path (the kit's ComfyUI tree,
   its wheels installed offline into a temporary folder, pack vs native in one process, the
   report) with tiny DiTs, and the figures it reports are checked for what they must say.
2. The kit is complete: the check runs in an interpreter that sees only the standard library,
   this repository, the kit (its ComfyUI tree and its wheels, installed by pip exactly as
   run.sh does) and the distributions the GPU machine already has (bench/gpu/machine_packages.txt
   and what they require), no other site-packages. The kit's wheels are for CPython 3.12 and this
   venv is 3.11: the only binary wheel, PyAV, is an abi3 wheel built for cp311, the same file
   installs and runs here; pip's own resolver then confirms the kit installs for CPython 3.12 on
   manylinux x86_64 (the GPU machine), and every requirement of a kit wheel is in the kit or
   on the machine.

Both build .gpu-kit/ first when it is missing or stale (`make gpu-kit`; needs the registry).
"""

from __future__ import annotations

import importlib.metadata as md
import json
import math
import os
import re
import subprocess
import sys
import sysconfig
import zipfile
from pathlib import Path

import pytest
from packaging.markers import Marker
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name
from vae_factory import bigmem_lock

REPO = Path(__file__).resolve().parents[2]
KIT = REPO / ".gpu-kit"
MACHINE_LIST = REPO / "bench" / "gpu" / "machine_packages.txt"
PY312 = {"python_version": "3.12", "python_full_version": "3.12.3", "implementation_name": "cpython",
         "platform_python_implementation": "CPython", "sys_platform": "linux", "platform_system": "Linux",
         "platform_machine": "x86_64", "os_name": "posix", "extra": ""}


@pytest.fixture(scope="module")
def kit() -> Path:
    proc = subprocess.run([sys.executable, "-m", "bench.gpu.build_kit"], cwd=REPO, capture_output=True, text=True)
    assert proc.returncode == 0, f"make gpu-kit failed:\n{proc.stdout}\n{proc.stderr}"
    size = sum(f.stat().st_size for f in KIT.rglob("*") if f.is_file())
    assert size <= 60 * 2**20, f"the kit is {size / 2**20:.1f} MiB"
    return KIT


def _pins(kit: Path) -> dict[str, str]:
    lines = [ln.strip() for ln in (kit / "requirements.txt").read_text().splitlines()]
    return {canonicalize_name(n): v for n, v in (ln.split("==") for ln in lines if ln and not ln.startswith("#"))}


@pytest.mark.slow
@pytest.mark.timeout(3600)  # it may first wait for the machine-wide bigmem lock
def test_rehearsal_runs_the_gpu_check_on_the_cpu(kit, tmp_path):
    out = tmp_path / "out"
    env = dict(os.environ, WAN22_PYTHON=sys.executable)
    env.pop("OUT", None)
    with bigmem_lock():  # the 5B case decodes with the real-size Wan2.2 VAE
        proc = subprocess.run(["bash", "bench/gpu/run.sh", "--rehearse", "--out", str(out)], cwd=REPO, env=env,
                              capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-8000:]
    report = (out / "report.md").read_text()
    assert "| case | impl | s/step (n) |" in report and report in proc.stdout
    results = json.loads((out / "results.json").read_text())
    assert results["rehearsal"] is True
    cases = {c["case"]: c for c in results["cases"]}
    assert list(cases) == ["tiny-ti2v-5b-bf16-1280x704x121", "tiny-a14b-fp8-832x480x81",
                           "tiny-a14b-fp8-832x480x81-24gb"]  # most important first
    for name, case in cases.items():
        runs = {r["impl"]: r for r in case["runs"]}
        assert set(runs) == {"pack", "native"}, name
        pair = "a14b" in name
        for impl, run in runs.items():
            assert run["ok"], (name, impl, run["error"])
            # one entry per denoising step, each with its expert, timed forwards and a positive time
            assert [s["expert"] for s in run["steps"]] == (["high", "low"] if pair else ["high", "high"]), (name, impl)
            assert all(s["seconds"] > 0 and s["forwards"] >= 1 for s in run["steps"])
            assert run["s_per_step"] > 0 and run["load_s"] >= 0 and run["peak_rss"] > 0
            assert (run["switch_s"] is not None) == pair
            assert all(e["loaded_bytes_first_step"] == e["model_bytes"] > 0 for e in run["experts"].values())
        if pair:
            assert runs["pack"]["switch_step"] == 1  # the pack switched where native's samplers split
        # Same files, seed, sampler and schedule: the pack's final latent is native's (fp8 pair:
        # the same dequantised weights, fp32 on the CPU).
        assert case["latent_rel_l2"] < 1e-2 and math.isfinite(case["latent_max_abs_diff"]), name
    ti2v = cases["tiny-ti2v-5b-bf16-1280x704x121"]
    assert all(r["decode_s"] > 0 and r["decode_error"] is None for r in ti2v["runs"])
    assert ti2v["video_max_abs_diff"] < 1e-2  # both decoders, the same latent, the same VAE file
    assert cases["tiny-a14b-fp8-832x480x81-24gb"]["cap_applied"] is False  # no CUDA device to cap here


def _machine_closure() -> list[md.Distribution]:
    """The machine's distributions (by name) and, transitively, what they require, as installed here."""
    names = [ln.strip() for ln in MACHINE_LIST.read_text().splitlines() if ln.strip() and not ln.startswith("#")]
    seen: dict[str, md.Distribution] = {}
    todo = list(names)
    while todo:
        name = canonicalize_name(todo.pop())
        if name in seen:
            continue
        dist = md.distribution(name)
        seen[name] = dist
        for req in map(Requirement, dist.requires or []):
            if req.marker is None or req.marker.evaluate({"extra": ""}):
                todo.append(req.name)
    return list(seen.values())


def _link_machine_packages(dists, dest: Path) -> None:
    dest.mkdir()
    for dist in dists:
        for f in dist.files or []:
            top = f.parts[0]
            if top == ".." or top.endswith(".pth"):
                continue
            src, link = Path(dist.locate_file(top)), dest / top
            if src.exists() and not link.exists():
                link.symlink_to(src, target_is_directory=src.is_dir())


@pytest.mark.slow
def test_kit_is_complete_in_a_clean_interpreter(kit, tmp_path):
    pins = _pins(kit)
    wheels = sorted((kit / "wheels").glob("*.whl"))
    # pip's resolver: the kit installs as pinned for CPython 3.12 on manylinux x86_64, offline.
    cmd = [sys.executable, "-m", "pip", "install", "--dry-run", "--no-index", "--no-deps", "--only-binary=:all:",
           "--disable-pip-version-check", "--find-links", str(kit / "wheels"), "--python-version", "3.12",
           "--implementation", "cp", "--platform", "manylinux_2_28_x86_64", "--platform", "manylinux2014_x86_64",
           "--target", str(tmp_path / "dry"), "-r", str(kit / "requirements.txt")]
    proc = subprocess.run(cmd, capture_output=True, text=True)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    would = re.search(r"Would install (.*)", proc.stdout).group(1).split()
    assert {canonicalize_name(w.rsplit("-", 1)[0]): w.rsplit("-", 1)[1] for w in would} == pins, proc.stdout
    # Every requirement of a kit wheel (for Python 3.12 on Linux) is in the kit or on the machine.
    machine = {canonicalize_name(d.metadata["Name"]) for d in _machine_closure()}
    for wheel in wheels:
        with zipfile.ZipFile(wheel) as z:
            meta = z.read(next(n for n in z.namelist() if n.endswith(".dist-info/METADATA"))).decode()
        for line in meta.splitlines():
            if line.startswith("Requires-Dist:"):
                req = Requirement(line.split(":", 1)[1].strip())
                if req.marker is not None and not Marker(str(req.marker)).evaluate(PY312):
                    continue
                name = canonicalize_name(req.name)
                assert name in pins or name in machine, f"{wheel.name} needs {req}, neither in the kit nor on the machine"
                if name in pins:
                    assert req.specifier.contains(pins[name]), f"{wheel.name} needs {req}, the kit has {pins[name]}"

    # The check itself, in an interpreter without site-packages: stdlib + repo + kit + machine stand-in.
    site = tmp_path / "site"
    subprocess.run([sys.executable, "-m", "pip", "install", "-q", "--no-index", "--no-deps", "--no-compile",
                    "--disable-pip-version-check", "--find-links", str(kit / "wheels"), "--target", str(site),
                    "-r", str(kit / "requirements.txt")], check=True)
    machine_dir = tmp_path / "machine"
    _link_machine_packages(_machine_closure(), machine_dir)
    kit_pkgs = {p.name.split("-")[0].lower() for p in site.glob("*.dist-info")}
    assert {canonicalize_name(n) for n in kit_pkgs} == set(pins), kit_pkgs
    stdlib = sysconfig.get_paths()
    roots = [str(REPO), str(site), str(machine_dir), stdlib["stdlib"], stdlib["platstdlib"]]
    out = tmp_path / "out"
    code = f"""
import sys, runpy
sys.path[:0] = {[str(REPO), str(site), str(machine_dir)]!r}
sys.argv = ["bench.gpu", "--rehearse", "--comfyui", {str(kit / "comfyui")!r}, "--cases", "24gb", "--out", {str(out)!r}]
try:
    runpy.run_module("bench.gpu", run_name="__main__", alter_sys=True)
    rc = 0
except SystemExit as e:
    rc = e.code
# (torch.ops and torch.classes carry bare file names, no path: not files)
files = {{name: m.__file__ for name, m in list(sys.modules.items()) if getattr(m, "__file__", None)
         and m.__file__.startswith("/")}}
print("IMPORTED FROM ELSEWHERE:", sorted(f for f in files.values()
                                         if "site-packages" in f or not f.startswith(tuple({roots!r}))))
print("SITE-PACKAGES ON PATH:", [p for p in sys.path if "site-packages" in p])
print("FROM THE KIT'S WHEELS:", sorted({{n.split(".")[0] for n, f in files.items() if f.startswith({str(site)!r})}}))
sys.exit(rc)
"""
    env = {k: v for k, v in os.environ.items() if not k.startswith("PYTHON") and k != "OUT"}
    env["PYTHONDONTWRITEBYTECODE"] = "1"  # no bytecode in the kit, which is carried as it is
    proc = subprocess.run([sys.executable, "-S", "-c", code], cwd=REPO, env=env, capture_output=True, text=True,
                          timeout=900)
    assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-8000:]
    assert "IMPORTED FROM ELSEWHERE: []" in proc.stdout, proc.stdout[-3000:]
    assert "SITE-PACKAGES ON PATH: []" in proc.stdout
    results = json.loads((out / "results.json").read_text())
    assert [c["case"] for c in results["cases"]] == ["tiny-a14b-fp8-832x480x81-24gb"]
    assert all(r["ok"] for r in results["cases"][0]["runs"])
    # every wheel the kit carries was imported from it (none is carried for nothing)
    assert "FROM THE KIT'S WHEELS: ['av', 'torchsde', 'trampoline']" in proc.stdout, proc.stdout[-3000:]


def test_targets_read_off_gpu_figures():
    """The verdicts under the table, on figures shaped like an H200 run (no GPU needed)."""
    from bench.gpu.__main__ import table, targets
    from bench.gpu.runner import CaseResult, Run

    gib = 2**30

    def run(impl, step, peak, experts, switch=None, error=None):
        return Run("x", impl, ok=error is None, error=error, s_per_step=step, switch_s=switch, peak_vram=peak,
                   steps=[{"expert": "high", "t": 1.0, "seconds": step or 0, "forwards": 1}],
                   experts={k: {"model_bytes": v * gib, "loaded_bytes_first_step": v * gib} for k, v in experts.items()})

    five = CaseResult("ti2v", "1280x704x121", "", runs=[run("pack", 2.0, 30 * gib, {"high": 10}),
                                                        run("native", 2.5, 31 * gib, {"high": 10})])
    pair = CaseResult("a14b", "832x480x81", "", runs=[
        run("pack", 8.4, 27 * gib, {"high": 14, "low": 14}, switch=3.0),
        run("native", 8.0, 40 * gib, {"high": 14, "low": 14}, switch=0.5)])
    capped = CaseResult("a14b-24gb", "832x480x81", "", cap_gb=24.0, cap_applied=True, runs=[
        run("pack", 12.0, 23 * gib, {"high": 14, "low": 14}, switch=9.0),
        run("native", None, None, {}, error="OutOfMemoryError: CUDA out of memory")])
    text = targets([five, pair, capped])
    assert "- ti2v: s/step 0.80x native (<= 1.0x): met" in text
    assert "- a14b: s/step 1.05x native (<= 1.0x): **missed**" in text
    assert "- a14b: switch 3.00 s under one step (8.40 s): met" in text
    # activations = native's 40 GiB less its two 14 GiB experts = 12; bound 1.1 x (14 + 12) = 28.6
    assert "- a14b: peak VRAM 27.00 GiB <= one expert + activations + 10 % (28.60 GiB): met" in text
    assert "- a14b-24gb: peak VRAM 23.00 GiB <= one expert + activations + 10 % (28.60 GiB): met" in text
    assert ("- a14b-24gb: no OOM under the 24 GB cap (cap applied: True): pack ran, native "
            "OutOfMemoryError: CUDA out of memory") in text
    assert "a14b-24gb: s/step" not in text  # no ratio without both runs
    rows = table([five, pair, capped], "header").splitlines()
    assert "| a14b-24gb | native | OutOfMemoryError: CUDA out of memory |" in "\n".join(rows)
    assert any(r.startswith("| ti2v | pack/native | 0.80x |") for r in rows)
