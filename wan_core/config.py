"""The numbers of the released Wan2.2 models: the single source of truth for model defaults.

Nodes, the sampler and the loader read every model fact from here (boundary, shift, steps,
guidance, frame rate, sizes, VAE kind and stride, channel counts). Values are those of the
official release (Wan-Video/Wan2.2, wan/configs/); see docs/model_files.md for the files.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import Enum

from .vae.kinds import VAE_KINDS


class ModelKind(str, Enum):
    T2V = "t2v"  # T2V-A14B: text-to-video expert pair
    I2V = "i2v"  # I2V-A14B: image-to-video expert pair (noise + mask + image latent in)
    TI2V = "ti2v"  # TI2V-5B: one dense model, text- and image-to-video


@dataclass(frozen=True)
class KindDefaults:
    """What a release uses when the user does not say otherwise."""

    # Expert switch: the high-noise expert runs while t >= boundary * num_train_timesteps.
    # None for the single-model TI2V-5B.
    boundary: float | None
    shift: float
    steps: int
    cfg_high: float  # guidance while the high-noise expert runs
    cfg_low: float  # guidance while the low-noise expert runs (== cfg_high for TI2V)
    fps: int
    frames: int  # always 4k + 1
    width: int
    height: int
    vae_kind: str  # "wan2.1" (z16) or "wan2.2" (z48): its numbers live in wan_core/vae/kinds.py
    in_channels: int  # DiT input channels: latent, or latent + mask + image latent for I2V
    out_channels: int
    experts: int  # 2 for the A14B pairs, 1 for TI2V-5B

    @property
    def vae_stride(self) -> tuple[int, int, int]:
        """(t, h, w) pixels per latent cell of this kind's VAE."""
        return VAE_KINDS[self.vae_kind].stride

    @property
    def latent_channels(self) -> int:
        return VAE_KINDS[self.vae_kind].z_dim


KIND_DEFAULTS: dict[ModelKind, KindDefaults] = {
    ModelKind.T2V: KindDefaults(
        boundary=0.875, shift=12.0, steps=40, cfg_high=4.0, cfg_low=3.0, fps=16, frames=81,
        width=1280, height=720, vae_kind="wan2.1",
        in_channels=16, out_channels=16, experts=2,
    ),
    ModelKind.I2V: KindDefaults(
        boundary=0.900, shift=5.0, steps=40, cfg_high=3.5, cfg_low=3.5, fps=16, frames=81,
        width=1280, height=720, vae_kind="wan2.1",
        in_channels=36, out_channels=16, experts=2,
    ),
    ModelKind.TI2V: KindDefaults(
        boundary=None, shift=5.0, steps=50, cfg_high=5.0, cfg_low=5.0, fps=24, frames=121,
        width=1280, height=704, vae_kind="wan2.2",
        in_channels=48, out_channels=48, experts=1,
    ),
}

# Shared by every kind.
NUM_TRAIN_TIMESTEPS = 1000
TEXT_LEN = 512  # umT5 tokens; the DiT zero-pads shorter contexts to this length
TEXT_DIM = 4096  # umT5-XXL width
HEAD_DIM = 128  # attention head width of every released Wan2.2 DiT (heads = dim / 128)
FREQ_DIM = 256  # sinusoidal time features
PATCH_SIZE = (1, 2, 2)
EPS = 1e-6

# The release's negative prompt, used when the user's is empty (wan/configs/shared_config.py,
# `sample_neg_prompt`; 137 characters).
DEFAULT_NEGATIVE_PROMPT = (
    "色调艳丽，过曝，静态，细节模糊不清，字幕，风格，作品，画作，画面，静止，整体发灰，最差质量，低质量，"
    "JPEG压缩残留，丑陋的，残缺的，多余的手指，画得不好的手部，画得不好的脸部，畸形的，毁容的，"
    "形态畸形的肢体，手指融合，静止不动的画面，杂乱的背景，三条腿，背景人很多，倒着走"
)


@dataclass(frozen=True)
class DiTConfig:
    """The shape of one Wan DiT, read from its checkpoint (ComfyUI's WanModel takes these numbers)."""

    dim: int
    ffn_dim: int
    num_heads: int
    num_layers: int
    in_dim: int
    out_dim: int
    text_dim: int = TEXT_DIM
    freq_dim: int = FREQ_DIM
    patch_size: tuple[int, int, int] = PATCH_SIZE
    eps: float = EPS
    text_len: int = TEXT_LEN

    @property
    def head_dim(self) -> int:
        return self.dim // self.num_heads

    @property
    def kind(self) -> ModelKind | None:
        return kind_from_channels(self.in_dim, self.out_dim)


def kind_from_channels(in_channels: int, out_channels: int) -> ModelKind | None:
    """The model kind a DiT with these channel counts belongs to, or None if no Wan2.2 kind."""
    for kind, d in KIND_DEFAULTS.items():
        if (d.in_channels, d.out_channels) == (in_channels, out_channels):
            return kind
    return None
