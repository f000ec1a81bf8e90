"""Peak resident memory of one real-size VAE decode, measured in a fresh child process.

`python tests/vae_peak_memory.py KIND HEIGHT WIDTH LATENT_FRAMES TILE OVERLAP` (pixels) prints JSON: the peak RSS
growth during decode (the weights already loaded), wall time and frames. The peak is reset
after building the model (Linux /proc/self/clear_refs), so only the decode is measured.
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def rss_kib(field: str) -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    raise RuntimeError(field)


def main(kind: str, height: int, width: int, latent_frames: int, tile: int, overlap: int) -> dict:
    import torch
    from comfy_inprocess import comfy
    from vae_factory import random_vae, smooth_latent

    comfy()
    from wan_core.comfy_bridge import vae_stream

    vae = random_vae(kind, "real", seed=0)
    s = vae.spacial_compression_decode()
    latent = smooth_latent(kind, latent_frames, height // s, width // s)
    Path("/proc/self/clear_refs").write_text("5")  # reset the high-water mark
    base = rss_kib("VmRSS")
    start = time.perf_counter()
    frames = 0
    with torch.no_grad():
        for chunk in vae_stream.decode_iter(vae, latent, tile=tile, overlap=overlap):
            frames += chunk.shape[2]
    return {"kind": kind, "tile": tile, "peak_mib": (rss_kib("VmHWM") - base) / 1024,
            "seconds": time.perf_counter() - start, "frames": frames}


if __name__ == "__main__":
    kind, h, w, t, tile, overlap = sys.argv[1], *map(int, sys.argv[2:])
    print(json.dumps(main(kind, h, w, t, tile, overlap)))
