"""VAE decode benchmark: the pack's streaming decode vs ComfyUI's native VAE, same random weights.

`python -m bench.vae_bench` prints a markdown table: decode wall time and peak RSS growth of the
real-size Wan2.1 and Wan2.2 VAEs on a small clip, on this machine's device (CPU here). Each
measurement runs in a fresh child process holding only one implementation; the RSS high-water
mark is reset after the weights are built, so the peak is the decode's own working memory.
Not a timed test: run it on a quiet machine. Run alone, it takes the repo's bigmem lock; run by
`python -m bench` (whose caller holds that lock, `flock /tmp/wan22-bigmem.lock make bench`) it is
told so through LOCK_HELD_ENV and does not wait on it (flock locks are per open file, so it would
wait on its own parent forever).
"""

from __future__ import annotations

import fcntl
import json
import os
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
# (kind, frames, height, width): small clips, about a minute in all on 2 CPU cores.
CASES = [("wan2.1", 5, 160, 160), ("wan2.2", 5, 128, 128)]
IMPLS = ("ours", "native")
LOCK = "/tmp/wan22-bigmem.lock"
LOCK_HELD_ENV = "WAN22_BIGMEM_LOCK_HELD"  # set by a parent that runs the whole bench under LOCK


def _kib(field: str) -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    raise RuntimeError(field)


def measure(kind: str, impl: str, frames: int, height: int, width: int) -> dict:
    """One decode in this process; returns seconds and peak RSS growth (MiB)."""
    sys.path[:0] = [str(REPO / "tests"), str(REPO)]
    import torch
    from vae_factory import random_vae

    ours = random_vae(kind, "real", seed=0)
    s_t, s = ours.stride[0], ours.stride[1]
    latent = torch.randn(1, ours.z_dim, (frames - 1) // s_t + 1, height // s, width // s,
                         generator=torch.Generator().manual_seed(1))
    if impl == "native":
        from comfy_inprocess import comfy

        comfy()
        import comfy.sd

        native = comfy.sd.VAE(sd=ours.state_dict())
        del ours

        def decode():
            return native.decode(latent)  # [B, T, H, W, 3] in 0..1
    else:
        def decode():
            # As the pack's decode node: chunks converted to 0..1 frames as they arrive.
            return torch.cat([((c + 1) / 2).clamp_(0, 1).permute(0, 2, 3, 4, 1) for c in ours.decode_iter(latent)], 1)

    Path("/proc/self/clear_refs").write_text("5")  # reset the RSS high-water mark
    base = _kib("VmRSS")
    start = time.perf_counter()
    with torch.no_grad():
        video = decode()
    seconds = time.perf_counter() - start
    return {"kind": kind, "impl": impl, "frames": int(video.shape[-4]), "height": height, "width": width,
            "seconds": seconds, "peak_mib": (_kib("VmHWM") - base) / 1024}


def run_child(kind, impl, frames, height, width) -> dict:
    # A fixed mmap threshold: glibc returns freed blocks at once, so RSS follows live tensors.
    env = dict(os.environ, MALLOC_MMAP_THRESHOLD_="131072", PYTHONPATH=str(REPO))
    cmd = [sys.executable, "-m", "bench.vae_bench", "--one", kind, impl, str(frames), str(height), str(width)]
    out = subprocess.run(cmd, cwd=REPO, env=env, check=True, capture_output=True, text=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


def table(rows: list[dict]) -> str:
    lines = ["| VAE | clip (frames x H x W) | implementation | decode s | peak RSS growth MiB |",
             "|---|---|---|---|---|"]
    for r in rows:
        lines.append(f"| {r['kind']} | {r['frames']}x{r['height']}x{r['width']} | "
                     f"{'pack (streaming)' if r['impl'] == 'ours' else 'ComfyUI native'} | "
                     f"{r['seconds']:.1f} | {r['peak_mib']:.0f} |")
    return "\n".join(lines)


def main() -> None:
    if len(sys.argv) > 1 and sys.argv[1] == "--one":
        kind, impl, f, h, w = sys.argv[2], sys.argv[3], *map(int, sys.argv[4:7])
        print(json.dumps(measure(kind, impl, f, h, w)))
        return
    rows = []
    with open(LOCK, "a") as lock:
        if not os.environ.get(LOCK_HELD_ENV):
            fcntl.flock(lock, fcntl.LOCK_EX)
        for kind, frames, height, width in CASES:
            for impl in IMPLS:
                rows.append(run_child(kind, impl, frames, height, width))
    print(table(rows))
    print(f"\nCPU fp32, {os.cpu_count()} cores, torch threads default; random weights of the released sizes.")


if __name__ == "__main__":
    main()
