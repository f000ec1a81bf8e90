"""WanDiT against two references on the same random weights (fp32, CPU): diffusers 0.42.1's
WanTransformer3DModel and ComfyUI 0.3.75's comfy.ldm.wan.model.WanModel.

Tolerance: max |ours - ref| <= 1e-5 * std(ref). Measured ~5e-6 vs diffusers (diffusers builds the
timestep sinusoid in fp32; ours, like the official code, in fp64, which is most of the gap) and
~1e-6 vs ComfyUI.
"""

import pytest
import torch
import torch.nn.functional as F

from tests.comfy_inprocess import comfy as import_comfy
from tests.dit_factory import diffusers_model, random_inputs, random_state_dict, tiny_config
from wan_core.dit import WanDiT

TOL = 1e-5


def rel_err(ours, ref):
    return float((ours.double() - ref.double()).abs().max() / ref.double().std())


def ours_model(cfg, sd):
    model = WanDiT(cfg)
    model.load_state_dict(sd, strict=True)
    return model.eval()


@pytest.mark.parametrize("kind", ["t2v", "i2v", "ti2v"])
def test_matches_diffusers(kind):
    cfg = tiny_config(kind)
    sd = random_state_dict(cfg, seed=11)
    x, ctx = random_inputs(cfg, frames=3, height=4, width=6, batch=2)
    grid_tokens = 2 * 3  # per latent frame after the 2x2 patch
    if kind == "ti2v":  # image-to-video: frame 0 is the clean image latent, t = 0 there
        t_frames = torch.tensor([[0.0, 937.0, 937.0], [0.0, 412.0, 412.0]])
        t_ref = t_frames.repeat_interleave(grid_tokens, dim=1)  # diffusers takes one t per token
    else:
        t_frames = t_ref = torch.tensor([937.0, 412.0])
    ctx_padded = F.pad(ctx, (0, 0, 0, cfg.text_len - ctx.shape[1]))  # the pipeline pads; we pad inside
    with torch.no_grad():
        ref = diffusers_model(cfg, sd)(x, t_ref, ctx_padded, return_dict=False)[0]
        ours = ours_model(cfg, sd)(x, t_frames, ctx)
    assert ours.shape == ref.shape == (2, cfg.out_dim, 3, 4, 6)
    assert rel_err(ours, ref) <= TOL


def test_per_token_and_per_frame_timesteps_agree():
    cfg = tiny_config("ti2v", num_layers=1)
    model = ours_model(cfg, random_state_dict(cfg, seed=2))
    x, ctx = random_inputs(cfg, frames=2, height=2, width=4)
    t_frames = torch.tensor([[0.0, 500.0]])
    with torch.no_grad():
        a = model(x, t_frames, ctx)
        b = model(x, t_frames.repeat_interleave(2, dim=1), ctx)
        c = model(x, torch.tensor([500.0]), ctx)
    assert torch.equal(a, b)
    assert not torch.allclose(a, c)  # frame 0 really saw t = 0


def test_time_embedding_is_computed_once_per_distinct_timestep():
    cfg = tiny_config("t2v", num_layers=1)
    model = ours_model(cfg, random_state_dict(cfg, seed=2))
    seen = []
    model.time_embedding[0].register_forward_hook(lambda mod, args, out: seen.append(args[0].shape[0]))
    x, ctx = random_inputs(cfg, batch=3)
    with torch.no_grad():
        model(x, torch.tensor([600.0, 600.0, 100.0]), ctx)
    assert seen == [2]


@pytest.mark.parametrize("kind", ["t2v", "i2v", "ti2v"])
def test_matches_comfyui_wan_model(kind):
    import_comfy()
    import comfy.ldm.wan.model as comfy_wan
    import comfy.ops

    cfg = tiny_config(kind)  # dim 256: ComfyUI assumes heads = dim // 128
    sd = random_state_dict(cfg, seed=5)
    ref_model = comfy_wan.WanModel(
        model_type="t2v", patch_size=cfg.patch_size, text_len=cfg.text_len, in_dim=cfg.in_dim, dim=cfg.dim,
        ffn_dim=cfg.ffn_dim, freq_dim=cfg.freq_dim, text_dim=cfg.text_dim, out_dim=cfg.out_dim,
        num_heads=cfg.num_heads, num_layers=cfg.num_layers, operations=comfy.ops.disable_weight_init,
        dtype=torch.float32,
    )
    ref_model.load_state_dict(sd, strict=True)
    x, ctx = random_inputs(cfg, frames=2, height=5, width=6, batch=2)  # odd height: both pad the same
    t = torch.tensor([[0.0, 801.0], [0.0, 333.0]]) if kind == "ti2v" else torch.tensor([801.0, 333.0])
    ctx_padded = F.pad(ctx, (0, 0, 0, cfg.text_len - ctx.shape[1]))  # ComfyUI's text encoder pads
    with torch.no_grad():
        ref = ref_model(x, t, ctx_padded)
        ours = ours_model(cfg, sd)(x, t, ctx)
    assert ours.shape == ref.shape == (2, cfg.out_dim, 2, 5, 6)
    assert rel_err(ours, ref) <= TOL
