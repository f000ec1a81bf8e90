"""Wan22LoraLoader in ComfyUI's runtime (in-process, CPU, fp32, tiny random T2V pair).

- For every Wan LoRA layout: the pack's sampler on the LoRA'd pair equals the same run on weights
  merged by hand in fp32 (W + strength * alpha/rank * up @ down; diffs added), max abs error
  <= 1e-5 of the latent's std; a guard shows the high LoRA alone and the low LoRA alone each
  change the result far beyond that.
- Native LoraLoaderModelOnly on the layouts native reads gives the same latents as the node (and on
  a lightx2v file with diff_m keys it does not: native drops them).
- An SD-style LoRA is refused naming the file and what it is for; a partial match warns with the
  count and examples; lora_low with one model is an error; cfg 1 runs one DiT evaluation per step.
"""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import comfy_inprocess  # noqa: E402
from dit_factory import random_state_dict, tiny_config, write_comfy_file  # noqa: E402
from lora_factory import (  # noqa: E402
    LAYOUTS,
    NATIVE_LAYOUTS,
    applied_tensor_count,
    merge_by_hand,
    random_lora,
    sd_unet_lora,
    write_lora,
)

TOLERANCE = 1e-5  # max abs error / latent std
LATENT = (3, 4, 6)
STRENGTH_HIGH, STRENGTH_LOW = 0.8, 1.3

comfy_inprocess.pack()

import comfy.model_management as mm  # noqa: E402
import folder_paths  # noqa: E402
from comfyui_wan22.nodes.lora import Wan22LoraLoader  # noqa: E402
from comfyui_wan22.nodes.sampler import Wan22Sampler  # noqa: E402
from comfyui_wan22.wan_core.comfy_bridge.dit_model import load_expert  # noqa: E402
from comfyui_wan22.wan_core.comfy_bridge.experts import HIGH, LOW  # noqa: E402
from comfyui_wan22.wan_core.comfy_bridge.sampling import RunSettings  # noqa: E402
from comfyui_wan22.wan_core.errors import WanUserError  # noqa: E402

CFG = tiny_config("t2v")
# 6 steps at shift 5, boundary 0.9: 3 high-noise then 3 low-noise steps, real CFG on both.
RUN = RunSettings(steps=6, cfg_high=3.5, cfg_low=3.0, shift=5.0, boundary=0.9, sampler_name="wan_unipc",
                  scheduler="wan", denoise=1.0, seed=7)


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    root = tmp_path_factory.mktemp("lora_world")
    loras = root / "loras"
    loras.mkdir()
    folder_paths.add_model_folder_path("loras", str(loras), is_default=True)
    base = {name: random_state_dict(CFG, seed=20 + i) for i, name in enumerate((HIGH, LOW))}
    paths = {name: write_comfy_file(sd, root / f"{name}.safetensors") for name, sd in base.items()}
    experts = {name: load_expert(p) for name, p in paths.items()}
    g = torch.Generator().manual_seed(5)
    positive = [[torch.randn(1, 7, CFG.text_dim, generator=g), {}]]
    negative = [[torch.randn(1, 7, CFG.text_dim, generator=g), {}]]
    return dict(root=root, loras=loras, base=base, experts=experts, cond=(positive, negative),
                content={HIGH: random_lora(CFG, seed=1), LOW: random_lora(CFG, seed=2)})


def run(world, experts, settings=RUN):
    """The pack's sampler node on `experts` (model, and low_noise_model when LOW is there)."""
    positive, negative = world["cond"]
    latent = {"samples": torch.zeros(1, 16, *LATENT)}
    out = Wan22Sampler.execute(
        model=experts[HIGH], low_noise_model=experts.get(LOW), positive=positive, negative=negative,
        latent=latent, seed=settings.seed, steps=settings.steps, use_release_defaults=False,
        cfg=settings.cfg_high, cfg_low_noise=settings.cfg_low, shift=settings.shift,
        boundary=settings.boundary if settings.boundary is not None else 0.875,
        sampler_name=settings.sampler_name, scheduler=settings.scheduler, denoise=settings.denoise,
    )
    summary = out.ui["wan22_sampler"][0]
    assert summary["switch_step"] == 3 or settings is not RUN, summary
    return out.result[0]["samples"]


def error(ours, reference):
    value = float((ours - reference).abs().max() / reference.std())
    print(f"max abs error / latent std: {value:.2e}")
    return value


def node(world, lora_high="none", lora_low="none", strength_high=STRENGTH_HIGH, strength_low=STRENGTH_LOW,
         pair=True):
    out = Wan22LoraLoader.execute(
        model=world["experts"][HIGH], low_noise_model=world["experts"][LOW] if pair else None,
        lora_high=lora_high, strength_high=strength_high, lora_low=lora_low, strength_low=strength_low,
    )
    return out.result, out.ui["wan22_lora"][0]


def write_pair(world, layout):
    names = {}
    for expert in (HIGH, LOW):
        names[expert] = f"{layout}_{expert}.safetensors"
        write_lora(world["content"][expert], world["loras"] / names[expert], layout)
    return names


def merged_experts(world, layout, high=True, low=True):
    _, _, _, with_alpha, _, _, with_diff_m = LAYOUTS[layout]
    experts = {}
    for expert, strength, on in ((HIGH, STRENGTH_HIGH, high), (LOW, STRENGTH_LOW, low)):
        content = world["content"][expert].with_alpha(with_alpha)
        if not with_diff_m:
            content = content.without_modulation()
        sd = merge_by_hand(world["base"][expert], content, strength) if on else world["base"][expert]
        experts[expert] = load_expert(write_comfy_file(sd, world["root"] / f"merged_{layout}_{expert}_{on}.safetensors"))
    return experts


@pytest.fixture(scope="module")
def base_latent(world):
    return run(world, world["experts"])


@pytest.mark.parametrize("layout", list(LAYOUTS))
def test_lora_pair_equals_hand_merged_weights(layout, world, base_latent):
    names = write_pair(world, layout)
    (high, low), ui = node(world, names[HIGH], names[LOW])
    ours = run(world, {HIGH: high, LOW: low})
    reference = run(world, merged_experts(world, layout))
    assert error(ours, reference) <= TOLERANCE

    count = applied_tensor_count(world["content"][HIGH], layout)
    assert ui["warnings"] == []
    assert ui["applied"] == [
        f"high-noise expert: {names[HIGH]} at {STRENGTH_HIGH:g}: {count}/{count} tensors applied",
        f"low-noise expert: {names[LOW]} at {STRENGTH_LOW:g}: {count}/{count} tensors applied",
    ]
    # Guard: each expert's LoRA alone changes the result far beyond the tolerance.
    (high_only, low_plain), _ = node(world, names[HIGH], "none")
    (high_plain, low_only), _ = node(world, "none", names[LOW])
    assert low_plain is world["experts"][LOW] and high_plain is world["experts"][HIGH]
    assert error(run(world, {HIGH: high_only, LOW: low_plain}), base_latent) > 100 * TOLERANCE
    assert error(run(world, {HIGH: high_plain, LOW: low_only}), base_latent) > 100 * TOLERANCE


def native_lora(model, name, strength):
    import nodes as comfy_nodes  # ComfyUI's nodes.py (its directory is first on sys.path)

    return comfy_nodes.LoraLoaderModelOnly().load_lora_model_only(model, name, strength)[0]


@pytest.mark.parametrize("layout", NATIVE_LAYOUTS)
def test_native_lora_loader_gives_the_same_numbers_on_layouts_it_reads(layout, world):
    names = write_pair(world, layout)
    (high, low), _ = node(world, names[HIGH], names[LOW])
    native = {HIGH: native_lora(world["experts"][HIGH], names[HIGH], STRENGTH_HIGH),
              LOW: native_lora(world["experts"][LOW], names[LOW], STRENGTH_LOW)}
    assert error(run(world, {HIGH: high, LOW: low}), run(world, native)) <= TOLERANCE


def test_native_drops_diff_m_where_the_node_applies_it(world):
    names = write_pair(world, "lightx2v_lora_AB")
    (high, low), _ = node(world, names[HIGH], names[LOW])
    native = {HIGH: native_lora(world["experts"][HIGH], names[HIGH], STRENGTH_HIGH),
              LOW: native_lora(world["experts"][LOW], names[LOW], STRENGTH_LOW)}
    assert error(run(world, native), run(world, {HIGH: high, LOW: low})) > 100 * TOLERANCE


def test_patches_stack_with_another_lora_node(world):
    """The node's clone keeps earlier patches: native LoRA first, then ours, equals both merged."""
    names = write_pair(world, "comfy_no_diff_m")
    stacked_high = native_lora(world["experts"][HIGH], names[HIGH], 0.5)
    high = Wan22LoraLoader.execute(model=stacked_high, low_noise_model=None, lora_high=names[HIGH],
                                   strength_high=0.5, lora_low="none", strength_low=1.0).result[0]
    once = Wan22LoraLoader.execute(model=world["experts"][HIGH], low_noise_model=None, lora_high=names[HIGH],
                                   strength_high=1.0, lora_low="none", strength_low=1.0).result[0]
    single = RunSettings(**{**RUN.__dict__, "boundary": None})
    assert error(run(world, {HIGH: high}, single), run(world, {HIGH: once}, single)) <= TOLERANCE


def test_an_sd_lora_is_refused_naming_the_file(world):
    sd_unet_lora(world["loras"] / "sdxl_detail.safetensors")
    with pytest.raises(WanUserError, match=r"sdxl_detail\.safetensors.*SD1\.x/SDXL UNet"):
        node(world, "sdxl_detail.safetensors", "none")


def test_a_partial_match_warns_with_count_and_examples(world, caplog):
    extra = {f"diffusion_model.img_emb.proj.{i}.lora_down.weight": torch.randn(4, 8) for i in range(4)}
    write_lora(world["content"][HIGH], world["loras"] / "wan21_i2v.safetensors", "comfy_lora_down", extra=extra)
    with caplog.at_level("WARNING"):
        _, ui = node(world, "wan21_i2v.safetensors", "none")
    total = applied_tensor_count(world["content"][HIGH], "comfy_lora_down") + 4
    (warning,) = ui["warnings"]
    assert warning.startswith(f"high-noise expert: wan21_i2v.safetensors: 4 of {total} tensors not applied")
    assert warning.count("img_emb.proj") == 3
    assert warning in caplog.text and warning in ui["text"]


def test_lora_low_without_a_low_noise_model_is_an_error(world):
    names = write_pair(world, "kohya")
    with pytest.raises(WanUserError, match=r"lora_low .*no low_noise_model.*only lora_high applies"):
        node(world, names[HIGH], names[LOW], pair=False)
    (model, low), ui = node(world, names[HIGH], "none", pair=False)
    assert low is None and ui["applied"][0].startswith("model: ")


def test_pickled_lora_is_refused(world):
    torch.save({"x": torch.zeros(1)}, world["loras"] / "old.ckpt")
    with pytest.raises(WanUserError, match=r"old\.ckpt.*pickle"):
        node(world, "old.ckpt", "none")


def test_cfg_1_runs_one_model_evaluation_per_step(world):
    names = write_pair(world, "lightx2v_lora_AB")
    (high, low), _ = node(world, names[HIGH], names[LOW], strength_high=1.0, strength_low=1.0)
    calls = []

    def counting(expert):
        def wrapper(apply_model, args):
            calls.append((expert, args["input"].shape[0]))
            return apply_model(args["input"], args["timestep"], **args["c"])
        return wrapper

    experts = {}
    for name, patcher in ((HIGH, high), (LOW, low)):
        experts[name] = patcher.clone()
        experts[name].set_model_unet_function_wrapper(counting(name))
    lightning = RunSettings(steps=4, cfg_high=1.0, cfg_low=1.0, shift=5.0, boundary=0.875, sampler_name="euler",
                            scheduler="wan_dpm", denoise=1.0, seed=3)
    run(world, experts, lightning)
    assert calls == [(HIGH, 1), (HIGH, 1), (LOW, 1), (LOW, 1)]


@pytest.mark.parametrize("lowvram", [False, True], ids=["full_load", "partial_load"])
def test_patches_apply_when_loaded_fully_or_partially(lowvram, world):
    """A partial (low-VRAM) load patches offloaded layers on the fly (ComfyUI's LowVramPatch) and the
    modulation tables through the node's load hook: one DiT evaluation equals the merged weights'."""
    layout = "lightx2v_lora_AB"
    names = write_pair(world, layout)
    (high, _), _ = node(world, names[HIGH], "none")
    reference = merged_experts(world, layout, low=False)[HIGH]
    g = torch.Generator().manual_seed(9)
    x = torch.randn(1, 16, *LATENT, generator=g)
    context = world["cond"][0][0][0]
    sigma = torch.tensor([0.9])

    def evaluate(patcher, memory):
        # Earlier sampler runs leave an expert loaded (and patched by their clone) in model
        # management; patching by hand here must start from unpatched weights.
        mm.unload_all_models()
        patcher.patch_model(device_to=torch.device("cpu"), lowvram_model_memory=memory)
        try:
            with torch.no_grad():
                return patcher.model.apply_model(x, sigma, c_crossattn=context), patcher.model.model_lowvram
        finally:
            patcher.unpatch_model(device_to=torch.device("cpu"), unpatch_weights=True)

    ours, partial = evaluate(high.clone(), 1 if lowvram else 0)
    expected, _ = evaluate(reference, 0)
    assert partial is lowvram
    assert error(ours, expected) <= TOLERANCE
    # Unpatched afterwards: the expert is back to its own weights.
    plain, _ = evaluate(world["experts"][HIGH], 0)
    again, _ = evaluate(high.clone(), 0)
    assert error(again, expected) <= TOLERANCE and error(plain, expected) > 100 * TOLERANCE
