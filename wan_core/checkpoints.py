"""Wan2.2 DiT checkpoints: format detection, key normalisation, config from shapes, loading."""

from __future__ import annotations

import re

# Official name pattern -> diffusers name pattern (diffusers' WanTransformer3DModel).
_OFFICIAL_TO_DIFFUSERS = [
    (r"text_embedding\.0\.", "condition_embedder.text_embedder.linear_1."),
    (r"text_embedding\.2\.", "condition_embedder.text_embedder.linear_2."),
    (r"time_embedding\.0\.", "condition_embedder.time_embedder.linear_1."),
    (r"time_embedding\.2\.", "condition_embedder.time_embedder.linear_2."),
    (r"time_projection\.1\.", "condition_embedder.time_proj."),
    (r"head\.modulation$", "scale_shift_table"),
    (r"head\.head\.", "proj_out."),
    (r"(blocks\.\d+\.)modulation$", r"\1scale_shift_table"),
    (r"(blocks\.\d+\.)self_attn\.([qkv])\.", r"\1attn1.to_\2."),
    (r"(blocks\.\d+\.)self_attn\.o\.", r"\1attn1.to_out.0."),
    (r"(blocks\.\d+\.)self_attn\.norm_", r"\1attn1.norm_"),
    (r"(blocks\.\d+\.)cross_attn\.([qkv])\.", r"\1attn2.to_\2."),
    (r"(blocks\.\d+\.)cross_attn\.o\.", r"\1attn2.to_out.0."),
    (r"(blocks\.\d+\.)cross_attn\.norm_", r"\1attn2.norm_"),
    (r"(blocks\.\d+\.)norm3\.", r"\1norm2."),
    (r"(blocks\.\d+\.)ffn\.0\.", r"\1ffn.net.0.proj."),
    (r"(blocks\.\d+\.)ffn\.2\.", r"\1ffn.net.2."),
]


def official_to_diffusers_key(key: str) -> str:
    for pattern, replacement in _OFFICIAL_TO_DIFFUSERS:
        new, n = re.subn("^" + pattern, replacement, key)
        if n:
            return new
    return key
