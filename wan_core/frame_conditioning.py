"""Which frames of a Wan2.2 video are given as images, in the form each model takes them.

- I2V-A14B reads 4 mask channels per latent frame beside the image latent. Latent frame 0 holds
  pixel frame 0 alone, so that frame fills all 4 channels; latent frame i > 0 holds pixel frames
  4i-3 .. 4i, one channel each. The release builds it this way for a first frame (and Wan's
  first-last-frame code for a last one); native WanFirstLastFrameToVideo builds the same.
- TI2V-5B has no mask channels: given frames are kept as clean latent frames (timestep 0 on their
  tokens), so only whole latent frames can be given: 1, 5, 9, ... leading pixel frames.

Masks use ComfyUI's `concat_mask` / `noise_mask` convention: 0 where a frame is given, 1 where it
is generated (the model inverts it into the release's 1-where-given channels). Pure torch.
"""

from __future__ import annotations

import torch

from .errors import WanUserError

TEMPORAL_STRIDE = 4  # pixel frames per latent frame after the first (both Wan VAEs)


def latent_frame_count(length: int) -> int:
    return (length - 1) // TEMPORAL_STRIDE + 1


def i2v_concat_mask(length: int, start_frames: int, end_frames: int, height: int, width: int) -> torch.Tensor:
    """[1, 4, latent frames, height, width]: 0 on the channels of the first `start_frames` and the
    last `end_frames` pixel frames of a `length`-frame video, 1 elsewhere."""
    given = torch.zeros(length, dtype=torch.bool)
    given[:start_frames] = True
    if end_frames:
        given[length - end_frames:] = True
    # One entry per mask channel, in latent-frame order: frame 0 four times, then every frame once.
    per_channel = torch.cat([given[:1].expand(TEMPORAL_STRIDE), given[1:]])
    mask = (~per_channel).float().view(-1, TEMPORAL_STRIDE).transpose(0, 1)  # [4, latent frames]
    return mask[None, :, :, None, None].expand(-1, -1, -1, height, width).contiguous()


def check_given_frames(length: int, start_frames: int, end_frames: int, model: str) -> None:
    """Clear errors for frame counts the video cannot hold. `model`: "i2v" or "ti2v"."""
    if start_frames + end_frames > length:
        if end_frames == 0:
            raise WanUserError(
                f"start_image has {start_frames} frames but the video is only {length} frames long: give at most "
                f"{length} frames (e.g. the last few frames of the previous clip) or raise length."
            )
        raise WanUserError(
            f"start_image ({start_frames} frames) and end_image ({end_frames} frames) do not fit in a {length}-frame "
            f"video without overlapping: give fewer frames or raise length."
        )
    if model == "ti2v":
        if end_frames:
            raise WanUserError(
                "end_image: the TI2V-5B model cannot take an end frame. It is conditioned only by clean leading "
                "latent frames (the first frames of the video); it has no mask channels to mark a last frame. "
                "Remove end_image, or use the I2V-A14B experts (Wan2.1 VAE) for first-last-frame video."
            )
        if start_frames and (start_frames - 1) % TEMPORAL_STRIDE:
            below = (start_frames - 1) // TEMPORAL_STRIDE * TEMPORAL_STRIDE + 1
            raise WanUserError(
                f"start_image has {start_frames} frames, but TI2V-5B keeps whole latent frames clean, and the Wan2.2 "
                f"VAE packs the first frame alone and then 4 frames per latent frame: give 1, 5, 9, ... frames "
                f"(here {below} or {below + TEMPORAL_STRIDE})."
            )
