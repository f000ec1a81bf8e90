"""A custom node folder that only benchmark servers load (linked into their custom_nodes).

BenchConditioning gives both graphs of a case the same umT5-shaped CONDITIONING (random token
embeddings 4096 wide, zero rows up to 512, as a text encoder gives): the pack's umT5 loader only
takes a 4096-wide encoder with umT5-XXL's whole 256k vocabulary (2 GB), too heavy for a smoke run.
GET /wan22_bench/switch_step computes, with ComfyUI's own scheduler, the step where a sampler
with this boundary leaves the high-noise expert, so native's two KSamplerAdvanced split there.

It caps device memory when WAN22_BENCH_VRAM_CAP_GB is set, to stand for a smaller card: a hard
cap through torch.cuda.set_per_process_memory_fraction, and the same budget told to ComfyUI's
model management (its reserve), so that it offloads as it would on that card instead of
planning with the whole GPU. GET /wan22_bench/peaks reports the process's peak memory.
GET /wan22_bench/loaded lists the models ComfyUI holds loaded and, for the pack's file-backed
experts, how many bytes of weights are process memory rather than file views (an expert resident
in RAM), so a benchmark can check that one expert is held at a time.
"""

from __future__ import annotations

import logging
import os
import sys

CAP_ENV = "WAN22_BENCH_VRAM_CAP_GB"
TEXT_LEN, TEXT_DIM = 512, 4096
_RESERVE_BEFORE_CAP = None  # model management's reserve before cap_device_memory changed it


class BenchConditioning:
    CATEGORY = "wan22_bench"
    RETURN_TYPES = ("CONDITIONING", "CONDITIONING")
    RETURN_NAMES = ("positive", "negative")
    FUNCTION = "make"

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {"seed": ("INT", {"default": 0, "min": 0, "max": 2**31 - 1}),
                             "tokens": ("INT", {"default": 24, "min": 1, "max": TEXT_LEN})}}

    def make(self, seed, tokens):
        import torch

        gen = torch.Generator().manual_seed(seed)

        def cond():
            x = torch.zeros(1, TEXT_LEN, TEXT_DIM)
            x[:, :tokens] = 0.2 * torch.randn(1, tokens, TEXT_DIM, generator=gen)
            return [[x, {"pooled_output": None}]]

        return (cond(), cond())


# DiT evaluations per label since the last read of /wan22_bench/evaluations: forward calls and
# batch rows (a CFG step evaluates cond and uncond: 2 rows, in one call when they batch).
_EVALUATIONS: dict[str, dict[str, int]] = {}


class BenchCountEvaluations:
    """MODEL -> the same MODEL, counting each DiT evaluation (a model function wrapper, which the
    pack's sampler and native KSamplerAdvanced both call around every apply_model)."""

    CATEGORY = "wan22_bench"
    RETURN_TYPES = ("MODEL",)
    FUNCTION = "wrap"

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {"model": ("MODEL",), "label": ("STRING", {"default": "model"})}}

    def wrap(self, model, label):
        counted = model.clone()

        def counting(apply_model, args):
            entry = _EVALUATIONS.setdefault(label, {"calls": 0, "rows": 0})
            entry["calls"] += 1
            entry["rows"] += int(args["input"].shape[0])
            return apply_model(args["input"], args["timestep"], **args["c"])

        counted.set_model_unet_function_wrapper(counting)
        return (counted,)


NODE_CLASS_MAPPINGS = {"BenchConditioning": BenchConditioning, "BenchCountEvaluations": BenchCountEvaluations}


def cap_device_memory(cap_gb: float | None) -> bool:
    """Caps this process's CUDA memory to `cap_gb` (None: lifts the cap) and tells ComfyUI's model
    management the same budget. False when there is no CUDA device (nothing was capped)."""
    import comfy.model_management as mm
    import torch

    if not torch.cuda.is_available():
        return False
    total = torch.cuda.get_device_properties(0).total_memory
    global _RESERVE_BEFORE_CAP
    if cap_gb is None:
        torch.cuda.set_per_process_memory_fraction(1.0, 0)
        if _RESERVE_BEFORE_CAP is not None:
            mm.EXTRA_RESERVED_VRAM, _RESERVE_BEFORE_CAP = _RESERVE_BEFORE_CAP, None
        return True
    if _RESERVE_BEFORE_CAP is None:
        _RESERVE_BEFORE_CAP = mm.EXTRA_RESERVED_VRAM
    cap = float(cap_gb) * 2**30
    torch.cuda.set_per_process_memory_fraction(min(1.0, cap / total), 0)
    # ComfyUI plans with total - reserve; keep its usual 400 MB margin inside the cap.
    mm.EXTRA_RESERVED_VRAM = max(0, int(total - cap)) + 400 * 2**20
    logging.info("[wan22 bench] device memory capped to %.1f GB of %.1f GB", cap / 2**30, total / 2**30)
    return True


def _cap_device_memory() -> None:
    cap_gb = os.environ.get(CAP_ENV)
    if cap_gb and not cap_device_memory(float(cap_gb)):
        logging.warning("[wan22 bench] %s=%s ignored: no CUDA device", CAP_ENV, cap_gb)


def _status_bytes(name: str) -> int:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(name + ":"):
                return int(line.split()[1]) * 1024
    return 0


def _register_routes() -> None:
    if "server" not in sys.modules:  # imported outside a ComfyUI server (bench/gpu): no routes
        return
    try:
        from aiohttp import web
        from server import PromptServer
    except ImportError:
        return
    if getattr(PromptServer, "instance", None) is None:
        return

    @PromptServer.instance.routes.get("/wan22_bench/switch_step")
    async def switch_step(request):
        import comfy.model_sampling
        import comfy.samplers

        q = request.rel_url.query
        sampling = comfy.model_sampling.ModelSamplingDiscreteFlow(model_config=None)
        sampling.set_parameters(shift=float(q["shift"]), multiplier=1000)
        sigmas = comfy.samplers.calculate_sigmas(sampling, q["scheduler"], int(q["steps"])).cpu().double()
        # The high-noise expert runs while t = sigma * 1000 >= boundary * 1000.
        high = sigmas[:-1] * 1000 >= float(q["boundary"]) * 1000
        return web.json_response({"switch_step": int(high.sum()), "sigmas": sigmas.tolist()})

    @PromptServer.instance.routes.get("/wan22_bench/reset_peak")
    async def reset_peak(request):
        # Linux: writing 5 to clear_refs resets this process's VmHWM to its current RSS.
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
        out = {"host_rss_bytes": _status_bytes("VmRSS")}
        import torch

        if torch.cuda.is_available() and torch.cuda.is_initialized():
            torch.cuda.reset_peak_memory_stats(0)
        return web.json_response(out)

    @PromptServer.instance.routes.get("/wan22_bench/loaded")
    async def loaded(request):
        return web.json_response({"loaded": _loaded_models(), "host_rss_bytes": _status_bytes("VmRSS")})

    @PromptServer.instance.routes.get("/wan22_bench/evaluations")
    async def evaluations(request):
        out = {label: dict(v) for label, v in _EVALUATIONS.items()}
        _EVALUATIONS.clear()
        return web.json_response(out)

    @PromptServer.instance.routes.get("/wan22_bench/peaks")
    async def peaks(request):
        import torch

        out = {"host_peak_rss_bytes": _status_bytes("VmHWM"), "device": "cpu",
               "device_peak_allocated_bytes": None, "device_peak_reserved_bytes": None}
        if torch.cuda.is_available() and torch.cuda.is_initialized():
            out.update(device=torch.cuda.get_device_name(0),
                       device_peak_allocated_bytes=torch.cuda.max_memory_allocated(0),
                       device_peak_reserved_bytes=torch.cuda.max_memory_reserved(0))
        return web.json_response(out)


def _loaded_models() -> list[dict]:
    import comfy.model_management as mm

    out = []
    for entry in list(mm.current_loaded_models):
        patcher = entry.model
        if patcher is None:
            continue
        model = patcher.model
        views = model.__dict__.get("wan22_file_views")
        item = {"class": type(model).__name__, "loaded_bytes": int(patcher.loaded_size()),
                "checkpoint": str(getattr(model, "wan22_checkpoint", "") or "").rsplit("/", 1)[-1]}
        if views is not None:  # the pack's expert: weights that are no longer their file views
            tensors = model.diffusion_model.state_dict(keep_vars=True)
            item["resident_bytes"] = sum(t.numel() * t.element_size() for name, v in views.items()
                                         if (t := tensors.get(name)) is not None and t.data_ptr() != v.data_ptr())
        out.append(item)
    return out


_cap_device_memory()
_register_routes()
