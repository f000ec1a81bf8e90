"""The release's flow solvers (wan_core/solvers.py) against diffusers 0.42.1 and against exact
solutions of the flow ODE.

The stand-in for the DiT is a fixed random two-expert "velocity model" of (x, integer timestep):
a conv + tanh whose weights change at t = 875, so the parity runs cross an expert switch with one
trajectory and one solver history, as the release does. Tolerances are relative to the std of the
reference's final latent.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from reference_pipeline import diffusers_unipc

from wan_core.schedule import wan_dpm_schedule, wan_schedule
from wan_core.solvers import (
    FlowDPMSolver2M,
    FlowUniPC,
    half_log_snr,
    sample_wan_dpmpp_2m,
    sample_wan_unipc,
)

TOLERANCE = 1e-5  # max abs error / latent std; measured ~1.5e-6 at 40 steps (float32 round-off)
CHANNELS = 4
BOUNDARY_T = 875


class VelocityModel:
    """Deterministic nonlinear v(x, t): a high- and a low-noise 'expert', split at t = 875."""

    def __init__(self, seed: int = 0):
        generator = torch.Generator().manual_seed(seed)
        self.experts = {}
        for name in ("high", "low"):
            conv = torch.nn.Conv3d(CHANNELS, CHANNELS, 3, padding=1)
            for p in conv.parameters():
                p.data = torch.randn(p.shape, generator=generator) * 0.2
            self.experts[name] = conv

    @torch.no_grad()
    def __call__(self, x: torch.Tensor, t: int) -> torch.Tensor:
        conv = self.experts["high" if t >= BOUNDARY_T else "low"]
        return torch.tanh(conv(x)) * (1 + t / 1000) + 0.5 * x * math.sin(t / 100)


def _noise(seed: int = 1) -> torch.Tensor:
    return torch.randn(1, CHANNELS, 3, 6, 6, generator=torch.Generator().manual_seed(seed))


def _diffusers_dpm(steps: int, shift: float):
    from diffusers import DPMSolverMultistepScheduler

    schedule = wan_dpm_schedule(steps, shift)
    scheduler = DPMSolverMultistepScheduler(
        num_train_timesteps=1000,
        prediction_type="flow_prediction",
        use_flow_sigmas=True,
        solver_order=2,
        algorithm_type="dpmsolver++",
        solver_type="midpoint",
        lower_order_final=True,
        final_sigmas_type="zero",
    )
    scheduler.set_timesteps(steps)
    # diffusers has no way to pass the release's DPM grid (linspace(1, 0)); set it directly.
    scheduler.sigmas, scheduler.timesteps = schedule.sigmas.clone(), schedule.timesteps.clone()
    return scheduler


def _run_diffusers(scheduler, velocity, x, between_steps=None):
    """The release's loop: v at the integer timestep, scheduler.step; returns final x, inputs."""
    inputs = []
    with torch.no_grad():
        for i, t in enumerate(scheduler.timesteps):
            inputs.append(x)
            x = scheduler.step(velocity(x, int(t)), t, x, return_dict=False)[0]
            if between_steps is not None:
                x = between_steps(i, x)
    return x, inputs


def _x0_model(schedule, velocity):
    """ComfyUI's KSAMPLER convention: model(x, sigma_batch) -> x0 = x - sigma * v."""

    def model(x, sigma):
        assert sigma.shape == (x.shape[0],)
        return x - sigma.view(-1, 1, 1, 1, 1) * velocity(x, schedule.timestep_for_sigma(sigma[0]))

    return model


def _run_ours(sample_fn, schedule, velocity, x):
    inputs = []
    out = sample_fn(
        _x0_model(schedule, velocity), x, schedule.sigmas, callback=lambda d: inputs.append(d["x"])
    )
    return out, inputs


def _relative_error(ours, reference) -> float:
    return float((ours - reference).abs().max() / reference.std())


def _unipc_parity(steps, shift, seed=0) -> tuple[float, float]:
    velocity, x = VelocityModel(seed), _noise(seed + 1)
    schedule = wan_schedule(steps, shift)
    scheduler = diffusers_unipc(steps, shift)
    assert torch.equal(schedule.sigmas, scheduler.sigmas)
    assert torch.equal(schedule.timesteps, scheduler.timesteps)
    reference, reference_inputs = _run_diffusers(scheduler, velocity, x.clone())
    ours, our_inputs = _run_ours(sample_wan_unipc, schedule, velocity, x.clone())
    assert len(our_inputs) == len(reference_inputs) == steps
    per_step = max(_relative_error(a, b) for a, b in zip(our_inputs, reference_inputs))
    return _relative_error(ours, reference), per_step


@pytest.mark.parametrize(
    "steps,shift", [(1, 12.0), (2, 5.0), (3, 12.0), (4, 1.0), (7, 5.0), (10, 3.0), (40, 12.0), (40, 5.0)]
)
def test_unipc_matches_diffusers_flow_unipc(steps, shift):
    final, per_step = _unipc_parity(steps, shift)
    assert final <= TOLERANCE, final
    assert per_step <= TOLERANCE, per_step  # every model input, so an early slip cannot hide


@pytest.mark.parametrize("steps,shift", [(1, 5.0), (2, 5.0), (3, 1.0), (14, 5.0), (15, 5.0), (40, 3.0)])
def test_dpmpp_2m_matches_diffusers_flow_dpm_solver(steps, shift):
    velocity, x = VelocityModel(3), _noise(4)
    schedule = wan_dpm_schedule(steps, shift)
    reference, reference_inputs = _run_diffusers(_diffusers_dpm(steps, shift), velocity, x.clone())
    ours, our_inputs = _run_ours(sample_wan_dpmpp_2m, schedule, velocity, x.clone())
    assert torch.isfinite(reference).all()
    assert _relative_error(ours, reference) <= TOLERANCE
    assert max(_relative_error(a, b) for a, b in zip(our_inputs, reference_inputs)) <= TOLERANCE


def test_step_api_with_first_frame_reimposed_matches_diffusers():
    """TI2V keeps a clean first latent frame: the caller overwrites it after every step. The
    corrector must then start from the caller's x while its history keeps the solver's own."""
    steps, shift = 12, 5.0
    velocity, x = VelocityModel(5), _noise(6)
    clean = torch.randn(1, CHANNELS, 1, 6, 6, generator=torch.Generator().manual_seed(7))

    def reimpose(_i, latent):
        latent = latent.clone()
        latent[:, :, :1] = clean
        return latent

    x = reimpose(0, x)
    reference, _ = _run_diffusers(diffusers_unipc(steps, shift), velocity, x.clone(), reimpose)
    schedule = wan_schedule(steps, shift)
    solver, ours = FlowUniPC(schedule.sigmas), x.clone()
    for i in range(steps):
        sigma = float(schedule.sigmas[i])
        denoised = ours - sigma * velocity(ours, int(schedule.timesteps[i]))
        ours = reimpose(i, solver.step(i, ours, denoised))
    assert _relative_error(ours, reference) <= TOLERANCE


# --- Properties that pin the corrector and the last step without diffusers. -------------------


def _quadratic_in_lambda(lam: float) -> torch.Tensor:
    return torch.tensor([0.3 - 0.2 * lam + 0.05 * lam * lam], dtype=torch.float64)


def _exact_step(x_s: torch.Tensor, sigma_s: float, sigma_t: float) -> torch.Tensor:
    """Exact flow ODE step for x0(lambda) = 0.3 - 0.2 l + 0.05 l^2 (independent of x):
    x_t / sigma_t = x_s / sigma_s + integral of e^l x0(l) dl over [lambda_s, lambda_t]."""

    def antiderivative(lam):
        return math.exp(lam) * (0.3 - 0.2 * (lam - 1) + 0.05 * (lam * lam - 2 * lam + 2))

    lam_s, lam_t = half_log_snr(sigma_s), half_log_snr(sigma_t)
    return sigma_t * (x_s / sigma_s + antiderivative(lam_t) - antiderivative(lam_s))


def test_order2_corrector_is_exact_for_x0_quadratic_in_lambda():
    """UniC-2 integrates a quadratic x0(lambda) exactly; it needs the right history (x0 at steps
    i-2, i-1, i and lambda at the same steps) and the right starting sample, so an off-by-one in
    any of them breaks the equality. The step-1 corrector is order 1 and is not exact."""
    schedule = wan_schedule(10, 3.0)
    sigmas = [float(s) for s in schedule.sigmas.double()]
    solver = FlowUniPC(schedule.sigmas.double())
    x = torch.tensor([0.5], dtype=torch.float64)
    errors = []
    for i in range(schedule.steps):
        previous_start = solver.corrected_sample
        x = solver.step(i, x, _quadratic_in_lambda(solver.lambdas[i]))
        if i > 0:
            exact = _exact_step(previous_start, sigmas[i - 1], sigmas[i])
            errors.append(float((solver.corrected_sample - exact).abs()))
    assert errors[0] > 1e-3  # order-1 corrector at step 1
    assert max(errors[1:]) < 1e-12, errors


@pytest.mark.parametrize("steps", [1, 2, 3, 5, 40])
@pytest.mark.parametrize("solver_class", [FlowUniPC, FlowDPMSolver2M])
def test_last_step_lands_on_the_last_x0_prediction(steps, solver_class):
    """Order 1 to sigma 0 is x = x0 exactly; order 2 there would divide by an infinite h."""
    schedule = wan_schedule(steps, 5.0)
    solver = solver_class(schedule.sigmas)
    x = _noise(8)
    generator = torch.Generator().manual_seed(9)
    for i in range(steps):
        denoised = torch.randn(x.shape, generator=generator)
        x = solver.step(i, x, denoised)
    assert torch.equal(x, denoised)


@pytest.mark.parametrize("sample_fn", [sample_wan_unipc, sample_wan_dpmpp_2m])
def test_point_mass_data_is_followed_exactly(sample_fn):
    """If every x0 prediction is the same c, the flow path x_sigma = sigma n + (1 - sigma) c is
    exact for the exponential integrators: every step input must lie on it."""
    schedule = wan_schedule(9, 5.0)
    noise = _noise(10).double()
    c = torch.full_like(noise, 0.37)
    sigmas = schedule.sigmas.double()
    start = float(sigmas[0]) * noise + (1 - float(sigmas[0])) * c
    inputs = []
    out = sample_fn(lambda x, s: c, start, sigmas, callback=lambda d: inputs.append((d["i"], d["x"])))
    for i, x in inputs:
        sigma = float(sigmas[i])
        torch.testing.assert_close(x, sigma * noise + (1 - sigma) * c, rtol=0, atol=1e-12)
    torch.testing.assert_close(out, c, rtol=0, atol=1e-12)


# --- The parity check above is sensitive: broken corrector or last step variants fail it. ------


def _late_corrector(original):
    def correct(self, i, x, denoised):
        return x if i == 1 else original(self, i, x, denoised)

    return correct


@pytest.mark.parametrize(
    "broken",
    [
        pytest.param(("_correct", lambda original: lambda self, i, x, d: x), id="no-corrector"),
        pytest.param(("_correct", _late_corrector), id="corrector-from-third-step"),
        pytest.param(("predictor_order", lambda original: lambda self, i: min(2, i + 1)), id="order2-last-step"),
        pytest.param(("predictor_order", lambda original: lambda self, i: 1), id="order1-predictor"),
    ],
)
def test_parity_check_catches_broken_solver_variants(monkeypatch, broken):
    name, make = broken
    monkeypatch.setattr(FlowUniPC, name, make(getattr(FlowUniPC, name)))
    with np.errstate(all="ignore"):
        final, per_step = _unipc_parity(10, 5.0)
    assert not (final <= 100 * TOLERANCE and per_step <= 100 * TOLERANCE), (final, per_step)


# --- API. ----------------------------------------------------------------------------------------


def test_callback_and_model_calls_follow_comfyui_conventions():
    schedule = wan_schedule(4, 5.0)
    seen = []

    def model(x, sigma, **kwargs):
        seen.append((sigma.clone(), kwargs))
        return x * 0.5

    x = torch.randn(2, 3, 1, 2, 2)
    events = []
    sample_wan_unipc(model, x, schedule.sigmas, extra_args={"seed": 3}, callback=events.append, disable=True)
    assert [e["i"] for e in events] == [0, 1, 2, 3]
    assert set(events[0]) >= {"x", "i", "sigma", "sigma_hat", "denoised"}
    for (sigma, kwargs), expected in zip(seen, schedule.sigmas[:-1]):
        assert sigma.shape == (2,) and torch.all(sigma == expected) and kwargs == {"seed": 3}
    assert sample_wan_unipc(model, x, schedule.sigmas[:1]) is x  # no step: input unchanged


def test_steps_must_run_in_order_and_sigmas_must_decrease():
    solver = FlowUniPC(wan_schedule(3, 5.0).sigmas)
    with pytest.raises(ValueError, match="expected step 0"):
        solver.step(1, torch.zeros(1), torch.zeros(1))
    with pytest.raises(ValueError, match="decreasing"):
        FlowUniPC([0.5, 0.7, 0.0])
    with pytest.raises(ValueError, match="decreasing"):
        FlowDPMSolver2M([1.5, 0.5, 0.0])


def test_unipc_runs_from_sigma_one():
    """ComfyUI's schedulers start flow models at sigma 1 (lambda = -inf); nothing may go NaN."""
    sigmas = torch.tensor([1.0, 0.9, 0.6, 0.3, 0.1, 0.0])
    velocity, x = VelocityModel(11), _noise(12)
    schedule = wan_schedule(5, 1.0)  # only for its timestep lookup fallback (truncation)
    out = sample_wan_unipc(_x0_model(schedule, velocity), x, sigmas)
    assert torch.isfinite(out).all()


def test_half_precision_latent_still_gets_float32_sigmas():
    schedule = wan_schedule(3, 5.0)
    seen = []

    def model(x, sigma):
        seen.append(sigma)
        return x

    sample_wan_unipc(model, torch.zeros(1, 2, dtype=torch.bfloat16), schedule.sigmas)
    assert all(s.dtype == torch.float32 for s in seen)
    assert [schedule.timestep_for_sigma(s[0]) for s in seen] == schedule.timesteps.tolist()
