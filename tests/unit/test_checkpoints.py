"""Every DiT checkpoint format loads the same weights to the same outputs (fp32 formats within
2e-6 of output std, reduced precision exactly as an fp32 model of the rounded weights), and every bad file
gives a WanUserError naming the file and saying what to do. Tiny random models (dim 256)."""

import json

import pytest
import torch
from safetensors.torch import save_file

from tests.dit_factory import (
    random_inputs,
    random_state_dict,
    tiny_config,
    write_comfy_file,
    write_diffusers_folder,
    write_official_folder,
    write_pth,
)
from wan_core.checkpoints import inspect_dit, load_dit
from wan_core.config import ModelKind
from wan_core.dit import WanDiT
from wan_core.errors import WanUserError

CFG = tiny_config("i2v")
SD = random_state_dict(CFG, seed=21)
X, CTX = random_inputs(CFG, frames=2, height=4, width=4)
T = torch.tensor([640.0])


def reference_output(sd=SD):
    model = WanDiT(CFG)
    model.load_state_dict({k: v.float() for k, v in sd.items()})
    with torch.no_grad():
        return model.eval()(X, T, CTX)


REF = reference_output()


def output_of(path, **kw):
    loaded = load_dit(path, **kw)
    with torch.no_grad():
        return loaded, loaded.model(X, T, CTX)


@pytest.mark.parametrize("fmt", ["official", "comfy", "comfy_prefixed", "diffusers", "diffusers_root", "pth"])
def test_every_full_precision_format_loads_identical_outputs(tmp_path, fmt):
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
    loaded, out = output_of(path)
    assert loaded.kind == ModelKind.I2V
    assert loaded.config == CFG
    # Same numbers up to float summation order: the matmul kernels differ with the weights'
    # memory alignment (a view into the file vs a fresh allocation); measured 8e-7 of std.
    assert float((out - REF).abs().max() / REF.std()) < 2e-6, fmt


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16, torch.float8_e4m3fn, torch.float8_e5m2])
def test_reduced_precision_files_compute_with_the_files_values(tmp_path, dtype):
    path = write_comfy_file(SD, tmp_path / "m.safetensors", dtype=dtype)
    loaded, out = output_of(path)
    # CPU compute is fp32 on the file's exact values: equal to an fp32 model of the rounded weights.
    rounded = {k: v.to(dtype).float() for k, v in SD.items()}
    assert torch.allclose(out, reference_output(rounded), rtol=0, atol=1e-5 * float(REF.std()))
    if dtype in (torch.float16, torch.bfloat16):
        assert loaded.model.blocks[0].ffn[0].weight.dtype == dtype  # kept as stored, not inflated


@pytest.mark.parametrize("fp8", [torch.float8_e4m3fn, torch.float8_e5m2])
def test_comfyui_scaled_fp8_matches_within_fp8_rounding(tmp_path, fp8):
    path = write_comfy_file(SD, tmp_path / "scaled.safetensors", scaled_fp8=fp8, prefix=True)
    ckpt = inspect_dit(path)
    assert ckpt.scaled_fp8 == fp8 and "scaled" in ckpt.description
    _, out = output_of(path)
    err = float((out - REF).abs().max() / REF.std())
    # fp8 keeps 3 (e4m3) or 2 (e5m2) mantissa bits: a few percent per weight, averaged over layers.
    assert err < (0.1 if fp8 == torch.float8_e4m3fn else 0.2), err
    assert err > 1e-4  # really quantised


def test_weight_dtype_choice_converts_storage(tmp_path):
    path = write_comfy_file(SD, tmp_path / "m.safetensors")
    loaded, out = output_of(path, weight_dtype="fp8_e4m3fn")
    assert loaded.model.blocks[0].self_attn.q.weight.dtype == torch.float8_e4m3fn
    assert loaded.model.blocks[0].norm3.weight.dtype == torch.float32  # norms stay wide
    assert float((out - REF).abs().max() / REF.std()) < 0.1
    loaded, out = output_of(path, weight_dtype="bf16")
    assert loaded.model.blocks[0].self_attn.q.weight.dtype == torch.bfloat16


def test_format_is_detected_from_contents_not_names(tmp_path):
    dit = write_comfy_file(SD, tmp_path / "wan_2.1_vae.safetensors")
    assert inspect_dit(dit).kind == ModelKind.I2V
    save_file({"encoder.conv1.weight": torch.zeros(4, 3, 3, 3, 3)}, str(tmp_path / "wan2.2_t2v_high_noise_14B_fp16.safetensors"))
    with pytest.raises(WanUserError, match=r"wan2.2_t2v_high_noise_14B_fp16.safetensors: not a Wan2.2 diffusion model.*VAE"):
        inspect_dit(tmp_path / "wan2.2_t2v_high_noise_14B_fp16.safetensors")


def test_kind_follows_channels():
    for kind in ModelKind:
        cfg = tiny_config(kind, num_layers=1)
        assert cfg.kind == kind


def test_head_count_from_config_or_metadata(tmp_path):
    cfg = tiny_config("t2v", dim=64, num_heads=2, num_layers=1)  # head_dim 32: a custom size
    sd = random_state_dict(cfg)
    with pytest.raises(WanUserError, match="not a multiple of 128.*num_heads"):
        inspect_dit(write_comfy_file(sd, tmp_path / "a.safetensors"))
    assert inspect_dit(write_comfy_file(sd, tmp_path / "b.safetensors", metadata={"num_heads": "2"})).config == cfg
    assert inspect_dit(write_official_folder(sd, cfg, tmp_path / "c")).config == cfg


# --- bad input ---------------------------------------------------------------------------------


def test_truncated_header(tmp_path):
    path = write_comfy_file(SD, tmp_path / "cut.safetensors")
    path.write_bytes(path.read_bytes()[:5000])
    with pytest.raises(WanUserError, match="cut.safetensors.*download it again"):
        load_dit(path)


def test_corrupt_header(tmp_path):
    path = tmp_path / "junk.safetensors"
    path.write_bytes((200).to_bytes(8, "little") + b"{not json" + b"\0" * 300)
    with pytest.raises(WanUserError, match="junk.safetensors.*header"):
        load_dit(path)


def test_missing_shard(tmp_path):
    folder = write_official_folder(SD, CFG, tmp_path / "release", shards=3)
    (folder / "diffusion_pytorch_model-00002-of-00003.safetensors").unlink()
    with pytest.raises(WanUserError, match="missing 1 of its 3 shards.*00002-of-00003"):
        load_dit(folder)


def test_pth_that_is_not_a_plain_state_dict_is_never_unpickled(tmp_path):
    class Payload:
        def __reduce__(self):
            return (exec, ("raise SystemExit('unpickled!')",))

    path = tmp_path / "evil.pth"
    torch.save({"patch_embedding.weight": Payload()}, str(path))
    with pytest.raises(WanUserError, match="evil.pth.*plain state dicts"):
        load_dit(path)


def test_incomplete_model(tmp_path):
    sd = {k: v for k, v in SD.items() if not k.startswith("blocks.1.cross_attn")}
    with pytest.raises(WanUserError, match="tensors of the Wan DiT are missing.*blocks.1.cross_attn"):
        load_dit(write_comfy_file(sd, tmp_path / "partial.safetensors"))


def test_wan21_image_model_is_refused(tmp_path):
    sd = dict(SD, **{"img_emb.proj.0.weight": torch.ones(4)})
    with pytest.raises(WanUserError, match="Wan2.1 image-to-video"):
        inspect_dit(write_comfy_file(sd, tmp_path / "w21.safetensors"))


def test_unknown_channel_count(tmp_path):
    sd = dict(SD, **{"patch_embedding.weight": torch.zeros(CFG.dim, 20, 1, 2, 2)})
    with pytest.raises(WanUserError, match="20 input and 16 output channels"):
        inspect_dit(write_comfy_file(sd, tmp_path / "odd.safetensors"))


def test_bad_weight_dtype_name(tmp_path):
    with pytest.raises(WanUserError, match="weight_dtype 'int8'"):
        load_dit(write_comfy_file(SD, tmp_path / "m.safetensors"), weight_dtype="int8")


def test_config_json_that_is_not_json(tmp_path):
    folder = write_official_folder(SD, CFG, tmp_path / "rel")
    (folder / "config.json").write_text("{oops")
    with pytest.raises(WanUserError, match="config.json: not valid JSON"):
        inspect_dit(folder)
    (folder / "config.json").write_text(json.dumps({"num_heads": 2}))
    assert inspect_dit(folder).config == CFG
