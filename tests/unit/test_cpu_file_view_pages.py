"""An expert that computed from its file views on the CPU (too little RAM for a copy) holds the
file's pages in its RSS; unloading it gives them back, and the switch counts them as used.

Found on the real A14B fp8 pair (bench case a14b-real-fp8): with 14 GB free the high-noise
expert ran from its views, its 14.3 GB of pages stayed mapped, and the free-memory estimate (which
counts page cache as free) said the low-noise one fit beside it, so both files' pages piled up.
"""

from pathlib import Path

import pytest
import torch

from tests.comfy_inprocess import pack
from tests.dit_factory import random_inputs, random_state_dict, tiny_config, write_comfy_file

CFG = tiny_config("t2v", dim=512, num_layers=2, ffn_dim=1024)


@pytest.fixture(scope="module")
def wan(tmp_path_factory):
    pack()
    from comfyui_wan22.wan_core.comfy_bridge import dit_model, experts

    folder = tmp_path_factory.mktemp("views")
    high = write_comfy_file(random_state_dict(CFG, seed=5), folder / "high.safetensors")
    low = write_comfy_file(random_state_dict(CFG, seed=6), folder / "low.safetensors")
    return dit_model, experts, high, low


def mapped_rss(path: Path) -> int:
    """Bytes of `path`'s pages resident in this process (its mappings in /proc/self/smaps)."""
    total, inside = 0, False
    with open("/proc/self/smaps") as f:
        for line in f:
            first = line.split(maxsplit=1)[0]
            if "-" in first and not first.endswith(":"):  # a mapping's header line
                inside = line.rstrip().endswith(str(path))
            elif inside and first == "Rss:":
                total += int(line.split()[1]) * 1024
    return total


def forward(patcher):
    x, ctx = random_inputs(CFG)
    with torch.no_grad():
        return patcher.model.diffusion_model(x, torch.tensor([700.0]), context=ctx)


def load_on_a_full_machine(patcher, monkeypatch):
    """Loads through model management with too little free RAM for a copy: the views stay."""
    import comfy.model_management as mm

    with monkeypatch.context() as m:
        m.setattr(mm, "get_free_memory", lambda *args, **kwargs: 1024)
        mm.load_models_gpu([patcher])


def test_unloading_an_expert_that_ran_from_its_views_gives_the_pages_back(wan, monkeypatch):
    dit_model, experts, high, _ = wan
    patcher = dit_model.load_expert(high)
    load_on_a_full_machine(patcher, monkeypatch)
    before = forward(patcher)
    size = high.stat().st_size
    assert mapped_rss(high) > 0.9 * size  # computing read every weight through the map
    assert experts.unload(patcher)
    assert mapped_rss(high) < 0.05 * size
    torch.testing.assert_close(forward(patcher), before, rtol=0, atol=0)  # the views still read the file


def test_the_switch_counts_the_outgoing_views_as_used(wan, monkeypatch):
    import comfy.model_management as mm

    dit_model, experts, high, low = wan
    outgoing, incoming = dit_model.load_expert(high), dit_model.load_expert(low)
    load_on_a_full_machine(outgoing, monkeypatch)
    forward(outgoing)
    views = high.stat().st_size
    needed = incoming.model_size() + mm.minimum_inference_memory()
    # Free memory that fits the incoming expert only while the outgoing one's pages count as free.
    monkeypatch.setattr(mm, "get_free_memory", lambda *args, **kwargs: needed + views // 2)
    assert experts.make_room_for(incoming, outgoing)
    assert not any(p is outgoing for p in experts.loaded_patchers())
    assert mapped_rss(high) < 0.05 * views
    # With room for both, counted honestly, the outgoing expert stays.
    load_on_a_full_machine(outgoing, monkeypatch)
    monkeypatch.setattr(mm, "get_free_memory", lambda *args, **kwargs: needed + 2 * views)
    assert not experts.make_room_for(incoming, outgoing)
    experts.unload(outgoing)
