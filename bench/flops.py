"""Matmul FLOPs of one Wan DiT forward (one CFG branch), for achieved TFLOP/s on a GPU.

Counted as the reference does (WAN22_REFERENCE.md section 8): per block, self-attention
projections 4 x (N x D x D), attention scores and values 2 x (N x N x D), cross-attention query
and output over N tokens and key/value over the 512 text tokens, its scores and values
2 x (N x L x D), and the FFN 2 x (N x D x F); 2 FLOPs per multiply-add.
"""

from __future__ import annotations

from wan_core.config import TEXT_LEN, DiTConfig


def dit_forward_flops(cfg: DiTConfig, tokens: int, text_len: int = TEXT_LEN) -> float:
    n, d, f, lt = tokens, cfg.dim, cfg.ffn_dim, text_len
    per_block = 2 * (4 * n * d * d + 2 * n * n * d + 2 * n * d * d + 2 * lt * d * d + 2 * n * lt * d + 2 * n * d * f)
    return float(per_block * cfg.num_layers)
