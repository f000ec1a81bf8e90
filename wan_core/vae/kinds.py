"""The two Wan VAE kinds and their fixed numbers (the release's latent statistics, strides).

The model kinds of wan_core.config name a VAE kind ("wan2.1" / "wan2.2"); everything that belongs
to the VAE itself lives here.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class VaeKind:
    name: str
    z_dim: int
    stride: tuple[int, int, int]  # (t, h, w) pixels per latent cell
    patch: int  # pixels are folded patch x patch into channels before the encoder
    residual: bool  # Wan2.2: average-pool / duplicate shortcuts around each resolution stage
    # Per-channel statistics of the raw latent: the DiT sees (latent - mean) / std.
    latent_mean: tuple[float, ...]
    latent_std: tuple[float, ...]


WAN21 = VaeKind(
    name="wan2.1",
    z_dim=16,
    stride=(4, 8, 8),
    patch=1,
    residual=False,
    latent_mean=(
        -0.7571, -0.7089, -0.9113, 0.1075, -0.1745, 0.9653, -0.1517, 1.5508,
        0.4134, -0.0715, 0.5517, -0.3632, -0.1922, -0.9497, 0.2503, -0.2921,
    ),
    latent_std=(
        2.8184, 1.4541, 2.3275, 2.6558, 1.2196, 1.7708, 2.6052, 2.0743,
        3.2687, 2.1526, 2.8652, 1.5579, 1.6382, 1.1253, 2.8251, 1.9160,
    ),
)

WAN22 = VaeKind(
    name="wan2.2",
    z_dim=48,
    stride=(4, 16, 16),
    patch=2,
    residual=True,
    latent_mean=(
        -0.2289, -0.0052, -0.1323, -0.2339, -0.2799, 0.0174, 0.1838, 0.1557,
        -0.1382, 0.0542, 0.2813, 0.0891, 0.1570, -0.0098, 0.0375, -0.1825,
        -0.2246, -0.1207, -0.0698, 0.5109, 0.2665, -0.2108, -0.2158, 0.2502,
        -0.2055, -0.0322, 0.1109, 0.1567, -0.0729, 0.0899, -0.2799, -0.1230,
        -0.0313, -0.1649, 0.0117, 0.0723, -0.2839, -0.2083, -0.0520, 0.3748,
        0.0152, 0.1957, 0.1433, -0.2944, 0.3573, -0.0548, -0.1681, -0.0667,
    ),
    latent_std=(
        0.4765, 1.0364, 0.4514, 1.1677, 0.5313, 0.4990, 0.4818, 0.5013,
        0.8158, 1.0344, 0.5894, 1.0901, 0.6885, 0.6165, 0.8454, 0.4978,
        0.5759, 0.3523, 0.7135, 0.6804, 0.5833, 1.4146, 0.8986, 0.5659,
        0.7069, 0.5338, 0.4889, 0.4917, 0.4069, 0.4999, 0.6866, 0.4093,
        0.5709, 0.6065, 0.6415, 0.4944, 0.5726, 1.2042, 0.5458, 1.6887,
        0.3971, 1.0600, 0.3943, 0.5537, 0.5444, 0.4089, 0.7468, 0.7744,
    ),
)

VAE_KINDS = {k.name: k for k in (WAN21, WAN22)}

# Architecture shared by both releases (the weights' shapes give the widths).
DIM_MULT = (1, 2, 4, 4)
NUM_RES_BLOCKS = 2
TEMPORAL_DOWNSAMPLE = (False, True, True)  # per encoder stage; the decoder mirrors it


@dataclass(frozen=True)
class VaeConfig:
    """What a VAE file holds: its kind and base widths, read from the tensors' shapes."""

    kind: VaeKind
    enc_dim: int  # encoder base width (96 / 160 in the releases; any width >= 1 works)
    dec_dim: int  # decoder base width (96 / 256)

    @property
    def z_dim(self) -> int:
        return self.kind.z_dim

    @property
    def is_release_size(self) -> bool:
        return (self.enc_dim, self.dec_dim) == RELEASE_WIDTHS[self.kind.name]


# Released base widths (encoder, decoder).
RELEASE_WIDTHS = {"wan2.1": (96, 96), "wan2.2": (160, 256)}
