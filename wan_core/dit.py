"""The Wan2.2 diffusion transformer: one config-driven class for T2V-A14B, I2V-A14B and TI2V-5B.

Module names mirror the official state-dict names (`blocks.N.self_attn.q`, `head.head`, ...), so
official, ComfyUI and LoRA keys map onto it with no table. Layers come from an injectable `ops`
set (plain torch standalone, `comfy.ops` inside ComfyUI).

Numerics follow the official code: the residual stream, time embedding, modulation, gated
residual adds, norms, RoPE and the head run in fp32; the big matmuls (patch/text embedding,
attention projections, attention, FFN) run in the compute dtype. The time embedding is computed
once per distinct timestep and broadcast per latent frame; the official per-token
[tokens, 6, dim] tensor is never built.
"""

from __future__ import annotations

import logging
import math

import torch
import torch.nn.functional as F
from torch import nn

from .attention import attention
from .config import DiTConfig  # noqa: F401  (re-exported for older imports)
from .layers import TorchOps

F32 = torch.float32


# ---------------------------------------------------------------------------------------------
# Running a layer in a chosen dtype, whatever its weights are stored in.


def run_in(layer: nn.Module, h: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    """`layer(h)` computed in `dtype`.

    comfy.ops layers cast their weights to the input's dtype themselves (and apply LoRA patches
    and low-VRAM streaming while doing it), so they are always called as modules. A plain torch
    layer whose weights are stored in another dtype (fp8, or bf16 when computing in fp32) gets
    its weights cast for this call only.
    """
    h = h.to(dtype)
    weight = getattr(layer, "weight", None)
    if weight is None or weight.dtype == dtype or getattr(layer, "comfy_cast_weights", False):
        return layer(h)
    if hasattr(layer, "forward_comfy_cast_weights"):  # a comfy op not in cast mode
        return layer.forward_comfy_cast_weights(h)
    bias = layer.bias.to(dtype) if getattr(layer, "bias", None) is not None else None
    weight = weight.to(dtype)
    if isinstance(layer, nn.Linear):
        return F.linear(h, weight, bias)
    if isinstance(layer, nn.Conv3d):
        return layer._conv_forward(h, weight, bias)
    if isinstance(layer, nn.LayerNorm):
        return F.layer_norm(h, layer.normalized_shape, weight, bias, layer.eps)
    if isinstance(layer, nn.RMSNorm):
        return F.rms_norm(h, layer.normalized_shape, weight, layer.eps)
    raise TypeError(f"run_in: unsupported layer type {type(layer).__name__}")


def _param(p: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    """A raw parameter (modulation tables) in fp32 on the activations' device."""
    return p.to(device=like.device, dtype=F32)


# ---------------------------------------------------------------------------------------------
# Embeddings


def sinusoidal_embedding(timesteps: torch.Tensor, dim: int) -> torch.Tensor:
    """[N] raw timesteps -> [N, dim] fp32 features: cos first, base 10000, computed in fp64."""
    half = dim // 2
    freqs = torch.pow(10000.0, -torch.arange(half, dtype=torch.float64, device=timesteps.device) / half)
    angles = torch.outer(timesteps.to(torch.float64), freqs)
    return torch.cat([torch.cos(angles), torch.sin(angles)], dim=1).to(F32)


def rope_axis_dims(head_dim: int) -> tuple[int, int, int]:
    """Head channels given to (frames, height, width): 44/42/42 for head_dim 128."""
    hw = 2 * (head_dim // 6)
    return head_dim - 2 * hw, hw, hw


def rope_cos_sin(grid: tuple[int, int, int], head_dim: int, device) -> tuple[torch.Tensor, torch.Tensor]:
    """cos/sin tables [tokens, 1, head_dim/2] for a (f, h, w) token grid, in fp32 from fp64."""
    angles = []
    for axis, (size, dim) in enumerate(zip(grid, rope_axis_dims(head_dim))):
        inv_freq = 1.0 / torch.pow(10000.0, torch.arange(0, dim, 2, dtype=torch.float64, device=device) / dim)
        a = torch.outer(torch.arange(size, dtype=torch.float64, device=device), inv_freq)
        shape = [1, 1, 1, a.shape[1]]
        shape[axis] = size
        angles.append(a.view(shape).expand(*grid, a.shape[1]))
    table = torch.cat(angles, dim=-1).reshape(-1, 1, head_dim // 2)
    return torch.cos(table).to(F32), torch.sin(table).to(F32)


def apply_rope(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    """Rotates [B, L, H, D] fp32 by the tables; adjacent channel pairs are one complex number."""
    pairs = x.unflatten(-1, (-1, 2))
    real, imag = pairs[..., 0], pairs[..., 1]
    return torch.stack([real * cos - imag * sin, real * sin + imag * cos], dim=-1).flatten(-2)


# ---------------------------------------------------------------------------------------------
# Blocks


class Attention(nn.Module):
    """Self- or cross-attention with bias projections and RMSNorm over the full width on q, k."""

    def __init__(self, dim: int, num_heads: int, eps: float, ops, device=None, dtype=None):
        super().__init__()
        self.num_heads = num_heads
        kw = {"device": device, "dtype": dtype}
        self.q = ops.Linear(dim, dim, **kw)
        self.k = ops.Linear(dim, dim, **kw)
        self.v = ops.Linear(dim, dim, **kw)
        self.o = ops.Linear(dim, dim, **kw)
        self.norm_q = ops.RMSNorm(dim, eps=eps, elementwise_affine=True, **kw)
        self.norm_k = ops.RMSNorm(dim, eps=eps, elementwise_affine=True, **kw)

    def forward(self, x, context, compute_dtype, rope=None):
        """x [B, L, D] (compute dtype), context [B, Lc, D] or None for self-attention -> [B, L, D]."""
        source = x if context is None else context
        heads = self.num_heads
        q = run_in(self.norm_q, run_in(self.q, x, compute_dtype), F32).unflatten(-1, (heads, -1))
        k = run_in(self.norm_k, run_in(self.k, source, compute_dtype), F32).unflatten(-1, (heads, -1))
        v = run_in(self.v, source, compute_dtype).unflatten(-1, (heads, -1))
        if rope is not None:
            q, k = apply_rope(q, *rope), apply_rope(k, *rope)
        out = attention(q.to(compute_dtype), k.to(compute_dtype), v)
        return run_in(self.o, out.flatten(2), compute_dtype)


class Block(nn.Module):
    def __init__(self, cfg: DiTConfig, ops, device=None, dtype=None):
        super().__init__()
        kw = {"device": device, "dtype": dtype}
        self.eps = cfg.eps
        self.self_attn = Attention(cfg.dim, cfg.num_heads, cfg.eps, ops, **kw)
        self.norm3 = ops.LayerNorm(cfg.dim, eps=cfg.eps, elementwise_affine=True, **kw)
        self.cross_attn = Attention(cfg.dim, cfg.num_heads, cfg.eps, ops, **kw)
        self.ffn = nn.Sequential(
            ops.Linear(cfg.dim, cfg.ffn_dim, **kw), nn.GELU(approximate="tanh"), ops.Linear(cfg.ffn_dim, cfg.dim, **kw)
        )
        self.modulation = nn.Parameter(torch.empty(1, 6, cfg.dim, **kw))

    def _ln(self, x):
        return F.layer_norm(x, x.shape[-1:], eps=self.eps)

    def forward(self, x, e0, context, rope, compute_dtype):
        """x [B, L, D] fp32; e0 [B, Fm, 6, D] fp32 (Fm = 1 or latent frames); context [B, Lc, D]."""
        b, length, dim = x.shape
        frames = e0.shape[1]
        mod = (_param(self.modulation, x).unsqueeze(0) + e0).unsqueeze(3)  # [B, Fm, 6, 1, D]
        shift1, scale1, gate1, shift2, scale2, gate2 = mod.unbind(2)

        def modulated(shift, scale):
            h = self._ln(x).view(b, frames, -1, dim) * (1 + scale) + shift
            return h.view(b, length, dim)

        def gated_add(x, y, gate):
            return (x.view(b, frames, -1, dim) + y.to(F32).view(b, frames, -1, dim) * gate).view(b, length, dim)

        y = self.self_attn(modulated(shift1, scale1).to(compute_dtype), None, compute_dtype, rope)
        x = gated_add(x, y, gate1)
        y = self.cross_attn(run_in(self.norm3, x, F32).to(compute_dtype), context, compute_dtype)
        x = x + y.to(F32)
        h = modulated(shift2, scale2)
        y = run_in(self.ffn[2], self.ffn[1](run_in(self.ffn[0], h, compute_dtype)), compute_dtype)
        return gated_add(x, y, gate2)


class Head(nn.Module):
    def __init__(self, cfg: DiTConfig, ops, device=None, dtype=None):
        super().__init__()
        self.eps = cfg.eps
        out = math.prod(cfg.patch_size) * cfg.out_dim
        self.head = ops.Linear(cfg.dim, out, device=device, dtype=dtype)
        self.modulation = nn.Parameter(torch.empty(1, 2, cfg.dim, device=device, dtype=dtype))

    def forward(self, x, e):
        """x [B, L, D] fp32, e [B, Fm, D] fp32 -> [B, L, prod(patch) * out_dim] fp32."""
        b, length, dim = x.shape
        mod = (_param(self.modulation, x).unsqueeze(0) + e.unsqueeze(2)).unsqueeze(3)  # [B, Fm, 2, 1, D]
        shift, scale = mod.unbind(2)
        h = F.layer_norm(x, (dim,), eps=self.eps).view(b, e.shape[1], -1, dim) * (1 + scale) + shift
        return run_in(self.head, h.view(b, length, dim), F32)


# ---------------------------------------------------------------------------------------------
# The model


class WanDiT(nn.Module):
    """The Wan2.2 DiT. `forward` serves both standalone callers and ComfyUI's BaseModel."""

    def __init__(self, config: DiTConfig, ops=TorchOps, device=None, dtype=None):
        super().__init__()
        cfg = self.config = config
        if cfg.dim % cfg.num_heads or cfg.head_dim % 2:
            raise ValueError(f"dim {cfg.dim} does not split into {cfg.num_heads} heads of even width")
        kw = {"device": device, "dtype": dtype}
        self.dtype = dtype or F32  # ComfyUI's BaseModel.get_dtype() reads this
        # None: compute in the dtype of the x given to forward (ComfyUI casts it to its
        # compute dtype); loaders set it when weights are stored in another dtype.
        self.compute_dtype: torch.dtype | None = None
        self.patch_embedding = ops.Conv3d(cfg.in_dim, cfg.dim, cfg.patch_size, stride=cfg.patch_size, **kw)
        self.text_embedding = nn.Sequential(
            ops.Linear(cfg.text_dim, cfg.dim, **kw), nn.GELU(approximate="tanh"), ops.Linear(cfg.dim, cfg.dim, **kw)
        )
        self.time_embedding = nn.Sequential(
            ops.Linear(cfg.freq_dim, cfg.dim, **kw), nn.SiLU(), ops.Linear(cfg.dim, cfg.dim, **kw)
        )
        self.time_projection = nn.Sequential(nn.SiLU(), ops.Linear(cfg.dim, 6 * cfg.dim, **kw))
        self.blocks = nn.ModuleList([Block(cfg, ops, **kw) for _ in range(cfg.num_layers)])
        self.head = Head(cfg, ops, **kw)
        self._rope_cache: dict = {}
        self._warned: set[str] = set()

    # -- pieces ---------------------------------------------------------------------------
    def _frame_timesteps(self, timestep: torch.Tensor, batch: int, grid: tuple[int, int, int]) -> torch.Tensor:
        """Any accepted timestep shape -> [B, Fm] fp32, Fm = 1 or the number of latent frames."""
        t = torch.as_tensor(timestep).to(F32)
        f, h, w = grid
        if t.ndim == 0:
            t = t.expand(batch)
        if t.ndim == 1:
            t = t.expand(batch) if t.shape[0] == 1 else t
            return t.view(-1, 1)
        if t.ndim == 2 and t.shape[1] in (1, f):
            return t
        if t.ndim == 2 and t.shape[1] == f * h * w:  # per token (diffusers' TI2V form)
            per_frame = t.view(t.shape[0], f, h * w)
            if not torch.equal(per_frame, per_frame[:, :, :1].expand_as(per_frame)):
                raise ValueError("per-token timesteps must be equal within each latent frame")
            return per_frame[:, :, 0]
        raise ValueError(
            f"timestep of shape {tuple(t.shape)}: expected [B], [B, {f}] (one per latent frame) or "
            f"[B, {f * h * w}] (one per token)"
        )

    def _time_embeddings(self, t: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """[B, Fm] -> e [B, Fm, D], e0 [B, Fm, 6, D], each computed once per distinct timestep."""
        distinct, index = torch.unique(t, return_inverse=True)
        feats = sinusoidal_embedding(distinct, self.config.freq_dim)
        e = run_in(self.time_embedding[2], F.silu(run_in(self.time_embedding[0], feats, F32)), F32)
        e0 = run_in(self.time_projection[1], F.silu(e), F32)
        return e[index], e0[index].unflatten(-1, (6, self.config.dim))

    def _rope(self, grid, device):
        key = (grid, str(device))
        if key not in self._rope_cache:
            self._rope_cache = {key: rope_cos_sin(grid, self.config.head_dim, device)}
        return self._rope_cache[key]

    def _context(self, context: torch.Tensor, compute_dtype) -> torch.Tensor:
        missing = self.config.text_len - context.shape[1]
        if missing > 0:  # the official model sees text zero-padded to text_len
            context = F.pad(context, (0, 0, 0, missing))
        h = run_in(self.text_embedding[0], context, compute_dtype)
        return run_in(self.text_embedding[2], self.text_embedding[1](h), compute_dtype)

    def _unpatchify(self, x: torch.Tensor, grid) -> torch.Tensor:
        pt, ph, pw = self.config.patch_size
        f, h, w = grid
        x = x.view(x.shape[0], f, h, w, pt, ph, pw, self.config.out_dim)
        return x.permute(0, 7, 1, 4, 2, 5, 3, 6).reshape(x.shape[0], self.config.out_dim, f * pt, h * ph, w * pw)

    def _warn_once(self, what: str) -> None:
        if what not in self._warned:
            self._warned.add(what)
            logging.warning("[ComfyUI-Wan22] the Wan2.2 DiT ignores %s", what)

    # -- forward --------------------------------------------------------------------------
    def forward(self, x, timestep, context, clip_fea=None, time_dim_concat=None, transformer_options=None, **kwargs):
        """x [B, in_dim, F, H, W]; timestep [B], [B, F] or [B, F*H*W/4] raw (0..1000); context
        [B, L, text_dim] -> [B, out_dim, F, H, W] in x's dtype.

        The extra keywords are those ComfyUI's BaseModel passes its diffusion model; Wan2.2 has
        no CLIP image branch, and time_dim_concat / control are not Wan2.2 features.
        """
        if clip_fea is not None:
            self._warn_once("clip_fea (a CLIP vision input; Wan2.2 has no image encoder branch)")
        if time_dim_concat is not None:
            raise ValueError("time_dim_concat is not supported by the Wan2.2 DiT")
        in_dtype = x.dtype
        compute_dtype = self.compute_dtype or in_dtype
        b, _, frames, height, width = x.shape
        pt, ph, pw = self.config.patch_size
        pad = (0, -width % pw, 0, -height % ph, 0, -frames % pt)
        if any(pad):  # ComfyUI pads odd latents the same way and crops the result
            x = F.pad(x, pad, mode="circular")

        x = run_in(self.patch_embedding, x, compute_dtype)
        grid = tuple(x.shape[2:])
        x = x.flatten(2).transpose(1, 2).to(F32)  # tokens in (f, h, w) order, fp32 stream

        t = self._frame_timesteps(timestep.to(x.device), b, grid)
        if t.shape[0] != b:
            t = t.expand(b, -1)
        e, e0 = self._time_embeddings(t)
        ctx = self._context(context.to(x.device), compute_dtype)
        rope = self._rope(grid, x.device)

        for block in self.blocks:
            x = block(x, e0, ctx, rope, compute_dtype)

        out = self._unpatchify(self.head(x, e), grid)
        return out[:, :, :frames, :height, :width].to(in_dtype)
