"""One sampling run of an expert pair (or the single 5B model) inside ComfyUI.

Noise is drawn exactly as native KSampler draws it, sigmas come from the release's grid
(`wan`) or any ComfyUI scheduler at the run's shift, and the solver is the release's flow UniPC
(`wan_unipc`) or any ComfyUI sampler. The steps split at the boundary into one phase per expert,
each sampled by ComfyUI's own CFGGuider on that expert alone (see experts.py).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import comfy.model_management as mm
import comfy.sample
import comfy.samplers
import latent_preview
import torch

from ..schedule import WAN_SCHEDULERS, SigmaSchedule, denoise_total_steps, schedule_from_sigmas
from ..solvers import WAN_SAMPLERS, WAN_SOLVERS, Trajectory
from .experts import HIGH, LOW, ExpertPhaseGuider, WanFlowSampling, make_room_for

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
    experts_used: list[str] = field(default_factory=list)  # the expert of each step
    switch_seconds: float | None = None  # from the end of the high phase to the low expert's first evaluation
    notes: list[str] = field(default_factory=list)  # things the user should know about this run


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


def sampler_object(name: str, trajectory: Trajectory | None = None):
    """ComfyUI's sampler object for a name; the release's solvers run segments of `trajectory`."""
    if name in WAN_SAMPLERS:
        return comfy.samplers.KSAMPLER(WAN_SAMPLERS[name], extra_options={"trajectory": trajectory})
    return comfy.samplers.sampler_object(name)


def trajectory_for(settings: RunSettings, schedule: SigmaSchedule) -> Trajectory | None:
    """One solver over the whole schedule for the release's solvers (their history then runs
    across the switch); None for ComfyUI's samplers, which restart at the switch as in native's
    two KSamplerAdvanced."""
    solver = WAN_SOLVERS.get(settings.sampler_name)
    return Trajectory(solver(schedule.sigmas)) if solver is not None else None


@dataclass(frozen=True)
class Phase:
    expert: str  # HIGH or LOW
    start: int  # first step (index into the schedule)
    end: int  # one past the last step


def plan_phases(steps: int, switch_step: int, pair: bool) -> list[Phase]:
    """The experts' runs of steps, in order; an expert with no step gets no phase (never loads)."""
    if not pair:
        return [Phase(HIGH, 0, steps)]
    return [p for p in (Phase(HIGH, 0, switch_step), Phase(LOW, switch_step, steps)) if p.end > p.start]


def model_sampling_note(patcher, expert: str, shift: float) -> str | None:
    """A line saying that a model-sampling patch on the expert (ModelSamplingSD3...) is replaced
    by the sampler's shift, or None when the expert carries none."""
    patched = patcher.object_patches.get("model_sampling")
    if patched is None:
        return None
    theirs = getattr(patched, "shift", None)
    said = f" (shift {theirs:g})" if isinstance(theirs, (int, float)) else ""
    return (f"the {expert}-noise expert's model-sampling patch{said} is replaced by the sampler's shift {shift:g}: "
            f"set the shift on the sampler (use_release_defaults off)")


def with_run_sampling(patcher, settings: RunSettings, schedule: SigmaSchedule, first: bool = True,
                      last: bool = True):
    """A clone of the expert whose model sampling is this run's (shift, release timesteps), for a
    phase that is the run's first and/or last."""
    official = settings.scheduler in WAN_SCHEDULERS
    clone = patcher.clone()
    clone.add_object_patch(
        "model_sampling",
        WanFlowSampling(
            settings.shift,
            schedule if official else None,
            # The release starts from the unscaled noise; native scales it by the first sigma.
            start_from_pure_noise=first and official and settings.denoise > 0.9999,
            takes_over=not first,
            hands_over=not last,
        ),
    )
    return clone


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
    x = latent["samples"]
    if schedule.steps == 0:
        return x, RunReport(schedule, 0)
    boundary = settings.boundary if LOW in experts else None
    switch = schedule.switch_step(boundary) if boundary is not None else schedule.steps
    report = RunReport(schedule, switch)
    phases = plan_phases(schedule.steps, switch, LOW in experts)
    for name in dict.fromkeys(p.expert for p in phases):
        note = model_sampling_note(experts[name], name, settings.shift)
        if note:
            log.warning("[ComfyUI-Wan22] %s", note)
            report.notes.append(note)

    noise = comfy.sample.prepare_noise(x, settings.seed, latent.get("batch_index"))
    sampler = sampler_object(settings.sampler_name, trajectory_for(settings, schedule))
    preview = None
    outgoing, handed_over_at = None, None
    for n, phase in enumerate(phases):
        model = with_run_sampling(experts[phase.expert], settings, schedule, first=n == 0, last=n == len(phases) - 1)
        if outgoing is not None:
            make_room_for(model, outgoing)
        if preview is None:
            preview = latent_preview.prepare_callback(model, schedule.steps)
        if on_switch:
            on_switch(phase.expert)
        guider = ExpertPhaseGuider(model, settings.cfg_high if phase.expert == HIGH else settings.cfg_low)
        guider.set_conds(positive, negative)

        def callback(step, denoised, x_now, _total, phase=phase, preview=preview):
            mm.throw_exception_if_processing_interrupted()
            preview(phase.start + step, denoised, x_now, schedule.steps)
            report.experts_used.append(phase.expert)
            if on_step:
                on_step(phase.start + step + 1, schedule.steps, phase.expert)

        x = guider.sample(
            noise if n == 0 else torch.zeros_like(noise), x, sampler, schedule.sigmas[phase.start:phase.end + 1],
            denoise_mask=latent.get("noise_mask"), callback=callback, disable_pbar=True, seed=settings.seed,
        )
        if handed_over_at is not None and guider.first_evaluation_at is not None:
            report.switch_seconds = guider.first_evaluation_at - handed_over_at
            log.info("[ComfyUI-Wan22] switched to the %s-noise expert in %.2f s", phase.expert,
                     report.switch_seconds)
        outgoing, handed_over_at = model, time.perf_counter()
    return x.to(mm.intermediate_device()), report
