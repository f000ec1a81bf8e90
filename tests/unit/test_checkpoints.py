"""Every DiT checkpoint format loads, through `load_expert`, into ComfyUI's WanModel with the
same weights and the same outputs, and every bad file gives a WanUserError naming the file and
saying what to do. Tiny random models (dim 256).

The reference is ComfyUI's WanModel built directly (plain fp32 layers, `load_state_dict` of the
official-names state dict). Full-precision formats: weights bit-equal, outputs within 2e-6 of the
output std (measured 0 to 6.8e-7: the matmul kernels differ with the weights' memory alignment, a view
into the file vs a fresh allocation). Reduced precision: exactly an fp32 model of the rounded
weights (1e-5 of std), since the CPU computes in fp32 on the file's values."""

import dataclasses
import json
from types import SimpleNamespace

import pytest
import torch
import torch.nn.functional as F
from safetensors.torch import save_file

from tests.comfy_inprocess import pack
from tests.dit_factory import (
    comfy_wan_model,
    random_inputs,
    random_state_dict,
    tiny_config,
    to_scaled_fp8,
    write_comfy_file,
    write_diffusers_folder,
    write_official_folder,
    write_pth,
)

CFG = tiny_config("i2v")
SD = random_state_dict(CFG, seed=21)
X, CTX = random_inputs(CFG, frames=2, height=4, width=4)
CTX = F.pad(CTX, (0, 0, 0, 512 - CTX.shape[1]))  # as the text encoders pad it
T = torch.tensor([640.0])


@pytest.fixture(scope="module")
def wan():
    """The pack as ComfyUI imports it (one copy of its modules, so its WanUserError is the one raised)."""
    pack()
    from comfyui_wan22.wan_core import checkpoints, config, errors
    from comfyui_wan22.wan_core.comfy_bridge.dit_model import load_expert

    return SimpleNamespace(
        inspect_dit=checkpoints.inspect_dit, load_expert=load_expert, ModelKind=config.ModelKind,
        WanUserError=errors.WanUserError,
    )


def comfy_reference(sd, cfg=CFG):
    return comfy_wan_model(cfg, sd)


def forward(dit):
    with torch.no_grad():
        return dit(X, T, context=CTX, transformer_options={})


@pytest.fixture(scope="module")
def ref(wan):
    return forward(comfy_reference(SD))


def output_of(wan, path, **kw):
    patcher = wan.load_expert(path, **kw)
    dit = patcher.model.diffusion_model
    return dit, forward(dit)


def config_of(ckpt):
    """The detected config as a plain dict (the pack's DiTConfig is another class than the
    top-level `wan_core` one the factory uses)."""
    return dataclasses.asdict(ckpt.config)


def rel_err(out, ref):
    return float((out - ref).abs().max() / ref.std())


@pytest.mark.parametrize("fmt", ["official", "comfy", "comfy_prefixed", "diffusers", "diffusers_root", "pth"])
def test_every_full_precision_format_loads_identical_weights_and_outputs(tmp_path, wan, ref, fmt):
    if fmt == "official":
        path = write_official_folder(SD, CFG, tmp_path / "high_noise_model", shards=3, kind="i2v")
    elif fmt == "comfy":
        path = write_comfy_file(SD, tmp_path / "m.safetensors")
    elif fmt == "comfy_prefixed":
        path = write_comfy_file(SD, tmp_path / "m.safetensors", prefix=True)
    elif fmt == "diffusers":
        path = write_diffusers_folder(SD, CFG, tmp_path / "transformer")
    elif fmt == "diffusers_root":
        write_diffusers_folder(SD, CFG, tmp_path / "pipe" / "transformer")
        path = tmp_path / "pipe"
    else:
        path = write_pth(SD, tmp_path / "m.pth")
    ckpt = wan.inspect_dit(path)
    assert ckpt.kind == wan.ModelKind.I2V and config_of(ckpt) == dataclasses.asdict(CFG)
    dit, out = output_of(wan, path)
    loaded = dit.state_dict()
    assert set(loaded) == set(SD)  # translated to ComfyUI's (the official) names, nothing extra
    assert all(torch.equal(loaded[k], v) for k, v in SD.items()), fmt
    print(f"{fmt}: {rel_err(out, ref):.1e} of output std")
    assert rel_err(out, ref) < 2e-6, fmt


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16, torch.float8_e4m3fn, torch.float8_e5m2])
def test_reduced_precision_files_compute_with_the_files_values(tmp_path, wan, ref, dtype):
    path = write_comfy_file(SD, tmp_path / "m.safetensors", dtype=dtype)
    dit, out = output_of(wan, path)
    # Matrices stay as stored (fp8 included: not inflated); in an fp8 file everything else was
    # rounded to fp8 too and is kept in the compute dtype.
    assert dit.blocks[0].ffn[0].weight.dtype == dtype
    rounded = {k: v.to(dtype).float() for k, v in SD.items()}
    assert torch.allclose(out, forward(comfy_reference(rounded)), rtol=0, atol=1e-5 * float(ref.std()))


@pytest.mark.parametrize("fp8", [torch.float8_e4m3fn, torch.float8_e5m2])
def test_comfyui_scaled_fp8_computes_with_the_dequantised_weights(tmp_path, wan, ref, fp8):
    path = write_comfy_file(SD, tmp_path / "scaled.safetensors", scaled_fp8=fp8, prefix=True)
    ckpt = wan.inspect_dit(path)
    assert ckpt.scaled_fp8 == fp8 and "scaled" in ckpt.description
    dit, out = output_of(wan, path)
    assert dit.blocks[0].self_attn.q.weight.dtype == fp8  # kept as fp8 with its scale
    scaled = to_scaled_fp8(SD, fp8)
    scale_of = lambda k: scaled.get(k[: -len("weight")] + "scale_weight")  # noqa: E731
    dequantised = {k: v if scale_of(k) is None else scaled[k].float() * scale_of(k) for k, v in SD.items()}
    assert rel_err(out, forward(comfy_reference(dequantised))) < 1e-5
    err = rel_err(out, ref)
    # fp8 keeps 3 (e4m3) or 2 (e5m2) mantissa bits: a few percent per weight, averaged over layers.
    assert 1e-4 < err < (0.1 if fp8 == torch.float8_e4m3fn else 0.2), err


def test_weight_dtype_choice_converts_storage(tmp_path, wan, ref):
    path = write_comfy_file(SD, tmp_path / "m.safetensors")
    dit, out = output_of(wan, path, weight_dtype="fp8_e4m3fn")
    assert dit.blocks[0].self_attn.q.weight.dtype == torch.float8_e4m3fn
    assert dit.blocks[0].norm3.weight.dtype == torch.float32  # norms stay wide
    matrices_rounded = {k: v.to(torch.float8_e4m3fn).float() if v.ndim == 2 and k.endswith(".weight") else v
                        for k, v in SD.items()}
    assert rel_err(out, forward(comfy_reference(matrices_rounded))) < 1e-5
    assert 1e-4 < rel_err(out, ref) < 0.1
    dit, _ = output_of(wan, path, weight_dtype="bf16")
    assert dit.blocks[0].self_attn.q.weight.dtype == torch.bfloat16


def test_format_is_detected_from_contents_not_names(tmp_path, wan):
    dit = write_comfy_file(SD, tmp_path / "wan_2.1_vae.safetensors")
    assert wan.inspect_dit(dit).kind == wan.ModelKind.I2V
    save_file({"encoder.conv1.weight": torch.zeros(4, 3, 3, 3, 3)}, str(tmp_path / "wan2.2_t2v_high_noise_14B_fp16.safetensors"))
    with pytest.raises(wan.WanUserError, match=r"wan2.2_t2v_high_noise_14B_fp16.safetensors: not a Wan2.2 diffusion model.*VAE"):
        wan.load_expert(tmp_path / "wan2.2_t2v_high_noise_14B_fp16.safetensors")


def test_kind_follows_channels(wan):
    for kind in wan.ModelKind:
        cfg = tiny_config(kind, num_layers=1)
        assert cfg.kind.value == kind.value


def test_head_count_from_config_or_metadata(tmp_path, wan):
    cfg = tiny_config("t2v", dim=64, num_heads=2, num_layers=1)  # head_dim 32: a custom size
    sd = random_state_dict(cfg)
    with pytest.raises(wan.WanUserError, match="not a multiple of 128.*num_heads"):
        wan.load_expert(write_comfy_file(sd, tmp_path / "a.safetensors"))
    with_metadata = write_comfy_file(sd, tmp_path / "b.safetensors", metadata={"num_heads": "2"})
    assert config_of(wan.inspect_dit(with_metadata)) == dataclasses.asdict(cfg)
    assert config_of(wan.inspect_dit(write_official_folder(sd, cfg, tmp_path / "c"))) == dataclasses.asdict(cfg)
    dit = wan.load_expert(with_metadata).model.diffusion_model  # ComfyUI's model gets the head count
    assert dit.blocks[0].self_attn.num_heads == 2
    with torch.no_grad():
        x, ctx = random_inputs(cfg, frames=1, height=2, width=2)
        assert torch.allclose(dit(x, torch.tensor([10.0]), context=ctx), comfy_reference(sd, cfg)(x, torch.tensor([10.0]), ctx),
                              rtol=0, atol=1e-6)


# --- bad input ---------------------------------------------------------------------------------


def test_truncated_header(tmp_path, wan):
    path = write_comfy_file(SD, tmp_path / "cut.safetensors")
    path.write_bytes(path.read_bytes()[:5000])
    with pytest.raises(wan.WanUserError, match="cut.safetensors.*download it again"):
        wan.load_expert(path)


def test_corrupt_header(tmp_path, wan):
    path = tmp_path / "junk.safetensors"
    path.write_bytes((200).to_bytes(8, "little") + b"{not json" + b"\0" * 300)
    with pytest.raises(wan.WanUserError, match="junk.safetensors.*header"):
        wan.load_expert(path)


def test_missing_shard(tmp_path, wan):
    folder = write_official_folder(SD, CFG, tmp_path / "release", shards=3)
    (folder / "diffusion_pytorch_model-00002-of-00003.safetensors").unlink()
    with pytest.raises(wan.WanUserError, match="missing 1 of its 3 shards.*00002-of-00003"):
        wan.load_expert(folder)


def test_pth_that_is_not_a_plain_state_dict_is_never_unpickled(tmp_path, wan):
    class Payload:
        def __reduce__(self):
            return (exec, ("raise SystemExit('unpickled!')",))

    path = tmp_path / "evil.pth"
    torch.save({"patch_embedding.weight": Payload()}, str(path))
    with pytest.raises(wan.WanUserError, match="evil.pth.*plain state dicts"):
        wan.load_expert(path)


def test_incomplete_model(tmp_path, wan):
    sd = {k: v for k, v in SD.items() if not k.startswith("blocks.1.cross_attn")}
    with pytest.raises(wan.WanUserError, match="tensors of the Wan DiT are missing.*blocks.1.cross_attn"):
        wan.load_expert(write_comfy_file(sd, tmp_path / "partial.safetensors"))


def test_wrong_tensor_shape(tmp_path, wan):
    sd = dict(SD, **{"blocks.1.ffn.2.weight": torch.zeros(CFG.dim, CFG.ffn_dim + 8)})
    with pytest.raises(wan.WanUserError, match=r"damaged.safetensors: tensor blocks.1.ffn.2.weight has shape"):
        wan.load_expert(write_comfy_file(sd, tmp_path / "damaged.safetensors"))


def test_wan21_image_model_is_refused(tmp_path, wan):
    sd = dict(SD, **{"img_emb.proj.0.weight": torch.ones(4)})
    with pytest.raises(wan.WanUserError, match="Wan2.1 image-to-video"):
        wan.load_expert(write_comfy_file(sd, tmp_path / "w21.safetensors"))


def test_unknown_channel_count(tmp_path, wan):
    sd = dict(SD, **{"patch_embedding.weight": torch.zeros(CFG.dim, 20, 1, 2, 2)})
    with pytest.raises(wan.WanUserError, match="20 input and 16 output channels"):
        wan.load_expert(write_comfy_file(sd, tmp_path / "odd.safetensors"))


def test_bad_weight_dtype_name(tmp_path, wan):
    with pytest.raises(wan.WanUserError, match="weight_dtype 'int8'"):
        wan.load_expert(write_comfy_file(SD, tmp_path / "m.safetensors"), weight_dtype="int8")


def test_config_json_that_is_not_json(tmp_path, wan):
    folder = write_official_folder(SD, CFG, tmp_path / "rel")
    (folder / "config.json").write_text("{oops")
    with pytest.raises(wan.WanUserError, match="config.json: not valid JSON"):
        wan.load_expert(folder)
    (folder / "config.json").write_text(json.dumps({"num_heads": 2}))
    assert config_of(wan.inspect_dit(folder)) == dataclasses.asdict(CFG)
