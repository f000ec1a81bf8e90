"""The pack's experts (ComfyUI's own WanModel, loaded from a file by `load_expert`) against
diffusers 0.42.1's WanTransformer3DModel on the same random weights, fp32 on the CPU, all three
kinds. Both models get the 512-token zero-padded context the text encoders produce.

Two ways in, both as ComfyUI calls the model: the diffusion model's forward with ComfyUI's
argument conventions (timestep in [0, 1000], `context=`, `transformer_options=`), and
`BaseModel.apply_model` as the samplers call it (sigma, `c_concat` for the I2V image channels,
`c_crossattn`, the TI2V `denoise_mask` turning into per-frame timesteps), whose output is the
denoised latent x - sigma * v.

Tolerance: max |comfy - diffusers| <= 1e-5 * std(diffusers); measured 5.0e-6 to 5.3e-6 for the
three kinds (float summation order: the two compute attention and the rotary embedding
differently).
"""

import pytest
import torch
import torch.nn.functional as F

from tests.comfy_inprocess import pack
from tests.dit_factory import diffusers_model, random_inputs, random_state_dict, tiny_config, write_comfy_file

TOL = 1e-5
TEXT_LEN = 512  # what the umT5 encoders emit: the prompt's tokens, then zeros


@pytest.fixture(scope="module")
def load_expert():
    pack()
    from comfyui_wan22.wan_core.comfy_bridge.dit_model import load_expert

    return load_expert


def rel_err(ours, ref):
    return float((ours.double() - ref.double()).abs().max() / ref.double().std())


def padded(ctx):
    return F.pad(ctx, (0, 0, 0, TEXT_LEN - ctx.shape[1]))


@pytest.mark.parametrize("kind", ["t2v", "i2v", "ti2v"])
def test_diffusion_model_matches_diffusers(tmp_path, load_expert, kind):
    cfg = tiny_config(kind)
    sd = random_state_dict(cfg, seed=11)
    patcher = load_expert(write_comfy_file(sd, tmp_path / "m.safetensors"))
    dit = patcher.model.diffusion_model
    assert dit.blocks[0].self_attn.q.weight.dtype == torch.float32  # an fp32 file computes in fp32 here
    x, ctx = random_inputs(cfg, frames=3, height=4, width=6, batch=2)
    ctx = padded(ctx)
    grid_tokens = 2 * 3  # per latent frame after the 2x2 patch
    if kind == "ti2v":  # image-to-video: frame 0 is the clean image latent, t = 0 there
        t_frames = torch.tensor([[0.0, 937.0, 937.0], [0.0, 412.0, 412.0]])
        t_ref = t_frames.repeat_interleave(grid_tokens, dim=1)  # diffusers takes one t per token
    else:
        t_frames = t_ref = torch.tensor([937.0, 412.0])
    with torch.no_grad():
        ref = diffusers_model(cfg, sd)(x, t_ref, ctx, return_dict=False)[0]
        ours = dit(x, t_frames, context=ctx, transformer_options={})
    assert ours.shape == ref.shape == (2, cfg.out_dim, 3, 4, 6)
    err = rel_err(ours, ref)
    print(f"{kind}: ComfyUI WanModel vs diffusers {err:.2e} of output std")
    assert err <= TOL


@pytest.mark.parametrize("kind", ["t2v", "i2v", "ti2v"])
def test_apply_model_as_the_samplers_call_it_matches_diffusers(tmp_path, load_expert, kind):
    cfg = tiny_config(kind, num_layers=1)
    sd = random_state_dict(cfg, seed=12)
    model = load_expert(write_comfy_file(sd, tmp_path / "m.safetensors", prefix=True)).model
    g = torch.Generator().manual_seed(3)
    frames, h, w = 3, 4, 4
    noisy = torch.randn(2, cfg.out_dim, frames, h, w, generator=g)
    ctx = padded(torch.randn(2, 9, cfg.text_dim, generator=g))
    sigma = torch.tensor([0.83, 0.31])
    t = model.model_sampling.timestep(sigma).float()  # ComfyUI's sigma -> timestep (x 1000)
    kwargs, x_ref, t_ref = {}, noisy, t
    if kind == "i2v":  # ComfyUI concatenates the 4 mask + 16 image-latent channels after the noise
        concat = torch.randn(2, cfg.in_dim - cfg.out_dim, frames, h, w, generator=g)
        kwargs["c_concat"] = concat
        x_ref = torch.cat([noisy, concat], dim=1)
    if kind == "ti2v":  # WAN22: the denoise mask makes per-frame timesteps (frame 0 clean: t = 0)
        mask = torch.ones(2, 1, frames, h, w)
        mask[:, :, 0] = 0
        kwargs["denoise_mask"] = mask
        t_ref = (t[:, None] * torch.tensor([0.0, 1.0, 1.0])).repeat_interleave((h // 2) * (w // 2), dim=1)
    with torch.no_grad():
        ours = model.apply_model(noisy, sigma, c_crossattn=ctx, transformer_options={}, **kwargs)
        v = diffusers_model(cfg, sd)(x_ref, t_ref, ctx, return_dict=False)[0]
    ref = noisy - sigma.view(-1, 1, 1, 1, 1) * v  # flow matching: denoised = x - sigma * v
    assert ours.shape == ref.shape
    assert rel_err(ours, ref) <= TOL
    if kind == "ti2v":  # frame 0 really saw t = 0
        with torch.no_grad():
            unmasked = model.apply_model(noisy, sigma, c_crossattn=ctx, transformer_options={})
        assert rel_err(unmasked, ref) > 1e-3
