"""The umT5 encoder that conditions Wan2.2: one module for the real XXL and for tiny test models.

umT5 is a T5 encoder whose every layer has its own relative-position bias (plain T5 shares the
first layer's). Pre-norm blocks with T5's RMS norm (variance in fp32, no mean, no bias), attention
without the 1/sqrt(d) scale, a gated GELU(tanh) feed-forward, a final norm. The module names
follow the official Wan release (`token_embedding`, `blocks.N.attn.q`, `blocks.N.ffn.gate.0`, ...);
`text_encoder_files` maps the Hugging Face / ComfyUI names onto them.

Layers come from an injectable `ops` set (plain torch.nn standalone, comfy.ops inside ComfyUI) so
low-VRAM partial loading and fp8 manual cast apply to the big matrices.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from .layers import TorchOps

# Not stored in any weight file: every T5/umT5 release uses these.
REL_MAX_DISTANCE = 128
NORM_EPS = 1e-6


@dataclass(frozen=True)
class UMT5Config:
    vocab_size: int
    dim: int
    num_heads: int
    head_dim: int
    ffn_dim: int
    num_layers: int
    num_buckets: int
    max_distance: int = REL_MAX_DISTANCE
    eps: float = NORM_EPS

    @property
    def attn_dim(self) -> int:
        return self.num_heads * self.head_dim


def config_from_state_dict(shapes: Mapping[str, tuple[int, ...]]) -> UMT5Config:
    """The config of a umT5 from the shapes of its canonical (official-named) state dict."""
    vocab_size, dim = shapes["token_embedding.weight"]
    num_layers = 1 + max(int(k.split(".")[1]) for k in shapes if k.startswith("blocks."))
    num_buckets, num_heads = shapes["blocks.0.pos_embedding.embedding.weight"]
    attn_dim = shapes["blocks.0.attn.q.weight"][0]
    ffn_dim = shapes["blocks.0.ffn.fc1.weight"][0]
    return UMT5Config(
        vocab_size=vocab_size, dim=dim, num_heads=num_heads, head_dim=attn_dim // num_heads,
        ffn_dim=ffn_dim, num_layers=num_layers, num_buckets=num_buckets,
    )


class T5Norm(nn.Module):
    """RMS norm as T5 defines it: mean square taken in fp32, then scaled; no bias, no centring."""

    def __init__(self, dim: int, eps: float, dtype=None, device=None):
        super().__init__()
        self.weight = nn.Parameter(torch.ones(dim, dtype=dtype, device=device))
        self.eps = eps

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        variance = x.float().pow(2).mean(dim=-1, keepdim=True)
        normed = (x.float() * torch.rsqrt(variance + self.eps)).to(x.dtype)
        return self.weight.to(device=x.device, dtype=x.dtype) * normed


def relative_position_buckets(length: int, num_buckets: int, max_distance: int, device=None) -> torch.Tensor:
    """[length, length] bucket index of (key position - query position), bidirectional.

    Half the buckets per direction; in each half, distances below a quarter of the buckets get one
    bucket each, longer ones share logarithmically wider buckets up to max_distance (then the last).
    """
    positions = torch.arange(length, device=device)
    relative = positions[None, :] - positions[:, None]
    half = num_buckets // 2
    buckets = (relative > 0).long() * half
    distance = relative.abs()
    exact = half // 2
    log_ratio = torch.log(distance.clamp(min=1).float() / exact) / math.log(max_distance / exact)
    far = exact + (log_ratio * (half - exact)).long()
    far = far.clamp(max=half - 1)
    return buckets + torch.where(distance < exact, distance, far)


class RelativePositionBias(nn.Module):
    def __init__(self, num_buckets: int, num_heads: int, max_distance: int, ops, dtype=None, device=None):
        super().__init__()
        self.num_buckets = num_buckets
        self.max_distance = max_distance
        self.embedding = ops.Embedding(num_buckets, num_heads, dtype=dtype, device=device)

    def forward(self, length: int, device, dtype) -> torch.Tensor:
        """[1, heads, length, length] additive attention bias."""
        buckets = relative_position_buckets(length, self.num_buckets, self.max_distance, device)
        return self.embedding(buckets).to(dtype).permute(2, 0, 1).unsqueeze(0)


class SelfAttention(nn.Module):
    def __init__(self, cfg: UMT5Config, ops, dtype=None, device=None):
        super().__init__()
        self.num_heads = cfg.num_heads
        self.q = ops.Linear(cfg.dim, cfg.attn_dim, bias=False, dtype=dtype, device=device)
        self.k = ops.Linear(cfg.dim, cfg.attn_dim, bias=False, dtype=dtype, device=device)
        self.v = ops.Linear(cfg.dim, cfg.attn_dim, bias=False, dtype=dtype, device=device)
        self.o = ops.Linear(cfg.attn_dim, cfg.dim, bias=False, dtype=dtype, device=device)

    def forward(self, x: torch.Tensor, bias: torch.Tensor) -> torch.Tensor:
        b, n, _ = x.shape

        def heads(t: torch.Tensor) -> torch.Tensor:
            return t.view(b, n, self.num_heads, -1).transpose(1, 2)

        # T5 folds the 1/sqrt(d) scale into its initialisation, so attention itself is unscaled.
        out = F.scaled_dot_product_attention(heads(self.q(x)), heads(self.k(x)), heads(self.v(x)),
                                             attn_mask=bias, scale=1.0)
        return self.o(out.transpose(1, 2).reshape(b, n, -1))


class GatedFeedForward(nn.Module):
    """fc2(GELU_tanh(gate(x)) * fc1(x)); `gate.0` keeps the release's Sequential name."""

    def __init__(self, cfg: UMT5Config, ops, dtype=None, device=None):
        super().__init__()
        self.gate = nn.Sequential(ops.Linear(cfg.dim, cfg.ffn_dim, bias=False, dtype=dtype, device=device))
        self.fc1 = ops.Linear(cfg.dim, cfg.ffn_dim, bias=False, dtype=dtype, device=device)
        self.fc2 = ops.Linear(cfg.ffn_dim, cfg.dim, bias=False, dtype=dtype, device=device)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc2(F.gelu(self.gate(x), approximate="tanh") * self.fc1(x))


class UMT5Block(nn.Module):
    def __init__(self, cfg: UMT5Config, ops, dtype=None, device=None):
        super().__init__()
        self.norm1 = T5Norm(cfg.dim, cfg.eps, dtype=dtype, device=device)
        self.attn = SelfAttention(cfg, ops, dtype=dtype, device=device)
        self.norm2 = T5Norm(cfg.dim, cfg.eps, dtype=dtype, device=device)
        self.ffn = GatedFeedForward(cfg, ops, dtype=dtype, device=device)
        self.pos_embedding = RelativePositionBias(
            cfg.num_buckets, cfg.num_heads, cfg.max_distance, ops, dtype=dtype, device=device
        )

    def forward(self, x: torch.Tensor, key_mask: torch.Tensor | None) -> torch.Tensor:
        bias = self.pos_embedding(x.shape[1], x.device, x.dtype)
        if key_mask is not None:
            bias = bias + key_mask
        x = _clamp_fp16(x + self.attn(self.norm1(x), bias))
        return _clamp_fp16(x + self.ffn(self.norm2(x)))


def _clamp_fp16(x: torch.Tensor) -> torch.Tensor:
    # T5 activations outgrow fp16; the release clamps them back inside the finite range.
    if x.dtype == torch.float16 and torch.isinf(x).any():
        limit = torch.finfo(x.dtype).max - 1000
        x = x.clamp(-limit, limit)
    return x


class UMT5Encoder(nn.Module):
    """The umT5 encoder. `encode(texts)` needs a tokenizer, which the loader attaches."""

    def __init__(self, cfg: UMT5Config, ops=TorchOps, dtype=None, device=None, compute_dtype=None):
        super().__init__()
        self.config = cfg
        self.token_embedding = ops.Embedding(cfg.vocab_size, cfg.dim, dtype=dtype, device=device)
        self.blocks = nn.ModuleList(UMT5Block(cfg, ops, dtype=dtype, device=device) for _ in range(cfg.num_layers))
        self.norm = T5Norm(cfg.dim, cfg.eps, dtype=dtype, device=device)
        # The dtype activations run in; weights stored in another dtype (fp8) are cast to it.
        self.compute_dtype = compute_dtype or dtype or torch.float32
        self.tokenizer = None

    def forward(self, ids: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
        """ids [B, L] -> [B, L, dim]; mask [B, L] (1 = token, 0 = padding) hides padded keys."""
        x = self.token_embedding(ids).to(self.compute_dtype)
        key_mask = None
        if mask is not None:
            key_mask = torch.zeros(mask.shape, dtype=x.dtype, device=x.device)
            key_mask = key_mask.masked_fill(mask.to(x.device) == 0, torch.finfo(x.dtype).min)[:, None, None, :]
        for block in self.blocks:
            x = block(x, key_mask)
        return self.norm(x)

    @torch.no_grad()
    def encode(self, texts: list[str], device: torch.device | None = None) -> list[torch.Tensor]:
        """One [tokens, dim] embedding per text, trimmed to its real tokens (end token included)."""
        if self.tokenizer is None:
            raise RuntimeError("this UMT5Encoder has no tokenizer; load it with load_text_encoder")
        token_ids = self.tokenizer(texts)
        return self.encode_ids(token_ids, device)

    @torch.no_grad()
    def encode_ids(self, token_ids: list[list[int]], device: torch.device | None = None) -> list[torch.Tensor]:
        device = device or self.token_embedding.weight.device
        longest = max(len(t) for t in token_ids)
        ids = torch.zeros(len(token_ids), longest, dtype=torch.long)
        mask = torch.zeros(len(token_ids), longest, dtype=torch.long)
        for row, tokens in enumerate(token_ids):
            ids[row, : len(tokens)] = torch.tensor(tokens)
            mask[row, : len(tokens)] = 1
        # Padded keys are masked out, so each text's real tokens match an unpadded encode.
        out = self(ids.to(device), mask.to(device) if len(set(map(len, token_ids))) > 1 else None)
        return [out[row, : len(tokens)] for row, tokens in enumerate(token_ids)]


def pad_context(embedding: torch.Tensor, length: int) -> torch.Tensor:
    """[L, D] -> [length, D] with zero rows after the real tokens (what the DiT sees)."""
    if embedding.shape[0] >= length:
        return embedding[:length]
    return F.pad(embedding, (0, 0, 0, length - embedding.shape[0]))
