"""The ComfyUI adapter in-process: each expert is a plain ModelPatcher around a comfy WAN21/WAN22
BaseModel whose diffusion_model is our WanDiT, so native sampling and LoRA patches work on it."""

import pytest
import torch
import torch.nn.functional as F

from tests.comfy_inprocess import pack
from tests.dit_factory import random_inputs, random_state_dict, tiny_config, write_comfy_file

CFG = {k: tiny_config(k) for k in ("t2v", "i2v", "ti2v")}


@pytest.fixture(scope="module")
def bridge():
    pack()
    import comfyui_wan22.wan_core.comfy_bridge.dit_model as dit_model

    return dit_model


def standalone(cfg, sd):
    from comfyui_wan22.wan_core.dit import DiTConfig, WanDiT

    model = WanDiT(DiTConfig(**cfg.__dict__))
    model.load_state_dict(sd)
    return model.eval()


def rel_err(a, b):
    return float((a - b).abs().max() / b.std())


@pytest.mark.parametrize("kind", ["t2v", "i2v", "ti2v"])
def test_expert_is_an_ordinary_comfy_model(tmp_path, bridge, kind):
    import comfy.model_base
    import comfy.model_patcher

    cfg = CFG[kind]
    sd = random_state_dict(cfg, seed=4)
    patcher = bridge.load_expert(write_comfy_file(sd, tmp_path / "m.safetensors", prefix=True))
    assert type(patcher) is comfy.model_patcher.ModelPatcher
    base = comfy.model_base.WAN22 if kind == "ti2v" else comfy.model_base.WAN21
    assert isinstance(patcher.model, base)
    assert patcher.model.image_to_video == (kind != "t2v")
    assert all(p.device.type == "cpu" for p in patcher.model.parameters())  # nothing on a GPU
    assert "diffusion_model.blocks.1.self_attn.q.weight" in patcher.model.state_dict()  # LoRA key names
    assert float(patcher.model.model_sampling.shift) == {"t2v": 12.0, "i2v": 5.0, "ti2v": 5.0}[kind]

    x, ctx = random_inputs(cfg, frames=2, height=4, width=4)
    t = torch.tensor([[0.0, 500.0]]) if kind == "ti2v" else torch.tensor([500.0])
    with torch.no_grad():
        ours = patcher.model.diffusion_model(x, t, context=ctx, transformer_options={}, control=None)
        ref = standalone(cfg, sd)(x, t, ctx)
    assert rel_err(ours, ref) < 2e-6


def test_native_sampler_and_lora_patch_apply(tmp_path, bridge):
    import comfy.model_management as mm
    import comfy.sample
    import comfy.sd

    cfg = CFG["t2v"]
    sd = random_state_dict(cfg, seed=6)
    patcher = bridge.load_expert(write_comfy_file(sd, tmp_path / "m.safetensors"))
    g = torch.Generator().manual_seed(0)
    up, down = torch.randn(cfg.dim, 4, generator=g) * 0.1, torch.randn(4, cfg.dim, generator=g) * 0.1
    lora = {
        "diffusion_model.blocks.0.self_attn.q.lora_up.weight": up,
        "diffusion_model.blocks.0.self_attn.q.lora_down.weight": down,
    }
    patched, _ = comfy.sd.load_lora_for_models(patcher, None, lora, 0.7, 0)
    assert len(patched.patches) == 1  # the key mapped with no table

    x, ctx = random_inputs(cfg, frames=2, height=4, width=4)
    merged = dict(sd)
    merged["blocks.0.self_attn.q.weight"] = sd["blocks.0.self_attn.q.weight"] + 0.7 * up @ down
    mm.load_models_gpu([patched])
    with torch.no_grad():
        ours = patched.model.diffusion_model(x, torch.tensor([300.0]), context=ctx)
        ref = standalone(cfg, merged)(x, torch.tensor([300.0]), ctx)
    assert rel_err(ours, ref) < 1e-5

    ctx512 = F.pad(ctx, (0, 0, 0, 512 - ctx.shape[1]))
    latent = torch.zeros(1, 16, 2, 4, 4)
    noise = comfy.sample.prepare_noise(latent, 1)
    out = comfy.sample.sample(
        patcher, noise, 2, 1.0, "euler", "simple", [[ctx512, {}]], [[ctx512, {}]], latent, disable_pbar=True, seed=1
    )
    assert out.shape == latent.shape and torch.isfinite(out).all()


def test_scaled_fp8_stays_fp8_in_comfy(tmp_path, bridge):
    cfg = CFG["i2v"]
    sd = random_state_dict(cfg, seed=8)
    path = write_comfy_file(sd, tmp_path / "s.safetensors", scaled_fp8=torch.float8_e4m3fn)
    patcher = bridge.load_expert(path)
    q = patcher.model.diffusion_model.blocks[0].self_attn.q
    assert q.weight.dtype == torch.float8_e4m3fn and q.scale_weight.dtype == torch.float32
    from comfyui_wan22.wan_core.checkpoints import load_dit

    x, ctx = random_inputs(cfg, frames=2, height=4, width=4)
    with torch.no_grad():
        ours = patcher.model.diffusion_model(x, torch.tensor([700.0]), context=ctx)
        multiplied_out = load_dit(path).model(x, torch.tensor([700.0]), ctx)
    assert rel_err(ours, multiplied_out) < 1e-5  # same fp8 values, scale applied at another point


def test_weight_dtype_choice_in_comfy(tmp_path, bridge):
    cfg = CFG["t2v"]
    patcher = bridge.load_expert(write_comfy_file(random_state_dict(cfg), tmp_path / "m.safetensors"), "fp8_e5m2")
    dit = patcher.model.diffusion_model
    assert dit.blocks[0].ffn[0].weight.dtype == torch.float8_e5m2
    assert patcher.model.get_dtype() == torch.float8_e5m2
    x, ctx = random_inputs(cfg, frames=1, height=2, width=2)
    with torch.no_grad():
        out = patcher.model.diffusion_model(x, torch.tensor([10.0]), context=ctx)
    assert torch.isfinite(out).all()


def test_diffusion_model_wrappers_see_our_dit(tmp_path, bridge):
    import comfy.patcher_extension as pe

    cfg = CFG["t2v"]
    patcher = bridge.load_expert(write_comfy_file(random_state_dict(cfg), tmp_path / "m.safetensors"))
    seen = []

    def wrapper(executor, x, *args, **kwargs):
        seen.append(type(executor.class_obj).__name__)
        return executor(x, *args, **kwargs) * 0  # proves the wrapper's result is what comes out

    options = {"wrappers": {pe.WrappersMP.DIFFUSION_MODEL: {"test": [wrapper]}}}
    x, ctx = random_inputs(cfg, frames=1, height=2, width=2)
    with torch.no_grad():
        out = patcher.model.diffusion_model(x, torch.tensor([10.0]), context=ctx, transformer_options=options)
    assert seen == ["ComfyWanDiT"] and not out.any()


def test_ti2v_native_sampling_with_a_first_frame_mask(tmp_path, bridge):
    """ComfyUI's WAN22 turns a noise mask into per-latent-frame timesteps; frame 0 (mask 0) stays."""
    import comfy.sample

    cfg = CFG["ti2v"]
    patcher = bridge.load_expert(write_comfy_file(random_state_dict(cfg, seed=2), tmp_path / "m.safetensors"))
    ctx = F.pad(random_inputs(cfg)[1], (0, 0, 0, 500))
    g = torch.Generator().manual_seed(3)
    latent = torch.randn(1, 48, 3, 4, 4, generator=g)
    mask = torch.ones(1, 1, 3, 4, 4)
    mask[:, :, 0] = 0  # frame 0 is the given image
    timesteps = []
    patcher.model.diffusion_model.register_forward_pre_hook(lambda mod, args: timesteps.append(args[1].clone()))
    noise = comfy.sample.prepare_noise(latent, 1)
    out = comfy.sample.sample(patcher, noise, 2, 1.0, "euler", "simple", [[ctx, {}]], [[ctx, {}]], latent,
                              noise_mask=mask, disable_pbar=True, seed=1)
    assert timesteps[0].shape == (1, 3)  # one t per latent frame (cfg 1: no uncond pass)
    assert (timesteps[0][:, 0] == 0).all() and (timesteps[0][:, 1:] > 900).all()
    assert torch.allclose(out[:, :, 0], latent[:, :, 0], atol=1e-5)  # the latent format round trip
    assert torch.isfinite(out).all() and not torch.allclose(out[:, :, 1:], latent[:, :, 1:])
