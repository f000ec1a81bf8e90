"""Wan22LoraLoader: one LoRA per expert of a Wan2.2 pair (or one on a single model), in every Wan
LoRA layout, applied as ComfyUI weight patches so it stacks with other LoRA nodes, survives partial
loading and compile. The key mapping is wan_core.loras'; this module only makes ComfyUI patches."""

from __future__ import annotations

import logging
from pathlib import Path

import comfy.patcher_extension
import comfy.weight_adapter
import folder_paths
from comfy_api.latest import io
from comfy_execution.utils import get_executing_context

from ..wan_core.errors import WanUserError
from ..wan_core.loras import LoraMatch, LowRankPatch, match_lora, read_lora_file
from .ui_events import send_progress_text

log = logging.getLogger("ComfyUI-Wan22")

FOLDER = "loras"
NONE = "none"
UNMATCHED_EXAMPLES = 3


def comfy_patches(match: LoraMatch) -> dict:
    """wan_core patches -> what ModelPatcher.add_patches takes (the forms comfy.lora.load_lora makes)."""
    patches = {}
    for key, patch in match.patches.items():
        if isinstance(patch, LowRankPatch):
            weights = (patch.up, patch.down, patch.alpha, None, None, None)  # up, down, alpha, mid, dora, reshape
            patches[key] = comfy.weight_adapter.LoRAAdapter(set(), weights)
        else:
            patches[key] = ("diff", (patch.diff,))
    return patches


_NONLEAF_CALLBACK_KEY = "wan22_lora_nonleaf_parameters"


def _patch_nonleaf_parameters(patcher, device_to, *_args):
    """ON_LOAD: applies the patches ModelPatcher.load skipped.

    ComfyUI 0.3.75 patches only parameters of leaf modules; a Wan block's `modulation` (and the
    head's) sits on a module with children, so its patches (the lightx2v `diff_m`) would be
    silently ignored. They are patched here the ordinary way (`patch_weight_to_device`: backed up,
    restored on unpatch), once per load."""
    for key in patcher.patches:
        if key not in patcher.backup and _on_module_with_children(patcher.model, key):
            patcher.patch_weight_to_device(key, device_to=device_to)


def _on_module_with_children(model, key: str) -> bool:
    owner = key.rpartition(".")[0]
    module = model.get_submodule(owner) if owner else model
    return next(module.children(), None) is not None


def _ensure_nonleaf_patching(patcher) -> None:
    callbacks = patcher.callbacks.get(comfy.patcher_extension.CallbacksMP.ON_LOAD, {})
    if _NONLEAF_CALLBACK_KEY not in callbacks:
        patcher.add_callback_with_key(comfy.patcher_extension.CallbacksMP.ON_LOAD, _NONLEAF_CALLBACK_KEY,
                                      _patch_nonleaf_parameters)


def apply_lora(model, path: Path, strength: float, expert: str):
    """A clone of `model` with the LoRA file's patches at `strength`, and a one-line report.

    Raises WanUserError when the file matches nothing of the model."""
    lora = read_lora_file(path)
    shapes = {k: tuple(v.shape) for k, v in model.model.state_dict().items()}
    match = match_lora(lora, shapes, path.name)
    if not match.patches:
        examples = ", ".join(match.unmatched[:UNMATCHED_EXAMPLES]) or "no tensors"
        raise WanUserError(
            f"{path.name} ({expert}): none of its {match.total} tensors fits this Wan model; it looks like "
            f"{match.guess()} (keys such as {examples}). Pick a Wan2.2 (or Wan2.1 14B) LoRA for this model."
        )
    patched = model.clone()
    added = patched.add_patches(comfy_patches(match), strength_patch=strength)
    _ensure_nonleaf_patching(patched)
    if len(added) != len(match.patches):  # cannot happen: keys come from the model's own state dict
        raise RuntimeError(f"{path.name}: {len(match.patches) - len(added)} patches did not reach the model")
    line = f"{expert}: {path.name} at {strength:g}: {len(match.applied)}/{match.total} tensors applied"
    warning = None
    if match.unmatched:
        examples = ", ".join(match.unmatched[:UNMATCHED_EXAMPLES])
        warning = (f"{expert}: {path.name}: {len(match.unmatched)} of {match.total} tensors not applied (not in "
                   f"this model{', or of another shape' if match.shape_mismatches else ''}), e.g. {examples}")
    return patched, line, warning


def lora_choices() -> list[str]:
    return [NONE, *folder_paths.get_filename_list(FOLDER)]


def resolve_lora(name: str, input_name: str) -> Path:
    full = folder_paths.get_full_path(FOLDER, name)
    if full is None:
        raise WanUserError(
            f"{input_name} {name!r} is not in models/{FOLDER} any more. Refresh the page and pick a file that is there."
        )
    return Path(full)


class Wan22LoraLoader(io.ComfyNode):
    @classmethod
    def define_schema(cls):
        choices = lora_choices()
        strength = dict(default=1.0, min=-10.0, max=10.0, step=0.01)
        return io.Schema(
            node_id="Wan22LoraLoader",
            display_name="Wan2.2 LoRA Loader (per expert)",
            category="Wan2.2",
            description=(
                "Applies one LoRA to the high-noise expert and one to the low-noise expert (e.g. the 4-step "
                "Lightning / lightx2v pair), in every Wan LoRA layout: ComfyUI, kohya, diffusers, lightx2v "
                "diff/diff_b/diff_m, Wan2.1 14B LoRAs on Wan2.2 experts. Applied as ComfyUI weight patches, so "
                "it stacks with other LoRA nodes. Reports how many of each file's tensors were applied."
            ),
            inputs=[
                io.Model.Input("model", tooltip="The high-noise expert, or the 5B model / a single expert."),
                io.Model.Input("low_noise_model", optional=True, tooltip="The low-noise expert of the pair."),
                io.Combo.Input("lora_high", options=choices, default=NONE,
                               tooltip="LoRA for `model` (the high-noise expert, or the only model)."),
                io.Float.Input("strength_high", **strength),
                io.Combo.Input("lora_low", options=choices, default=NONE,
                               tooltip="LoRA for low_noise_model; an error without one."),
                io.Float.Input("strength_low", **strength),
            ],
            # Output ids must differ from input ids (V3); the sockets show the names.
            outputs=[io.Model.Output("model_out", display_name="model"),
                     io.Model.Output("low_noise_model_out", display_name="low_noise_model")],
        )

    @classmethod
    def execute(cls, model, lora_high, strength_high, lora_low, strength_low, low_noise_model=None) -> io.NodeOutput:
        if low_noise_model is None and lora_low != NONE:
            raise WanUserError(
                f"lora_low is {lora_low!r} but no low_noise_model is connected: with one model (the 5B model or a "
                f"single expert) only lora_high applies. Set lora_low to none, or connect the low-noise expert."
            )
        high_label = "high-noise expert" if low_noise_model is not None else "model"
        lines, warnings = [], []
        outputs = []
        for patcher, name, strength, label, input_name in (
            (model, lora_high, strength_high, high_label, "lora_high"),
            (low_noise_model, lora_low, strength_low, "low-noise expert", "lora_low"),
        ):
            if patcher is None or name == NONE:
                outputs.append(patcher)
                continue
            patched, line, warning = apply_lora(patcher, resolve_lora(name, input_name), strength, label)
            outputs.append(patched)
            lines.append(line)
            if warning:
                warnings.append(warning)
        for line in lines:
            log.info("[ComfyUI-Wan22] LoRA %s", line)
        for warning in warnings:
            log.warning("[ComfyUI-Wan22] LoRA %s", warning)
        text = "\n".join(lines + [f"warning: {w}" for w in warnings]) or "no LoRA selected"
        send_progress_text(text, _node_id())
        return io.NodeOutput(*outputs, ui={"wan22_lora": [{"text": text, "applied": lines, "warnings": warnings}]})


def _node_id():
    context = get_executing_context()
    return context.node_id if context is not None else None


NODES = [Wan22LoraLoader]
