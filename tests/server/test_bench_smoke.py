"""`python -m bench --suite smoke`, as `make bench` runs it, on a tiny A14B pair: it must write
the tables, run both graphs (the pack's and native ComfyUI's two-KSamplerAdvanced split), split
native at the step where the pack switches experts, and the two final latents must agree.
Timings are printed, never asserted (CI machines are shared)."""

import json
import math
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.server

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def smoke(tmp_path_factory):
    out = tmp_path_factory.mktemp("bench")
    proc = subprocess.run([sys.executable, "-m", "bench", "--suite", "smoke", "--out", str(out)], cwd=REPO,
                          capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-4000:]
    return out, proc.stdout, json.loads((out / "results.json").read_text())


def test_both_graphs_ran_and_the_tables_are_printed(smoke):
    out, stdout, results = smoke
    (case,) = results
    runs = {r["label"].split(" (")[0]: r for r in case["runs"]}
    assert set(runs) == {"pack", "native"}, [r["label"] for r in case["runs"]]
    for label, run in runs.items():
        assert run["ok"], (label, run["error"])
        assert run["latent_path"] and Path(run["latent_path"]).is_file(), label
    report = (out / "report.md").read_text()
    assert report == stdout.strip() + "\n" or report.strip() in stdout
    for heading in ("| case | size | graph |", "| case | s/step | switch |"):
        assert heading in report
    assert "a14b-tiny-smoke | 64x64x5 | pack" in report and "a14b-tiny-smoke | 64x64x5 | native" in report


def test_measurements_are_present_and_sane(smoke):
    _, _, (case,) = smoke
    steps = case["case"]["steps"]
    k = case["switch_step"]
    assert 0 < k < steps  # the smoke schedule does switch experts
    for run in case["runs"]:
        # every step but the first of each expert's sampler and the switch step is a timed gap
        assert len(run["step_seconds"]) >= steps - 3, run["label"]
        assert all(t > 0 for t in run["step_seconds"]), run["label"]
        assert run["switch_seconds"] is not None and math.isfinite(run["switch_seconds"])
        assert run["decode_seconds"] > 0
        assert run["peak_rss"] >= run["idle_rss"] > 100 * 2**20
        assert run["device_peak"] is None  # CPU run: no device memory to report
        assert run["switch_step"] == k, run["label"]  # native split where the pack switched
        # The memory watch sampled each phase: the pack's sampler by expert, native's by node.
        phases = set(run["phase_peak_rss"])
        expected = {"sampler:high", "sampler:low"} if run["label"].startswith("pack") else {"sampler_high", "sampler_low"}
        assert expected <= phases, (run["label"], phases)
        assert run["tree_peak_rss"] > 100 * 2**20 and run["most_experts_resident"] >= 1


def test_final_latents_of_the_two_graphs_agree(smoke):
    """Same weights, noise, sigmas and solver, both fp32 on CPU: only the order of floating-point
    operations differs (attention kernels, where the casts happen), so ~1e-6 of the latent's std.
    A wrong split step or a different noise gives differences of the order of the std itself."""
    _, _, (case,) = smoke
    assert case["latent_native_std"] > 0.1
    assert case["latent_max_abs_diff"] <= 1e-4 * case["latent_native_std"]


def test_flop_counts_match_the_reference_table():
    """WAN22_REFERENCE.md section 8: TFLOP of one DiT forward (one CFG branch)."""
    sys.path.insert(0, str(REPO))
    from bench.flops import dit_forward_flops
    from tests.dit_factory import real_config

    assert dit_forward_flops(real_config("ti2v"), 27_280) / 1e12 == pytest.approx(517, rel=2e-3)
    assert dit_forward_flops(real_config("t2v"), 75_600) / 1e12 == pytest.approx(6523, rel=2e-3)
    assert dit_forward_flops(real_config("t2v"), 32_760) / 1e12 == pytest.approx(1678, rel=2e-3)
