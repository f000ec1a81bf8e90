"""One sampling run of an expert pair (or the single 5B model) inside ComfyUI.

Noise is drawn exactly as native KSampler draws it, sigmas come from the release's grid
(`wan`) or any ComfyUI scheduler at the run's shift, and the solver is the release's flow UniPC
(`wan_unipc`) or any ComfyUI sampler. Routing and streaming are `experts.DualExpertGuider`'s.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from contextlib import contextmanager
from dataclasses import dataclass, field

import comfy.model_management as mm
import comfy.sample
import comfy.samplers
import latent_preview
import torch

from ..schedule import WAN_SCHEDULERS, SigmaSchedule, denoise_total_steps, schedule_from_sigmas
from ..solvers import WAN_SAMPLERS
from .experts import HIGH, LOW, DualExpertGuider, WanFlowSampling

log = logging.getLogger("ComfyUI-Wan22")

# The release's solvers and sigma grids first (wan_unipc + wan is the official loop), then ComfyUI's.
SAMPLER_NAMES = [*WAN_SAMPLERS, *comfy.samplers.KSampler.SAMPLERS]
SCHEDULER_NAMES = [*WAN_SCHEDULERS, *comfy.samplers.KSampler.SCHEDULERS]


@dataclass
class RunSettings:
    steps: int
    cfg_high: float
    cfg_low: float
    shift: float
    boundary: float | None  # None: one model for every step
    sampler_name: str
    scheduler: str
    denoise: float
    seed: int


@dataclass
class RunReport:
    schedule: SigmaSchedule
    switch_step: int  # index of the first low-noise step (== steps when none)
    experts_used: list[str] = field(default_factory=list)  # the expert of each model evaluation
    switch_seconds: float | None = None


def build_schedule(settings: RunSettings) -> SigmaSchedule:
    """The run's sigmas and DiT timesteps (partial denoise keeps the tail, as native does)."""
    if settings.scheduler in WAN_SCHEDULERS:
        return WAN_SCHEDULERS[settings.scheduler](settings.steps, settings.shift, settings.denoise)
    total = denoise_total_steps(settings.steps, settings.denoise)
    if total == 0:
        return schedule_from_sigmas(torch.zeros(0))
    sampling = WanFlowSampling(settings.shift)
    sigmas = comfy.samplers.calculate_sigmas(sampling, settings.scheduler, total).cpu().float()
    return schedule_from_sigmas(sigmas[-(settings.steps + 1):])


def sampler_object(name: str):
    if name in WAN_SAMPLERS:
        return comfy.samplers.KSAMPLER(WAN_SAMPLERS[name])
    return comfy.samplers.sampler_object(name)


def with_run_sampling(patcher, settings: RunSettings, schedule: SigmaSchedule):
    """A clone of the expert whose model sampling is this run's (shift, release timesteps)."""
    official = settings.scheduler in WAN_SCHEDULERS
    clone = patcher.clone()
    clone.add_object_patch(
        "model_sampling",
        WanFlowSampling(
            settings.shift,
            schedule if official else None,
            # The release starts from the unscaled noise; native scales it by the first sigma.
            start_from_pure_noise=official and settings.denoise > 0.9999,
        ),
    )
    return clone


@contextmanager
def interruptible(patchers):
    """Checks ComfyUI's interrupt flag before every transformer block, not only between steps."""
    handles = []
    for patcher in patchers:
        blocks = getattr(patcher.model.diffusion_model, "blocks", [])
        for block in blocks:
            handles.append(block.register_forward_pre_hook(lambda *_: mm.throw_exception_if_processing_interrupted()))
    try:
        yield
    finally:
        for handle in handles:
            handle.remove()


def sample(
    experts: dict,
    positive,
    negative,
    latent: dict,
    settings: RunSettings,
    on_step: Callable[[int, int, str], None] | None = None,
    on_switch: Callable[[str], None] | None = None,
) -> tuple[torch.Tensor, RunReport]:
    """Runs the sampler; returns the raw output latent (ComfyUI's LATENT space) and a report.

    `experts` maps HIGH (and LOW for a pair) to ModelPatchers. `on_step(step, total, expert)`
    is called after every step; `on_switch(expert)` when an expert takes over.
    """
    schedule = build_schedule(settings)
    latent_image = latent["samples"]
    if schedule.steps == 0:
        return latent_image, RunReport(schedule, 0)
    boundary = settings.boundary if LOW in experts else None
    switch = schedule.switch_step(boundary) if boundary is not None else schedule.steps
    report = RunReport(schedule, switch)

    run_experts = {name: with_run_sampling(p, settings, schedule) for name, p in experts.items()}
    guider = DualExpertGuider(
        run_experts, {HIGH: settings.cfg_high, LOW: settings.cfg_low}, boundary, on_switch=on_switch
    )
    guider.set_conds(positive, negative)

    noise = comfy.sample.prepare_noise(latent_image, settings.seed, latent.get("batch_index"))
    preview = latent_preview.prepare_callback(run_experts[HIGH], schedule.steps)

    def callback(step, denoised, x, total):
        preview(step, denoised, x, total)
        report.experts_used.append(guider.active)
        if on_step:
            on_step(step + 1, total, guider.active)

    with interruptible(run_experts.values()):
        samples = guider.sample(
            noise, latent_image, sampler_object(settings.sampler_name), schedule.sigmas,
            denoise_mask=latent.get("noise_mask"), callback=callback, disable_pbar=True, seed=settings.seed,
        )
    report.switch_seconds = guider.switch_seconds
    return samples.to(mm.intermediate_device()), report
