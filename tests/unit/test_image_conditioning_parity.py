"""Image-conditioned runs end to end (in-process ComfyUI, CPU, fp32, tiny random weights):

- the pack (Wan22VideoLatent + one Wan22Sampler) equals native ComfyUI (WanFirstLastFrameToVideo /
  WanImageToVideo + two KSamplerAdvanced split at the same step, ModelSamplingSD3 at the same
  shift; Wan22ImageToVideoLatent + one KSamplerAdvanced for TI2V-5B) on the same MODELs, VAE,
  images, noise seed, euler / simple: final latents within 1e-5 of the native latent's std;
- first-last-frame with the release's defaults (wan_unipc, wan schedule) equals the release's loop
  (tests/reference_pipeline.py) fed the release's own first-last-frame construction (diffusers'
  WanImageToVideoPipeline.prepare_latents on the same VAE weights).
"""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import comfy_inprocess  # noqa: E402
from dit_factory import diffusers_model, random_state_dict, tiny_config, write_comfy_file  # noqa: E402
from reference_pipeline import release_i2v_condition, release_loop  # noqa: E402
from vae_factory import diffusers_vae  # noqa: E402

comfy_inprocess.pack()

import comfy.sample  # noqa: E402
import comfy.samplers  # noqa: E402
import comfy.sd  # noqa: E402
from comfy_extras.nodes_model_advanced import ModelSamplingSD3  # noqa: E402
from comfy_extras.nodes_wan import Wan22ImageToVideoLatent, WanFirstLastFrameToVideo, WanImageToVideo  # noqa: E402
from comfyui_wan22.nodes.latent import Wan22VideoLatent  # noqa: E402
from comfyui_wan22.nodes.sampler import Wan22Sampler  # noqa: E402
from native_vae import native_wan21_vae, native_wan22_vae  # noqa: E402

import nodes  # noqa: E402

NATIVE_TOLERANCE = 1e-5  # max abs difference / native latent std; measured 1.3e-6-1.4e-6 (I2V), 0 (TI2V)
RELEASE_TOLERANCE = 1e-4  # as test_sampler.py against the release loop; measured 2.6e-6 (fp32)
STEPS, SPLIT, SHIFT, SEED = 6, 3, 5.0, 7
CFG_HIGH, CFG_LOW = 3.5, 2.5
VAE_SEED = 1


def load_models(tmp_path, kind, names):
    cfg = tiny_config(kind, text_dim=4096)  # native detection assumes umT5-XXL's 4096-wide text
    models, state_dicts = {}, {}
    for seed, name in enumerate(names):
        state_dicts[name] = random_state_dict(cfg, seed=20 + seed)
        path = write_comfy_file(state_dicts[name], tmp_path / f"{kind}_{name}.safetensors")
        models[name] = comfy.sd.load_diffusion_model(str(path))  # as native UNETLoader
    return cfg, state_dicts, models


@pytest.fixture(scope="module")
def i2v(tmp_path_factory):
    return load_models(tmp_path_factory.mktemp("i2v"), "i2v", ("high", "low"))


@pytest.fixture(scope="module")
def wan21_vae():
    return native_wan21_vae(seed=VAE_SEED)


def text(cfg, seed, tokens=7):
    """Conditioning as native CLIPTextEncode gives it for Wan: 512 tokens, zeros after the prompt's."""
    context = torch.zeros(1, 512, cfg.text_dim)
    context[:, :tokens] = torch.randn(1, tokens, cfg.text_dim, generator=torch.Generator().manual_seed(seed))
    return [[context, {}]]


def frames(n, height, width, seed):
    return torch.rand(n, height, width, 3, generator=torch.Generator().manual_seed(seed))


def boundary_between(model, steps, split):
    """A boundary whose switch falls after `split` steps of ComfyUI's simple schedule at SHIFT."""
    patched = ModelSamplingSD3().patch(model, SHIFT)[0]
    sigmas = comfy.samplers.calculate_sigmas(patched.get_model_object("model_sampling"), "simple", steps)
    return float(sigmas[split - 1] + sigmas[split]) / 2


def pack_run(models, positive, negative, latent, boundary=0.5, **overrides):
    settings = dict(seed=SEED, steps=STEPS, use_release_defaults=False, cfg=CFG_HIGH, cfg_low_noise=CFG_LOW,
                    shift=SHIFT, boundary=boundary, sampler_name="euler", scheduler="simple", denoise=1.0)
    settings.update(overrides)
    result = Wan22Sampler.execute(model=models["high"], low_noise_model=models.get("low"), positive=positive,
                                  negative=negative, latent=latent, **settings)
    return result.result[0]["samples"], result.ui["wan22_sampler"][0]


def native_pair_run(models, positive, negative, latent):
    """Native ComfyUI's two-expert graph: KSamplerAdvanced on each expert, split at SPLIT."""
    high = ModelSamplingSD3().patch(models["high"], SHIFT)[0]
    low = ModelSamplingSD3().patch(models["low"], SHIFT)[0]
    sampler = nodes.KSamplerAdvanced()
    (mid,) = sampler.sample(high, "enable", SEED, STEPS, CFG_HIGH, "euler", "simple", positive, negative, latent,
                            0, SPLIT, "enable")
    (out,) = sampler.sample(low, "disable", SEED, STEPS, CFG_LOW, "euler", "simple", positive, negative, mid,
                            SPLIT, 10000, "disable")
    return out["samples"]


def relative_error(ours, reference):
    error = float((ours - reference).abs().max() / reference.std())
    print(f"max abs difference / reference std: {error:.2e}")
    return error


def pack_latent(vae, width, height, length, **images):
    return Wan22VideoLatent.execute(vae=vae, width=width, height=height, length=length, batch_size=1,
                                    resize="release", **images).result[0]


def native_conditioned(node, vae, positive, negative, width, height, length, **images):
    return node.execute(positive=positive, negative=negative, vae=vae, width=width, height=height, length=length,
                        batch_size=1, **images).result


@pytest.mark.parametrize(("node", "images"), [
    (WanFirstLastFrameToVideo, {"start_image": 1, "end_image": 1}),
    (WanFirstLastFrameToVideo, {"start_image": 2, "end_image": 3}),
    (WanImageToVideo, {"start_image": 5}),
], ids=["first_last_frame", "two_start_three_end_frames", "five_start_frames"])
def test_i2v_pair_equals_native_two_ksampler_graph(i2v, wan21_vae, node, images):
    cfg, _, models = i2v
    width, height, length = 48, 32, 13
    given = {name: frames(n, height, width, seed=40 + i) for i, (name, n) in enumerate(images.items())}
    positive, negative = text(cfg, 1), text(cfg, 2)
    boundary = boundary_between(models["high"], STEPS, SPLIT)

    ours, summary = pack_run(models, positive, negative, pack_latent(wan21_vae, width, height, length, **given),
                             boundary=boundary)
    native_pos, native_neg, native_latent = native_conditioned(node, wan21_vae, positive, negative, width, height,
                                                               length, **given)
    reference = native_pair_run(models, native_pos, native_neg, native_latent)

    assert summary["switch_step"] == SPLIT, summary
    assert relative_error(ours, reference) <= NATIVE_TOLERANCE


@pytest.mark.parametrize("start_frames", [1, 5])
def test_ti2v_start_frames_equal_native_wan22_image_to_video_latent(tmp_path, start_frames):
    cfg, _, models = load_models(tmp_path, "ti2v", ("high",))
    vae = native_wan22_vae(seed=2)
    width, height, length = 64, 32, 13
    start = frames(start_frames, height, width, seed=50)
    positive, negative = text(cfg, 3), text(cfg, 4)

    latent = Wan22VideoLatent.execute(vae=vae, width=width, height=height, length=length, batch_size=1,
                                      resize="release", start_image=start).result[0]
    ours, summary = pack_run(models, positive, negative, latent)
    native_latent = Wan22ImageToVideoLatent.execute(vae=vae, width=width, height=height, length=length,
                                                    batch_size=1, start_image=start).result[0]
    model = ModelSamplingSD3().patch(models["high"], SHIFT)[0]
    (out,) = nodes.KSamplerAdvanced().sample(model, "enable", SEED, STEPS, CFG_HIGH, "euler", "simple", positive,
                                             negative, native_latent, 0, 10000, "disable")
    assert summary["boundary"] is None
    assert relative_error(ours, out["samples"]) <= NATIVE_TOLERANCE
    clean = 1 + (start_frames - 1) // 4
    torch.testing.assert_close(ours[:, :, :clean], latent["samples"][:, :, :clean], atol=1e-5, rtol=0)


def test_first_last_frame_equals_the_release_construction_and_loop(i2v, wan21_vae):
    cfg, state_dicts, models = i2v
    width, height, length, steps = 48, 32, 13, 8
    first, last = frames(1, height, width, seed=60), frames(1, height, width, seed=61)
    positive, negative = text(cfg, 5), text(cfg, 6)
    latent = pack_latent(wan21_vae, width, height, length, start_image=first, end_image=last)
    ours, summary = pack_run(models, positive, negative, latent, use_release_defaults=True, steps=steps,
                             sampler_name="wan_unipc", scheduler="wan")

    with torch.no_grad():
        condition = release_i2v_condition(diffusers_vae("wan2.1", "tiny", seed=VAE_SEED),
                                          first.movedim(-1, 1) * 2 - 1, last.movedim(-1, 1) * 2 - 1, length)
    latent_format = models["high"].model.latent_format
    noise = comfy.sample.prepare_noise(latent["samples"], SEED)
    reference, used = release_loop(
        {name: diffusers_model(cfg, sd) for name, sd in state_dicts.items()}, noise, positive[0][0], negative[0][0],
        steps=steps, shift=summary["shift"], boundary=summary["boundary"],
        cfg={"high": summary["cfg"][0], "low": summary["cfg"][1]}, i2v_condition=condition,
    )
    reference = latent_format.process_out(reference)
    assert summary["experts_used"] == used
    assert 0 < summary["switch_step"] < steps, summary
    assert relative_error(ours, reference) <= RELEASE_TOLERANCE
