"""The release's sigma grids, timesteps and expert boundary (wan_core/schedule.py).

References: the numbers of WAN22_REFERENCE.md section 2, diffusers 0.42.1's UniPCMultistepScheduler
configured as the release's flow UniPC, and ComfyUI 0.3.75's own KSampler.set_steps for denoise.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from reference_pipeline import diffusers_unipc

from tests import comfy_inprocess
from wan_core.errors import WanUserError
from wan_core.schedule import (
    HIGH_NOISE,
    LOW_NOISE,
    expert_for_step,
    schedule_from_sigmas,
    shift_sigmas,
    sigmas_to_timesteps,
    switch_step,
    wan_dpm_schedule,
    wan_schedule,
    wan_sigmas,
    wan_timesteps,
)


def test_t2v_default_schedule_switches_after_26_high_steps():
    schedule = wan_schedule(40, 12.0)
    assert schedule.steps == 40
    assert schedule.switch_step(0.875) == 26
    t = schedule.timesteps.tolist()
    assert (t[0], t[25]) == (999, 877)  # high-noise expert
    assert (t[26], t[39]) == (865, 235)  # low-noise expert
    assert schedule.experts(0.875) == [HIGH_NOISE] * 26 + [LOW_NOISE] * 14


def test_i2v_default_schedule_switches_after_15_high_steps():
    schedule = wan_schedule(40, 5.0)
    assert schedule.switch_step(0.9) == 15
    assert schedule.experts(0.9) == [HIGH_NOISE] * 15 + [LOW_NOISE] * 25
    t = schedule.timesteps.tolist()
    assert t[14] >= 900 > t[15]


@pytest.mark.parametrize("steps", [1, 2, 3, 7, 20, 40, 50, 111, 121])
@pytest.mark.parametrize("shift", [1.0, 3.0, 5.0, 7.5, 12.0, 16.0])
def test_grid_is_bit_identical_todiffusers_unipc(steps, shift):
    reference = diffusers_unipc(steps, shift)
    schedule = wan_schedule(steps, shift)
    assert schedule.sigmas.dtype == torch.float32
    assert torch.equal(schedule.sigmas, reference.sigmas)
    assert torch.equal(schedule.timesteps, reference.timesteps)
    assert torch.equal(wan_sigmas(steps, shift), reference.sigmas)
    assert torch.equal(wan_timesteps(steps, shift), reference.timesteps)


def test_grid_formula():
    schedule = wan_schedule(40, 12.0)
    grid = shift_sigmas(np.linspace(0.999, 0, 41)[:-1], 12.0)
    assert schedule.sigmas.shape == (41,) and float(schedule.sigmas[-1]) == 0.0
    np.testing.assert_allclose(schedule.sigmas[:-1].numpy(), grid, rtol=1e-7)
    assert float(schedule.sigmas[0]) == pytest.approx(12 * 0.999 / (1 + 11 * 0.999), rel=1e-7)
    assert bool((schedule.sigmas[1:] < schedule.sigmas[:-1]).all())


def test_timesteps_are_truncated_not_rounded():
    schedule = wan_schedule(40, 12.0)
    scaled = shift_sigmas(np.linspace(0.999, 0, 41)[:-1], 12.0) * 1000
    assert schedule.timesteps.tolist() == [math.floor(v) for v in scaled]
    # The check means something only if rounding would give other numbers on this grid.
    assert [round(v) for v in scaled] != schedule.timesteps.tolist()


def test_timestep_lookup_keeps_the_float64_truncation():
    # On this grid int(float32 sigma * 1000) differs from the release's float64 truncation.
    schedule = wan_schedule(3, 1.0)
    naive = (schedule.sigmas[:-1].double() * 1000).long()
    assert not torch.equal(naive, schedule.timesteps)
    looked_up = [schedule.timestep_for_sigma(s) for s in schedule.sigmas[:-1]]
    assert looked_up == schedule.timesteps.tolist()
    # A sigma that is not on the grid falls back to truncation.
    assert schedule.timestep_for_sigma(0.5004) == 500


def test_dpm_grid_starts_at_one():
    schedule = wan_dpm_schedule(50, 5.0)
    grid = shift_sigmas(np.linspace(1.0, 0, 51)[:-1], 5.0)
    assert float(schedule.sigmas[0]) == 1.0 and int(schedule.timesteps[0]) == 1000
    np.testing.assert_allclose(schedule.sigmas[:-1].numpy(), grid, rtol=1e-7)
    assert schedule.timesteps.tolist() == [math.floor(v) for v in grid * 1000]
    assert float(schedule.sigmas[-1]) == 0.0


def test_boundary_rule_is_t_greater_or_equal():
    assert expert_for_step(875, 0.875) == HIGH_NOISE
    assert expert_for_step(874, 0.875) == LOW_NOISE
    assert expert_for_step(torch.tensor(900), 0.9) == HIGH_NOISE
    assert switch_step([999, 900, 899, 10], 0.9) == 2
    assert switch_step([999, 500], 0.0) == 2  # boundary 0: the high-noise expert only
    assert switch_step([999, 500], 1.0) == 0  # boundary 1: the low-noise expert only


def test_switch_on_a_comfyui_style_sigma_list():
    # e.g. ComfyUI's "simple" scheduler on a shifted flow model starts at sigma 1.0 (t = 1000).
    sigmas = torch.tensor([1.0, 0.95, 0.9001, 0.8999, 0.5, 0.0])
    schedule = schedule_from_sigmas(sigmas)
    assert schedule.timesteps.tolist() == [1000, 950, 900, 899, 500]
    assert schedule.switch_step(0.9) == 3
    assert sigmas_to_timesteps(torch.tensor([0.87799])).tolist() == [877]


def test_switch_refuses_a_schedule_that_climbs_back():
    with pytest.raises(WanUserError, match="boundary"):
        switch_step([999, 500, 950], 0.9)


@pytest.mark.parametrize("boundary", [-0.1, 1.5, float("nan")])
def test_bad_boundary_is_a_user_error(boundary):
    with pytest.raises(WanUserError, match="boundary"):
        wan_schedule(40, 12.0).switch_step(boundary)


@pytest.mark.parametrize("steps", [0, -3, 2.5, True])
def test_bad_steps_is_a_user_error(steps):
    with pytest.raises(WanUserError, match="steps"):
        wan_schedule(steps, 12.0)


def test_bad_shift_and_denoise_are_user_errors():
    with pytest.raises(WanUserError, match="shift"):
        wan_schedule(10, 0.0)
    with pytest.raises(WanUserError, match="denoise"):
        wan_schedule(10, 5.0, denoise=1.5)


def test_partial_denoise_keeps_the_tail_of_a_longer_schedule():
    partial = wan_schedule(20, 12.0, denoise=0.5)
    full = wan_schedule(40, 12.0)
    assert partial.steps == 20
    assert torch.equal(partial.sigmas, full.sigmas[-21:])
    assert torch.equal(partial.timesteps, full.timesteps[-20:])
    # The expert switch is decided on the actual (partial) schedule: 6 of its steps are high.
    assert partial.switch_step(0.875) == 6
    assert wan_schedule(10, 5.0, denoise=0.0).steps == 0


@pytest.mark.parametrize("denoise", [1.0, 0.99995, 0.75, 0.5, 0.33, 0.1, 0.0])
def test_denoise_matches_comfyui_ksampler(denoise):
    """Our denoise handling equals ComfyUI's KSampler.set_steps fed the same full-grid builder."""
    comfy_inprocess.comfy()
    import comfy.model_patcher
    import comfy.model_sampling
    import comfy.samplers

    holder = torch.nn.Module()
    holder.model_sampling = comfy.model_sampling.ModelSamplingDiscreteFlow()
    patcher = comfy.model_patcher.ModelPatcher(holder, torch.device("cpu"), torch.device("cpu"))
    name = "wan_schedule_test"
    comfy.samplers.SCHEDULER_HANDLERS[name] = comfy.samplers.SchedulerHandler(
        lambda model_sampling, steps: wan_sigmas(steps, 12.0)
    )
    comfy.samplers.SCHEDULER_NAMES.append(name)
    try:
        native = comfy.samplers.KSampler(patcher, 12, "cpu", sampler="euler", scheduler=name, denoise=denoise)
        ours = wan_sigmas(12, 12.0, denoise=denoise)
        assert native.sigmas.shape == ours.shape
        assert torch.equal(native.sigmas.float(), ours)
    finally:
        comfy.samplers.SCHEDULER_NAMES.remove(name)
        del comfy.samplers.SCHEDULER_HANDLERS[name]
