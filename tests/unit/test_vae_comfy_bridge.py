"""The VAE as a comfy.model_management citizen: loaded through load_models_gpu for encode and
decode, listed in current_loaded_models, evictable like any model; results equal the plain model."""

import torch
from comfy_inprocess import pack
from vae_factory import random_vae, write_vae


def test_encode_and_decode_go_through_model_management(tmp_path):
    pack()
    import comfy.model_management as mm
    import comfy.ops
    from comfyui_wan22.wan_core.comfy_bridge.vae_patcher import load_comfy_vae

    path = write_vae(tmp_path / "bridge_vae.safetensors", "wan2.1", "comfy", seed=9)
    vae = load_comfy_vae(path)
    assert isinstance(vae.model.decoder.conv1, comfy.ops.disable_weight_init.Conv3d)
    pixels = torch.rand(1, 3, 5, 16, 24) * 2 - 1
    latent = vae.encode(pixels)
    assert any(m.model is vae.patcher for m in mm.current_loaded_models)
    reference = random_vae("wan2.1", seed=9)
    assert (latent - reference.encode(pixels)).abs().max() <= 1e-6
    chunks = list(vae.decode_iter(latent))
    assert [c.shape[2] for c in chunks] == [1, 4]
    assert (torch.cat(chunks, 2) - reference.decode(latent)).abs().max() <= 1e-6
    mm.unload_all_models()
    assert not any(m.model is vae.patcher for m in mm.current_loaded_models)
