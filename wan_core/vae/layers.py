"""Building blocks of the Wan VAEs, written for causal streaming.

Every block takes `(x, state)`. `state` is a plain dict owned by one stream (one video, one
spatial tile): each causal layer keeps there what it needs from earlier chunks, keyed by the
layer itself. Layers replace their entry with a new tensor and never modify a stored tensor in
place, so a shallow copy of the dict is a snapshot of the stream.

Module and parameter names follow the official release (and ComfyUI's files), so official and
ComfyUI state dicts load as they are; diffusers names are mapped in loading.py.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

State = dict


class _CausalTime:
    """Mixed into the host's Conv3d: time is padded on the past side only, from the stream."""

    def __init__(self, in_dim, out_dim, kernel, stride=1, padding=0):
        padding = (padding,) * 3 if isinstance(padding, int) else tuple(padding)
        super().__init__(in_dim, out_dim, kernel, stride=stride, padding=0)
        self.pad_t = 2 * padding[0]
        self.pad_hw = (padding[2], padding[2], padding[1], padding[1])

    def forward(self, x: torch.Tensor, state: State | None = None) -> torch.Tensor:
        front = self.pad_t
        if self.pad_t and state is not None:
            past = state.get(self)
            if past is not None:
                front -= past.shape[2]
                x = torch.cat([past.to(x.device, x.dtype), x], dim=2)
                del past  # the old past is not kept alive through the convolution
            # The last pad_t frames of the history are this layer's past for the next chunk.
            state[self] = x[:, :, -self.pad_t :].clone()
        return super().forward(F.pad(x, (*self.pad_hw, front, 0)))


_causal_classes: dict[type, type] = {}


def causal_conv3d(ops, *args, **kwargs) -> nn.Module:
    """A causal Conv3d built on `ops.Conv3d`, so the host's casting and offloading apply to it."""
    base = ops.Conv3d
    cls = _causal_classes.get(base)
    if cls is None:
        cls = _causal_classes[base] = type("CausalConv3d", (_CausalTime, base), {})
    return cls(*args, **kwargs)


class RMSNorm(nn.Module):
    """L2 normalisation over channels times sqrt(C) and a learned per-channel `gamma`."""

    def __init__(self, dim: int, frames: bool = True):
        super().__init__()
        self.gamma = nn.Parameter(torch.ones((dim, 1, 1, 1) if frames else (dim, 1, 1)))
        self.scale = dim**0.5

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.normalize(x, dim=1) * self.scale * self.gamma.to(x)


class ResidualBlock(nn.Module):
    def __init__(self, ops, in_dim: int, out_dim: int):
        super().__init__()
        # Indices 0, 2, 3, 6 carry weights in the release's naming (1, 4: SiLU, 5: dropout).
        self.residual = nn.Sequential(
            RMSNorm(in_dim), nn.SiLU(), causal_conv3d(ops, in_dim, out_dim, 3, padding=1),
            RMSNorm(out_dim), nn.SiLU(), nn.Identity(), causal_conv3d(ops, out_dim, out_dim, 3, padding=1),
        )
        self.shortcut = causal_conv3d(ops, in_dim, out_dim, 1) if in_dim != out_dim else nn.Identity()

    def forward(self, x: torch.Tensor, state: State) -> torch.Tensor:
        r = self.residual
        h = r[2](F.silu(r[0](x)), state)
        h = r[6](F.silu(r[3](h)), state)
        return h + self.shortcut(x)


class AttentionBlock(nn.Module):
    """Single-head self-attention over the pixels of each frame (no mixing across time)."""

    def __init__(self, ops, dim: int):
        super().__init__()
        self.norm = RMSNorm(dim, frames=False)
        self.to_qkv = ops.Conv2d(dim, dim * 3, 1)
        self.proj = ops.Conv2d(dim, dim, 1)

    def forward(self, x: torch.Tensor, state: State | None = None) -> torch.Tensor:
        b, c, t, h, w = x.shape
        frames = x.transpose(1, 2).reshape(b * t, c, h, w)
        qkv = self.to_qkv(self.norm(frames)).reshape(b * t, 1, 3 * c, h * w).transpose(-1, -2)
        q, k, v = qkv.chunk(3, dim=-1)
        out = F.scaled_dot_product_attention(q, k, v)
        out = self.proj(out.squeeze(1).transpose(-1, -2).reshape(b * t, c, h, w))
        return x + out.reshape(b, t, c, h, w).transpose(1, 2)


def _per_frame(fn, x: torch.Tensor) -> torch.Tensor:
    b, c, t, h, w = x.shape
    y = fn(x.transpose(1, 2).reshape(b * t, c, h, w))
    return y.reshape(b, t, *y.shape[1:]).transpose(1, 2)


class Resample(nn.Module):
    """Halve or double height and width; the '3d' modes also halve or double time, causally."""

    def __init__(self, ops, dim: int, mode: str, up_dim: int | None = None):
        super().__init__()
        self.mode = mode
        if mode.startswith("up"):
            self.resample = nn.Sequential(
                nn.Upsample(scale_factor=(2.0, 2.0), mode="nearest-exact"),
                ops.Conv2d(dim, up_dim, 3, padding=1),
            )
        else:
            self.resample = nn.Sequential(nn.ZeroPad2d((0, 1, 0, 1)), ops.Conv2d(dim, dim, 3, stride=(2, 2)))
        if mode == "upsample3d":
            self.time_conv = causal_conv3d(ops, dim, dim * 2, (3, 1, 1), padding=(1, 0, 0))
        elif mode == "downsample3d":
            self.time_conv = causal_conv3d(ops, dim, dim, (3, 1, 1), stride=(2, 1, 1))

    def forward(self, x: torch.Tensor, state: State) -> torch.Tensor:
        if self.mode == "upsample3d":
            # The first chunk (the video's first frame) is not doubled; every later frame becomes
            # two, and the time conv's history starts with the second chunk.
            if self in state:
                b, c, t, h, w = x.shape
                pair = self.time_conv(x, state).reshape(b, 2, c, t, h, w)
                x = torch.stack((pair[:, 0], pair[:, 1]), dim=3).reshape(b, c, 2 * t, h, w)
            else:
                state[self] = True
        x = _per_frame(self.resample, x)
        if self.mode == "downsample3d":
            # Pairs of frames are merged; the first chunk passes as it is and lends its last frame.
            last = state.get(self)
            state[self] = x[:, :, -1:].clone()
            if last is not None:
                x = self.time_conv(torch.cat([last.to(x), x], dim=2))
        return x


class AvgDown3D(nn.Module):
    """Wan2.2 shortcut of a down stage: pixels folded into channels, then averaged in groups."""

    def __init__(self, in_dim: int, out_dim: int, factor_t: int, factor_s: int):
        super().__init__()
        self.out_dim, self.factor_t, self.factor_s = out_dim, factor_t, factor_s
        self.group = in_dim * factor_t * factor_s * factor_s // out_dim

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        ft, fs = self.factor_t, self.factor_s
        x = F.pad(x, (0, 0, 0, 0, (-x.shape[2]) % ft, 0))  # a lone first frame is paired with zeros
        b, c, t, h, w = x.shape
        x = x.reshape(b, c, t // ft, ft, h // fs, fs, w // fs, fs)
        x = x.permute(0, 1, 3, 5, 7, 2, 4, 6).reshape(b, self.out_dim, self.group, t // ft, h // fs, w // fs)
        return x.mean(dim=2)


class DupUp3D(nn.Module):
    """Wan2.2 shortcut of an up stage: channels repeated, then unfolded into time and pixels."""

    def __init__(self, in_dim: int, out_dim: int, factor_t: int, factor_s: int):
        super().__init__()
        self.out_dim, self.factor_t, self.factor_s = out_dim, factor_t, factor_s
        self.repeats = out_dim * factor_t * factor_s * factor_s // in_dim

    def forward(self, x: torch.Tensor, state: State) -> torch.Tensor:
        ft, fs = self.factor_t, self.factor_s
        b, _, t, h, w = x.shape
        x = x.repeat_interleave(self.repeats, dim=1).reshape(b, self.out_dim, ft, fs, fs, t, h, w)
        x = x.permute(0, 1, 5, 2, 6, 3, 7, 4).reshape(b, self.out_dim, t * ft, h * fs, w * fs)
        if self not in state:  # the first chunk is not doubled in time (see Resample)
            state[self] = True
            x = x[:, :, ft - 1 :]
        return x


class DownStage(nn.Module):
    """Wan2.2 encoder stage: residual blocks and a downsample, plus an average-pool shortcut."""

    def __init__(self, ops, in_dim, out_dim, blocks, temporal: bool, down: bool):
        super().__init__()
        self.avg_shortcut = AvgDown3D(in_dim, out_dim, 2 if temporal else 1, 2 if down else 1)
        layers = []
        for _ in range(blocks):
            layers.append(ResidualBlock(ops, in_dim, out_dim))
            in_dim = out_dim
        if down:
            layers.append(Resample(ops, out_dim, "downsample3d" if temporal else "downsample2d"))
        self.downsamples = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor, state: State) -> torch.Tensor:
        shortcut = self.avg_shortcut(x)
        for layer in self.downsamples:
            x = layer(x, state)
        return x + shortcut


class UpStage(nn.Module):
    """Wan2.2 decoder stage: residual blocks and an upsample, plus a duplicate-and-shuffle shortcut."""

    def __init__(self, ops, in_dim, out_dim, blocks, temporal: bool, up: bool):
        super().__init__()
        self.avg_shortcut = DupUp3D(in_dim, out_dim, 2 if temporal else 1, 2) if up else None
        layers = []
        dim = in_dim
        for _ in range(blocks):
            layers.append(ResidualBlock(ops, dim, out_dim))
            dim = out_dim
        if up:
            layers.append(Resample(ops, out_dim, "upsample3d" if temporal else "upsample2d", up_dim=out_dim))
        self.upsamples = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor, state: State) -> torch.Tensor:
        h = x
        for layer in self.upsamples:
            h = layer(h, state)
        # The shortcut is built after the main path: the small input is cheaper to keep alive.
        return h if self.avg_shortcut is None else h + self.avg_shortcut(x, state)
