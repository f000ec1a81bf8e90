"""The entry point on a ComfyUI without the V3 node API: one clear log line, no traceback, and
ComfyUI's own loader carries on. Runs ComfyUI's real `nodes.load_custom_node` in a child process
in which `comfy_api.latest` cannot be imported (as on ComfyUI releases before the V3 API)."""

import subprocess
import sys
import textwrap
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
COMFYUI_DIR = REPO / ".comfyui"

CHILD = textwrap.dedent(
    """
    import asyncio, logging, sys
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(message)s", stream=sys.stdout)
    from comfy.cli_args import args
    args.cpu = True
    import nodes  # ComfyUI's own nodes.py, with its custom-node loader
    sys.modules["comfy_api.latest"] = None  # what an older ComfyUI looks like to the pack
    ok = asyncio.run(nodes.load_custom_node(sys.argv[1]))
    print("LOADED", ok, sorted(k for k in nodes.NODE_CLASS_MAPPINGS if k.startswith("Wan22")))
    """
)


def test_too_old_comfyui_gets_one_clear_line_and_keeps_starting():
    result = subprocess.run(
        [sys.executable, "-c", CHILD, str(REPO)], cwd=COMFYUI_DIR, capture_output=True, text=True, timeout=300
    )
    out = result.stdout + result.stderr
    assert result.returncode == 0, out
    ours = [line for line in out.splitlines() if "[ComfyUI-Wan22]" in line]
    assert len(ours) == 1, out
    assert "needs ComfyUI 0.3.75 or newer" in ours[0] and "this ComfyUI is 0.3.75" in ours[0]
    assert "Traceback" not in out, out
    assert "LOADED True []" in out, out


def test_current_comfyui_registers_the_pack_nodes():
    child = CHILD.replace('sys.modules["comfy_api.latest"] = None', "")
    result = subprocess.run(
        [sys.executable, "-c", child, str(REPO)], cwd=COMFYUI_DIR, capture_output=True, text=True, timeout=300
    )
    out = result.stdout + result.stderr
    assert result.returncode == 0 and "LOADED True" in out, out
    assert "[ComfyUI-Wan22]" not in out and "Traceback" not in out, out
