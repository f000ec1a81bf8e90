"""The expert pair inside ComfyUI's sampling: routing by the timestep boundary, and streaming.

This is the one place that moves the experts' weights, and it moves them only through
`comfy.model_management`: each expert is an ordinary ModelPatcher in `current_loaded_models`,
so other nodes' memory decisions see it. The high-noise expert is loaded for the first step;
at the switch it is unloaded *before* the low-noise expert is loaded, so the two are never
loaded on the compute device together.

The sampler is ComfyUI's own CFGGuider with one change: `predict_noise` asks which expert owns
the current timestep. The solver (any ComfyUI sampler, or the official flow UniPC) sees one
model, so one trajectory and one solver history run across the switch, as in the release.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable

import comfy.model_management as mm
import comfy.model_patcher
import comfy.model_sampling
import comfy.sampler_helpers
import comfy.samplers
import torch

from ..schedule import HIGH_NOISE as HIGH
from ..schedule import LOW_NOISE as LOW
from ..schedule import SigmaSchedule, expert_for_step

log = logging.getLogger("ComfyUI-Wan22")


class WanFlowSampling(comfy.model_sampling.ModelSamplingDiscreteFlow, comfy.model_sampling.CONST):
    """Flow-matching model sampling with the sampler node's shift, patched onto each expert.

    Given the run's `SigmaSchedule`, a sigma of that schedule is turned into the schedule's own
    timestep (the release's integer truncation, computed in float64, so float32 rounding cannot
    move it); any other sigma (a solver's inner evaluation) into sigma * 1000. With
    `start_from_pure_noise` the run starts from the unscaled noise, as the release does.
    """

    def __init__(self, shift: float, schedule: SigmaSchedule | None = None, start_from_pure_noise: bool = False):
        super().__init__(model_config=None)
        self.set_parameters(shift=shift, multiplier=1000)
        self.schedule = schedule
        self.start_from_pure_noise = start_from_pure_noise

    def timestep(self, sigma):
        scaled = sigma * self.multiplier
        if self.schedule is None or self.schedule.steps == 0:
            return scaled
        grid = self.schedule.sigmas[:-1].to(sigma.device)
        hits = sigma.reshape(-1, 1).float() == grid.reshape(1, -1)
        found = hits.any(dim=1)
        exact = self.schedule.timesteps.to(sigma.device)[hits.float().argmax(dim=1)].to(scaled.dtype)
        return torch.where(found, exact, scaled.reshape(-1)).reshape(sigma.shape)

    def noise_scaling(self, sigma, noise, latent_image, max_denoise=False):
        if self.start_from_pure_noise:
            return noise
        return super().noise_scaling(sigma, noise, latent_image, max_denoise)


def unload(patcher: comfy.model_patcher.ModelPatcher) -> bool:
    """Unloads a patcher (and its clones) from the compute device through model management."""
    unloaded = False
    for i in range(len(mm.current_loaded_models) - 1, -1, -1):
        loaded = mm.current_loaded_models[i]
        model = loaded.model
        if model is not None and (model is patcher or model.is_clone(patcher)):
            loaded.model_unload()
            mm.current_loaded_models.pop(i)
            unloaded = True
    if unloaded:
        mm.soft_empty_cache()
    return unloaded


def loaded_patchers() -> list:
    """The patchers model management holds loaded right now (a probe for tests and logs)."""
    return [m.model for m in mm.current_loaded_models if m.model is not None]


class DualExpertGuider(comfy.samplers.CFGGuider):
    """ComfyUI's CFG guider over an expert pair, switching experts at the boundary.

    `experts` maps HIGH (and LOW, for a pair) to ModelPatchers; `cfg` maps them to guidance.
    `on_switch(expert_name)` is told when an expert takes over (the first one included).
    """

    def __init__(self, experts: dict, cfg: dict, boundary: float | None,
                 on_switch: Callable[[str], None] | None = None):
        super().__init__(experts[HIGH])
        self.experts = experts
        self.expert_cfg = cfg
        self.boundary = boundary  # None: one model runs every step
        self.on_switch = on_switch
        self.active = HIGH
        self.switch_seconds: float | None = None
        self._options = {}

    def expert_for_sigma(self, sigma: torch.Tensor) -> str:
        if self.boundary is None or LOW not in self.experts:
            return HIGH
        timestep = float(self.experts[HIGH].model.model_sampling.timestep(sigma.reshape(-1)[:1])[0])
        expert = expert_for_step(timestep, self.boundary)
        # One swap per video, as in the release: once the low-noise expert has taken over it
        # keeps every later evaluation (a solver's inner evaluations can straddle the boundary).
        return LOW if self.active == LOW else expert

    def outer_sample(self, *args, **kwargs):
        self.active = HIGH
        self.model_patcher = self.experts[HIGH]
        # The idle expert must not sit on the device while the active one loads.
        if LOW in self.experts:
            unload(self.experts[LOW])
        if self.on_switch:
            self.on_switch(HIGH)
        return super().outer_sample(*args, **kwargs)

    def predict_noise(self, x, timestep, model_options={}, seed=None):  # noqa: B006  (ComfyUI's signature)
        expert = self.expert_for_sigma(timestep)
        if expert != self.active:
            self._switch_to(expert, x.shape, model_options)
        if expert != HIGH:
            model_options = self._options.get(expert, model_options)
        return comfy.samplers.sampling_function(
            self.inner_model, x, timestep, self.conds.get("negative"), self.conds.get("positive"),
            self.expert_cfg[expert], model_options=model_options, seed=seed,
        )

    def _switch_to(self, expert: str, noise_shape, run_options: dict) -> None:
        started = time.perf_counter()
        outgoing = self.model_patcher
        incoming = self.experts[expert]
        outgoing.cleanup()
        unload(outgoing)  # before the next expert is loaded: never both on the device
        self.inner_model, _, loaded = comfy.sampler_helpers.prepare_sampling(
            incoming, noise_shape, self.conds, incoming.model_options
        )
        self.loaded_models = list(self.loaded_models) + list(loaded)
        incoming.pre_run()
        # The incoming expert's own model options (its patches), with this run's sigmas.
        options = comfy.model_patcher.create_model_options_clone(incoming.model_options)
        options.setdefault("transformer_options", {})["sample_sigmas"] = (
            run_options.get("transformer_options", {}).get("sample_sigmas")
        )
        self._options[expert] = options
        self.model_patcher = incoming
        self.active = expert
        self.switch_seconds = time.perf_counter() - started
        log.info("[ComfyUI-Wan22] switched to the %s expert in %.2f s", expert, self.switch_seconds)
        if self.on_switch:
            self.on_switch(expert)
