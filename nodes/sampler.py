"""Wan22Sampler: one node for the whole denoising run of an expert pair or the 5B model."""

from __future__ import annotations

import logging

import node_helpers
from comfy_api.latest import io
from comfy_execution.utils import get_executing_context

from ..wan_core.comfy_bridge.experts import HIGH, LOW
from ..wan_core.comfy_bridge.pair import Wan22ModelPair
from ..wan_core.comfy_bridge.sampling import SAMPLER_NAMES, SCHEDULER_NAMES, RunSettings, sample
from ..wan_core.config import KIND_DEFAULTS, ModelKind
from ..wan_core.errors import WanUserError
from ..wan_core.schedule import check_boundary
from .ui_events import send_event, send_progress_text

log = logging.getLogger("ComfyUI-Wan22")

EXPERT_LABEL = {HIGH: "high-noise expert", LOW: "low-noise expert"}
# Keys the pack's latent node puts on a LATENT made from a start image.
START_IMAGE_KEY = "wan22_start_image"


class Wan22Sampler(io.ComfyNode):
    @classmethod
    def define_schema(cls):
        t2v = KIND_DEFAULTS[ModelKind.T2V]
        return io.Schema(
            node_id="Wan22Sampler",
            display_name="Wan2.2 Sampler (dual expert)",
            category="Wan2.2",
            description=(
                "Denoises a Wan2.2 latent. With an A14B pair, every step runs on the high-noise expert "
                "while its timestep t >= boundary * 1000 and on the low-noise expert after, one "
                "trajectory across the switch; only the active expert is loaded."
            ),
            inputs=[
                io.Model.Input("model", tooltip="The high-noise expert of an A14B pair, one expert alone, or the "
                               "TI2V-5B model: from Wan22ModelLoader or any native loader, through any patch nodes."),
                io.Model.Input("low_noise_model", optional=True,
                               tooltip="The low-noise expert of the same A14B release; leave empty for the 5B "
                               "model or to run one expert every step."),
                io.Conditioning.Input("positive"),
                io.Conditioning.Input("negative"),
                io.Latent.Input("latent"),
                io.Int.Input("seed", default=0, min=0, max=0xFFFFFFFFFFFFFFFF, control_after_generate=True),
                io.Int.Input("steps", default=t2v.steps, min=1, max=10000),
                io.Boolean.Input(
                    "use_release_defaults", default=True,
                    tooltip="On: shift, boundary, cfg and cfg_low_noise are the release's values for the "
                    "loaded model (T2V 12/0.875/4.0/3.0, I2V 5/0.9/3.5/3.5, TI2V-5B 5/-/5.0) and the "
                    "four widgets below are ignored. Off: the widgets are used.",
                ),
                io.Float.Input("cfg", default=t2v.cfg_high, min=0.0, max=100.0, step=0.1, round=0.01,
                               tooltip="Guidance while the high-noise expert (or the 5B model) runs."),
                io.Float.Input("cfg_low_noise", default=t2v.cfg_low, min=0.0, max=100.0, step=0.1, round=0.01,
                               tooltip="Guidance while the low-noise expert runs."),
                io.Float.Input("shift", default=t2v.shift, min=0.01, max=100.0, step=0.01,
                               tooltip="Timestep shift of the sigma schedule."),
                io.Float.Input("boundary", default=t2v.boundary, min=0.0, max=1.0, step=0.001,
                               tooltip="The high-noise expert runs while t >= boundary * 1000."),
                io.Combo.Input("sampler_name", options=SAMPLER_NAMES, default=SAMPLER_NAMES[0],
                               tooltip="wan_unipc is the release's flow UniPC solver."),
                io.Combo.Input("scheduler", options=SCHEDULER_NAMES, default=SCHEDULER_NAMES[0],
                               tooltip="wan is the release's sigma grid with integer-truncated timesteps."),
                io.Float.Input("denoise", default=1.0, min=0.0, max=1.0, step=0.01),
            ],
            outputs=[io.Latent.Output()],
        )

    @classmethod
    def execute(cls, model, positive, negative, latent, seed, steps, use_release_defaults, cfg, cfg_low_noise,
                shift, boundary, sampler_name, scheduler, denoise, low_noise_model=None) -> io.NodeOutput:
        pair = Wan22ModelPair.from_models(model, low_noise_model)
        settings = resolve_settings(pair, seed, steps, use_release_defaults, cfg, cfg_low_noise, shift, boundary,
                                    sampler_name, scheduler, denoise)
        check_conditioning(pair, positive, "positive")
        check_conditioning(pair, negative, "negative")
        check_latent(pair, latent)
        positive, negative = attach_start_image(pair, latent, positive, negative)

        node_id = _node_id()
        experts = {HIGH: pair.high} if pair.low is None else {HIGH: pair.high, LOW: pair.low}

        def on_step(step, total, expert):
            send_progress_text(f"{EXPERT_LABEL[expert]} · step {step}/{total}", node_id)
            send_event("wan22.sampler.step", {"node": node_id, "step": step, "total": total, "expert": expert})

        def on_switch(expert):
            send_event("wan22.sampler.expert", {"node": node_id, "expert": expert})

        samples, report = sample(experts, positive, negative, latent, settings, on_step=on_step, on_switch=on_switch)
        summary = describe_run(pair, settings, report)
        log.info("[ComfyUI-Wan22] %s", summary["text"])
        out = {k: v for k, v in latent.items() if k != START_IMAGE_KEY}
        out["samples"] = samples
        return io.NodeOutput(out, ui={"wan22_sampler": [summary]})


NODES = [Wan22Sampler]


def resolve_settings(pair, seed, steps, use_release_defaults, cfg, cfg_low_noise, shift, boundary, sampler_name,
                     scheduler, denoise) -> RunSettings:
    if steps < 1:
        raise WanUserError(f"steps is {steps}: set steps to 1 or more.")
    if use_release_defaults:
        d = pair.defaults
        cfg, cfg_low_noise, shift, boundary = d.cfg_high, d.cfg_low, d.shift, d.boundary
    else:
        check_boundary(boundary)
    if pair.low is None:
        boundary = None
    return RunSettings(steps=steps, cfg_high=cfg, cfg_low=cfg_low_noise, shift=shift, boundary=boundary,
                       sampler_name=sampler_name, scheduler=scheduler, denoise=denoise, seed=seed)


def check_conditioning(pair, conditioning, name: str) -> None:
    if not conditioning:
        raise WanUserError(f"{name} conditioning is empty: connect a text encoder's output.")
    for tensor, _ in conditioning:
        width = tensor.shape[-1]
        if width != pair.text_dim:
            raise WanUserError(
                f"{name} conditioning has width {width}, but this Wan2.2 model takes {pair.text_dim}-wide "
                f"umT5 embeddings: encode the prompt with the umT5-XXL text encoder (CLIPLoader type "
                f"'wan', or the pack's Wan22TextEncoderLoader)."
            )


def check_latent(pair, latent: dict) -> None:
    samples = latent["samples"]
    want = pair.defaults.latent_channels
    vae_for = {16: "the Wan2.1 VAE (wan_2.1_vae.safetensors)", 48: "the Wan2.2 VAE (wan2.2_vae.safetensors)"}
    if samples.ndim != 5:
        raise WanUserError(
            f"the latent has shape {tuple(samples.shape)}, not a video latent [batch, channels, frames, height, "
            f"width]: make it with Wan22VideoLatent."
        )
    if samples.shape[1] != want:
        raise WanUserError(
            f"the latent has {samples.shape[1]} channels but the {pair.kind.value} model takes {want}-channel "
            f"latents: make the latent with {vae_for.get(want, 'the matching VAE')}."
        )
    if samples.shape[-1] % 2 or samples.shape[-2] % 2:
        stride = pair.defaults.vae_stride[1] * 2
        raise WanUserError(
            f"the latent is {samples.shape[-1]}x{samples.shape[-2]} cells; the model patches 2x2 cells, so the "
            f"video's width and height must be multiples of {stride}."
        )


def attach_start_image(pair, latent: dict, positive, negative):
    """Start-image conditioning of the release: I2V gets mask + image latent on both CFG branches."""
    start = latent.get(START_IMAGE_KEY)
    has_native_image = any("concat_latent_image" in c[1] for c in positive)
    if pair.kind == ModelKind.T2V and start is not None:
        raise WanUserError(
            "a start image was given, but the loaded model is a text-to-video pair (T2V-A14B), which cannot use "
            "one: load the I2V-A14B experts for image-to-video, or remove the start image."
        )
    if pair.kind == ModelKind.I2V:
        if start is None and not has_native_image:
            raise WanUserError(
                "the I2V-A14B experts need a start image: connect an image to Wan22VideoLatent's start_image."
            )
        if start is not None:
            values = {"concat_latent_image": start["concat_latent_image"], "concat_mask": start["concat_mask"]}
            positive = node_helpers.conditioning_set_values(positive, values)
            negative = node_helpers.conditioning_set_values(negative, values)
    return positive, negative


def describe_run(pair, settings: RunSettings, report) -> dict:
    steps = report.schedule.steps
    timesteps = report.schedule.timesteps.tolist()
    if settings.boundary is None:
        text = f"{pair.kind.value}: {steps} steps on one model (t {timesteps[0]}..{timesteps[-1]})" if steps else \
            f"{pair.kind.value}: nothing to do (denoise 0)"
    else:
        k = report.switch_step
        high = f"high-noise steps 1-{k} (t {timesteps[0]}..{timesteps[k - 1]})" if k else "no high-noise step"
        low = f"low-noise steps {k + 1}-{steps} (t {timesteps[k]}..{timesteps[-1]})" if k < steps else \
            "no low-noise step"
        text = (f"{pair.kind.value}: boundary {settings.boundary} at shift {settings.shift} switches after step "
                f"{k} of {steps}: {high}, {low}; cfg {settings.cfg_high}/{settings.cfg_low}")
    if report.notes:
        text += ". " + "; ".join(report.notes)
    return {
        "text": text,
        "notes": list(report.notes),
        "kind": pair.kind.value,
        "steps": steps,
        "switch_step": report.switch_step,
        "boundary": settings.boundary,
        "shift": settings.shift,
        "cfg": [settings.cfg_high, settings.cfg_low],
        "timesteps": timesteps,
        "experts_used": report.experts_used,
        "switch_seconds": report.switch_seconds,
    }


def _node_id():
    context = get_executing_context()
    return context.node_id if context is not None else None
