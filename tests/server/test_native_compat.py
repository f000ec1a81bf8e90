"""Native nodes on the pack's experts, in the real server: the pack's one Wan22Sampler against
native's two KSamplerAdvanced split at the same step (each model through ModelSamplingSD3 at the
same shift), euler / simple, on the same tiny random weights; final latents within 1e-5 of the
latent's std (tests/native_parity.py builds both sides).

Patches (a different LoRA per expert, SkipLayerGuidanceDiT, EasyCache) are compared with the
patch on both experts, on the high one alone and on the low one alone, and each one-expert
variant must move native's result by far more than the tolerance, so a patch the pack dropped or
ran in the wrong phase fails. Native conditioning (WanImageToVideo, WanFirstLastFrameToVideo,
Wan22ImageToVideoLatent) goes into the pack's sampler unchanged."""

from __future__ import annotations

import re
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from dit_factory import random_state_dict, tiny_config, write_comfy_file  # noqa: E402
from native_parity import (  # noqa: E402
    Prompt,
    Split,
    assert_changes,
    assert_equal_latents,
    native_model,
    native_sample,
    out,
    pack_models,
    pack_sample,
    relative_error,
    run_latents,
    sampler_summary,
    save_latent,
    write_lora,
)
from vae_factory import write_vae  # noqa: E402

pytestmark = pytest.mark.server

T2V_HIGH, T2V_LOW = "native_t2v_high.safetensors", "native_t2v_low.safetensors"
I2V_HIGH, I2V_LOW = "native_i2v_high.safetensors", "native_i2v_low.safetensors"
TI2V = "native_ti2v_5b.safetensors"
VAE21, VAE22 = "native_wan21_vae_tiny.safetensors", "native_wan22_vae_tiny.safetensors"
LORA_HIGH, LORA_LOW = "native_lora_high.safetensors", "native_lora_low.safetensors"
START, END = "native_start.png", "native_end.png"
T2V_SIZE = dict(width=48, height=32, length=5)  # latent [1, 16, 2, 4, 6]
# Native detection reads no text width from a Wan file (it assumes umT5-XXL's 4096), so the tiny
# models take 4096-wide text, given by the test-only Wan22TestConditioning node (no tiny text
# encoder is 4096 wide; the text encoder is not what these tests compare).
TEXT_DIM = 4096


@pytest.fixture(scope="module")
def server(comfy_server):
    dit_dir = comfy_server.models_dir("diffusion_models")
    for kind, names in (("t2v", (T2V_HIGH, T2V_LOW)), ("i2v", (I2V_HIGH, I2V_LOW)), ("ti2v", (TI2V,))):
        cfg = tiny_config(kind, text_dim=TEXT_DIM)
        for seed, name in enumerate(names, start=21):
            write_comfy_file(random_state_dict(cfg, seed=seed), dit_dir / name)
    cfg = tiny_config("t2v", text_dim=TEXT_DIM)
    write_lora(comfy_server.models_dir("loras") / LORA_HIGH, cfg, seed=41)
    write_lora(comfy_server.models_dir("loras") / LORA_LOW, cfg, seed=42)
    write_vae(comfy_server.models_dir("vae") / VAE21, "wan2.1", "comfy", "tiny", seed=4)
    write_vae(comfy_server.models_dir("vae") / VAE22, "wan2.2", "comfy", "tiny", seed=5)
    rng = np.random.default_rng(6)
    for name in (START, END):
        Image.fromarray(rng.integers(0, 256, (32, 48, 3), dtype=np.uint8)).save(comfy_server.base_dir / "input" / name)
    return comfy_server


def text(p: Prompt, seed: int = 1):
    conditioning = p.add("Wan22TestConditioning", seed=seed, tokens=7, width=TEXT_DIM)
    return out(conditioning, 0), out(conditioning, 1)


def t2v_latent(p: Prompt):
    return out(p.add("EmptyHunyuanLatentVideo", batch_size=1, **T2V_SIZE))


def patched_pair_prompt(variants: dict, split: Split, patch) -> tuple[Prompt, dict]:
    """One prompt: for every variant {label: (patch the high expert?, patch the low one?)} the pack's
    sampler on the pack's loader and native's split run on UNETLoader models, each saved as
    '<label>_pack' / '<label>_native'. `patch(p, model, expert)` returns the patched model."""
    p = Prompt()
    positive, negative = text(p)
    latent = t2v_latent(p)
    pack_high, pack_low = pack_models(p, T2V_HIGH, T2V_LOW)
    native_high, native_low = native_model(p, T2V_HIGH), native_model(p, T2V_LOW)
    samplers = {}
    for label, (on_high, on_low) in variants.items():
        ph = patch(p, pack_high, "high") if on_high else pack_high
        pl = patch(p, pack_low, "low") if on_low else pack_low
        nh = patch(p, native_high, "high") if on_high else native_high
        nl = patch(p, native_low, "low") if on_low else native_low
        samplers[label] = pack_sample(p, ph, pl, positive, negative, latent, split)
        save_latent(p, out(samplers[label]), f"{label}_pack")
        save_latent(p, out(native_sample(p, nh, nl, positive, negative, latent, split)), f"{label}_native")
    return p, samplers


VARIANTS = {"both": (True, True), "high": (True, False), "low": (False, True), "none": (False, False)}


def check_variants(latents: dict, what: str) -> None:
    errors = {label: relative_error(latents[f"{label}_pack"], latents[f"{label}_native"]) for label in VARIANTS}
    print(f"{what}: max |pack - native| / std(native) per variant:", {k: f"{v:.2e}" for k, v in errors.items()})
    for label in VARIANTS:
        assert_equal_latents(latents[f"{label}_pack"], latents[f"{label}_native"], f"{what} on {label}")
    assert_changes(latents["high_native"], latents["none_native"], f"{what} on the high expert alone")
    assert_changes(latents["low_native"], latents["none_native"], f"{what} on the low expert alone")


def check_switch(history: dict, sampler: str, split: Split) -> None:
    """The pack's sampler reports the split the test meant (its boundary was chosen for it)."""
    summary = sampler_summary(history, sampler)
    assert summary is not None and summary["switch_step"] == split.switch, summary


def test_a_different_lora_on_each_expert(server):
    def lora(p, model, expert):
        name = LORA_HIGH if expert == "high" else LORA_LOW
        return out(p.add("LoraLoaderModelOnly", model=model, lora_name=name, strength_model=1.0))

    split = Split()
    p, samplers = patched_pair_prompt(VARIANTS, split, lora)
    latents, history = run_latents(server, p)
    check_switch(history, samplers["both"], split)
    check_variants(latents, "LoraLoaderModelOnly")


def test_skip_layer_guidance(server):
    def slg(p, model, expert):
        return out(p.add("SkipLayerGuidanceDiT", model=model, double_layers="1", single_layers="", scale=2.0,
                         start_percent=0.0, end_percent=1.0, rescaling_scale=0.0))

    split = Split()
    p, samplers = patched_pair_prompt(VARIANTS, split, slg)
    latents, history = run_latents(server, p)
    check_switch(history, samplers["both"], split)
    check_variants(latents, "SkipLayerGuidanceDiT")


EASYCACHE_SKIPPED = re.compile(r"EasyCache - skipped (\d+)/(\d+) steps")


def test_easycache_skips_in_each_phase_with_fresh_state(server):
    """EasyCache keeps its state per sampling run: native's second KSamplerAdvanced starts it
    afresh, so the pack's low phase must too (the parity of the 'both' variant shows it; a state
    carried over from the high phase would let the first low steps reuse the high expert's
    cache). Each variant runs alone so the server log's skip lines can be attributed."""

    def easycache(p, model, expert):
        return out(p.add("EasyCache", model=model, reuse_threshold=3.0, start_percent=0.0, end_percent=1.0,
                         verbose=False))

    # EasyCache can first skip on a run's third step (it needs two outputs to predict a change).
    split = Split(steps=6, switch=3)
    latents, skipped = {}, {}
    for label, sides in VARIANTS.items():
        p, _ = patched_pair_prompt({label: sides}, split, easycache)
        for side in ("pack", "native"):  # each side alone, so each log line belongs to one side
            before = len(server.log_text())
            result, _ = run_latents(server, p.only(lambda name, side=side: name.endswith(side)))
            latents.update(result)
            skipped[f"{label}_{side}"] = [int(n) for n, _ in EASYCACHE_SKIPPED.findall(server.log_text()[before:])]
    print("EasyCache skipped steps per sampling run:", skipped)
    # Native: one line per KSamplerAdvanced that carries EasyCache; every such run really skipped.
    assert len(skipped["both_native"]) == 2 and all(n > 0 for n in skipped["both_native"]), skipped
    assert len(skipped["high_native"]) == 1 and len(skipped["low_native"]) == 1, skipped
    # The pack: the same runs, each phase with its own EasyCache, skipping the same steps.
    for label in VARIANTS:
        assert skipped[f"{label}_pack"] == skipped[f"{label}_native"], (label, skipped)
    check_variants(latents, "EasyCache")


@pytest.mark.parametrize("cfg_high, cfg_low", [(1.0, 1.0), (1.0, 3.0)])
def test_cfg_1(server, cfg_high, cfg_low):
    split = Split(cfg_high=cfg_high, cfg_low=cfg_low)
    p, samplers = patched_pair_prompt({"none": (False, False)}, split, None)
    latents, history = run_latents(server, p)
    check_switch(history, samplers["none"], split)
    assert_equal_latents(latents["none_pack"], latents["none_native"], f"cfg {cfg_high} / {cfg_low}")


def test_the_packs_loader_and_native_unetloader_give_the_same_run(server):
    split = Split()
    p = Prompt()
    positive, negative = text(p)
    latent = t2v_latent(p)
    pack_high, pack_low = pack_models(p, T2V_HIGH, T2V_LOW)
    native_high, native_low = native_model(p, T2V_HIGH), native_model(p, T2V_LOW)
    save_latent(p, out(pack_sample(p, pack_high, pack_low, positive, negative, latent, split)), "pack_loader")
    save_latent(p, out(pack_sample(p, native_high, native_low, positive, negative, latent, split)), "unet_loader")
    save_latent(p, out(native_sample(p, native_high, native_low, positive, negative, latent, split)), "native")
    latents, _ = run_latents(server, p)
    print("unet_loader vs native", relative_error(latents["unet_loader"], latents["native"]),
          "pack_loader vs native", relative_error(latents["pack_loader"], latents["native"]))
    assert_equal_latents(latents["unet_loader"], latents["pack_loader"], "UNETLoader models in the pack's sampler")
    assert_equal_latents(latents["unet_loader"], latents["native"], "UNETLoader models, pack vs native sampling")


@pytest.mark.parametrize("node", ["WanImageToVideo", "WanFirstLastFrameToVideo"])
def test_native_i2v_conditioning_into_the_packs_sampler(server, node):
    split = Split(shift=5.0)
    p = Prompt()
    positive, negative = text(p)
    vae = out(p.add("VAELoader", vae_name=VAE21))
    images = {"start_image": out(p.add("LoadImage", image=START))}
    if node == "WanFirstLastFrameToVideo":
        images["end_image"] = out(p.add("LoadImage", image=END))
    conditioned = p.add(node, positive=positive, negative=negative, vae=vae, batch_size=1, **T2V_SIZE, **images)
    positive, negative, latent = out(conditioned, 0), out(conditioned, 1), out(conditioned, 2)
    pack_high, pack_low = pack_models(p, I2V_HIGH, I2V_LOW)
    native_high, native_low = native_model(p, I2V_HIGH), native_model(p, I2V_LOW)
    sampler = pack_sample(p, pack_high, pack_low, positive, negative, latent, split)
    save_latent(p, out(sampler), "pack")
    save_latent(p, out(native_sample(p, native_high, native_low, positive, negative, latent, split)), "native")
    # The image matters: the same run without it must differ (so the pack cannot ignore it).
    bare = p.add("EmptyHunyuanLatentVideo", batch_size=1, **T2V_SIZE)
    plain_positive, plain_negative = text(p)
    save_latent(p, out(native_sample(p, native_high, native_low, plain_positive, plain_negative, out(bare), split)),
                "no_image")
    latents, history = run_latents(server, p)
    check_switch(history, sampler, split)
    assert_equal_latents(latents["pack"], latents["native"], node)
    assert_changes(latents["native"], latents["no_image"], f"{node}'s image")


def native_vae_loader_output(server) -> bool:
    return server.get_json("/object_info/Wan22VAELoader")["Wan22VAELoader"]["output"] == ["VAE"]


def test_native_5b_image_latent_into_the_packs_sampler(server):
    if not native_vae_loader_output(server):
        pytest.skip("needs a native Wan2.2 VAE at tiny size: Wan22VAELoader does not output a native VAE yet "
                    "(the 'vae' helper's issue-11 work is not on main), and native VAELoader builds only the "
                    "released width of the Wan2.2 VAE")
    split = Split()
    p = Prompt()
    positive, negative = text(p)
    vae = out(p.add("Wan22VAELoader", vae_name=VAE22))
    image = out(p.add("LoadImage", image=START))
    latent = out(p.add("Wan22ImageToVideoLatent", vae=vae, width=64, height=32, length=5, batch_size=1,
                       start_image=image))
    pack, _ = pack_models(p, TI2V)
    native = native_model(p, TI2V)
    save_latent(p, out(pack_sample(p, pack, None, positive, negative, latent, split)), "pack")
    save_latent(p, out(native_sample(p, native, None, positive, negative, latent, split)), "native")
    bare = p.add("Wan22ImageToVideoLatent", vae=vae, width=64, height=32, length=5, batch_size=1)
    save_latent(p, out(native_sample(p, native, None, positive, negative, out(bare), split)), "no_image")
    latents, _ = run_latents(server, p)
    assert_equal_latents(latents["pack"], latents["native"], "Wan22ImageToVideoLatent on the 5B model")
    assert_changes(latents["native"], latents["no_image"], "Wan22ImageToVideoLatent's image")


# set_torch_compile_wrapper's `keys`: TorchCompileModel compiles the whole diffusion_model; one
# small module of it goes through the same APPLY_MODEL wrapper and traces in a fraction of the time.
COMPILED_MODULE = "diffusion_model.time_embedding"


def test_torch_compile_on_both_experts_runs_each_compiled_model_in_its_own_phase(server):
    """TorchCompileModel's mechanism (set_torch_compile_wrapper) on each expert with a backend that
    records every call of a compiled graph: the high expert's compiled graphs run in the high
    phase only, the low expert's in the low phase only, and the result is native's."""
    split = Split()
    p = Prompt()
    positive, negative = text(p)
    latent = t2v_latent(p)
    pack_high, pack_low = pack_models(p, T2V_HIGH, T2V_LOW)
    compiled_high = out(p.add("Wan22TestCountingCompile", model=pack_high, label="high", module=COMPILED_MODULE))
    compiled_low = out(p.add("Wan22TestCountingCompile", model=pack_low, label="low", module=COMPILED_MODULE))
    sampler = pack_sample(p, compiled_high, compiled_low, positive, negative, latent, split)
    save_latent(p, out(sampler), "compiled_pack")
    report_node = p.add("Wan22TestCompiledCalls", samples=out(sampler))
    native_high, native_low = native_model(p, T2V_HIGH), native_model(p, T2V_LOW)
    save_latent(p, out(native_sample(p, native_high, native_low, positive, negative, latent, split)), "native")
    latents, history = run_latents(server, p)
    check_switch(history, sampler, split)
    (report,) = history["outputs"][report_node]["compiled_calls"]
    calls = report["calls"]
    print("compiled graphs:", report["compiled"], "calls in order:", calls)
    assert report["compiled"].get("high", 0) >= 1 and report["compiled"].get("low", 0) >= 1, report
    assert "high" in calls and "low" in calls, report
    first_low = calls.index("low")
    assert set(calls[:first_low]) == {"high"} and set(calls[first_low:]) == {"low"}, calls
    # Each step evaluates the model once (cond and uncond batched), so each phase's calls are a
    # whole number of its steps' worth.
    high_calls, low_calls = first_low, len(calls) - first_low
    assert high_calls % split.switch == 0 and low_calls % (split.steps - split.switch) == 0, calls
    assert high_calls // split.switch == low_calls // (split.steps - split.switch), calls
    assert_equal_latents(latents["compiled_pack"], latents["native"], "compiled experts")
