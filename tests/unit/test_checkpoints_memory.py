"""Loading never inflates the file in RAM: a ~0.6 GB bf16 DiT loads (standalone, and as a ComfyUI
expert) in a child process whose peak resident memory grows by less than 1.2x the file size, with
every weight read afterwards. A loader that copied the tensors would need ~2x (the copy plus the
file pages it read)."""

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
    import json, sys
    import torch

    def status(field):
        for line in open("/proc/self/status"):
            if line.startswith(field):
                return int(line.split()[1]) * 1024

    path, how = sys.argv[1], sys.argv[2]
    if how == "comfy":
        from tests.comfy_inprocess import pack
        pack()
        from comfyui_wan22.wan_core.comfy_bridge.dit_model import load_expert
        load = lambda: load_expert(path).model.diffusion_model
    else:
        from wan_core.checkpoints import load_dit
        load = lambda: load_dit(path).model
    before = status("VmRSS")
    model = load()
    for p in model.parameters():  # read every weight (the values are raw bytes: only reading counts)
        p.float().sum()
    print(json.dumps({"before": before, "peak": status("VmHWM")}))
""")


@pytest.mark.parametrize("how", ["standalone", "comfy"])
def test_peak_ram_while_loading_stays_under_1_2x_file_size(tmp_path, how):
    path = write_large_comfy_file(CFG, tmp_path / "big.safetensors", values="raw")
    size = path.stat().st_size
    assert size > 500e6
    out = subprocess.run(
        [sys.executable, "-c", CHILD, str(path), how],
        cwd=REPO, capture_output=True, text=True, timeout=300, env={"PYTHONPATH": str(REPO), "PATH": "/usr/bin:/bin"},
    )
    assert out.returncode == 0, out.stderr[-3000:]
    report = json.loads(out.stdout.strip().splitlines()[-1])
    grown = report["peak"] - report["before"]
    print(f"{how}: file {size / 1e6:.0f} MB, peak RSS grew {grown / 1e6:.0f} MB ({grown / size:.2f}x)")
    assert grown < 1.2 * size
