"""wan_core.loras on its own (no ComfyUI): every Wan LoRA layout maps onto the same patches of a
tiny DiT's state-dict names, counts are exact, foreign and pickled files are refused with a reason."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from dit_factory import random_state_dict, state_dict_shapes, tiny_config  # noqa: E402
from lora_factory import LAYOUTS, applied_tensor_count, merge_by_hand, random_lora, sd_unet_lora, write_lora  # noqa: E402

from wan_core.errors import WanUserError  # noqa: E402
from wan_core.loras import match_lora, read_lora_file  # noqa: E402

CFG = tiny_config("t2v")
MODEL_SHAPES = {"diffusion_model." + k: s for k, s in state_dict_shapes(CFG).items()}


def merged_with(match, state_dict, strength):
    out = {k: v.float().clone() for k, v in state_dict.items()}
    for key, patch in match.patches.items():
        name = key[len("diffusion_model."):]
        out[name] += strength * patch.delta(out[name].shape)
    return out


@pytest.mark.parametrize("layout", list(LAYOUTS))
def test_every_layout_gives_the_hand_merged_weights(layout, tmp_path):
    content = random_lora(CFG, seed=3)
    path = write_lora(content, tmp_path / f"{layout}.safetensors", layout)
    match = match_lora(read_lora_file(path), MODEL_SHAPES, path.name)

    assert match.unmatched == []
    assert len(match.applied) == applied_tensor_count(content, layout) == match.total
    base = random_state_dict(CFG, seed=1)
    expected_content = content.with_alpha(LAYOUTS[layout][3])
    if not LAYOUTS[layout][6]:
        expected_content = expected_content.without_modulation()
    expected = merge_by_hand(base, expected_content, 0.7)
    ours = merged_with(match, base, 0.7)
    changed = 0
    for key in base:
        assert torch.allclose(ours[key], expected[key], atol=1e-6, rtol=0), key
        changed += not torch.equal(expected[key], base[key].float())
    assert changed == len(match.patches) >= 30  # every patch changes its tensor


def test_diff_m_lands_on_the_block_modulation(tmp_path):
    content = random_lora(CFG, seed=4)
    path = write_lora(content, tmp_path / "l.safetensors", "lightx2v_lora_AB")
    match = match_lora(read_lora_file(path), MODEL_SHAPES, path.name)
    patch = match.patches["diffusion_model.blocks.1.modulation"]
    assert torch.equal(patch.diff, content.modulation["blocks.1"])


def test_wan21_image_branch_keys_are_reported_unmatched(tmp_path):
    content = random_lora(CFG, seed=5)
    extra = {
        "diffusion_model.img_emb.proj.1.lora_down.weight": torch.randn(4, 1280),
        "diffusion_model.img_emb.proj.1.lora_up.weight": torch.randn(256, 4),
        "diffusion_model.blocks.0.cross_attn.k_img.lora_down.weight": torch.randn(4, 256),
        "diffusion_model.blocks.0.cross_attn.k_img.lora_up.weight": torch.randn(256, 4),
    }
    path = write_lora(content, tmp_path / "wan21_i2v_14b.safetensors", "comfy_lora_down", extra=extra)
    match = match_lora(read_lora_file(path), MODEL_SHAPES, path.name)
    assert sorted(match.unmatched) == sorted(extra)
    assert len(match.applied) == applied_tensor_count(content, "comfy_lora_down")


def test_a_lora_of_another_size_is_unmatched_by_shape(tmp_path):
    big = tiny_config("t2v", dim=384, num_heads=3)
    path = write_lora(random_lora(big, seed=6), tmp_path / "wan21_1p3b.safetensors", "comfy_lora_down")
    match = match_lora(read_lora_file(path), MODEL_SHAPES, path.name)
    # Only the head's bias (64 = 4 x 16 output channels at any width) has the model's shape.
    assert match.applied == ["diffusion_model.head.head.diff_b"]
    assert len(match.shape_mismatches) == match.total - 1
    assert "another size" in match.guess()


def test_an_sd_unet_lora_matches_nothing_and_is_recognised(tmp_path):
    path = sd_unet_lora(tmp_path / "sdxl_style.safetensors")
    match = match_lora(read_lora_file(path), MODEL_SHAPES, path.name)
    assert match.applied == [] and len(match.unmatched) == 9
    assert "SD1.x/SDXL UNet" in match.guess()


@pytest.mark.parametrize("suffix", [".ckpt", ".pt", ".pth"])
def test_pickled_loras_are_refused_with_the_reason(suffix, tmp_path):
    path = tmp_path / f"lora{suffix}"
    torch.save({"a": torch.zeros(1)}, path)
    with pytest.raises(WanUserError, match=rf"lora\{suffix}.*pickle.*\.safetensors"):
        read_lora_file(path)
