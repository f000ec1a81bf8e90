"""Every VAE file format and dtype users have, config read from shapes, and clear errors."""

import pytest
import torch
from vae_factory import random_vae, write_vae

from wan_core.errors import WanUserError
from wan_core.vae import load_vae
from wan_core.vae.kinds import WAN21, WAN22

NAMES = {"comfy": "vae.safetensors", "official": "Wan_VAE.pth", "diffusers": "vae_diffusers"}


@pytest.mark.parametrize("fmt", ["comfy", "official", "diffusers"])
@pytest.mark.parametrize("kind", ["wan2.1", "wan2.2"])
def test_each_format_loads_the_same_weights_and_kind(tmp_path, kind, fmt):
    path = write_vae(tmp_path / NAMES[fmt], kind, fmt, seed=3)
    vae = load_vae(path)
    expected = random_vae(kind, seed=3)
    k = WAN21 if kind == "wan2.1" else WAN22
    assert (vae.kind, vae.z_dim, vae.stride) == (k.name, k.z_dim, k.stride)
    assert torch.equal(vae.latent_mean, torch.tensor(k.latent_mean)) and vae.latent_std.shape == (k.z_dim,)
    ours = vae.state_dict()
    assert ours.keys() == expected.state_dict().keys()
    assert all(torch.equal(ours[n], p) for n, p in expected.state_dict().items())


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
def test_half_precision_files_load_as_float32_by_default_or_in_their_dtype(tmp_path, dtype):
    path = write_vae(tmp_path / "half.safetensors", "wan2.2", "comfy", dtype=dtype, seed=1)
    vae = load_vae(path)
    assert vae.dtype == torch.float32
    stored = random_vae("wan2.2", seed=1).state_dict()["decoder.head.2.weight"].to(dtype)
    assert torch.equal(vae.state_dict()["decoder.head.2.weight"], stored.float())
    assert load_vae(path, dtype=dtype).dtype == dtype


def test_latent_statistics_are_comfyuis():
    from comfy_inprocess import comfy

    comfy()
    from comfy.latent_formats import Wan21, Wan22

    assert torch.allclose(torch.tensor(WAN21.latent_mean), Wan21().latents_mean.flatten())
    assert torch.allclose(torch.tensor(WAN22.latent_std), Wan22().latents_std.flatten())


def test_a_pth_holding_anything_but_tensors_is_refused(tmp_path):
    path = tmp_path / "evil_vae.pth"
    torch.save({"decoder.head.2.weight": torch.zeros(1), "note": WanUserError("x")}, path)
    with pytest.raises(WanUserError, match="evil_vae.pth: .*other than tensors"):
        load_vae(path)


def test_a_file_that_is_not_a_wan_vae_is_named(tmp_path):
    from safetensors.torch import save_file

    save_file({"blocks.0.self_attn.q.weight": torch.zeros(2, 2)}, str(tmp_path / "dit.safetensors"))
    with pytest.raises(WanUserError, match="dit.safetensors: not a Wan VAE"):
        load_vae(tmp_path / "dit.safetensors")


def test_a_truncated_vae_names_what_is_missing(tmp_path):
    from safetensors.torch import save_file

    sd = random_vae("wan2.1").state_dict()
    sd.pop("decoder.middle.1.proj.weight")
    save_file(sd, str(tmp_path / "cut.safetensors"))
    with pytest.raises(WanUserError, match="cut.safetensors: does not match a wan2.1 VAE .missing: decoder.middle.1"):
        load_vae(tmp_path / "cut.safetensors")
