"""Wan22ModelLoader in the real ComfyUI server: a tiny T2V pair placed under
models/diffusion_models loads as two native MODELs, one goes through a native LoRA loader, and
native ModelSave writes them out; the saved weights are checked against
the files (and the LoRA merge). Bad files fail with the file named, and the server keeps serving."""

import pytest
import torch
from safetensors.torch import load_file

from tests.dit_factory import random_state_dict, tiny_config, write_comfy_file, write_official_folder

pytestmark = pytest.mark.server

CFG = tiny_config("t2v", num_layers=1)
HIGH = random_state_dict(CFG, seed=31)
LOW = random_state_dict(CFG, seed=32)
G = torch.Generator().manual_seed(3)
UP, DOWN = torch.randn(CFG.dim, 2, generator=G) * 0.1, torch.randn(2, CFG.dim, generator=G) * 0.1
LORA_KEY = "blocks.0.cross_attn.k.weight"


def loader_node(model, low="none"):
    return {"class_type": "Wan22ModelLoader", "inputs": {"model": model, "low_noise_model": low, "weight_dtype": "default"}}


def saved_weights(server, prefix):
    folder = server.base_dir / "output" / "wan22_loader_test"
    (path,) = sorted(folder.glob(f"{prefix}_*.safetensors"))
    sd = load_file(str(path))
    return {k[len("model.diffusion_model."):]: v for k, v in sd.items() if k.startswith("model.diffusion_model.")}


def test_pair_loads_and_round_trips_through_native_nodes(comfy_server):
    models = comfy_server.models_dir("diffusion_models")
    write_comfy_file(HIGH, models / "srv_t2v_high.safetensors")
    write_comfy_file(LOW, models / "srv_t2v_low.safetensors", prefix=True)
    lora = {f"diffusion_model.{LORA_KEY[:-len('.weight')]}.lora_up.weight": UP,
            f"diffusion_model.{LORA_KEY[:-len('.weight')]}.lora_down.weight": DOWN}
    write_comfy_file(lora, comfy_server.models_dir("loras") / "srv_tiny_lora.safetensors")

    prompt = {
        "1": loader_node("srv_t2v_high.safetensors", "srv_t2v_low.safetensors"),
        "3": {"class_type": "LoraLoaderModelOnly",
              "inputs": {"model": ["1", 1], "lora_name": "srv_tiny_lora.safetensors", "strength_model": 0.5}},
        "6": {"class_type": "ModelSave", "inputs": {"model": ["1", 0], "filename_prefix": "wan22_loader_test/high"}},
        "7": {"class_type": "ModelSave", "inputs": {"model": ["3", 0], "filename_prefix": "wan22_loader_test/low"}},
    }
    comfy_server.run(prompt)
    high, low = saved_weights(comfy_server, "high"), saved_weights(comfy_server, "low")
    assert set(high) == set(HIGH) == set(low)
    assert all(torch.equal(high[k], HIGH[k]) for k in HIGH)
    merged = LOW[LORA_KEY] + 0.5 * UP @ DOWN
    assert torch.allclose(low[LORA_KEY], merged, atol=1e-6) and not torch.allclose(low[LORA_KEY], LOW[LORA_KEY])
    assert all(torch.equal(low[k], LOW[k]) for k in LOW if k != LORA_KEY)


def test_release_folder_is_offered_and_bad_inputs_fail_clearly(comfy_server):
    models = comfy_server.models_dir("diffusion_models")
    cfg5b = tiny_config("ti2v", num_layers=1)
    write_official_folder(random_state_dict(cfg5b), cfg5b, models / "srv_ti2v_5b_release")
    info = comfy_server.get_json("/object_info/Wan22ModelLoader")["Wan22ModelLoader"]
    spec = info["input"]["required"]["model"]
    choices = spec[1]["options"] if spec[0] == "COMBO" else spec[0]
    assert "srv_ti2v_5b_release/" in choices

    broken = write_comfy_file(HIGH, models / "srv_broken.safetensors")
    broken.write_bytes(broken.read_bytes()[:3000])
    error = comfy_server.run_expecting_error({"1": loader_node("srv_broken.safetensors"), **_sink("1")})
    assert "srv_broken.safetensors" in error and "download it again" in error

    write_comfy_file(HIGH, models / "srv_partner.safetensors")
    error = comfy_server.run_expecting_error(
        {"1": loader_node("srv_ti2v_5b_release/", "srv_partner.safetensors"), **_sink("1")}
    )
    assert "TI2V-5B model, which runs alone" in error

    # Still serving: the 5B release folder loads and goes through a native node.
    comfy_server.run({"1": loader_node("srv_ti2v_5b_release/"), **_sink("1", save=True)})
    saved = saved_weights(comfy_server, "ti2v")
    assert saved["head.head.weight"].shape == (4 * 48, cfg5b.dim)


def _sink(loader_id, save=False):
    """An output node that makes the loader run: native ModelSave of its model."""
    nodes = {}
    nodes["91"] = {"class_type": "ModelSave", "inputs": {"model": [loader_id, 0],
                                                           "filename_prefix": "wan22_loader_test/ti2v" if save else "wan22_loader_test/x"}}
    return nodes
