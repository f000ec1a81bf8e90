"""The one attention function of the pack's DiT.

PyTorch SDPA by default: exact, and fast on every device. SageAttention or FlashAttention can be
chosen when they are installed (`set_attention_backend("sage" | "flash" | "auto")` or the
environment variable WAN22_ATTENTION); they run only on CUDA in fp16/bf16, and any call they
cannot serve falls back to SDPA, so choosing one never breaks a run.
"""

from __future__ import annotations

import importlib.util
import logging
import os

import torch
import torch.nn.functional as F

BACKENDS = ("sdpa", "sage", "flash", "auto")
_backend = os.environ.get("WAN22_ATTENTION", "sdpa").lower()
if _backend not in BACKENDS:
    logging.warning("[ComfyUI-Wan22] WAN22_ATTENTION=%s is not one of %s; using sdpa", _backend, BACKENDS)
    _backend = "sdpa"


def available_backends() -> list[str]:
    """The backends importable here (sdpa always)."""
    found = ["sdpa"]
    if importlib.util.find_spec("sageattention") is not None:
        found.append("sage")
    if importlib.util.find_spec("flash_attn") is not None:
        found.append("flash")
    return found


def set_attention_backend(name: str) -> None:
    global _backend
    if name not in BACKENDS:
        raise ValueError(f"attention backend {name!r}: choose one of {', '.join(BACKENDS)}")
    if name in ("sage", "flash") and name not in available_backends():
        raise ValueError(f"attention backend {name!r} is not installed here; installed: {available_backends()}")
    _backend = name


def attention_backend() -> str:
    return _backend


def _fused_kernel_usable(q: torch.Tensor) -> bool:
    return q.is_cuda and q.dtype in (torch.float16, torch.bfloat16)


def attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
    """Softmax attention without mask, scale 1/sqrt(head_dim).

    q: [B, Lq, H, D]; k, v: [B, Lk, H, D] -> [B, Lq, H, D] (the layout the DiT keeps).
    """
    backend = _backend
    if backend != "sdpa" and _fused_kernel_usable(q):
        order = available_backends()[1:] if backend == "auto" else [backend]
        for name in order:
            if name == "sage":
                from sageattention import sageattn

                return sageattn(q, k, v, tensor_layout="NHD", is_causal=False)
            if name == "flash":
                from flash_attn import flash_attn_func

                return flash_attn_func(q, k, v)
    out = F.scaled_dot_product_attention(q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2))
    return out.transpose(1, 2)
