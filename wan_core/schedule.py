"""Sigma schedules of the Wan2.2 release and the expert boundary. Pure functions, no ComfyUI.

Flow matching: ``x_sigma = (1 - sigma) * x0 + sigma * noise`` and the DiT is told the timestep
``sigma * 1000``. The release builds its grid in float64, hands the solver float32 sigmas and the
DiT integer timesteps truncated from the float64 grid. Recomputing the timesteps from the float32
sigmas is NOT the same (it differs by one on some grids, e.g. shift 1), so a `SigmaSchedule` carries
both and `timestep_for_sigma` looks the release's value up.

Model defaults (shift, steps, boundary per model kind) live in wan_core/config.py, not here.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch

from .config import NUM_TRAIN_TIMESTEPS
from .errors import WanUserError

HIGH_NOISE = "high"
LOW_NOISE = "low"

# The release's UniPC grid starts just below 1 (its training sigmas are 1 - linspace(0.001, 1)).
_UNIPC_SIGMA_MAX = 0.999


@dataclass(frozen=True)
class SigmaSchedule:
    """The noise levels of one run and the timestep the DiT sees at each step.

    sigmas: float32 [steps + 1], decreasing, the last one 0 for a full run (the solver uses these).
    timesteps: int64 [steps], timesteps[i] is what the DiT is told at step i (routing uses these).
    """

    sigmas: torch.Tensor
    timesteps: torch.Tensor

    @property
    def steps(self) -> int:
        return int(self.timesteps.shape[0])

    def tail(self, steps: int) -> SigmaSchedule:
        """The last `steps` steps (how ComfyUI turns a longer schedule into a partial denoise)."""
        if steps <= 0:
            return SigmaSchedule(self.sigmas[:0], self.timesteps[:0])
        return SigmaSchedule(self.sigmas[-(steps + 1):], self.timesteps[-steps:])

    def timestep_for_sigma(self, sigma: float | torch.Tensor) -> int:
        """The DiT timestep of a sigma of this schedule; truncation for a sigma not on it."""
        value = float(sigma)
        hits = (self.sigmas[:-1] == torch.tensor(value, dtype=self.sigmas.dtype)).nonzero()
        if hits.numel():
            return int(self.timesteps[int(hits[0])])
        return int(sigmas_to_timesteps([value])[0])

    def experts(self, boundary: float) -> list[str]:
        """The expert of every step, HIGH_NOISE or LOW_NOISE."""
        return [expert_for_step(t, boundary) for t in self.timesteps.tolist()]

    def switch_step(self, boundary: float) -> int:
        """How many steps the high-noise expert runs (the index of the first low-noise step)."""
        return switch_step(self.timesteps, boundary)


def _check_steps(steps: int) -> None:
    if isinstance(steps, bool) or not isinstance(steps, int) or steps < 1:
        raise WanUserError(f"steps must be a whole number >= 1, got {steps!r}: set steps to 1 or more.")


def _check_shift(shift: float) -> None:
    if not float(shift) > 0:
        raise WanUserError(f"shift must be > 0, got {shift!r}: the release uses 5 or 12.")


def check_boundary(boundary: float) -> float:
    """The boundary as a float in [0, 1], or a WanUserError naming the input."""
    value = float(boundary)
    if not 0.0 <= value <= 1.0:
        raise WanUserError(
            f"boundary must be between 0 and 1, got {boundary!r}: it is the fraction of the "
            f"{NUM_TRAIN_TIMESTEPS} training timesteps above which the high-noise expert runs "
            "(the release uses 0.875 for T2V-A14B and 0.9 for I2V-A14B)."
        )
    return value


def shift_sigmas(sigmas, shift: float):
    """The release's timestep shift s*sig / (1 + (s-1)*sig); works on floats, numpy and torch."""
    return shift * sigmas / (1 + (shift - 1) * sigmas)


# A float32 sigma is off its decimal value by up to ~6e-8, i.e. 6e-5 of a timestep: without this
# snap float32(0.95) would truncate to 949. Far below any real step (the release's finest is ~1e-3).
_FLOAT32_SNAP = 1e-3


def sigmas_to_timesteps(sigmas) -> torch.Tensor:
    """int64 timesteps int(sigma * 1000), truncated like the release, for sigmas off its grid.

    The sigmas are usually float32 (ComfyUI's schedulers); a timestep within float32 error below a
    whole number counts as that number. For the release's own grid use `SigmaSchedule.timesteps`.
    """
    values = torch.as_tensor(sigmas).detach().cpu().double().numpy()
    return torch.from_numpy(np.floor(values * NUM_TRAIN_TIMESTEPS + _FLOAT32_SNAP).astype(np.int64))


def _schedule_from_grid(grid: np.ndarray) -> SigmaSchedule:
    # grid: float64 sigmas of the steps (no final 0), exactly as the release computes them.
    timesteps = torch.from_numpy((grid * NUM_TRAIN_TIMESTEPS).astype(np.int64))
    sigmas = torch.from_numpy(np.concatenate([grid, [0.0]]).astype(np.float32))
    return SigmaSchedule(sigmas=sigmas, timesteps=timesteps)


def denoise_total_steps(steps: int, denoise: float) -> int:
    """Length of the full schedule whose last `steps` steps a partial denoise runs (as ComfyUI).

    ComfyUI's KSampler builds int(steps / denoise) steps and keeps the last `steps`; denoise
    above 0.9999 is a full run, and 0 runs nothing.
    """
    _check_steps(steps)
    value = float(denoise)
    if not 0.0 <= value <= 1.0:
        raise WanUserError(f"denoise must be between 0 and 1, got {denoise!r}.")
    if value > 0.9999:
        return steps
    if value == 0.0:
        return 0
    return int(steps / value)


def _with_denoise(build, steps: int, shift: float, denoise: float) -> SigmaSchedule:
    _check_shift(shift)
    total = denoise_total_steps(steps, denoise)
    if total == 0:
        return build(steps, shift).tail(0)
    return build(total, shift).tail(steps)


def _wan_unipc_full(steps: int, shift: float) -> SigmaSchedule:
    grid = np.linspace(_UNIPC_SIGMA_MAX, 0.0, steps + 1)[:-1]
    return _schedule_from_grid(shift_sigmas(grid, float(shift)))


def _wan_dpm_full(steps: int, shift: float) -> SigmaSchedule:
    grid = np.linspace(1.0, 0.0, steps + 1)[:-1]
    return _schedule_from_grid(shift_sigmas(grid, float(shift)))


def wan_schedule(steps: int, shift: float, denoise: float = 1.0) -> SigmaSchedule:
    """The release's UniPC schedule: shifted linspace(0.999, 0, N+1)[:-1], then 0."""
    return _with_denoise(_wan_unipc_full, steps, shift, denoise)


def wan_dpm_schedule(steps: int, shift: float, denoise: float = 1.0) -> SigmaSchedule:
    """The release's DPM++ schedule: shifted linspace(1, 0, N+1)[:-1], then 0."""
    return _with_denoise(_wan_dpm_full, steps, shift, denoise)


def wan_sigmas(steps: int, shift: float, denoise: float = 1.0) -> torch.Tensor:
    """float32 sigmas [steps + 1] of the release's UniPC schedule (the solver's input)."""
    return wan_schedule(steps, shift, denoise).sigmas


def wan_timesteps(steps: int, shift: float, denoise: float = 1.0) -> torch.Tensor:
    """int64 DiT timesteps [steps] of the release's UniPC schedule."""
    return wan_schedule(steps, shift, denoise).timesteps


# Scheduler name -> builder(steps, shift, denoise): "wan" pairs with wan_unipc, "wan_dpm" with
# wan_dpmpp_2m, as in the release.
WAN_SCHEDULERS = {"wan": wan_schedule, "wan_dpm": wan_dpm_schedule}


def schedule_from_sigmas(sigmas: Sequence[float] | torch.Tensor) -> SigmaSchedule:
    """A schedule for any sigma list (e.g. one of ComfyUI's schedulers): timesteps truncated."""
    sigmas = torch.as_tensor(sigmas).detach().cpu().float()
    if sigmas.ndim != 1:
        raise ValueError(f"sigmas must be one-dimensional, got shape {tuple(sigmas.shape)}")
    if sigmas.numel() == 0:
        return SigmaSchedule(sigmas, torch.zeros(0, dtype=torch.int64))
    return SigmaSchedule(sigmas=sigmas, timesteps=sigmas_to_timesteps(sigmas[:-1]))


def boundary_timestep(boundary: float) -> float:
    """The timestep threshold: the high-noise expert runs while t >= boundary * 1000."""
    # Same float expression as the release (boundary * num_train_timesteps), compared to int t.
    return check_boundary(boundary) * NUM_TRAIN_TIMESTEPS


def expert_for_step(timestep: int | float | torch.Tensor, boundary: float) -> str:
    """HIGH_NOISE while timestep >= boundary * 1000, else LOW_NOISE."""
    return HIGH_NOISE if float(timestep) >= boundary_timestep(boundary) else LOW_NOISE


def switch_step(timesteps: Sequence[int] | torch.Tensor, boundary: float) -> int:
    """Index of the first low-noise step = number of high-noise steps (len if none is low).

    Routing is per step (`expert_for_step`); on a decreasing schedule it is high then low, one
    switch. A schedule that climbs back above the boundary is refused rather than mis-reported.
    """
    threshold = boundary_timestep(boundary)
    values = [float(t) for t in torch.as_tensor(timesteps).flatten().tolist()]
    high = [t >= threshold for t in values]
    first_low = high.index(False) if False in high else len(high)
    if any(high[first_low:]):
        raise WanUserError(
            "the sigma schedule goes back above the expert boundary after dropping below it; "
            "use a decreasing schedule (any of ComfyUI's schedulers or 'wan')."
        )
    return first_low
