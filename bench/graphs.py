"""The two API-format graphs of a case: the pack's and native ComfyUI's equivalent.

Both get the same CONDITIONING (the bench hook's BenchConditioning node: umT5-shaped random
embeddings, see bench/comfy_hook), the same seed, steps, cfg, sampler and scheduler, and both save
their final LATENT with native SaveLatent so the two can be compared.

pack:   Wan22ModelLoader (high + low) -> Wan22VideoLatent -> Wan22Sampler -> Wan22VAEDecode
native: UNETLoader + ModelSamplingSD3 per expert -> EmptyHunyuanLatentVideo (A14B) or
        Wan22ImageToVideoLatent (5B) -> two KSamplerAdvanced split at the pack's switch step
        (one for the 5B) -> VAELoader + VAEDecode
"""

from __future__ import annotations

from .cases import Case

PROMPT_TOKENS = 24  # a short prompt's real tokens; the rest of the 512 rows are zeros
LAST_STEP = 10000  # KSamplerAdvanced's "until the end"


def _text(case: Case) -> dict:
    return {"cond": {"class_type": "BenchConditioning", "inputs": {"seed": case.seed, "tokens": PROMPT_TOKENS}}}


def _outputs(samples: list, image: list, prefix: str) -> dict:
    return {
        "preview": {"class_type": "PreviewImage", "inputs": {"images": image}},
        "save_latent": {"class_type": "SaveLatent", "inputs": {"samples": samples, "filename_prefix": prefix}},
    }


PACK_VAE_NODES = ("Wan22VAELoader", "Wan22VideoLatent", "Wan22VAEDecode")


def pack_graph(case: Case, files: dict, sampler: str, scheduler: str, native_vae: bool = False) -> dict:
    """`native_vae`: native VAELoader, latent and VAEDecode around the pack's loader and sampler
    (for a ComfyUI where the pack's VAE nodes are missing; the row says so)."""
    g = _text(case)
    g["model"] = {"class_type": "Wan22ModelLoader",
                  "inputs": {"model": files["high"], "low_noise_model": files.get("low") or "none",
                             "weight_dtype": "default"}}
    if native_vae:
        _native_vae_and_latent(g, case, files)
    else:
        g["vae"] = {"class_type": "Wan22VAELoader", "inputs": {"vae_name": files["vae"]}}
        g["latent"] = {"class_type": "Wan22VideoLatent",
                       "inputs": {"vae": ["vae", 0], "width": case.width, "height": case.height,
                                  "length": case.frames, "batch_size": 1}}
    g["sampler"] = {"class_type": "Wan22Sampler", "inputs": {
        "model": ["model", 0], "low_noise_model": ["model", 1], "positive": ["cond", 0], "negative": ["cond", 1],
        "latent": ["latent", 0],
        "seed": case.seed, "steps": case.steps, "use_release_defaults": False, "cfg": case.cfg_high,
        "cfg_low_noise": case.cfg_low, "shift": case.shift,
        # The 5B model has no switch; the input still needs a valid value.
        "boundary": case.boundary if case.boundary is not None else 0.875,
        "sampler_name": sampler, "scheduler": scheduler, "denoise": 1.0}}
    g["decode"] = ({"class_type": "VAEDecode", "inputs": {"samples": ["sampler", 0], "vae": ["vae", 0]}}
                   if native_vae else
                   {"class_type": "Wan22VAEDecode", "inputs": {"vae": ["vae", 0], "samples": ["sampler", 0]}})
    g.update(_outputs(["sampler", 0], ["decode", 0], "bench/pack"))
    return g


def _native_vae_and_latent(g: dict, case: Case, files: dict) -> None:
    g["vae"] = {"class_type": "VAELoader", "inputs": {"vae_name": files["vae"]}}
    size = {"width": case.width, "height": case.height, "length": case.frames, "batch_size": 1}
    if case.low is None:  # the 5B model's 48-channel latent
        g["latent"] = {"class_type": "Wan22ImageToVideoLatent", "inputs": {"vae": ["vae", 0], **size}}
    else:
        g["latent"] = {"class_type": "EmptyHunyuanLatentVideo", "inputs": size}


def _native_model(g: dict, name: str, spec_file: str, shift: float) -> list:
    g[f"unet_{name}"] = {"class_type": "UNETLoader", "inputs": {"unet_name": spec_file, "weight_dtype": "default"}}
    g[f"shift_{name}"] = {"class_type": "ModelSamplingSD3", "inputs": {"model": [f"unet_{name}", 0], "shift": shift}}
    return [f"shift_{name}", 0]


def _ksampler(model: list, latent: list, case: Case, cfg: float, start: int, end: int, add_noise: bool,
              leftover: bool) -> dict:
    return {"class_type": "KSamplerAdvanced", "inputs": {
        "model": model, "add_noise": "enable" if add_noise else "disable", "noise_seed": case.seed,
        "steps": case.steps, "cfg": cfg, "sampler_name": case.sampler, "scheduler": case.scheduler,
        "positive": ["cond", 0], "negative": ["cond", 1], "latent_image": latent, "start_at_step": start,
        "end_at_step": end, "return_with_leftover_noise": "enable" if leftover else "disable"}}


def native_graph(case: Case, files: dict, switch_step: int | None) -> dict:
    """`switch_step`: the first low-noise step, as the pack's boundary gives it (None for 5B)."""
    g = _text(case)
    _native_vae_and_latent(g, case, files)
    if case.low is None:
        model = _native_model(g, "high", files["high"], case.shift)
        g["sampler"] = _ksampler(model, ["latent", 0], case, case.cfg_high, 0, LAST_STEP, True, False)
        final = ["sampler", 0]
    else:
        high = _native_model(g, "high", files["high"], case.shift)
        low = _native_model(g, "low", files["low"], case.shift)
        k = switch_step
        g["sampler_high"] = _ksampler(high, ["latent", 0], case, case.cfg_high, 0, k, True, True)
        g["sampler_low"] = _ksampler(low, ["sampler_high", 0], case, case.cfg_low, k, LAST_STEP, False, False)
        final = ["sampler_low", 0]
    g["decode"] = {"class_type": "VAEDecode", "inputs": {"samples": final, "vae": ["vae", 0]}}
    g.update(_outputs(final, ["decode", 0], "bench/native"))
    return g


def model_files(case: Case, cache) -> dict:
    """Writes (once) every file the case needs; returns the names the graphs refer to."""
    files = {"vae": cache.vae(*case.vae), "high": cache.dit(case.high)}
    if case.low is not None:
        files["low"] = cache.dit(case.low)
    return files


def missing_nodes(graph: dict, object_info: dict) -> list[str]:
    return sorted({n["class_type"] for n in graph.values()} - object_info.keys())


def complete_inputs(graph: dict, object_info: dict) -> dict:
    """Fills each node's required inputs the graph leaves out with the node's own default (e.g. the
    VAE decode's tiling controls, whose default is automatic)."""
    for node in graph.values():
        info = object_info.get(node["class_type"])
        if info is None:
            continue
        for name, spec in info["input"].get("required", {}).items():
            if name in node["inputs"]:
                continue
            options = spec[1] if len(spec) > 1 and isinstance(spec[1], dict) else {}
            if "default" in options:
                node["inputs"][name] = options["default"]
            elif isinstance(spec[0], list) and spec[0]:
                node["inputs"][name] = spec[0][0]
            elif spec[0] == "COMBO" and options.get("options"):
                node["inputs"][name] = options["options"][0]
    return graph


__all__ = ["complete_inputs", "missing_nodes", "model_files", "native_graph", "pack_graph"]
