"""An expert computing on the CPU holds its weights in process memory, not as views of the file's
memory map (file pages are dropped under memory pressure and re-read every step: the real 5B's
step was 2x native's). Loading copies them off the file, unloading returns to the file views."""

import logging
from pathlib import Path

import pytest
import torch
from safetensors.torch import save_file

from tests.comfy_inprocess import pack
from tests.dit_factory import (
    random_inputs,
    random_state_dict,
    tiny_config,
    write_comfy_file,
    write_official_folder,
)

CFG = tiny_config("ti2v")


@pytest.fixture(scope="module")
def wan():
    pack()
    import comfyui_wan22.wan_core as wan_core
    import comfyui_wan22.wan_core.comfy_bridge.dit_model  # noqa: F401
    import comfyui_wan22.wan_core.comfy_bridge.experts  # noqa: F401
    import comfyui_wan22.wan_core.weights  # noqa: F401

    return wan_core


def file_views(patcher, path: Path) -> int:
    """How many of the DiT's tensors are views of the file's memory map (the map is one storage
    of the file's whole size)."""
    size = path.stat().st_size
    return sum(t.untyped_storage().nbytes() == size for t in patcher.model.diffusion_model.state_dict().values())


def forward(patcher, x, ctx):
    with torch.no_grad():
        return patcher.model.diffusion_model(x, torch.tensor([[0.0, 700.0]]), context=ctx)


def rss_file_kb() -> int:
    for line in open("/proc/self/status"):
        if line.startswith("RssFile:"):
            return int(line.split()[1])
    raise OSError("no RssFile")


def test_read_copy_is_an_owned_copy_read_around_the_map(tmp_path, wan):
    weights = wan.weights
    g = torch.Generator().manual_seed(0)
    tensors = {
        "big": torch.randn(4096, 4096, generator=g).bfloat16(),  # 32 MiB
        "scalar": torch.tensor(0.25),
        "odd": torch.randn(3, 5, generator=g).half(),
    }
    save_file(tensors, str(tmp_path / "w.safetensors"))
    sf = weights.open_state_dict(tmp_path / "w.safetensors")
    views = {k: sf[k] for k in tensors}
    try:
        before = rss_file_kb()
    except OSError:
        before = None
    for key, view in views.items():
        assert sf.holds(view) and weights.file_holding(sf, view) is sf
        copy = sf.read_copy(view)
        assert copy.dtype == view.dtype and copy.shape == view.shape
        assert torch.equal(copy, tensors[key])
        assert not sf.holds(copy) and weights.file_holding(sf, copy) is None
    if before is not None:  # read with file reads: the 32 MiB never mapped into this process
        assert rss_file_kb() - before < 4096

    renamed = weights.RenamedStateDict(sf, {"renamed": "big"})
    assert weights.file_holding(renamed, renamed["renamed"]) is sf
    assert weights.file_holding(sf, views["big"].clone()) is None
    assert weights.file_holding(sf, views["big"].t()) is None  # not contiguous: never copied as a block


def test_file_holding_finds_the_shard(tmp_path, wan):
    weights = wan.weights
    sd = random_state_dict(CFG, seed=2)
    sharded = weights.open_state_dict(write_official_folder(sd, CFG, tmp_path / "m", shards=2, kind="ti2v"))
    assert isinstance(sharded, weights.ShardedStateDict)
    for key in ("patch_embedding.weight", "head.modulation"):
        view = sharded[key]
        part = weights.file_holding(sharded, view)
        assert part is not None and part.holds(view) and key in part
        assert torch.equal(part.read_copy(view), sd[key])


def test_loading_on_cpu_copies_off_the_file_and_unloading_returns(tmp_path, wan):
    import comfy.model_management as mm

    path = write_comfy_file(random_state_dict(CFG, seed=3), tmp_path / "m.safetensors", dtype=torch.bfloat16)
    patcher = wan.comfy_bridge.dit_model.load_expert(path)
    total = len(patcher.model.diffusion_model.state_dict())
    assert file_views(patcher, path) == total  # idle: all views of the file, no RAM of its own
    x, ctx = random_inputs(CFG, frames=2, height=4, width=4)
    from_file = forward(patcher, x, ctx)

    mm.load_models_gpu([patcher])
    assert file_views(patcher, path) == 0
    assert torch.equal(forward(patcher, x, ctx), from_file)  # the same bytes, bit for bit

    assert wan.comfy_bridge.experts.unload(patcher)
    assert file_views(patcher, path) == total  # the copies are given back
    assert torch.equal(forward(patcher, x, ctx), from_file)


def test_a_lora_patched_clone_loads_and_restores(tmp_path, wan):
    import comfy.model_management as mm
    import comfy.sd

    sd = random_state_dict(CFG, seed=5)
    path = write_comfy_file(sd, tmp_path / "m.safetensors", dtype=torch.bfloat16)
    patcher = wan.comfy_bridge.dit_model.load_expert(path)
    total = len(patcher.model.diffusion_model.state_dict())
    g = torch.Generator().manual_seed(0)
    up, down = torch.randn(CFG.dim, 4, generator=g) * 0.1, torch.randn(4, CFG.dim, generator=g) * 0.1
    lora = {
        "diffusion_model.blocks.0.self_attn.q.lora_up.weight": up,
        "diffusion_model.blocks.0.self_attn.q.lora_down.weight": down,
    }
    patched, _ = comfy.sd.load_lora_for_models(patcher, None, lora, 0.7, 0)
    q = lambda: patched.model.diffusion_model.blocks[0].self_attn.q.weight  # noqa: E731
    file_q = q().clone()

    mm.load_models_gpu([patched])
    assert file_views(patched, path) == 0
    expected = (sd["blocks.0.self_attn.q.weight"] + 0.7 * up @ down).bfloat16()
    assert (q().float() - expected.float()).abs().max() <= 2 * expected.float().abs().max() * 2**-8

    assert wan.comfy_bridge.experts.unload(patched)
    assert file_views(patched, path) == total
    assert torch.equal(q(), file_q)


def test_too_little_free_ram_keeps_the_file_views(tmp_path, wan, monkeypatch, caplog):
    import comfy.model_management as mm

    path = write_comfy_file(random_state_dict(CFG, seed=7), tmp_path / "m.safetensors", dtype=torch.bfloat16)
    patcher = wan.comfy_bridge.dit_model.load_expert(path)
    monkeypatch.setattr(mm, "get_free_memory", lambda *args, **kwargs: 1024)  # a full machine
    with caplog.at_level(logging.WARNING):
        mm.load_models_gpu([patcher])
    assert file_views(patcher, path) == len(patcher.model.diffusion_model.state_dict())
    assert "stay memory-mapped" in caplog.text
    wan.comfy_bridge.experts.unload(patcher)
