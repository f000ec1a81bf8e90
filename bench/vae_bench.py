"""VAE decode benchmark: the pack's decode vs ComfyUI's native VAEDecode on the same native VAE
(comfy.sd.VAE holding ComfyUI's Wan module with random weights of the released widths).

`python -m bench.vae_bench` prints a markdown table: decode wall time and peak RSS growth of the
real-size Wan2.1 and Wan2.2 VAEs on a 17-frame 384x384 clip, on this machine's device (CPU here).
Rows: `native` = native VAEDecode (`vae.decode`, flattened to IMAGE frames as the node does);
`pack` = the pack's Wan22VAEDecode node (the IMAGE output, the same numbers); `stream` = the
frames Wan22VideoCombine receives from samples + vae (decoded chunk by chunk, each dropped after
it is written: no whole-video tensor); `strips` = Wan22VAEDecode in exact strips (the same
numbers in less memory, more time); `tiled` (only when asked) = Wan22VAEDecode in tiles. Each
measurement runs in a fresh child process; the RSS high-water mark is reset after the weights
are built, so the peak is the decode's own growth.
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
# (kind, frames, height, width): where activations dominate (issue 13: >= 17 frames at 384x384).
CASES = [("wan2.1", 17, 384, 384), ("wan2.2", 17, 384, 384)]
IMPLS = ("native", "pack", "stream", "strips")
TILE_PX = 160  # the opt-in tiled row: tile_size of Wan22VAEDecode (tiles change numbers near seams)
STRIPS = 2  # the exact low-memory row: exact_strips of Wan22VAEDecode
LABELS = {"native": "ComfyUI native VAEDecode", "pack": "pack Wan22VAEDecode (IMAGE out)",
          "stream": "pack stream (Wan22VideoCombine's input)",
          "strips": f"pack Wan22VAEDecode, exact_strips {STRIPS} (the same numbers)",
          "tiled": f"pack Wan22VAEDecode, tile_size {TILE_PX} (opt-in; not exact)"}
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
    from comfy_inprocess import pack
    from vae_factory import random_vae

    nodes = pack().nodes
    from comfyui_wan22.wan_core.comfy_bridge import vae_stream

    vae = random_vae(kind, "real", seed=0)  # a native comfy.sd.VAE, fp32 on the CPU
    s_t, s = vae.temporal_compression_decode(), vae.spacial_compression_decode()
    latent = torch.randn(1, vae.latent_channels, (frames - 1) // s_t + 1, height // s, width // s,
                         generator=torch.Generator().manual_seed(1))

    def decode():
        if impl == "native":  # nodes.VAEDecode: decode, then flatten the batch of videos to frames
            images = vae.decode(latent)
            return images.reshape(-1, *images.shape[-3:])
        if impl in ("pack", "tiled", "strips"):
            tile = TILE_PX if impl == "tiled" else 0
            strips = STRIPS if impl == "strips" else 0
            return nodes.vae.Wan22VAEDecode.execute(vae=vae, samples={"samples": latent}, tile_size=tile,
                                                    exact_strips=strips).result[0]
        count = 0
        for chunk in vae_stream.decode_iter(vae, latent):
            count += chunk.shape[2]
            del chunk
        return torch.empty(count, 0)

    Path("/proc/self/clear_refs").write_text("5")  # reset the RSS high-water mark
    base = _kib("VmRSS")
    start = time.perf_counter()
    with torch.no_grad():
        video = decode()
    seconds = time.perf_counter() - start
    return {"kind": kind, "impl": impl, "frames": int(video.shape[0]), "height": height, "width": width,
            "seconds": seconds, "peak_mib": (_kib("VmHWM") - base) / 1024}


def run_child(kind, impl, frames, height, width) -> dict:
    # A fixed mmap threshold: glibc returns freed blocks at once, so RSS follows live tensors.
    env = dict(os.environ, MALLOC_MMAP_THRESHOLD_="131072", PYTHONPATH=str(REPO))
    cmd = [sys.executable, "-m", "bench.vae_bench", "--one", kind, impl, str(frames), str(height), str(width)]
    out = subprocess.run(cmd, cwd=REPO, env=env, check=True, capture_output=True, text=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


def table(rows: list[dict]) -> str:
    lines = ["| VAE | clip (frames x H x W) | implementation | decode s | peak RSS growth MiB | time / native | "
             "growth / native |", "|---|---|---|---|---|---|---|"]
    native = {r["kind"]: r for r in rows if r["impl"] == "native"}
    for r in rows:
        ref = native.get(r["kind"])
        ratios = (f"{r['seconds'] / ref['seconds']:.2f}x | {r['peak_mib'] / ref['peak_mib']:.2f}x" if ref
                  else "– | –")
        lines.append(f"| {r['kind']} | {r['frames']}x{r['height']}x{r['width']} | {LABELS[r['impl']]} | "
                     f"{r['seconds']:.1f} | {r['peak_mib']:.0f} | {ratios} |")
    return "\n".join(lines)


def main() -> None:
    if len(sys.argv) > 1 and sys.argv[1] == "--one":
        kind, impl, f, h, w = sys.argv[2], sys.argv[3], *map(int, sys.argv[4:7])
        print(json.dumps(measure(kind, impl, f, h, w)))
        return
    import argparse

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--kinds", default="wan2.1,wan2.2", help="comma-separated: wan2.1, wan2.2")
    parser.add_argument("--impls", default=",".join(IMPLS), help="comma-separated: " + ", ".join(LABELS))
    parser.add_argument("--clip", default=None, help="FRAMESxHEIGHTxWIDTH (default: 17x384x384)")
    args = parser.parse_args()
    cases = [c for c in CASES if c[0] in args.kinds.split(",")]
    if args.clip:
        f, h, w = map(int, args.clip.split("x"))
        cases = [(kind, f, h, w) for kind, *_ in cases]
    rows = []
    with open(LOCK, "a") as lock:
        if not os.environ.get(LOCK_HELD_ENV):
            fcntl.flock(lock, fcntl.LOCK_EX)
        for kind, frames, height, width in cases:
            for impl in args.impls.split(","):
                rows.append(run_child(kind, impl, frames, height, width))
                print(json.dumps(rows[-1]), file=sys.stderr, flush=True)
    print(table(rows))
    print(f"\nCPU fp32, {os.cpu_count()} cores, torch threads default; random weights of the released sizes.")


if __name__ == "__main__":
    main()
