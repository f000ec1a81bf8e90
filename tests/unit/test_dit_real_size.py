"""The real TI2V-5B shape (dim 3072, 24 heads of 128, ffn 14336, 30 layers, 48 channels, text 4096)
against ComfyUI's WanModel on CPU, at a handful of tokens.

Both models share one set of random weight tensors (assigned, not copied). Every weight has
bf16 values (the release's precision) held in fp32 and both models compute in fp32, so the
comparison is tight. To keep RAM near 1 GB and the run short on 2 cores, each weight matrix is a
view at a random offset into a shared random pool (one pool per fan-in, already scaled): every
parameter is random and every layer different, but 5 B parameters cost ~0.6 GB.
Measured: 4.0e-6 of output std; tolerance 1e-5.
"""

import dataclasses

import pytest
import torch
import torch.nn.functional as F

from tests.comfy_inprocess import comfy as import_comfy
from tests.dit_factory import real_config, state_dict_shapes
from wan_core.dit import WanDiT

pytestmark = pytest.mark.slow


def shared_bf16_weights(cfg):
    g = torch.Generator().manual_seed(0)
    shapes = state_dict_shapes(cfg)
    pools: dict[int, torch.Tensor] = {}
    sd = {}
    for key, shape in shapes.items():
        numel = int(torch.Size(shape).numel())
        if key.endswith("weight") and len(shape) >= 2:
            fan_in = int(torch.Size(shape[1:]).numel())
            if fan_in not in pools:  # room for the largest matrix of this fan-in plus slack
                size = max(int(torch.Size(s).numel()) for k, s in shapes.items()
                           if len(s) >= 2 and int(torch.Size(s[1:]).numel()) == fan_in) + 4_000_000
                pool = (torch.rand(size, generator=g) * 2 - 1) / fan_in**0.5
                pools[fan_in] = pool.bfloat16().float()
            pool = pools[fan_in]
            offset = int(torch.randint(0, pool.numel() - numel + 1, (1,), generator=g))
            sd[key] = pool[offset:offset + numel].view(shape)
            continue
        if key.endswith("modulation"):
            t = torch.randn(shape, generator=g) * 0.1
        elif ".norm" in key:
            t = 1 + torch.randn(shape, generator=g) * 0.1
        else:
            t = torch.randn(shape, generator=g) * 0.05
        sd[key] = t.bfloat16().float()
    return sd


def test_real_ti2v_5b_shape_matches_comfyui():
    import_comfy()
    import comfy.ldm.wan.model as comfy_wan
    import comfy.ops

    # Real widths and depth; a 16-token text length keeps the 30 cross-attention K/V projections
    # (most of the CPU time at 512 tokens) short. Both models see the same padded context.
    cfg = dataclasses.replace(real_config("ti2v"), text_len=16)
    assert (cfg.dim, cfg.num_heads, cfg.num_layers, cfg.ffn_dim, cfg.in_dim) == (3072, 24, 30, 14336, 48)
    sd = shared_bf16_weights(cfg)

    with torch.device("meta"):
        ours = WanDiT(cfg)
    ours.load_state_dict(sd, strict=True, assign=True)

    ref = comfy_wan.WanModel(
        model_type="t2v", in_dim=cfg.in_dim, dim=cfg.dim, ffn_dim=cfg.ffn_dim, out_dim=cfg.out_dim,
        num_heads=cfg.num_heads, num_layers=cfg.num_layers, text_len=cfg.text_len, device="meta",
        dtype=torch.float32, operations=comfy.ops.disable_weight_init,
    )
    ref.load_state_dict(sd, strict=True, assign=True)
    assert ref.blocks[29].ffn[0].weight.data_ptr() == ours.blocks[29].ffn[0].weight.data_ptr()  # shared

    g = torch.Generator().manual_seed(1)
    x = torch.randn(1, 48, 2, 4, 4, generator=g)  # 2 x 2 x 2 = 8 tokens
    context = torch.randn(1, 12, 4096, generator=g)
    t = torch.tensor([[0.0, 871.0]])  # image-to-video: frame 0 is clean
    with torch.no_grad():
        out = ours.eval()(x, t, context)
        expected = ref.eval()(x, t, F.pad(context, (0, 0, 0, cfg.text_len - 12)))
    err = float((out - expected).abs().max() / expected.std())
    assert out.shape == (1, 48, 2, 4, 4)
    print(f"real-size TI2V-5B vs ComfyUI: max err {err:.2e} of output std")
    assert err <= 1e-5, err
