"""Flow-matching solvers of the Wan2.2 release, k-diffusion style. Pure torch, no ComfyUI.

The model convention is ComfyUI's KSAMPLER one: ``model(x, sigma_batch, **extra_args)`` returns
the denoised prediction x0 (for a flow model x0 = x - sigma * v). Sigmas are decreasing and end
at 0; ``x_sigma = alpha * x0 + sigma * noise`` with ``alpha = 1 - sigma``. Both solvers work in
half-log-SNR time ``lambda = log(alpha / sigma)``; step coefficients are computed in float64 from
the (float32) sigmas they are given.

Each solver exists twice: a step object holding the solver history (so a caller that switches
experts, or re-imposes a clean first frame between steps, keeps ONE trajectory and ONE history),
and a ``sample_*`` loop over it that ComfyUI can register as a sampler.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence

import torch

Denoiser = Callable[..., torch.Tensor]


def _sigma_list(sigmas: Sequence[float] | torch.Tensor) -> list[float]:
    values = [float(s) for s in torch.as_tensor(sigmas).detach().flatten().cpu().tolist()]
    if len(values) < 2:
        raise ValueError(f"a solver needs at least two sigmas (one step), got {len(values)}")
    for a, b in zip(values, values[1:]):
        if not (1.0 >= a > b >= 0.0):
            raise ValueError(f"flow sigmas must be strictly decreasing within [0, 1], got {values}")
    return values


def half_log_snr(sigma: float) -> float:
    """lambda = log(alpha / sigma) with alpha = 1 - sigma; +inf at sigma 0, -inf at sigma 1."""
    if sigma <= 0.0:
        return math.inf
    if sigma >= 1.0:
        return -math.inf
    return math.log1p(-sigma) - math.log(sigma)


class FlowUniPC:
    """The release's flow UniPC: UniP-2 predictor + UniC corrector, B(h) = e^-h - 1 ("bh2"),
    data (x0) prediction, order 1 on the first and the last step, corrector from the second step.

    Call ``step(i, x, denoised)`` for i = 0 .. steps-1 with the model's x0 at (x, sigmas[i]); it
    returns the x to evaluate the model at for step i+1 (after the last step: the result). The
    caller may change that x before the next call (e.g. TI2V re-imposes the clean first frame):
    the corrector then works from the changed x, as the release's scheduler does.
    """

    def __init__(self, sigmas: Sequence[float] | torch.Tensor):
        self.sigmas = _sigma_list(sigmas)
        self.lambdas = [half_log_snr(s) for s in self.sigmas]
        self.steps = len(self.sigmas) - 1
        self._next_step = 0
        self._denoised: list[torch.Tensor] = []  # x0 of the latest steps, newest last (at most 2)
        self._last_sample: torch.Tensor | None = None  # x the previous predictor started from
        self._last_order = 0  # order of the previous predictor = order of this step's corrector

    @property
    def corrected_sample(self) -> torch.Tensor | None:
        """The x the latest predictor started from: the caller's x after this step's corrector."""
        return self._last_sample

    def predictor_order(self, i: int) -> int:
        # Order 2 needs one earlier x0; the step to sigma 0 is order 1 (its lambda is infinite).
        return min(2, i + 1, self.steps - i)

    def step(self, i: int, x: torch.Tensor, denoised: torch.Tensor) -> torch.Tensor:
        if i != self._next_step:
            raise ValueError(f"FlowUniPC steps must run in order: expected step {self._next_step}, got {i}")
        self._next_step += 1
        if i > 0:
            x = self._correct(i, x, denoised)
        self._denoised = (self._denoised + [denoised])[-2:]
        order = self.predictor_order(i)
        self._last_sample, self._last_order = x, order
        return self._predict(i, x, order)

    def _predict(self, i: int, x: torch.Tensor, order: int) -> torch.Tensor:
        """UniP from sigma_i (s0) to sigma_{i+1} (t), h = lambda_t - lambda_s0:

        x_t = (sigma_t / sigma_s0) x - alpha_t (e^-h - 1) m0                     (order 1)
              - alpha_t B(h) * 1/2 * (m1 - m0) / r1,  r1 = (lambda_s1 - lambda_s0) / h   (order 2)
        with m0 = x0 at s0, m1 = x0 at the previous step s1 = sigma_{i-1}, B(h) = e^-h - 1.
        """
        sigma_s0, sigma_t = self.sigmas[i], self.sigmas[i + 1]
        alpha_t = 1.0 - sigma_t
        h = self.lambdas[i + 1] - self.lambdas[i]
        phi_1 = math.expm1(-h)  # e^-h - 1; equals B(h) for bh2
        m0 = self._denoised[-1]
        x_next = (sigma_t / sigma_s0) * x - (alpha_t * phi_1) * m0
        if order == 2:
            r1 = (self.lambdas[i - 1] - self.lambdas[i]) / h
            d1 = (self._denoised[-2] - m0) / r1
            x_next = x_next - (alpha_t * phi_1 * 0.5) * d1
        return x_next.to(x.dtype)

    def _correct(self, i: int, x: torch.Tensor, denoised: torch.Tensor) -> torch.Tensor:
        """UniC: redo the step sigma_{i-1} (s0) -> sigma_i (t) that produced x, now also using
        the fresh x0 at t (mt). With hh = -h, B = e^hh - 1 and the previous predictor's order p:

        b1 = (B/hh - 1) / B,  b2 = 2 ((B/hh - 1)/hh - 1/2) / B
        p = 1: rho_t = 1/2 and no history term
        p = 2: solve [[1, 1], [r1, 1]] [rho_1, rho_t] = [b1, b2],  r1 = (lambda_{i-2} - lambda_s0)/h
        x_t = (sigma_t/sigma_s0) x_{s0} - alpha_t B m0 - alpha_t B (rho_1 D1 + rho_t (mt - m0))
        where x_{s0} is the sample the previous predictor started from, m0 its x0, D1 = (m1-m0)/r1.
        """
        sigma_s0, sigma_t = self.sigmas[i - 1], self.sigmas[i]
        alpha_t = 1.0 - sigma_t
        h = self.lambdas[i] - self.lambdas[i - 1]
        hh = -h
        b_h = math.expm1(hh)
        m0 = self._denoised[-1]
        x_base = (sigma_t / sigma_s0) * self._last_sample - (alpha_t * b_h) * m0
        correction = (denoised - m0) * 0.5  # p = 1: rho_t = 1/2
        if self._last_order == 2:
            b1 = (b_h / hh - 1.0) / b_h
            b2 = 2.0 * ((b_h / hh - 1.0) / hh - 0.5) / b_h
            r1 = (self.lambdas[i - 2] - self.lambdas[i - 1]) / h
            rho_1 = (b1 - b2) / (1.0 - r1)
            rho_t = b1 - rho_1
            d1 = (self._denoised[-2] - m0) / r1
            correction = rho_1 * d1 + rho_t * (denoised - m0)
        return (x_base - (alpha_t * b_h) * correction).to(x.dtype)


class Trajectory:
    """One solver run over a whole schedule, sampled in consecutive segments (one per expert):
    the solver object, and so its history, carries from one segment to the next."""

    def __init__(self, solver):
        self.solver = solver

    def segment_start(self, sigmas) -> int:
        """The solver step a segment with these sigmas starts at (the next one not yet run)."""
        start = self.solver._next_step
        values = _sigma_list(sigmas)
        expected = self.solver.sigmas[start:start + len(values)]
        if len(expected) != len(values) or any(abs(a - b) > 1e-6 for a, b in zip(values, expected)):
            raise ValueError(f"segment sigmas {values} do not continue the trajectory at step {start}")
        return start


def _run(solver, model: Denoiser, x: torch.Tensor, extra_args, callback, start: int = 0,
         steps: int | None = None) -> torch.Tensor:
    """Steps start .. start+steps-1 of `solver`; the callback's "i" counts from 0 in this call."""
    extra_args = {} if extra_args is None else extra_args
    # Sigmas go to the model in float32 even for a half-precision x: the model maps them back to
    # the release's integer timesteps by exact lookup, which a bf16 sigma would miss.
    sigma_dtype = torch.float64 if x.dtype == torch.float64 else torch.float32
    steps = solver.steps - start if steps is None else steps
    for i in range(start, start + steps):
        sigma = solver.sigmas[i]
        sigma_batch = torch.full((x.shape[0],), sigma, dtype=sigma_dtype, device=x.device)
        denoised = model(x, sigma_batch, **extra_args)
        if callback is not None:
            callback({"x": x, "i": i - start, "sigma": sigma, "sigma_hat": sigma, "denoised": denoised})
        x = solver.step(i, x, denoised)
    return x


def _sample(solver_class, model, x, sigmas, extra_args, callback, trajectory: Trajectory | None):
    if len(sigmas) <= 1:
        return x
    if trajectory is None:
        return _run(solver_class(sigmas), model, x, extra_args, callback)
    start = trajectory.segment_start(sigmas)
    return _run(trajectory.solver, model, x, extra_args, callback, start=start, steps=len(sigmas) - 1)


@torch.no_grad()
def sample_wan_unipc(model: Denoiser, x: torch.Tensor, sigmas, extra_args=None, callback=None, disable=None,
                     trajectory: Trajectory | None = None):
    """The release's flow UniPC over `sigmas` (ComfyUI KSAMPLER signature).

    With a `trajectory` (a FlowUniPC over the whole schedule), `sigmas` is one segment of it and
    the solver's history runs on from the previous segment. `disable` (the progress bar switch)
    is accepted for the signature; progress is the caller's.
    """
    return _sample(FlowUniPC, model, x, sigmas, extra_args, callback, trajectory)


class FlowDPMSolver2M:
    """The release's alternative solver: flow DPM-Solver++(2M), midpoint form, x0 prediction,
    order 1 on the first and the last step (the step to sigma 0). Same step API as FlowUniPC.
    """

    def __init__(self, sigmas: Sequence[float] | torch.Tensor):
        self.sigmas = _sigma_list(sigmas)
        self.lambdas = [half_log_snr(s) for s in self.sigmas]
        self.steps = len(self.sigmas) - 1
        self._next_step = 0
        self._previous: torch.Tensor | None = None

    def step(self, i: int, x: torch.Tensor, denoised: torch.Tensor) -> torch.Tensor:
        """From sigma_i (s0) to sigma_{i+1} (t), h = lambda_t - lambda_s0:

        x_t = (sigma_t / sigma_s0) x - alpha_t (e^-h - 1) D,   D = m0              (order 1)
        D = m0 + 1/2 (m0 - m1) / r0,  r0 = (lambda_s0 - lambda_s1) / h          (order 2, midpoint)
        """
        if i != self._next_step:
            raise ValueError(f"FlowDPMSolver2M steps must run in order: expected step {self._next_step}, got {i}")
        self._next_step += 1
        sigma_s0, sigma_t = self.sigmas[i], self.sigmas[i + 1]
        alpha_t = 1.0 - sigma_t
        h = self.lambdas[i + 1] - self.lambdas[i]
        direction = denoised
        if self._previous is not None and i < self.steps - 1:
            r0 = (self.lambdas[i] - self.lambdas[i - 1]) / h
            direction = denoised + (0.5 / r0) * (denoised - self._previous)
        self._previous = denoised
        return ((sigma_t / sigma_s0) * x - (alpha_t * math.expm1(-h)) * direction).to(x.dtype)


@torch.no_grad()
def sample_wan_dpmpp_2m(model: Denoiser, x: torch.Tensor, sigmas, extra_args=None, callback=None, disable=None,
                        trajectory: Trajectory | None = None):
    """The release's flow DPM-Solver++(2M) over `sigmas` (ComfyUI KSAMPLER signature); a
    `trajectory` works as for sample_wan_unipc."""
    return _sample(FlowDPMSolver2M, model, x, sigmas, extra_args, callback, trajectory)


# Sampler name -> function, for registering with ComfyUI (KSAMPLER) and for the node's list.
WAN_SAMPLERS = {"wan_unipc": sample_wan_unipc, "wan_dpmpp_2m": sample_wan_dpmpp_2m}
# Sampler name -> its solver class, to build a Trajectory over a whole schedule.
WAN_SOLVERS = {"wan_unipc": FlowUniPC, "wan_dpmpp_2m": FlowDPMSolver2M}
