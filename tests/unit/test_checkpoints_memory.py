"""Loading never inflates the file in RAM, and an idle expert owns no copy of its weights: a
~0.6 GB bf16 DiT loads through `load_expert` (ComfyUI's WanModel) in a child process whose peak
resident memory grows by at most 1.1x the file size with every weight read afterwards (the file's
pages themselves are 1.0x), every tensor of the diffusion model is a view of the file's memory
map, and the process's anonymous memory grows by a few percent of the file at most. A loader that
copied the tensors would need ~2x (the copy plus the file pages it read). Measured: peak +1.04x,
anonymous memory +18 MB for a 631 MB file."""

import json
import subprocess
import sys
import textwrap

import pytest

from tests.comfy_inprocess import REPO
from tests.dit_factory import write_large_comfy_file
from wan_core.config import DiTConfig

pytestmark = pytest.mark.slow

# ~300 M parameters: 0.6 GB in bf16.
CFG = DiTConfig(dim=1024, ffn_dim=4096, num_heads=8, num_layers=18, in_dim=16, out_dim=16)

CHILD = textwrap.dedent("""
    import json, os, sys

    def status(field):
        for line in open("/proc/self/status"):
            if line.startswith(field):
                return int(line.split()[1]) * 1024

    path = sys.argv[1]
    from tests.comfy_inprocess import pack
    pack()
    from comfyui_wan22.wan_core.comfy_bridge.dit_model import load_expert

    before, anon_before = status("VmRSS"), status("RssAnon")
    model = load_expert(path).model.diffusion_model
    for p in model.parameters():  # read every weight (the values are raw bytes: only reading counts)
        p.float().sum()
    size = os.path.getsize(path)
    tensors = list(model.state_dict().values())
    print(json.dumps({
        "before": before, "peak": status("VmHWM"), "anon_grown": status("RssAnon") - anon_before,
        "tensors": len(tensors), "file_views": sum(t.untyped_storage().nbytes() == size for t in tensors),
        "module": type(model).__module__ + "." + type(model).__name__,
    }))
""")


def test_loading_peaks_under_1_1x_file_size_and_the_idle_expert_stays_file_backed(tmp_path):
    path = write_large_comfy_file(CFG, tmp_path / "big.safetensors", values="raw")
    size = path.stat().st_size
    assert size > 500e6
    out = subprocess.run(
        [sys.executable, "-c", CHILD, str(path)],
        cwd=REPO, capture_output=True, text=True, timeout=300, env={"PYTHONPATH": str(REPO), "PATH": "/usr/bin:/bin"},
    )
    assert out.returncode == 0, out.stderr[-3000:]
    report = json.loads(out.stdout.strip().splitlines()[-1])
    grown = report["peak"] - report["before"]
    print(f"file {size / 1e6:.0f} MB, peak RSS grew {grown / 1e6:.0f} MB ({grown / size:.3f}x), "
          f"anonymous memory grew {report['anon_grown'] / 1e6:.0f} MB")
    assert report["module"] == "comfy.ldm.wan.model.WanModel"
    assert grown <= 1.1 * size
    assert report["file_views"] == report["tensors"]  # no private copy of any weight
    assert report["anon_grown"] < 0.05 * size
