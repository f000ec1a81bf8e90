"""Input checks for the VAE, shared by the VAE nodes and the sampler's latent node.

Each failure is a WanUserError that names the input (`name`) and says what to do.
"""

from __future__ import annotations

import logging

import torch

from ..errors import WanUserError
from .kinds import VAE_KINDS

log = logging.getLogger(__name__)


def valid_frame_counts_near(frames: int) -> tuple[int, int]:
    """The valid counts (4k + 1) just below and just above `frames`."""
    below = max(1, (frames - 1) // 4 * 4 + 1)
    return below, below + 4


def check_frame_count(frames: int, name: str = "frames") -> None:
    if frames < 1 or (frames - 1) % 4:
        below, above = valid_frame_counts_near(frames)
        raise WanUserError(
            f"{name}: {frames} frames, but Wan VAEs take 4k+1 frames (1, 5, 9, ..., 77, 81, ..., 121). "
            f"Use {below} or {above} frames."
        )


def check_frame_size(height: int, width: int, stride: int, name: str = "pixels", kind: str = "") -> None:
    if height % stride or width % stride:
        def near(v):
            return max(stride, round(v / stride) * stride)

        vae = f"the {kind} VAE" if kind else "this VAE"
        raise WanUserError(
            f"{name}: {width}x{height} is not a multiple of {stride} in width and height, which {vae} "
            f"needs. Resize or crop to {near(width)}x{near(height)} (e.g. with an Upscale Image node)."
        )


def check_latent(latent: torch.Tensor, z_dim: int, kind: str, name: str = "samples") -> None:
    """A LATENT for this VAE: [B, z, T, H, W] with this VAE's channel count."""
    if latent.dim() != 5:
        raise WanUserError(
            f"{name}: a latent shaped {list(latent.shape)}, but a Wan video latent is 5-dimensional "
            f"[batch, channels, frames, height, width]. Connect the LATENT of a Wan sampler or VAE encode."
        )
    channels = latent.shape[1]
    if channels != z_dim:
        other = next((k.name for k in VAE_KINDS.values() if k.z_dim == channels), None)
        source = f"a {other} latent" if other else "not a Wan latent"
        raise WanUserError(
            f"{name}: has {channels} channels ({source}), but the vae is a {kind} VAE with {z_dim} latent "
            f"channels. Use the VAE that matches the model: Wan2.1 VAE (z16) for T2V/I2V-A14B, Wan2.2 "
            f"VAE (z48) for TI2V-5B."
        )


def image_batch_to_video(image: torch.Tensor, name: str = "pixels") -> torch.Tensor:
    """A ComfyUI IMAGE batch [frames, H, W, C] in 0..1 -> video [1, 3, frames, H, W] in [-1, 1].

    Alpha is dropped and grayscale repeated to RGB, each with a log line saying so."""
    if image.dim() == 5:  # some nodes hand over [B, T, H, W, C]
        image = image.reshape(-1, *image.shape[2:])
    if image.dim() != 4:
        raise WanUserError(
            f"{name}: an image shaped {list(image.shape)}, but an IMAGE batch is [frames, height, width, "
            f"channels]. Connect a Load Image / Load Video output."
        )
    channels = image.shape[-1]
    if channels == 4:
        log.warning("%s: RGBA frames: the alpha channel is dropped (Wan VAEs encode RGB only).", name)
        image = image[..., :3]
    elif channels == 2:
        log.warning("%s: gray+alpha frames: alpha dropped, gray repeated to RGB.", name)
        image = image[..., :1].expand(*image.shape[:-1], 3)
    elif channels == 1:
        log.warning("%s: grayscale frames: repeated to RGB.", name)
        image = image.expand(*image.shape[:-1], 3)
    elif channels != 3:
        raise WanUserError(
            f"{name}: frames with {channels} channels; Wan VAEs take RGB (3), and convert RGBA (4), "
            f"gray (1) and gray+alpha (2). Convert the images to RGB first."
        )
    return (image.movedim(-1, 0).unsqueeze(0).float() * 2.0 - 1.0).contiguous()


def check_pixels(pixels: torch.Tensor, stride: tuple[int, int, int], kind: str, name: str = "pixels") -> None:
    """A video [B, 3, T, H, W] this VAE can encode."""
    if pixels.dim() != 5 or pixels.shape[1] != 3:
        raise WanUserError(
            f"{name}: a tensor shaped {list(pixels.shape)}, but the VAE encodes videos [batch, 3, frames, "
            f"height, width]."
        )
    check_frame_count(pixels.shape[2], name)
    check_frame_size(pixels.shape[3], pixels.shape[4], stride[1], name, kind)
