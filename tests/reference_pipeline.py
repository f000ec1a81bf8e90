"""The release's sampling loop, built from diffusers 0.42.1 pieces, as the reference the pack's
sampler is measured against.

Two `WanTransformer3DModel` experts (or one 5B model), diffusers' flow `UniPCMultistepScheduler`
given the release's sigma grid, the same noise, the same boundary and per-expert guidance, in
the latent space the DiT works in (normalised: (raw - mean) / std). Written from the release's
loop (wan/text2video.py, image2video.py, textimage2video.py): x starts as the unscaled noise; the
expert is the high-noise one while t >= boundary * 1000; v = v_uncond + g * (v_cond - v_uncond).

`release_i2v_condition` builds the I2V-A14B extra channels for a first image and optionally a last
one with diffusers' own WanImageToVideoPipeline.prepare_latents (the release's construction: the
video [first, zeros, last] encoded, mask 1 on the first and last pixel frame, frame 0 repeated 4x).
"""

from __future__ import annotations

import numpy as np
import torch

TEXT_LEN = 512


def diffusers_unipc(steps: int, shift: float):
    from diffusers import UniPCMultistepScheduler

    scheduler = UniPCMultistepScheduler(
        num_train_timesteps=1000, prediction_type="flow_prediction", use_flow_sigmas=True, flow_shift=shift,
        solver_order=2, solver_type="bh2", lower_order_final=True,
    )
    scheduler.set_timesteps(sigmas=np.linspace(0.999, 0, steps + 1)[:-1])
    return scheduler


def release_i2v_condition(vae, first_image: torch.Tensor, last_image: torch.Tensor | None, frames: int) -> torch.Tensor:
    """[1, 4 + 16, latent frames, h, w]: mask then normalised image latent, as the release builds them.

    vae: a diffusers AutoencoderKLWan (Wan2.1). Images: [1, 3, H, W] in [-1, 1] at the video's size
    (what the pipeline's own preprocessing hands to prepare_latents)."""
    from diffusers import WanImageToVideoPipeline

    pipe = WanImageToVideoPipeline(tokenizer=None, text_encoder=None, vae=vae, scheduler=None)
    height, width = first_image.shape[-2:]
    _, condition = pipe.prepare_latents(
        first_image, 1, vae.config.z_dim, height, width, frames, torch.float32, torch.device("cpu"),
        generator=torch.Generator().manual_seed(0), last_image=last_image,
    )
    return condition


def pad_context(context: torch.Tensor) -> torch.Tensor:
    """The release zero-pads the trimmed umT5 output to 512 tokens."""
    return torch.nn.functional.pad(context, (0, 0, 0, TEXT_LEN - context.shape[1]))


@torch.no_grad()
def release_loop(
    experts: dict,
    noise: torch.Tensor,
    positive: torch.Tensor,
    negative: torch.Tensor,
    steps: int,
    shift: float,
    boundary: float | None,
    cfg: dict,
    i2v_condition: torch.Tensor | None = None,
    first_frame: torch.Tensor | None = None,
) -> tuple[torch.Tensor, list[str]]:
    """Returns the final latent (normalised space) and the expert of every step.

    experts: {"high": model, "low": model} (diffusers WanTransformer3DModel), or {"high": model}.
    i2v_condition: the I2V-A14B extra channels [B, 4 + 16, F, H, W] (mask then image latent).
    first_frame: TI2V-5B image-to-video: the clean normalised latent of frame 0 [B, C, 1, H, W];
    its tokens get timestep 0 and it is re-imposed before and after every step.
    """
    scheduler = diffusers_unipc(steps, shift)
    latents = noise.clone()
    positive, negative = pad_context(positive), pad_context(negative)
    mask = None
    if first_frame is not None:
        mask = torch.ones_like(latents)
        mask[:, :, :1] = 0
        latents = (1 - mask) * torch.nn.functional.pad(first_frame, (0, 0, 0, 0, 0, latents.shape[2] - 1)) \
            + mask * latents
    used = []
    for t in scheduler.timesteps:
        name = "high" if boundary is None or int(t) >= boundary * 1000 or "low" not in experts else "low"
        used.append(name)
        model = experts[name]
        model_in = latents if i2v_condition is None else torch.cat([latents, i2v_condition], dim=1)
        timestep = t.expand(latents.shape[0])
        if mask is not None:
            # Per-token timesteps: 0 on the first frame's tokens (patch 1x2x2).
            per_cell = mask[:, 0, :, ::2, ::2] * t
            timestep = per_cell.flatten(1)
        v_cond = model(model_in, timestep, positive, return_dict=False)[0]
        v_uncond = model(model_in, timestep, negative, return_dict=False)[0]
        v = v_uncond + cfg[name] * (v_cond - v_uncond)
        latents = scheduler.step(v, t, latents, return_dict=False)[0]
        if mask is not None:
            latents = (1 - mask) * torch.nn.functional.pad(first_frame, (0, 0, 0, 0, 0, latents.shape[2] - 1)) \
                + mask * latents
    return latents, used
