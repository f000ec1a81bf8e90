"""Wan22Sampler in ComfyUI's runtime (in-process, CPU, fp32, tiny random weights).

- A whole run equals the release's loop built from diffusers 0.42.1 pieces (tests/
  reference_pipeline.py) on the same weights and noise, for T2V and I2V pairs and TI2V-5B text-
  and image-to-video: max abs error <= 1e-4 relative to the reference latent's std.
- The expert trace of the release defaults (40 steps, shift 12, boundary 0.875: 26 high then 14
  low), and a probe of comfy.model_management at every progress tick that never sees both experts.
- Bad inputs give WanUserErrors naming the input.
"""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
import torch

from wan_core.config import TEXT_LEN

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import comfy_inprocess  # noqa: E402
from dit_factory import diffusers_model, random_state_dict, tiny_config, write_comfy_file  # noqa: E402
from reference_pipeline import release_loop  # noqa: E402

TOLERANCE = 1e-4  # max abs error / reference std; measured 2.6e-6 t2v, 2.0e-6 i2v, 5.8e-6 / 4.2e-6 ti2v (fp32)
LATENT = (3, 4, 6)  # latent frames, height, width: 9 pixel frames of 48x32 for the Wan2.1 VAE

comfy_inprocess.pack()  # ComfyUI's runtime on the CPU, and this checkout as the package it loads

import comfy.model_management as mm  # noqa: E402
import comfy.sample  # noqa: E402
import comfy.utils  # noqa: E402
from comfyui_wan22.nodes.sampler import START_IMAGE_KEY, Wan22Sampler  # noqa: E402
from comfyui_wan22.wan_core.comfy_bridge import pair as pairs  # noqa: E402
from comfyui_wan22.wan_core.errors import WanUserError  # noqa: E402


def write_models(tmp_path, kind: str, names=("high", "low")):
    cfg = tiny_config(kind)
    state_dicts, paths = {}, {}
    for seed, name in enumerate(names):
        state_dicts[name] = random_state_dict(cfg, seed=10 + seed)
        paths[name] = write_comfy_file(state_dicts[name], tmp_path / f"{kind}_{name}.safetensors")
    return cfg, state_dicts, paths


def load_pair(paths):
    return pairs.load_pair(paths["high"], paths.get("low"))


def conditioning(cfg, seed, tokens=7):
    """What a text encoder gives: the real tokens, then zero rows up to the 512 the release's DiT reads."""
    generator = torch.Generator().manual_seed(seed)
    context = torch.zeros(1, TEXT_LEN, cfg.text_dim)
    context[:, :tokens] = torch.randn(1, tokens, cfg.text_dim, generator=generator)
    return [[context, {}]]


def run_node(pair, positive, negative, latent, **overrides):
    settings = dict(seed=42, steps=12, use_release_defaults=True, cfg=4.0, cfg_low_noise=3.0, shift=12.0,
                    boundary=0.875, sampler_name="wan_unipc", scheduler="wan", denoise=1.0)
    settings.update(overrides)
    result = Wan22Sampler.execute(model=pair.high, low_noise_model=pair.low, positive=positive, negative=negative, latent=latent, **settings)
    return result.result[0]["samples"], result.ui["wan22_sampler"][0]


def relative_error(ours, reference):
    error = float((ours - reference).abs().max() / reference.std())
    print(f"max abs error / reference std: {error:.2e}")
    return error


@pytest.mark.parametrize("kind", ["t2v", "i2v"])
def test_pair_run_equals_release_loop(kind, tmp_path):
    cfg, state_dicts, paths = write_models(tmp_path, kind)
    pair = load_pair(paths)
    defaults = pair.defaults
    latent_format = pair.high.model.latent_format
    positive, negative = conditioning(cfg, 1), conditioning(cfg, 2)
    latent = {"samples": torch.zeros(1, 16, *LATENT)}
    i2v_condition = None
    if kind == "i2v":
        raw_image_latent = torch.randn(1, 16, *LATENT, generator=torch.Generator().manual_seed(3))
        mask = torch.ones(1, 1, *LATENT)
        mask[:, :, :1] = 0
        latent[START_IMAGE_KEY] = {"concat_latent_image": raw_image_latent, "concat_mask": mask}
        release_mask = torch.zeros(1, 4, *LATENT)
        release_mask[:, :, :1] = 1  # the release's 4 mask channels: 1 on latent frame 0
        i2v_condition = torch.cat([release_mask, latent_format.process_in(raw_image_latent)], dim=1)

    ours, summary = run_node(pair, positive, negative, latent)

    noise = comfy.sample.prepare_noise(latent["samples"], 42)
    reference, used = release_loop(
        {name: diffusers_model(cfg, sd) for name, sd in state_dicts.items()}, noise,
        positive[0][0], negative[0][0], steps=12, shift=defaults.shift, boundary=defaults.boundary,
        cfg={"high": defaults.cfg_high, "low": defaults.cfg_low}, i2v_condition=i2v_condition,
    )
    reference = latent_format.process_out(reference)
    assert summary["experts_used"] == used
    assert 0 < summary["switch_step"] < 12, summary  # the run does cross the switch
    assert relative_error(ours, reference) <= TOLERANCE


@pytest.mark.parametrize("with_image", [False, True], ids=["text_to_video", "image_to_video"])
def test_ti2v_run_equals_release_loop(with_image, tmp_path):
    cfg, state_dicts, paths = write_models(tmp_path, "ti2v", names=("high",))
    pair = load_pair(paths)
    latent_format = pair.high.model.latent_format
    positive, negative = conditioning(cfg, 4), conditioning(cfg, 5)
    samples = torch.zeros(1, 48, *LATENT)
    latent = {"samples": samples}
    first_frame = None
    if with_image:
        raw_first = torch.randn(1, 48, 1, *LATENT[1:], generator=torch.Generator().manual_seed(6))
        samples[:, :, :1] = raw_first
        mask = torch.ones(1, 1, *LATENT)
        mask[:, :, :1] = 0
        latent.update(noise_mask=mask)
        first_frame = latent_format.process_in(raw_first)

    ours, summary = run_node(pair, positive, negative, latent, steps=8)

    noise = comfy.sample.prepare_noise(samples, 42)
    d = pair.defaults
    reference, _ = release_loop(
        {"high": diffusers_model(cfg, state_dicts["high"])}, noise, positive[0][0], negative[0][0], steps=8,
        shift=d.shift, boundary=None, cfg={"high": d.cfg_high}, first_frame=first_frame,
    )
    reference = latent_format.process_out(reference)
    assert summary["switch_step"] == 8 and summary["boundary"] is None
    assert relative_error(ours, reference) <= TOLERANCE
    if with_image:
        torch.testing.assert_close(ours[:, :, :1], samples[:, :, :1], atol=1e-5, rtol=0)


def _run_probing_loaded_experts(pair, cfg, **overrides):
    """Runs the node; returns its summary and, per step, which experts model management held."""
    seen = []

    def probe(value, total, preview, node_id=None):
        loaded = [m.model for m in mm.current_loaded_models if m.model is not None]
        seen.append({name for name, expert in (("high", pair.high), ("low", pair.low))
                     if any(p.model is expert.model for p in loaded)})

    comfy.utils.set_progress_bar_global_hook(probe)
    try:
        _, summary = run_node(pair, conditioning(cfg, 1), conditioning(cfg, 2),
                              {"samples": torch.zeros(1, 16, 2, 4, 4)}, **overrides)
    finally:
        comfy.utils.set_progress_bar_global_hook(None)
        mm.unload_all_models()
    return summary, seen


def test_release_defaults_run_26_high_then_14_low_and_unload_when_both_do_not_fit(tmp_path, monkeypatch):
    cfg, _, paths = write_models(tmp_path, "t2v")
    pair = load_pair(paths)
    # A device that holds one expert but not two: model management reports just less free memory
    # than the incoming expert needs while the outgoing one is loaded.
    needed = pair.low.model_size() + mm.minimum_inference_memory()
    def small_device(dev=None, torch_free_too=False):
        return (needed - 1, needed - 1) if torch_free_too else needed - 1

    monkeypatch.setattr(mm, "get_free_memory", small_device)
    summary, seen = _run_probing_loaded_experts(pair, cfg, steps=40)
    assert summary["switch_step"] == 26
    assert summary["experts_used"] == ["high"] * 26 + ["low"] * 14
    assert summary["timesteps"][25] == 877 and summary["timesteps"][26] == 865
    assert seen == [{"high"}] * 26 + [{"low"}] * 14


def test_both_experts_stay_loaded_when_they_fit(tmp_path):
    cfg, _, paths = write_models(tmp_path, "t2v")
    pair = load_pair(paths)
    summary, seen = _run_probing_loaded_experts(pair, cfg, steps=6)
    k = summary["switch_step"]
    assert 0 < k < 6
    assert seen == [{"high"}] * k + [{"high", "low"}] * (6 - k)


def test_a_run_that_starts_in_the_low_phase_never_loads_the_high_expert(tmp_path):
    import comfy.patcher_extension

    cfg, _, paths = write_models(tmp_path, "t2v")
    pair = load_pair(paths)
    loads = []
    pair.high.add_callback(comfy.patcher_extension.CallbacksMP.ON_LOAD, lambda *a: loads.append(a))
    summary, seen = _run_probing_loaded_experts(pair, cfg, steps=6, use_release_defaults=False, boundary=1.0)
    assert summary["switch_step"] == 0 and summary["experts_used"] == ["low"] * 6
    assert seen == [{"low"}] * 6 and loads == []


def test_a_single_expert_runs_every_step(tmp_path):
    cfg, _, paths = write_models(tmp_path, "t2v", names=("high",))
    pair = load_pair({"high": paths["high"]})
    _, summary = run_node(pair, conditioning(cfg, 1), conditioning(cfg, 2), {"samples": torch.zeros(1, 16, 2, 4, 4)},
                          steps=6)
    assert summary["experts_used"] == ["high"] * 6


def test_comfyui_sampler_and_scheduler_route_by_their_own_timesteps(tmp_path):
    cfg, _, paths = write_models(tmp_path, "t2v")
    pair = load_pair(paths)
    _, summary = run_node(pair, conditioning(cfg, 1), conditioning(cfg, 2), {"samples": torch.zeros(1, 16, 2, 4, 4)},
                          steps=10, sampler_name="euler", scheduler="simple")
    k = summary["switch_step"]
    assert all(t >= 875 for t in summary["timesteps"][:k]) and all(t < 875 for t in summary["timesteps"][k:])
    assert summary["experts_used"] == ["high"] * k + ["low"] * (10 - k)


@pytest.fixture(scope="module")
def t2v(tmp_path_factory):
    cfg, _, paths = write_models(tmp_path_factory.mktemp("t2v"), "t2v")
    return cfg, load_pair(paths)


class TestBadInput:
    def test_conditioning_of_the_wrong_width(self, t2v):
        cfg, pair = t2v
        wrong = [[torch.randn(1, 7, cfg.text_dim + 8), {}]]
        with pytest.raises(WanUserError, match=r"positive conditioning has width 40.*umT5"):
            run_node(pair, wrong, conditioning(cfg, 2), {"samples": torch.zeros(1, 16, 2, 4, 4)})

    def test_a_5b_latent_for_a14b_experts(self, t2v):
        cfg, pair = t2v
        with pytest.raises(WanUserError, match=r"48 channels.*takes 16-channel.*Wan2.1 VAE"):
            run_node(pair, conditioning(cfg, 1), conditioning(cfg, 2), {"samples": torch.zeros(1, 48, 2, 4, 4)})

    def test_an_odd_latent_size(self, t2v):
        cfg, pair = t2v
        with pytest.raises(WanUserError, match=r"multiples of 16"):
            run_node(pair, conditioning(cfg, 1), conditioning(cfg, 2), {"samples": torch.zeros(1, 16, 2, 5, 4)})

    def test_steps_below_one(self, t2v):
        cfg, pair = t2v
        with pytest.raises(WanUserError, match=r"steps"):
            run_node(pair, conditioning(cfg, 1), conditioning(cfg, 2), {"samples": torch.zeros(1, 16, 2, 4, 4)},
                     steps=0)

    def test_boundary_outside_0_1(self, t2v):
        cfg, pair = t2v
        with pytest.raises(WanUserError, match=r"boundary must be between 0 and 1"):
            run_node(pair, conditioning(cfg, 1), conditioning(cfg, 2), {"samples": torch.zeros(1, 16, 2, 4, 4)},
                     use_release_defaults=False, boundary=1.5)

    def test_a_start_image_with_t2v_experts(self, t2v):
        cfg, pair = t2v
        latent = {"samples": torch.zeros(1, 16, 2, 4, 4),
                  START_IMAGE_KEY: {"concat_latent_image": torch.zeros(1, 16, 2, 4, 4),
                                    "concat_mask": torch.ones(1, 1, 2, 4, 4)}}
        with pytest.raises(WanUserError, match=r"text-to-video pair.*I2V-A14B"):
            run_node(pair, conditioning(cfg, 1), conditioning(cfg, 2), latent)

    def test_an_i2v_pair_without_start_image(self, tmp_path):
        cfg, _, paths = write_models(tmp_path, "i2v")
        with pytest.raises(WanUserError, match=r"I2V-A14B experts need a start image"):
            run_node(load_pair(paths), conditioning(cfg, 1), conditioning(cfg, 2),
                     {"samples": torch.zeros(1, 16, 2, 4, 4)})


def test_a_model_sampling_patch_on_an_expert_is_replaced_by_the_samplers_shift_and_said(tmp_path, caplog):
    import logging

    from comfy_extras.nodes_model_advanced import ModelSamplingSD3

    cfg, _, paths = write_models(tmp_path, "t2v")
    pair = load_pair(paths)
    (patched,) = ModelSamplingSD3().patch(pair.high, shift=3.0)
    plain, _ = run_node(pair, conditioning(cfg, 1), conditioning(cfg, 2), {"samples": torch.zeros(1, 16, 2, 4, 4)},
                        steps=4)
    pair.high = patched
    with caplog.at_level(logging.WARNING):
        ours, summary = run_node(pair, conditioning(cfg, 1), conditioning(cfg, 2),
                                 {"samples": torch.zeros(1, 16, 2, 4, 4)}, steps=4)
    (note,) = summary["notes"]
    assert "high-noise expert's model-sampling patch (shift 3)" in note and "sampler's shift 12" in note
    assert note in summary["text"] and note in caplog.text
    torch.testing.assert_close(ours, plain, rtol=0, atol=0)  # the sampler's shift ran
