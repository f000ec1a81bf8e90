"""The real TI2V-5B shape (dim 3072, 24 heads of 128, ffn 14336, 30 layers, 48 channels, text 4096)
built the pack's way (`expert_from_checkpoint`: ComfyUI's model config for the checkpoint's shape,
ComfyUI's WanModel, weights assigned from the checkpoint's tensors) against diffusers 0.42.1's
WanTransformer3DModel on CPU, at a handful of tokens.

Both models share one set of random weight tensors (assigned, not copied). Every weight has
bf16 values (the release's precision) held in fp32 and both models compute in fp32, so the
comparison is tight. To keep RAM near 1 GB and the run short on 2 cores, each weight matrix is a
view at a random offset into a shared random pool (one pool per fan-in, already scaled): every
parameter is random and every layer different, but 5 B parameters cost ~0.6 GB.
Measured 5.6e-6 of the output std; tolerance 1e-5.
"""

import dataclasses
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

from tests.comfy_inprocess import pack
from tests.dit_factory import real_config, state_dict_shapes, to_diffusers_state_dict

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


class InMemoryWeights(dict):
    """The lazy state dict interface `expert_from_checkpoint` reads (shapes without data)."""

    def shape(self, key):
        return tuple(self[key].shape)


def diffusers_on_shared_weights(cfg, sd):
    from diffusers import WanTransformer3DModel
    from diffusers.models.transformers.transformer_wan import WanRotaryPosEmbed

    with torch.device("meta"):
        model = WanTransformer3DModel(
            patch_size=cfg.patch_size, num_attention_heads=cfg.num_heads, attention_head_dim=cfg.head_dim,
            in_channels=cfg.in_dim, out_channels=cfg.out_dim, text_dim=cfg.text_dim, freq_dim=cfg.freq_dim,
            ffn_dim=cfg.ffn_dim, num_layers=cfg.num_layers, cross_attn_norm=True,
            qk_norm="rms_norm_across_heads", eps=cfg.eps,
        )
    model.rope = WanRotaryPosEmbed(cfg.head_dim, cfg.patch_size, 1024)  # its tables are buffers: build them for real
    model.load_state_dict(to_diffusers_state_dict(sd), strict=True, assign=True)
    return model.eval()


def test_real_ti2v_5b_shape_as_the_pack_builds_it_matches_diffusers():
    pack()
    import comfy.ldm.wan.model
    import comfy.supported_models
    from comfyui_wan22.wan_core.checkpoints import DiTCheckpoint
    from comfyui_wan22.wan_core.comfy_bridge.dit_model import expert_from_checkpoint
    from comfyui_wan22.wan_core.config import ModelKind

    # Real widths and depth; a 16-token text length keeps the 30 cross-attention K/V projections
    # (most of the CPU time at 512 tokens) short. Both models see the same padded context.
    cfg = dataclasses.replace(real_config("ti2v"), text_len=16)
    assert (cfg.dim, cfg.num_heads, cfg.num_layers, cfg.ffn_dim, cfg.in_dim) == (3072, 24, 30, 14336, 48)
    sd = shared_bf16_weights(cfg)

    ckpt = DiTCheckpoint(Path("real-size-ti2v"), "in memory", InMemoryWeights(sd), cfg, ModelKind.TI2V,
                         torch.float32, None)
    model = expert_from_checkpoint(ckpt).model
    assert type(model.model_config) is comfy.supported_models.WAN22_T2V
    ours = model.diffusion_model
    assert type(ours) is comfy.ldm.wan.model.WanModel and ours.num_heads == 24 and len(ours.blocks) == 30
    assert ours.blocks[29].ffn[0].weight.data_ptr() == sd["blocks.29.ffn.0.weight"].data_ptr()  # assigned
    ref = diffusers_on_shared_weights(cfg, sd)
    assert ref.blocks[29].ffn.net[2].weight.data_ptr() == ours.blocks[29].ffn[2].weight.data_ptr()  # shared

    g = torch.Generator().manual_seed(1)
    x = torch.randn(1, 48, 2, 4, 4, generator=g)  # 2 x 2 x 2 = 8 tokens
    context = F.pad(torch.randn(1, 12, 4096, generator=g), (0, 0, 0, cfg.text_len - 12))
    t = torch.tensor([[0.0, 871.0]])  # image-to-video: frame 0 is clean
    with torch.no_grad():
        out = ours(x, t, context=context, transformer_options={})
        expected = ref(x, t.repeat_interleave(4, dim=1), context, return_dict=False)[0]  # diffusers: t per token
    err = float((out - expected).abs().max() / expected.std())
    assert out.shape == (1, 48, 2, 4, 4)
    print(f"real-size TI2V-5B, ComfyUI's WanModel as the pack builds it vs diffusers: max err {err:.2e} of output std")
    assert err <= 1e-5, err
