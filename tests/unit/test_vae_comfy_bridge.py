"""The pack's VAE is a native comfy.sd.VAE: loaded by the pack's loader from every format, set up
as native's own constructor sets up a Wan VAE, loaded through comfy.model_management for
streaming encode/decode, and refused with a clear error when it is not a Wan VAE of the latent's
kind."""

import pytest
import torch
from comfy_inprocess import comfy
from vae_factory import random_module, random_vae, vae_config, write_vae

comfy()
import comfy.model_management as mm  # noqa: E402
import comfy.sd  # noqa: E402

from wan_core.comfy_bridge import vae_patcher, vae_stream  # noqa: E402
from wan_core.errors import WanUserError  # noqa: E402

NAMES = {"comfy": "vae.safetensors", "official": "Wan_VAE.pth", "diffusers": "vae_diffusers"}


@pytest.mark.parametrize("fmt", ["comfy", "official", "diffusers"])
@pytest.mark.parametrize("kind", ["wan2.1", "wan2.2"])
def test_every_format_loads_into_a_native_vae_with_the_files_weights(tmp_path, kind, fmt):
    vae = vae_patcher.load_comfy_vae(write_vae(tmp_path / NAMES[fmt], kind, fmt, seed=3))
    assert isinstance(vae, comfy.sd.VAE)
    assert vae_stream.wan_vae_kind(vae).name == kind
    expected = random_module(kind, seed=3).state_dict()
    ours = vae.first_stage_model.state_dict()
    assert ours.keys() == expected.keys()
    assert all(torch.equal(ours[n], p) for n, p in expected.items())
    assert vae.latent_channels == (16 if kind == "wan2.1" else 48)


def _facts(vae, shape):
    return {
        "attributes": sorted(vars(vae)),
        "latent": (vae.latent_channels, vae.latent_dim, vae.output_channels),
        "ratios": (vae.spacial_compression_decode(), vae.spacial_compression_encode(),
                   vae.temporal_compression_decode(), vae.upscale_ratio[0](5), vae.downscale_ratio[0](17),
                   vae.upscale_index_formula, vae.downscale_index_formula),
        "dtypes": (vae.working_dtypes, vae.vae_dtype),
        "memory": (vae.memory_used_decode(shape, torch.float32), vae.memory_used_encode(shape, torch.float32)),
        "io": (vae.process_input(torch.tensor([0.25])).item(), vae.process_output(torch.tensor([3.0])).item()),
        "patcher": (vae.patcher.load_device, vae.patcher.offload_device, vae.patcher.model is vae.first_stage_model),
        "size": vae.model_size(),
    }


def test_a_vae_native_cannot_build_is_set_up_as_native_sets_up_one_it_can():
    # Native builds a Wan2.1 VAE of any width; the pack's own setup (used for Wan2.2 widths native
    # hard-codes) must give the same object on it.
    cfg = vae_config("wan2.1")
    sd = random_module("wan2.1", seed=2).state_dict()
    native = comfy.sd.VAE(sd=sd)
    ours = vae_patcher.wrap_module(cfg, random_module("wan2.1", seed=2))
    shape = (1, 16, 3, 6, 8)
    assert _facts(ours, shape) == _facts(native, shape)


def test_the_tiny_wan22_vae_is_comfyuis_module_at_the_files_widths(tmp_path):
    vae = vae_patcher.load_comfy_vae(write_vae(tmp_path / "tiny22.safetensors", "wan2.2", "comfy", seed=1))
    import comfy.ldm.wan.vae2_2

    assert isinstance(vae.first_stage_model, comfy.ldm.wan.vae2_2.WanVAE)
    assert vae_stream.wan_config(vae).enc_dim == 4 and vae.spacial_compression_decode() == 16
    assert vae.upscale_ratio[0](3) == 9 and vae.downscale_ratio[0](9) == 3


def test_encode_and_decode_go_through_model_management():
    vae = random_vae("wan2.1", seed=9)
    mm.unload_all_models()
    pixels = torch.rand(1, 3, 5, 16, 24) * 2 - 1
    latent = vae_stream.encode(vae, pixels)
    assert any(m.model is vae.patcher for m in mm.current_loaded_models)
    mm.unload_all_models()
    chunks = list(vae_stream.decode_iter(vae, latent))
    assert any(m.model is vae.patcher for m in mm.current_loaded_models)
    assert [c.shape[2] for c in chunks] == [1, 4]
    mm.unload_all_models()
    assert not any(m.model is vae.patcher for m in mm.current_loaded_models)


def test_a_vae_of_the_wrong_kind_is_named():
    wan21 = random_vae("wan2.1")
    with pytest.raises(WanUserError, match=r"samples: has 48 channels \(a wan2.2 latent\), but the vae is a wan2.1"):
        vae_stream.decode_iter(wan21, torch.zeros(1, 48, 2, 2, 2))
    with pytest.raises(WanUserError, match=r"vae: a .* VAE, not a Wan VAE"):
        vae_stream.decode_iter(comfy.sd.VAE(sd={"pixel_space_vae": torch.zeros(1)}), torch.zeros(1, 16, 2, 2, 2))
    with pytest.raises(WanUserError, match="start: a str, not a Wan VAE"):
        vae_stream.wan_vae_kind("not a vae", "start")
