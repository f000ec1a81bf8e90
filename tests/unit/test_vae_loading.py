"""Reading VAE files: dtypes, the config read from shapes, and clear errors naming the file. (Every
format into a native VAE: test_vae_comfy_bridge.py.)"""

import pytest
import torch
from comfy_inprocess import comfy
from vae_factory import random_module, vae_config, write_vae

comfy()
from wan_core.comfy_bridge.vae_patcher import load_comfy_vae  # noqa: E402
from wan_core.errors import WanUserError  # noqa: E402
from wan_core.vae import read_vae_state_dict  # noqa: E402
from wan_core.vae.kinds import WAN21, WAN22  # noqa: E402


@pytest.mark.parametrize("kind", ["wan2.1", "wan2.2"])
def test_the_config_is_read_from_the_shapes(tmp_path, kind):
    _, cfg, name = read_vae_state_dict(write_vae(tmp_path / "v.safetensors", kind, "comfy"))
    assert cfg == vae_config(kind) and name == "v.safetensors"
    assert not cfg.is_release_size


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
def test_half_precision_files_load_as_float32_on_a_cpu_or_in_the_dtype_asked(tmp_path, dtype):
    path = write_vae(tmp_path / "half.safetensors", "wan2.2", "comfy", dtype=dtype, seed=1)
    vae = load_comfy_vae(path)
    assert vae.vae_dtype == torch.float32 and vae.first_stage_model.decoder.head[2].weight.dtype == torch.float32
    stored = random_module("wan2.2", seed=1).state_dict()["decoder.head.2.weight"].to(dtype)
    assert torch.equal(vae.first_stage_model.state_dict()["decoder.head.2.weight"], stored.float())
    assert load_comfy_vae(path, dtype=dtype).first_stage_model.decoder.head[2].weight.dtype == dtype


def test_latent_statistics_are_comfyuis():
    from comfy.latent_formats import Wan21, Wan22

    assert torch.allclose(torch.tensor(WAN21.latent_mean), Wan21().latents_mean.flatten())
    assert torch.allclose(torch.tensor(WAN22.latent_std), Wan22().latents_std.flatten())


def test_a_pth_holding_anything_but_tensors_is_refused(tmp_path):
    path = tmp_path / "evil_vae.pth"
    torch.save({"decoder.head.2.weight": torch.zeros(1), "note": WanUserError("x")}, path)
    with pytest.raises(WanUserError, match="evil_vae.pth: .*other than tensors"):
        load_comfy_vae(path)


def test_a_file_that_is_not_a_wan_vae_is_named(tmp_path):
    from safetensors.torch import save_file

    save_file({"blocks.0.self_attn.q.weight": torch.zeros(2, 2)}, str(tmp_path / "dit.safetensors"))
    with pytest.raises(WanUserError, match="dit.safetensors: not a Wan VAE"):
        load_comfy_vae(tmp_path / "dit.safetensors")


def test_a_truncated_vae_names_what_is_missing(tmp_path):
    from safetensors.torch import save_file

    sd = random_module("wan2.1").state_dict()
    sd.pop("decoder.middle.1.proj.weight")
    save_file(sd, str(tmp_path / "cut.safetensors"))
    with pytest.raises(WanUserError, match="cut.safetensors: does not match a wan2.1 VAE .missing: decoder.middle.1"):
        load_comfy_vae(tmp_path / "cut.safetensors")
