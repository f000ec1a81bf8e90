"""One case of the GPU check: the pack and native ComfyUI on the same files, in this process.

pack:   `dit_model.load_expert` per expert -> `sampling.sample` (one call; the pair switches
        inside) -> the pack's Wan22VAELoader + Wan22VAEDecode nodes
native: `comfy.sd.load_diffusion_model` (UNETLoader) + ModelSamplingSD3 per expert -> one
        KSamplerAdvanced per expert, split at the pack's switch step -> VAELoader's
        `comfy.sd.VAE` + VAEDecode

Between runs every model is unloaded, the device cache emptied and the peaks reset, so each
run's peaks are its own. How each figure is taken:
- s/step: the DiT forwards of one step (same timestep), timed with a device sync before and
  after each forward (hooks on `diffusion_model`); the median over the steps. Loading and the
  switch are outside the forwards, partial loading's weight streaming is inside them.
- load s: from the sampling call to its first forward (moving the first model to the device).
- switch s: from the end of the high-noise expert's last forward to the start of the low-noise
  expert's first (unloading one, loading the other, and native's second sampler call).
- peak VRAM: torch.cuda.max_memory_allocated over the sampling call; host RSS: VmHWM, reset
  before the run (/proc/self/clear_refs).
- loaded at first step: how much of the expert was on the device at its first forward
  (below 100%: ComfyUI loaded it partially and streams the rest).
"""

from __future__ import annotations

import gc
import logging
import statistics
import time
import traceback
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch

from ..comfy_hook import BenchConditioning, cap_device_memory
from ..flops import dit_forward_flops
from ..measure import proc_status_bytes
from ..models import ModelCache
from .cases import GpuCase
from .runtime import PACK_MODULE, pack_nodes

log = logging.getLogger("wan22.bench.gpu")
LAST_STEP = 10000  # KSamplerAdvanced's "until the end"
PROMPT_TOKENS = 24
HIGH_LABEL, LOW_LABEL = "high", "low"


def cuda() -> bool:
    return torch.cuda.is_available()


def sync() -> None:
    if cuda():
        torch.cuda.synchronize()


def reset_peak_rss() -> bool:
    try:
        Path("/proc/self/clear_refs").write_text("5")
        return True
    except OSError:
        return False


def release_memory() -> None:
    """Every model off the device; caches emptied; peaks reset (the start of every run)."""
    import comfy.model_management as mm

    mm.unload_all_models()
    gc.collect()
    mm.soft_empty_cache(True)
    if cuda():
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats()


def warm_up() -> None:
    """CUDA context, cuBLAS and attention kernels, before the first timed run."""
    if not cuda():
        return
    x = torch.randn(4096, 4096, device="cuda", dtype=torch.bfloat16)
    (x @ x).sum().item()
    q = torch.randn(1, 8, 1024, 128, device="cuda", dtype=torch.bfloat16)
    torch.nn.functional.scaled_dot_product_attention(q, q, q).sum().item()
    del x, q
    torch.cuda.empty_cache()


@dataclass
class Run:
    case: str
    impl: str  # pack | native
    ok: bool = False
    error: str | None = None
    file_load_s: float | None = None  # building the MODELs from the files (memory-mapped)
    sample_s: float | None = None  # the whole sampling call(s)
    load_s: float | None = None
    switch_s: float | None = None
    steps: list[dict] = field(default_factory=list)  # expert, timestep, seconds, forwards
    s_per_step: float | None = None
    tflops: float | None = None
    peak_vram: int | None = None
    peak_vram_reserved: int | None = None
    rss_before: int | None = None
    peak_rss: int | None = None
    experts: dict = field(default_factory=dict)  # label -> {model_bytes, loaded_bytes_first_step}
    switch_step: int | None = None  # as the pack reports it
    decode_s: float | None = None
    decode_peak_vram: int | None = None
    decode_peak_rss: int | None = None
    decode_error: str | None = None
    seconds: float | None = None  # this row in all


class ForwardClock:
    """Times every forward of the watched diffusion models (device-synchronised)."""

    def __init__(self):
        self.calls: list[dict] = []
        self.experts: dict[str, dict] = {}
        self.call_start: float | None = None  # the sampling call's start
        self._handles = []

    def watch(self, patcher, label: str) -> None:
        import comfy.model_management as mm

        base = patcher.model

        def pre(module, args, kwargs):
            sync()
            t = args[1] if len(args) > 1 else kwargs.get("timestep")
            if label not in self.experts:
                loaded = next((lm.model for lm in mm.current_loaded_models
                               if lm.model is not None and lm.model.model is base), None)
                self.experts[label] = {
                    "model_bytes": loaded.model_size() if loaded is not None else patcher.model_size(),
                    "loaded_bytes_first_step": loaded.loaded_size() if loaded is not None else None,
                    "device_allocated_first_step": torch.cuda.memory_allocated() if cuda() else None,
                }
            self.calls.append({"expert": label, "t": round(float(t.flatten()[0]), 4),
                               "start": time.perf_counter(), "end": None})

        def post(module, args, kwargs, output):
            sync()
            self.calls[-1]["end"] = time.perf_counter()

        dm = base.diffusion_model
        self._handles += [dm.register_forward_pre_hook(pre, with_kwargs=True),
                          dm.register_forward_hook(post, with_kwargs=True)]

    def close(self) -> None:
        for h in self._handles:
            h.remove()
        self._handles.clear()

    def steps(self) -> list[dict]:
        out: list[dict] = []
        for c in self.calls:
            if c["end"] is None:  # a forward that raised (out of memory): no time to count
                continue
            if out and out[-1]["expert"] == c["expert"] and out[-1]["t"] == c["t"]:
                out[-1]["seconds"] += c["end"] - c["start"]
                out[-1]["forwards"] += 1
            else:
                out.append({"expert": c["expert"], "t": c["t"], "seconds": c["end"] - c["start"], "forwards": 1})
        return out

    def switch_seconds(self) -> float | None:
        high = [c for c in self.calls if c["expert"] == HIGH_LABEL and c["end"] is not None]
        low = [c for c in self.calls if c["expert"] == LOW_LABEL]
        if not (high and low):
            return None
        return low[0]["start"] - high[-1]["end"]


def switch_boundary(gc_: GpuCase) -> float | None:
    """A boundary that puts exactly `high_steps` steps on the high-noise expert: halfway between
    the last high and the first low sigma of ComfyUI's schedule at the case's shift."""
    if gc_.case.low is None:
        return None
    import comfy.model_sampling
    import comfy.samplers

    c = gc_.case
    sampling = comfy.model_sampling.ModelSamplingDiscreteFlow(model_config=None)
    sampling.set_parameters(shift=c.shift, multiplier=1000)
    sigmas = comfy.samplers.calculate_sigmas(sampling, c.scheduler, c.steps).cpu().double()
    k = gc_.high_steps
    return float(sigmas[k - 1] + sigmas[k]) / 2


def conditioning(case) -> tuple:
    return BenchConditioning().make(case.seed, PROMPT_TOKENS)


def empty_latent(case) -> dict:
    c, f, h, w = case.latent_shape()
    return {"samples": torch.zeros(1, c, f, h, w)}


def run_pack(gc_: GpuCase, files: dict, run: Run, clock: ForwardClock) -> torch.Tensor:
    import importlib

    dit_model = importlib.import_module(PACK_MODULE + ".wan_core.comfy_bridge.dit_model")
    sampling = importlib.import_module(PACK_MODULE + ".wan_core.comfy_bridge.sampling")
    c = gc_.case
    t0 = time.perf_counter()
    experts = {sampling.HIGH: dit_model.load_expert(files["high"], "default")}
    if c.low is not None:
        experts[sampling.LOW] = dit_model.load_expert(files["low"], "default")
    run.file_load_s = time.perf_counter() - t0
    clock.watch(experts[sampling.HIGH], HIGH_LABEL)
    if c.low is not None:
        clock.watch(experts[sampling.LOW], LOW_LABEL)
    settings = sampling.RunSettings(steps=c.steps, cfg_high=c.cfg_high, cfg_low=c.cfg_low, shift=c.shift,
                                    boundary=switch_boundary(gc_), sampler_name=c.sampler, scheduler=c.scheduler,
                                    denoise=1.0, seed=c.seed)
    positive, negative = conditioning(c)
    t0 = clock.call_start = time.perf_counter()
    samples, report = sampling.sample(experts, positive, negative, empty_latent(c), settings)
    sync()
    run.sample_s = time.perf_counter() - t0
    run.switch_step = report.switch_step if c.low is not None else None
    return samples


def run_native(gc_: GpuCase, files: dict, run: Run, clock: ForwardClock) -> torch.Tensor:
    import comfy.sd
    from comfy_extras.nodes_model_advanced import ModelSamplingSD3

    import nodes

    c = gc_.case
    t0 = time.perf_counter()

    def unet(path):  # UNETLoader with weight_dtype "default", then ModelSamplingSD3 at the case's shift
        return ModelSamplingSD3().patch(comfy.sd.load_diffusion_model(str(path)), c.shift)[0]

    high = unet(files["high"])
    low = unet(files["low"]) if c.low is not None else None
    run.file_load_s = time.perf_counter() - t0
    clock.watch(high, HIGH_LABEL)
    if low is not None:
        clock.watch(low, LOW_LABEL)
    positive, negative = conditioning(c)
    ksampler = nodes.KSamplerAdvanced()
    t0 = clock.call_start = time.perf_counter()
    if low is None:
        out = ksampler.sample(high, "enable", c.seed, c.steps, c.cfg_high, c.sampler, c.scheduler, positive, negative,
                              empty_latent(c), 0, LAST_STEP, "disable")[0]
    else:
        k = gc_.high_steps
        mid = ksampler.sample(high, "enable", c.seed, c.steps, c.cfg_high, c.sampler, c.scheduler, positive, negative,
                              empty_latent(c), 0, k, "enable")[0]
        out = ksampler.sample(low, "disable", c.seed, c.steps, c.cfg_low, c.sampler, c.scheduler, positive, negative,
                              mid, k, LAST_STEP, "disable")[0]
    sync()
    run.sample_s = time.perf_counter() - t0
    return out["samples"]


def sample_run(gc_: GpuCase, impl: str, files: dict) -> tuple[Run, torch.Tensor | None]:
    run = Run(gc_.name, impl)
    started = time.perf_counter()
    release_memory()
    reset_peak_rss()
    run.rss_before = proc_status_bytes_self("VmRSS")
    clock = ForwardClock()
    latent = None
    try:
        latent = (run_pack if impl == "pack" else run_native)(gc_, files, run, clock)
        latent = latent.detach().float().cpu()
        run.ok = True
    except Exception as e:  # noqa: BLE001  (an OOM under the cap is a result, not a crash)
        run.error = f"{type(e).__name__}: {str(e).strip().splitlines()[0][:300] if str(e).strip() else ''}"
        log.error("[gpu] %s %s failed:\n%s", gc_.name, impl, traceback.format_exc())
    finally:
        clock.close()
    run.peak_rss = proc_status_bytes_self("VmHWM")
    if cuda():
        run.peak_vram = torch.cuda.max_memory_allocated()
        run.peak_vram_reserved = torch.cuda.max_memory_reserved()
    run.steps = clock.steps()
    run.experts = clock.experts
    if run.steps:
        run.s_per_step = statistics.median(s["seconds"] for s in run.steps)
        if cuda():
            tokens = gc_.case.tokens()
            run.tflops = 2 * dit_forward_flops(gc_.case.high.config, tokens) / run.s_per_step / 1e12
    run.switch_s = clock.switch_seconds()
    if clock.calls and clock.call_start is not None:
        run.load_s = clock.calls[0]["start"] - clock.call_start
    run.seconds = time.perf_counter() - started
    return run, latent


def proc_status_bytes_self(name: str) -> int | None:
    import os

    return proc_status_bytes(os.getpid(), name)


def decode_run(impl: str, vae_path: Path, latent: torch.Tensor, run: Run) -> torch.Tensor | None:
    """Decodes `latent` with the pack's VAE nodes or native VAELoader/VAEDecode; fills run.decode_*."""
    import comfy.sd
    import comfy.utils

    release_memory()
    try:
        if impl == "pack":
            nodes_ = pack_nodes()
            vae = nodes_["Wan22VAELoader"].execute(vae_name=vae_path.name).args[0]

            def decode(vae):
                return nodes_["Wan22VAEDecode"].execute(vae=vae, samples={"samples": latent}).args[0]
        else:
            import nodes

            vae = comfy.sd.VAE(sd=comfy.utils.load_torch_file(str(vae_path)))

            def decode(vae):
                return nodes.VAEDecode().decode(vae, {"samples": latent})[0]
        release_memory()
        reset_peak_rss()
        sync()
        t0 = time.perf_counter()
        images = decode(vae)
        sync()
        run.decode_s = time.perf_counter() - t0
        run.decode_peak_rss = proc_status_bytes_self("VmHWM")
        if cuda():
            run.decode_peak_vram = torch.cuda.max_memory_allocated()
        return images.float().cpu()
    except Exception as e:  # noqa: BLE001
        run.decode_error = f"{type(e).__name__}: {str(e).strip().splitlines()[0][:300] if str(e).strip() else ''}"
        log.error("[gpu] decode %s failed:\n%s", impl, traceback.format_exc())
        return None


@dataclass
class CaseResult:
    case: str
    size: str
    description: str
    runs: list[Run] = field(default_factory=list)
    cap_gb: float | None = None
    cap_applied: bool | None = None
    switch_step_expected: int | None = None
    latent_max_abs_diff: float | None = None
    latent_rel_l2: float | None = None
    latent_native_std: float | None = None
    video_max_abs_diff: float | None = None
    write_s: float | None = None
    skipped: str | None = None

    def run(self, impl: str) -> Run | None:
        return next((r for r in self.runs if r.impl == impl), None)

    def to_json(self) -> dict:
        return asdict(self)


def describe(gc_: GpuCase) -> str:
    c = gc_.case
    what = "TI2V-5B" if c.low is None else "T2V-A14B pair"
    dtype = {torch.bfloat16: "bf16"}.get(c.high.dtype, "scaled fp8")
    d = f"{what} ({c.high.config.dim}-wide, {c.high.config.num_layers} layers, {dtype}), {c.size}, {c.tokens()} tokens"
    if c.low is not None:
        d += f", {gc_.high_steps} high + {c.steps - gc_.high_steps} low step"
    else:
        d += f", {c.steps} steps"
    d += f", {c.sampler}/{c.scheduler}, cfg {c.cfg_high}" + (f"/{c.cfg_low}" if c.low is not None else "")
    if c.vram_cap_gb:
        d += f", device memory capped to {c.vram_cap_gb:g} GB"
    if gc_.decode:
        d += f", + {c.vae[0]} VAE decode of the whole clip"
    return d


def case_files(gc_: GpuCase, cache: ModelCache, vae_cache: ModelCache) -> dict:
    c = gc_.case
    files = {"high": cache.models / "diffusion_models" / cache.dit(c.high)}
    if c.low is not None:
        files["low"] = cache.models / "diffusion_models" / cache.dit(c.low)
    if gc_.decode:
        files["vae"] = vae_cache.models / "vae" / vae_cache.vae(*c.vae)
    return files


def run_case(gc_: GpuCase, cache: ModelCache, vae_cache: ModelCache, index: int, on_update) -> CaseResult:
    """Both implementations, alternating which goes first from case to case."""
    result = CaseResult(gc_.name, gc_.case.size, describe(gc_), cap_gb=gc_.case.vram_cap_gb,
                        switch_step_expected=gc_.high_steps)
    t0 = time.perf_counter()
    files = case_files(gc_, cache, vae_cache)
    result.write_s = time.perf_counter() - t0
    if gc_.decode:
        import folder_paths

        folder_paths.add_model_folder_path("vae", str(files["vae"].parent), is_default=True)
    order = ("pack", "native") if index % 2 == 0 else ("native", "pack")
    latents = {}
    if gc_.case.vram_cap_gb:
        result.cap_applied = cap_device_memory(gc_.case.vram_cap_gb)
    try:
        for impl in order:
            run, latents[impl] = sample_run(gc_, impl, files)
            result.runs.append(run)
            if impl == "pack" and gc_.high_steps is not None and run.ok and run.switch_step != gc_.high_steps:
                log.warning("[gpu] %s: the pack switched after step %s, native after %s", gc_.name, run.switch_step,
                            gc_.high_steps)
            on_update(result)
        a, b = latents.get("pack"), latents.get("native")
        if a is not None and b is not None and a.shape == b.shape:
            result.latent_max_abs_diff = float((a - b).abs().max())
            result.latent_rel_l2 = float((a - b).norm() / b.norm().clamp(min=1e-12))
            result.latent_native_std = float(b.std())
        if gc_.decode and b is not None:
            videos = {}
            for impl in order:
                videos[impl] = decode_run(impl, files["vae"], b, result.run(impl))
                on_update(result)
            if all(v is not None for v in videos.values()) and videos["pack"].shape == videos["native"].shape:
                result.video_max_abs_diff = float((videos["pack"] - videos["native"]).abs().max())
    finally:
        if gc_.case.vram_cap_gb:
            cap_device_memory(None)
        release_memory()
    on_update(result)
    return result
