"""An expert as `load_expert` builds it is ComfyUI's own Wan model, in-process: a plain
ModelPatcher around ComfyUI's WAN21/WAN22 whose diffusion_model is `comfy.ldm.wan.model.WanModel`,
from ComfyUI's own model config, with the operations ComfyUI picks for the weights (scaled fp8
layers, casting layers, `--*-unet` flags), and every ComfyUI hook acts on it: native sampling,
LoRA, DIFFUSION_MODEL wrappers, the `optimized_attention_override` attention hook and
`patches_replace["dit"]` block patches."""

import pytest
import torch
import torch.nn.functional as F

from tests.comfy_inprocess import pack
from tests.dit_factory import (
    comfy_wan_model,
    random_inputs,
    random_state_dict,
    tiny_config,
    to_scaled_fp8,
    write_comfy_file,
)

CFG = {k: tiny_config(k) for k in ("t2v", "i2v", "ti2v")}


@pytest.fixture(scope="module")
def bridge():
    pack()
    import comfyui_wan22.wan_core.comfy_bridge.dit_model as dit_model

    return dit_model


def rel_err(a, b):
    return float((a - b).abs().max() / b.std())


def padded(ctx):
    return F.pad(ctx, (0, 0, 0, 512 - ctx.shape[1]))  # as the text encoders emit it


@pytest.mark.parametrize("kind", ["t2v", "i2v", "ti2v"])
def test_expert_is_comfyuis_own_wan_model(tmp_path, bridge, kind):
    import comfy.ldm.wan.model
    import comfy.model_base
    import comfy.model_patcher
    import comfy.supported_models

    cfg = CFG[kind]
    patcher = bridge.load_expert(write_comfy_file(random_state_dict(cfg, seed=4), tmp_path / "m.safetensors", prefix=True))
    assert isinstance(patcher, comfy.model_patcher.ModelPatcher)  # a subclass only to keep file pages unpinned
    base = comfy.model_base.WAN22 if kind == "ti2v" else comfy.model_base.WAN21
    assert type(patcher.model) is base
    assert type(patcher.model.diffusion_model) is comfy.ldm.wan.model.WanModel  # not a subclass, not ours
    # The model config ComfyUI's own detection gives a Wan2.2 checkpoint of this shape.
    config_class = comfy.supported_models.WAN22_T2V if kind == "ti2v" else comfy.supported_models.WAN21_T2V
    assert type(patcher.model.model_config) is config_class
    # As native loading sets it: the A14B I2V experts have no CLIP branch, so ComfyUI takes them
    # for T2V-shaped models with 36 input channels (the image arrives through c_concat).
    assert patcher.model.image_to_video == (kind == "ti2v")
    assert all(p.device.type == "cpu" for p in patcher.model.parameters())  # nothing on a GPU
    assert "diffusion_model.blocks.1.self_attn.q.weight" in patcher.model.state_dict()  # LoRA key names
    assert float(patcher.model.model_sampling.shift) == {"t2v": 12.0, "i2v": 5.0, "ti2v": 5.0}[kind]


def linear_ops(patcher):
    """The operations class ComfyUI picked, read off one Linear of the diffusion model."""
    return type(patcher.model.diffusion_model.blocks[0].self_attn.q)


def test_operations_are_comfyuis_choice_for_the_file(tmp_path, bridge):
    import comfy.ops

    cfg = CFG["t2v"]
    sd = random_state_dict(cfg, seed=8)
    load = lambda name, **kw: bridge.load_expert(write_comfy_file(sd, tmp_path / name, **kw))  # noqa: E731

    fp32 = load("fp32.safetensors")  # computes in its own dtype: ComfyUI's plain layers, no casting
    assert linear_ops(fp32) is comfy.ops.disable_weight_init.Linear and fp32.model.manual_cast_dtype is None

    for dtype in (torch.bfloat16, torch.float8_e4m3fn):  # the CPU computes these in fp32: casting layers
        patcher = load(f"{dtype}.safetensors".replace("torch.", ""), dtype=dtype)
        assert linear_ops(patcher) is comfy.ops.manual_cast.Linear, dtype
        assert patcher.model.manual_cast_dtype == torch.float32 and patcher.model.get_dtype() == dtype

    scaled = load("scaled.safetensors", scaled_fp8=torch.float8_e4m3fn)
    ops = linear_ops(scaled)
    assert ops.__qualname__.startswith("scaled_fp8_ops.<locals>.scaled_fp8_op.")  # comfy.ops.scaled_fp8_ops
    assert issubclass(ops, comfy.ops.manual_cast.Linear)
    q = scaled.model.diffusion_model.blocks[0].self_attn.q
    assert q.weight.dtype == torch.float8_e4m3fn and q.scale_weight.dtype == torch.float32
    # The scale is applied by ComfyUI's layer: the same output as the weights multiplied out.
    fp8 = to_scaled_fp8(sd, torch.float8_e4m3fn)
    dequantised = {k: fp8[k].float() * fp8[k[:-6] + "scale_weight"] if k[:-6] + "scale_weight" in fp8 else v
                   for k, v in sd.items()}
    x, ctx = random_inputs(cfg, frames=2, height=4, width=4)
    with torch.no_grad():
        ours = scaled.model.diffusion_model(x, torch.tensor([700.0]), context=ctx)
        ref = comfy_wan_model(cfg, dequantised)(x, torch.tensor([700.0]), ctx)
    assert rel_err(ours, ref) < 1e-5


def test_scaled_fp8_marker_and_input_scales_are_read_as_comfyui_reads_them(tmp_path, bridge):
    """ComfyUI turns fp8 matrix multiplication on for a scaled-fp8 file unless its marker has 2
    elements, and then uses the file's per-layer input scales."""
    cfg = CFG["t2v"]
    fp8 = to_scaled_fp8(random_state_dict(cfg, seed=9), torch.float8_e4m3fn)
    fp8["blocks.0.self_attn.q.scale_input"] = torch.tensor(0.5)
    asks = bridge.load_expert(write_comfy_file(fp8, tmp_path / "asks.safetensors"))
    assert asks.model.model_config.optimizations["fp8"] is True
    blocks = asks.model.diffusion_model.blocks
    assert float(blocks[0].self_attn.q.scale_input) == 0.5 and float(blocks[0].self_attn.k.scale_input) == 1.0
    fp8["scaled_fp8"] = torch.zeros(2, dtype=torch.float8_e4m3fn)
    plain = bridge.load_expert(write_comfy_file(fp8, tmp_path / "plain.safetensors"))
    assert plain.model.model_config.optimizations["fp8"] is False
    assert plain.model.diffusion_model.blocks[0].self_attn.q.scale_input is None


def test_weight_dtype_widget_and_unet_dtype_flags(tmp_path, bridge, monkeypatch):
    import comfy.cli_args
    import comfy.ops

    cfg = CFG["t2v"]
    sd = random_state_dict(cfg)
    path = write_comfy_file(sd, tmp_path / "m.safetensors")
    patcher = bridge.load_expert(path, "fp8_e5m2")
    dit = patcher.model.diffusion_model
    assert dit.blocks[0].ffn[0].weight.dtype == torch.float8_e5m2
    assert dit.blocks[0].norm3.weight.dtype == torch.float32  # norms stay wide
    assert patcher.model.get_dtype() == torch.float8_e5m2 and linear_ops(patcher) is comfy.ops.manual_cast.Linear
    x, ctx = random_inputs(cfg, frames=1, height=2, width=2)
    with torch.no_grad():
        out = dit(x, torch.tensor([10.0]), context=ctx)
    assert torch.isfinite(out).all()

    # `--fp16-unet` forces the weights' dtype whatever the file holds, as for native loading;
    # a scaled fp8 file is then multiplied out.
    monkeypatch.setattr(comfy.cli_args.args, "fp16_unet", True)
    assert bridge.load_expert(path).model.diffusion_model.blocks[0].ffn[0].weight.dtype == torch.float16
    scaled = write_comfy_file(sd, tmp_path / "s.safetensors", scaled_fp8=torch.float8_e4m3fn)
    q = bridge.load_expert(scaled).model.diffusion_model.blocks[0].self_attn.q
    assert q.weight.dtype == torch.float16 and not hasattr(q, "scale_weight")
    # The widget's choice still wins over the flag.
    assert bridge.load_expert(path, "bf16").model.diffusion_model.blocks[0].ffn[0].weight.dtype == torch.bfloat16


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
        ref = comfy_wan_model(cfg, merged)(x, torch.tensor([300.0]), ctx)
    assert rel_err(ours, ref) < 1e-5

    ctx512 = padded(ctx)
    latent = torch.zeros(1, 16, 2, 4, 4)
    noise = comfy.sample.prepare_noise(latent, 1)
    out = comfy.sample.sample(
        patcher, noise, 2, 1.0, "euler", "simple", [[ctx512, {}]], [[ctx512, {}]], latent, disable_pbar=True, seed=1
    )
    assert out.shape == latent.shape and torch.isfinite(out).all()


def test_diffusion_model_wrappers_see_comfyuis_wan_model(tmp_path, bridge):
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
    assert seen == ["WanModel"] and not out.any()


def test_attention_override_and_block_patches_act_in_native_sampling(tmp_path, bridge):
    """What sage/flash attention nodes and SkipLayerGuidance/TeaCache-style nodes hook into."""
    import comfy.sample

    cfg = CFG["i2v"]
    patcher = bridge.load_expert(write_comfy_file(random_state_dict(cfg, seed=9), tmp_path / "m.safetensors"))
    calls = {"attention": 0, "block": []}

    def attention_override(func, *args, **kwargs):
        calls["attention"] += 1
        return func(*args, **kwargs)

    def block_patch(args, extra):
        calls["block"].append(tuple(args["img"].shape))
        return extra["original_block"](args)

    def skip_block(args, extra):  # what SkipLayerGuidanceDiT does to a skipped block
        return {"img": args["img"]}

    hooked = patcher.clone()
    hooked.model_options["transformer_options"]["optimized_attention_override"] = attention_override
    hooked.set_model_patch_replace(block_patch, "dit", "double_block", 1)
    skipping = patcher.clone()
    skipping.set_model_patch_replace(skip_block, "dit", "double_block", 1)

    ctx = padded(random_inputs(cfg)[1])
    latent = torch.zeros(1, 16, 2, 4, 4)
    steps = 3

    def sample(model):
        noise = comfy.sample.prepare_noise(latent, 1)
        return comfy.sample.sample(model, noise, steps, 1.0, "euler", "simple", [[ctx, {}]], [[ctx, {}]], latent,
                                   disable_pbar=True, seed=1)

    plain, with_hooks, skipped = sample(patcher), sample(hooked), sample(skipping)
    # cfg 1: one forward per step; self- and cross-attention in each of the 2 blocks.
    assert calls["attention"] == steps * 2 * cfg.num_layers
    assert calls["block"] == [(1, 2 * 2 * 2, cfg.dim)] * steps  # block 1 only, once per step, on its tokens
    assert torch.equal(with_hooks, plain)  # hooks that call the originals change nothing
    assert not torch.allclose(skipped, plain)  # and a replacing patch's result is what runs
    assert calls["attention"] == steps * 2 * cfg.num_layers  # the clones' hooks stayed on their clone


def test_ti2v_native_sampling_with_a_first_frame_mask(tmp_path, bridge):
    """ComfyUI's WAN22 turns a noise mask into per-latent-frame timesteps; frame 0 (mask 0) stays."""
    import comfy.sample

    cfg = CFG["ti2v"]
    patcher = bridge.load_expert(write_comfy_file(random_state_dict(cfg, seed=2), tmp_path / "m.safetensors"))
    ctx = padded(random_inputs(cfg)[1])
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
