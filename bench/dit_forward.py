"""One DiT forward of the pack's TI2V expert against native ComfyUI's, in one process, on the same
file and input (batch 2 = cond + uncond, as the sampler calls it), forwards interleaved so both
see the same machine load: wall ms, process CPU s and major page faults per forward.

    python -m bench.dit_forward FILE                  # a TI2V DiT file (bf16, ComfyUI format)
    python -m bench.dit_forward --layers 4            # writes a real-width 4-layer file first
    python -m bench.dit_forward --layers 4 --evict    # as under memory pressure (see `evict`)
    python -m bench.dit_forward FILE --only ours --no-resident   # the pack before the fix

The bench's 5B case in one forward, without the servers: 128x128x5 (32 tokens), a 512-token
context, both models as `--bf16-unet` loads them (bf16 weights, fp32 compute on the CPU).
"""

from __future__ import annotations

import argparse
import ctypes
import mmap
import os
import resource
import statistics
import time
from pathlib import Path

import torch

from tests.comfy_inprocess import comfy as import_comfy
from tests.comfy_inprocess import pack as import_pack

REPO = Path(__file__).resolve().parents[1]
MADV_PAGEOUT = 21


def evict(model, path: str) -> None:
    """What memory pressure does to clean file pages: unmap and reclaim them (MADV_PAGEOUT on the
    weights' storages, then drop the file from the page cache). Anonymous memory is untouched
    (no swap), which is why native ComfyUI's copies never fault."""
    libc = ctypes.CDLL(None, use_errno=True)
    seen = set()
    for t in model.diffusion_model.state_dict().values():
        storage = t.untyped_storage()
        if storage.data_ptr() in seen:
            continue
        seen.add(storage.data_ptr())
        start = storage.data_ptr() & ~(mmap.PAGESIZE - 1)
        length = storage.data_ptr() + storage.nbytes() - start
        libc.madvise(ctypes.c_void_p(start), ctypes.c_size_t(length), MADV_PAGEOUT)
    fd = os.open(path, os.O_RDONLY)
    os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
    os.close(fd)


def disk_read_bytes() -> int:
    """Bytes this process has had read from storage (not from the page cache)."""
    with open("/proc/self/io") as f:
        return next(int(line.split()[1]) for line in f if line.startswith("read_bytes:"))


def load(which: str, path: str, no_resident: bool):
    import comfy.sd

    if which == "native":
        return comfy.sd.load_diffusion_model(path)
    from comfyui_wan22.wan_core.comfy_bridge.dit_model import load_expert

    patcher = load_expert(path)
    if no_resident:
        patcher.callbacks.clear()  # the load/unload hooks of resident_weights
    return patcher


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("file", nargs="?")
    parser.add_argument("--layers", type=int, default=4, help="without FILE: real width, this many layers")
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--ctx", type=int, default=512)
    parser.add_argument("--evict", action="store_true", help="drop the weights' file pages before each forward")
    parser.add_argument("--only", default="ours,native")
    parser.add_argument("--no-resident", action="store_true", help="ours as before the fix: weights stay file views")
    args = parser.parse_args()

    import_comfy()
    from comfy.cli_args import args as comfy_args

    comfy_args.bf16_unet = True  # as the bench's 5B servers
    import comfy.model_management as mm

    import_pack()
    path = args.file
    if path is None:
        from tests.dit_factory import real_config, write_large_comfy_file

        path = str(REPO / f"bench_out/cache/models/diffusion_models/ti2v_width3072_l{args.layers}_bf16.safetensors")
        if not Path(path).exists():
            write_large_comfy_file(real_config("ti2v", num_layers=args.layers), Path(path))

    patchers = {which: load(which, path, args.no_resident) for which in args.only.split(",")}
    started = time.perf_counter()
    mm.load_models_gpu(list(patchers.values()))  # together, so neither unloads the other
    print(f"loaded for compute in {time.perf_counter() - started:.1f} s")
    models = {which: patcher.model for which, patcher in patchers.items()}
    size = Path(path).stat().st_size
    for which, model in models.items():
        views = sum(t.untyped_storage().nbytes() == size for t in model.diffusion_model.state_dict().values())
        print(f"{which}: {views} tensors are views of the file's memory map")

    g = torch.Generator().manual_seed(0)
    x = torch.randn(2, 48, 2, 8, 8, generator=g)
    ctx = torch.zeros(2, args.ctx, 4096)
    ctx[:, :24] = torch.randn(2, 24, 4096, generator=g)
    sigma = torch.tensor([0.9, 0.9])

    def forward(model):
        with torch.no_grad():
            return model.apply_model(x, sigma, c_crossattn=ctx)

    outs = {which: forward(model) for which, model in models.items()}  # warm-up
    results = {which: {"wall": [], "cpu": [], "majflt": [], "read": []} for which in models}
    for _ in range(args.repeat):
        for which, model in models.items():
            if args.evict:
                evict(model, path)
            b0 = disk_read_bytes()
            r0, c0, t0 = resource.getrusage(resource.RUSAGE_SELF), os.times(), time.perf_counter()
            outs[which] = forward(model)
            t1, c1, r1 = time.perf_counter(), os.times(), resource.getrusage(resource.RUSAGE_SELF)
            results[which]["wall"].append(t1 - t0)
            results[which]["cpu"].append(c1.user + c1.system - c0.user - c0.system)
            results[which]["majflt"].append(r1.ru_majflt - r0.ru_majflt)
            results[which]["read"].append((disk_read_bytes() - b0) / 2**30)
    for which, r in results.items():
        print(f"{which}: wall ms {[round(v * 1000) for v in r['wall']]} median {statistics.median(r['wall']) * 1000:.0f}; "
              f"cpu s median {statistics.median(r['cpu']):.2f}; major faults {r['majflt']}; "
              f"GB read from disk {[round(v, 2) for v in r['read']]}")
    if len(outs) == 2:
        diff = (outs["ours"] - outs["native"]).abs().max().item()
        ratio = statistics.median(results["ours"]["wall"]) / statistics.median(results["native"]["wall"])
        print(f"max abs diff ours vs native {diff:.3g} (native std {outs['native'].std():.3f}); wall ours/native {ratio:.2f}x")


if __name__ == "__main__":
    main()
