"""The pieces that run an expert pair inside ComfyUI's sampling, one phase per expert.

A phase is the expert's run of consecutive steps, sampled exactly as ComfyUI samples a model
(ComfyUI's own CFGGuider: the expert's patches, wrappers of every kind, callbacks, hooks and
model options, and per-run state such as EasyCache's, fresh for each phase as in native's two
KSamplerAdvanced). What differs from two KSamplerAdvanced: the split is the boundary on the run's
schedule, the release's solvers keep one history across the switch (solvers.Trajectory), the
latent is handed over exactly (no noise re-scaling round trip), and the outgoing expert is
unloaded first when model management says both do not fit.
"""

from __future__ import annotations

import logging
import time

import comfy.model_management as mm
import comfy.model_patcher
import comfy.model_sampling
import comfy.samplers
import torch

from ..schedule import HIGH_NOISE as HIGH
from ..schedule import LOW_NOISE as LOW
from ..schedule import SigmaSchedule

log = logging.getLogger("ComfyUI-Wan22")

__all__ = ["HIGH", "LOW", "WanFlowSampling", "ExpertPhaseGuider", "make_room_for", "unload", "loaded_patchers"]


class WanFlowSampling(comfy.model_sampling.ModelSamplingDiscreteFlow, comfy.model_sampling.CONST):
    """Flow-matching model sampling with the sampler node's shift, patched onto each expert.

    Given the run's `SigmaSchedule`, a sigma of that schedule is turned into the schedule's own
    timestep (the release's integer truncation, computed in float64, so float32 rounding cannot
    move it); any other sigma (a solver's inner evaluation) into sigma * 1000. With
    `start_from_pure_noise` the run starts from the unscaled noise, as the release does.
    `takes_over` (a later phase) starts from the latent it is given as it is, and `hands_over`
    (an earlier phase) returns its last x as it is: the phases pass one x along unchanged.
    """

    def __init__(self, shift: float, schedule: SigmaSchedule | None = None, start_from_pure_noise: bool = False,
                 takes_over: bool = False, hands_over: bool = False):
        super().__init__(model_config=None)
        self.set_parameters(shift=shift, multiplier=1000)
        self.schedule = schedule
        self.start_from_pure_noise = start_from_pure_noise
        self.takes_over = takes_over
        self.hands_over = hands_over

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
        if self.takes_over:
            return latent_image
        if self.start_from_pure_noise:
            return noise
        return super().noise_scaling(sigma, noise, latent_image, max_denoise)

    def inverse_noise_scaling(self, sigma, latent):
        if self.hands_over:
            return latent
        return super().inverse_noise_scaling(sigma, latent)


class ExpertPhaseGuider(comfy.samplers.CFGGuider):
    """ComfyUI's CFGGuider for one expert's phase; notes when its first model evaluation runs
    (the end of the switch, for the report)."""

    def __init__(self, model_patcher, cfg: float):
        super().__init__(model_patcher)
        self.set_cfg(cfg)
        self.first_evaluation_at: float | None = None

    def predict_noise(self, *args, **kwargs):
        if self.first_evaluation_at is None:
            self.first_evaluation_at = time.perf_counter()
        return super().predict_noise(*args, **kwargs)


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


def _is_loaded(patcher) -> bool:
    return any(p is patcher or p.is_clone(patcher) for p in loaded_patchers())


def make_room_for(incoming, outgoing) -> bool:
    """Before the incoming expert loads: unloads the outgoing one when model management says the
    incoming one does not fit beside it. Returns whether it unloaded."""
    if not _is_loaded(outgoing):
        return False
    device = incoming.load_device
    needed = incoming.model_size() - incoming.loaded_size() + mm.minimum_inference_memory()
    free = mm.get_free_memory(device)
    if free >= needed:
        log.info("[ComfyUI-Wan22] both experts fit on %s (%.2f GB free, %.2f GB needed): the outgoing one stays",
                 device, free / 2**30, needed / 2**30)
        return False
    log.info("[ComfyUI-Wan22] %.2f GB free on %s, %.2f GB needed: unloading the outgoing expert first",
             free / 2**30, device, needed / 2**30)
    return unload(outgoing)
