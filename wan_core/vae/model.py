"""One config-driven Wan VAE for both releases (Wan2.1: z16, 4x8x8; Wan2.2: z48, 4x16x16).

The causal chunk rules of the release are fixed here: the encoder sees frame 0 alone and then
chunks of 4 frames; the decoder sees one latent frame per call and gives 1, then 4 frames.
Spatial tiling, memory budgets and OOM retries live in streaming.py.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

import torch
from einops import rearrange
from torch import nn

from ..layers import TorchOps
from . import streaming
from .kinds import DIM_MULT, NUM_RES_BLOCKS, TEMPORAL_DOWNSAMPLE, VaeKind
from .layers import AttentionBlock, DownStage, Resample, ResidualBlock, RMSNorm, State, UpStage, causal_conv3d


@dataclass(frozen=True)
class VaeConfig:
    kind: VaeKind
    enc_dim: int  # encoder base width (96 / 160 in the releases; any width >= 1 works)
    dec_dim: int  # decoder base width (96 / 256)

    @property
    def z_dim(self) -> int:
        return self.kind.z_dim


class Encoder(nn.Module):
    def __init__(self, ops, cfg: VaeConfig):
        super().__init__()
        dims = [cfg.enc_dim * m for m in (1, *DIM_MULT)]
        last = len(DIM_MULT) - 1
        self.conv1 = causal_conv3d(ops, 3 * cfg.kind.patch**2, dims[0], 3, padding=1)
        layers: list[nn.Module] = []
        for i, (in_dim, out_dim) in enumerate(zip(dims[:-1], dims[1:])):
            temporal = TEMPORAL_DOWNSAMPLE[i] if i != last else False
            if cfg.kind.residual:
                layers.append(DownStage(ops, in_dim, out_dim, NUM_RES_BLOCKS, temporal, down=i != last))
                continue
            for _ in range(NUM_RES_BLOCKS):
                layers.append(ResidualBlock(ops, in_dim, out_dim))
                in_dim = out_dim
            if i != last:
                layers.append(Resample(ops, out_dim, "downsample3d" if temporal else "downsample2d"))
        self.downsamples = nn.Sequential(*layers)
        width = dims[-1]
        self.middle = nn.Sequential(
            ResidualBlock(ops, width, width), AttentionBlock(ops, width), ResidualBlock(ops, width, width)
        )
        self.head = nn.Sequential(
            RMSNorm(width), nn.SiLU(), causal_conv3d(ops, width, 2 * cfg.z_dim, 3, padding=1)
        )

    def forward(self, x: torch.Tensor, state: State) -> torch.Tensor:
        x = self.conv1(x, state)
        for layer in (*self.downsamples, *self.middle):
            x = layer(x, state)
        x = torch.nn.functional.silu(self.head[0](x))  # rebinding x frees the head's input early
        return self.head[2](x, state)


class Decoder(nn.Module):
    def __init__(self, ops, cfg: VaeConfig):
        super().__init__()
        mults = (DIM_MULT[-1], *reversed(DIM_MULT))
        dims = [cfg.dec_dim * m for m in mults]
        temporal_up = tuple(reversed(TEMPORAL_DOWNSAMPLE))
        last = len(DIM_MULT) - 1
        self.conv1 = causal_conv3d(ops, cfg.z_dim, dims[0], 3, padding=1)
        self.middle = nn.Sequential(
            ResidualBlock(ops, dims[0], dims[0]), AttentionBlock(ops, dims[0]), ResidualBlock(ops, dims[0], dims[0])
        )
        layers: list[nn.Module] = []
        for i, (in_dim, out_dim) in enumerate(zip(dims[:-1], dims[1:])):
            up = i != last
            temporal = temporal_up[i] if up else False
            if cfg.kind.residual:
                layers.append(UpStage(ops, in_dim, out_dim, NUM_RES_BLOCKS + 1, temporal, up))
                continue
            # Wan2.1: each upsample's conv halves the width, so later stages start at half.
            if i > 0:
                in_dim //= 2
            for _ in range(NUM_RES_BLOCKS + 1):
                layers.append(ResidualBlock(ops, in_dim, out_dim))
                in_dim = out_dim
            if up:
                mode = "upsample3d" if temporal else "upsample2d"
                layers.append(Resample(ops, out_dim, mode, up_dim=out_dim // 2))
        self.upsamples = nn.Sequential(*layers)
        width = dims[-1]
        self.head = nn.Sequential(
            RMSNorm(width), nn.SiLU(), causal_conv3d(ops, width, 3 * cfg.kind.patch**2, 3, padding=1)
        )

    def forward(self, x: torch.Tensor, state: State) -> torch.Tensor:
        x = self.conv1(x, state)
        for layer in (*self.middle, *self.upsamples):
            x = layer(x, state)
        x = torch.nn.functional.silu(self.head[0](x))  # rebinding x frees the head's input early
        return self.head[2](x, state)


class WanVAE(nn.Module):
    """A Wan VAE. `encode`/`decode` work on pixels in [-1, 1] shaped [B, 3, T, H, W] and on the raw
    latent [B, z, 1 + (T-1)/4, H/s, W/s] (not normalised: `latent_mean`/`latent_std` are given
    for the consumer, as ComfyUI's native VAEEncode does)."""

    def __init__(self, cfg: VaeConfig, ops=TorchOps):
        super().__init__()
        self.cfg = cfg
        z = cfg.z_dim
        self.encoder = Encoder(ops, cfg)
        self.conv1 = causal_conv3d(ops, 2 * z, 2 * z, 1)  # encoder output -> (mu, log_var)
        self.conv2 = causal_conv3d(ops, z, z, 1)  # latent -> decoder input
        self.decoder = Decoder(ops, cfg)

    # --- facts ---------------------------------------------------------------------------
    @property
    def kind(self) -> str:
        return self.cfg.kind.name

    @property
    def z_dim(self) -> int:
        return self.cfg.z_dim

    @property
    def stride(self) -> tuple[int, int, int]:
        return self.cfg.kind.stride

    @property
    def latent_mean(self) -> torch.Tensor:
        return torch.tensor(self.cfg.kind.latent_mean)

    @property
    def latent_std(self) -> torch.Tensor:
        return torch.tensor(self.cfg.kind.latent_std)

    @property
    def device(self) -> torch.device:
        return self.conv2.weight.device

    @device.setter
    def device(self, value) -> None:
        # ComfyUI's ModelPatcher records where it moved the model; the weights already say so.
        pass

    @property
    def dtype(self) -> torch.dtype:
        return self.conv2.weight.dtype

    # --- one causal chunk ----------------------------------------------------------------
    def encode_chunk(self, pixels: torch.Tensor, state: State) -> torch.Tensor:
        """Pixels of one chunk (1 frame first, then 4) -> its latent frame(s), mean only."""
        p = self.cfg.kind.patch
        if p > 1:
            pixels = rearrange(pixels, "b c f (h q) (w r) -> b (c r q) f h w", q=p, r=p)
        moments = self.conv1(self.encoder(pixels, state))
        return moments[:, : self.z_dim]

    def decode_chunk(self, latent: torch.Tensor, state: State) -> torch.Tensor:
        """One latent frame -> its pixel frames (1 for the first call, 4 after), in [-1, 1]."""
        out = self.decoder(self.conv2(latent), state)
        p = self.cfg.kind.patch
        if p > 1:
            out = rearrange(out, "b (c r q) f h w -> b c f (h q) (w r)", q=p, r=p)
        return out.clamp_(-1.0, 1.0)

    # --- whole videos (streaming.py does the tiling and memory management) -----------------
    @torch.no_grad()
    def encode(self, pixels: torch.Tensor, tile: int | None = 0, overlap: int | None = None) -> torch.Tensor:
        """Pixels [B, 3, T, H, W] in [-1, 1] -> raw latent (float32, on the pixels' device).

        tile: spatial tile in pixels; 0 = whole frames (default), None = chosen from free memory."""
        return streaming.encode_video(self, pixels, tile=tile, overlap=overlap)

    @torch.no_grad()
    def decode(self, latent: torch.Tensor, tile: int | None = 0, overlap: int | None = None) -> torch.Tensor:
        """Raw latent -> pixels [B, 3, T, H, W] in [-1, 1], float32 on the CPU."""
        return torch.cat(list(self.decode_iter(latent, tile=tile, overlap=overlap)), dim=2)

    def decode_iter(
        self,
        latent: torch.Tensor,
        tile: int | None = None,
        overlap: int | None = None,
        free_memory: int | None = None,
    ) -> Iterator[torch.Tensor]:
        """Yields the video as pixel-frame chunks [B, 3, t, H, W] (float32, CPU, in order: 1 frame,
        then 4 per latent frame), so the consumer never holds the whole video.

        tile: spatial tile in pixels; None = the largest that fits `free_memory` (default: the
        device's free memory now); 0 = whole frames. An out-of-memory error retries with smaller
        tiles."""
        return streaming.decode_video(self, latent, tile=tile, overlap=overlap, free_memory=free_memory)
