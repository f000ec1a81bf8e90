"""Weights that are views of a weight file are never page-locked, and an expert that computed on
another device goes back to its file views when it is unloaded (no host RAM held while idle).

No GPU here: ComfyUI's pin call is replaced by a recorder (what partial loading on a GPU calls for
every weight it leaves on the host), and the device move by what `.to("cpu")` from a GPU leaves
behind (fresh host copies of every weight)."""

from pathlib import Path

import pytest
import torch

from tests.comfy_inprocess import pack
from tests.dit_factory import random_inputs, random_state_dict, tiny_config, write_comfy_file

CFG = tiny_config("t2v", num_layers=1)


@pytest.fixture(scope="module")
def wan(tmp_path_factory):
    pack()
    from comfyui_wan22.wan_core.comfy_bridge import dit_model
    from comfyui_wan22.wan_core.weights import open_state_dict

    path = write_comfy_file(random_state_dict(CFG, seed=5), tmp_path_factory.mktemp("fb") / "expert.safetensors")
    return dit_model, open_state_dict, path


def is_file_view(t: torch.Tensor, path: Path) -> bool:
    """A view of the file's memory map (the map is one storage of the whole file's size)."""
    return t.untyped_storage().nbytes() == path.stat().st_size


def weights(patcher) -> dict[str, torch.Tensor]:
    return patcher.model.diffusion_model.state_dict(keep_vars=True)


def forward(patcher):
    x, ctx = random_inputs(CFG)
    with torch.no_grad():
        return patcher.model.diffusion_model(x, torch.tensor([700.0]), context=ctx)


def test_partial_loading_never_pins_a_view_of_the_file(wan, monkeypatch):
    import comfy.model_management as mm

    dit_model, _, path = wan
    patcher = dit_model.load_expert(path).clone()  # clones (LoRA, patch nodes) keep the behaviour
    before = forward(patcher)
    assert all(is_file_view(t, path) for t in weights(patcher).values())
    pinned = []
    monkeypatch.setattr(mm, "pin_memory", lambda t: pinned.append(t) or True)
    for key in patcher.model_state_dict():  # what partial loading does for each offloaded weight
        patcher.pin_weight_to_device(key)
    assert len(pinned) >= len(weights(patcher)) > 0  # every DiT weight (and the model-sampling tables)
    assert not any(is_file_view(t, path) for t in pinned)
    torch.testing.assert_close(forward(patcher), before, rtol=0, atol=0)


def test_an_expert_unloaded_from_another_device_returns_to_its_file_views(wan):
    dit_model, _, path = wan
    patcher = dit_model.load_expert(path)
    before = forward(patcher)
    # What unloading from a GPU leaves on the host before the detach callbacks run: every weight
    # a fresh host copy (model.to(offload_device) after the weights were on the device).
    for t in weights(patcher).values():
        t.data = t.data.clone()
    assert not any(is_file_view(t, path) for t in weights(patcher).values())
    patcher.detach(unpatch_all=True)
    assert all(is_file_view(t, path) for t in weights(patcher).values())
    torch.testing.assert_close(forward(patcher), before, rtol=0, atol=0)


def test_a_converted_weight_is_not_swapped_back(wan):
    dit_model, _, path = wan
    patcher = dit_model.load_expert(path)
    name, t = next(iter(weights(patcher).items()))
    t.data = t.data.to(torch.float16)  # something changed its dtype: not the file's content any more
    patcher.detach(unpatch_all=True)
    assert weights(patcher)[name].dtype == torch.float16
