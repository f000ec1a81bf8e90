"""The DiT's one attention function: SDPA by default, exact softmax attention with scale
1/sqrt(head_dim); fused backends only when installed."""

import pytest
import torch

from wan_core import attention as A


def test_default_is_exact_softmax_attention():
    g = torch.Generator().manual_seed(0)
    q, k, v = (torch.randn(2, n, 3, 16, generator=g) for n in (5, 7, 7))
    out = A.attention(q, k, v)
    weights = torch.softmax(torch.einsum("bqhd,bkhd->bhqk", q, k) / 16**0.5, dim=-1)
    expected = torch.einsum("bhqk,bkhd->bqhd", weights, v)
    assert A.attention_backend() == "sdpa"
    assert torch.allclose(out, expected, atol=1e-6)


def test_backend_choice_is_checked():
    with pytest.raises(ValueError, match="choose one of"):
        A.set_attention_backend("xformers")
    for name in ("sage", "flash"):
        if name not in A.available_backends():
            with pytest.raises(ValueError, match="not installed"):
                A.set_attention_backend(name)
    A.set_attention_backend("auto")  # falls back to SDPA on CPU / fp32
    try:
        q = torch.randn(1, 4, 2, 8)
        assert torch.allclose(A.attention(q, q, q), A.F.scaled_dot_product_attention(
            q.transpose(1, 2), q.transpose(1, 2), q.transpose(1, 2)).transpose(1, 2))
    finally:
        A.set_attention_backend("sdpa")
