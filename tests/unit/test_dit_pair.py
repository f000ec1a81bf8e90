"""The loader node and the expert pair the sampler builds from its MODEL inputs, in-process: pairs from files and folders,
the single-expert and 5B cases, mismatches refused from the headers before any weights load,
and the round trip through native MODELs (ours and ComfyUI's own Wan model)."""

import logging

import pytest
import torch

from tests.comfy_inprocess import pack
from tests.dit_factory import random_state_dict, tiny_config, write_comfy_file, write_official_folder


@pytest.fixture(scope="module")
def wan(tmp_path_factory):
    pack()
    import comfyui_wan22.nodes.loader as loader
    import comfyui_wan22.wan_core.comfy_bridge.pair as pair
    import folder_paths

    root = tmp_path_factory.mktemp("diffusion_models")
    folder_paths.add_model_folder_path("diffusion_models", str(root))
    return loader, pair, root


def load(loader, pair_mod, model, low="none"):
    """The loader node's two MODEL outputs, as the sampler sees them (a pair)."""
    high, low_model = loader.Wan22ModelLoader.execute(model, low, "default").result
    return pair_mod.Wan22ModelPair.from_models(high, low_model)


def write(root, name, kind, seed=0, **cfg):
    cfg = tiny_config(kind, num_layers=1, **cfg)
    return write_comfy_file(random_state_dict(cfg, seed=seed), root / name)


def test_pair_from_two_files(wan):
    loader, pair_mod, root = wan
    write(root, "t2v_high.safetensors", "t2v", seed=1)
    write(root, "t2v_low.safetensors", "t2v", seed=2)
    pair = load(loader, pair_mod, "t2v_high.safetensors", "t2v_low.safetensors")
    assert pair.kind.value == "t2v" and pair.is_pair
    assert pair.defaults.boundary == 0.875 and pair.text_dim == 32
    assert (pair.high_name, pair.low_name) == ("t2v_high.safetensors", "t2v_low.safetensors")
    high_q = pair.high.model.diffusion_model.blocks[0].self_attn.q.weight
    low_q = pair.low.model.diffusion_model.blocks[0].self_attn.q.weight
    assert not torch.equal(high_q, low_q)


def test_release_folder_gives_the_pair_and_is_listed(wan):
    loader, pair_mod, root = wan
    for sub, seed in (("high_noise_model", 3), ("low_noise_model", 4)):
        cfg = tiny_config("i2v", num_layers=1)
        write_official_folder(random_state_dict(cfg, seed=seed), cfg, root / "Wan2.2-I2V-A14B" / sub, kind="i2v")
    choices = loader.model_choices()
    assert "Wan2.2-I2V-A14B/" in choices
    assert not any("diffusion_pytorch_model-" in c for c in choices)  # shards are not offered alone
    pair = load(loader, pair_mod, "Wan2.2-I2V-A14B/", "none")
    assert pair.kind.value == "i2v" and pair.is_pair
    assert pair.high.model.diffusion_model.patch_embedding.weight.shape[1] == 36  # noise + mask + image latent


def test_single_expert_runs_alone_and_says_so(wan, caplog):
    loader, pair_mod, root = wan
    write(root, "lone_low.safetensors", "t2v", seed=5)
    with caplog.at_level(logging.INFO):
        pair = load(loader, pair_mod, "lone_low.safetensors", "none")
    assert pair.low is None and pair.kind.value == "t2v"
    assert "runs every step as a single model" in caplog.text


def test_5b_with_a_partner_is_refused(wan):
    loader, pair_mod, root = wan
    write(root, "ti2v.safetensors", "ti2v")
    write(root, "other_ti2v.safetensors", "ti2v", seed=9)
    with pytest.raises(ValueError, match="ti2v.safetensors is the TI2V-5B model.*set low_noise_model to none"):
        loader.Wan22ModelLoader.execute("ti2v.safetensors", "other_ti2v.safetensors", "default")
    pair = load(loader, pair_mod, "ti2v.safetensors", "none")
    assert pair.kind.value == "ti2v" and pair.defaults.boundary is None


def test_mismatched_experts_are_refused_before_loading(wan, monkeypatch):
    loader, pair_mod, root = wan
    write(root, "k_t2v.safetensors", "t2v")
    write(root, "k_i2v.safetensors", "i2v")
    write(root, "k_t2v_wide.safetensors", "t2v", dim=384)
    loaded = []
    monkeypatch.setattr(pair_mod, "expert_from_checkpoint", lambda *a: loaded.append(a))
    with pytest.raises(ValueError, match="k_i2v.safetensors is a i2v expert but model k_t2v.safetensors is a t2v"):
        loader.Wan22ModelLoader.execute("k_t2v.safetensors", "k_i2v.safetensors", "default")
    with pytest.raises(ValueError, match="is a t2v model of dim 384.*dim 256.*pick the matching expert"):
        loader.Wan22ModelLoader.execute("k_t2v.safetensors", "k_t2v_wide.safetensors", "default")
    assert loaded == []


def test_missing_choice_is_a_clear_error(wan):
    loader, _, _ = wan
    with pytest.raises(ValueError, match="model 'gone.safetensors' is not in models/diffusion_models"):
        loader.Wan22ModelLoader.execute("gone.safetensors", "none", "default")


def test_outputs_are_plain_native_models(wan):
    loader, pair_mod, root = wan
    import comfy.model_patcher

    write(root, "rt_high.safetensors", "t2v", seed=1)
    write(root, "rt_low.safetensors", "t2v", seed=2)
    high, low = loader.Wan22ModelLoader.execute("rt_high.safetensors", "rt_low.safetensors", "default").result
    assert isinstance(high, comfy.model_patcher.ModelPatcher) and isinstance(low, comfy.model_patcher.ModelPatcher)
    # Clones (what every native patch node makes) still pair up, names and kind read from the models.
    again = pair_mod.Wan22ModelPair.from_models(high.clone(), low.clone())
    assert again.kind.value == "t2v" and again.high_name == "rt_high.safetensors"
    single, nothing = loader.Wan22ModelLoader.execute("rt_high.safetensors", "none", "default").result
    assert nothing is None and pair_mod.Wan22ModelPair.from_models(single).low is None


def test_pair_from_comfyui_native_wan_models(wan, tmp_path):
    _, pair_mod, _ = wan
    import comfy.sd

    # ComfyUI's detection assumes umT5's width, so these models take 4096-wide text.
    def native(name, **kw):
        return comfy.sd.load_diffusion_model(str(write(tmp_path, name, "i2v", text_dim=4096, **kw)))

    high, low = native("n_high.safetensors", seed=1), native("n_low.safetensors", seed=2)
    pair = pair_mod.Wan22ModelPair.from_models(high, low)
    assert pair.kind.value == "i2v" and pair.text_dim == 4096
    wide = native("n_wide.safetensors", dim=384)
    with pytest.raises(ValueError, match="pick the matching expert"):
        pair_mod.Wan22ModelPair.from_models(high, wide)
