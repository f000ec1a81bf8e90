"""What the sampler runs: an A14B expert pair, a single A14B expert, or the TI2V-5B model.

Each expert is a native MODEL (a ComfyUI ModelPatcher around ComfyUI's Wan model, from the pack's
loader or any other). The pair reads the kind from the weights and carries that kind's release
defaults (config.KIND_DEFAULTS), so the sampler needs no other source.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

import comfy.model_patcher

from ..checkpoints import inspect_dit, partner_in_folder
from ..config import KIND_DEFAULTS, KindDefaults, ModelKind, kind_from_channels
from ..errors import WanUserError
from .dit_model import checkpoint_path_of, expert_from_checkpoint


@dataclass(frozen=True)
class ModelShape:
    """What must agree between two experts of one release."""

    kind: ModelKind
    dim: int
    num_layers: int
    text_dim: int

    def text(self) -> str:
        return f"a {self.kind.value} model of dim {self.dim} with {self.num_layers} layers"


def shape_of_model(model, name: str) -> ModelShape:
    """The shape of a MODEL holding ComfyUI's Wan model (from any loader), read from its layers."""
    native = getattr(getattr(model, "model", None), "diffusion_model", None)
    try:
        in_dim = native.patch_embedding.weight.shape[1]
        kind = kind_from_channels(in_dim, native.out_dim)
        shape = ModelShape(kind, native.dim, len(native.blocks), native.text_embedding[0].weight.shape[1])
    except (AttributeError, IndexError, TypeError):
        kind = None
    if kind is None:
        raise WanUserError(
            f"{name}: this MODEL is not a Wan2.2 diffusion model. Connect a Wan2.2 T2V/I2V expert or the "
            f"TI2V-5B model (from Wan22ModelLoader or a native diffusion model loader)."
        )
    return shape


def check_partners(high: ModelShape, low: ModelShape | None, high_name: str, low_name: str) -> None:
    """Refuses combinations that cannot run as one model."""
    if low is None:
        return
    if high.kind == ModelKind.TI2V or low.kind == ModelKind.TI2V:
        raise WanUserError(
            f"{high_name if high.kind == ModelKind.TI2V else low_name} is the TI2V-5B model, which runs alone: "
            f"set low_noise_model to none (partners exist only for the T2V/I2V-A14B experts)."
        )
    if high.kind != low.kind:
        raise WanUserError(
            f"low_noise_model {low_name} is a {low.kind.value} expert but model {high_name} is a "
            f"{high.kind.value} expert: pick the low-noise expert of the same release."
        )
    if high != low:
        raise WanUserError(
            f"low_noise_model {low_name} is {low.text()} but model {high_name} is {high.text()}: pick the "
            f"matching expert of the same release."
        )


@dataclass
class Wan22ModelPair:
    kind: ModelKind
    high: comfy.model_patcher.ModelPatcher  # the high-noise expert, the single expert, or the 5B model
    low: comfy.model_patcher.ModelPatcher | None
    high_name: str
    low_name: str | None
    text_dim: int

    @property
    def defaults(self) -> KindDefaults:
        return KIND_DEFAULTS[self.kind]

    @property
    def is_pair(self) -> bool:
        return self.low is not None

    def describe(self) -> str:
        if self.kind == ModelKind.TI2V:
            return f"TI2V-5B model {self.high_name}"
        if self.low is None:
            return f"{self.kind.value.upper()}-A14B single expert {self.high_name} (runs every step)"
        return f"{self.kind.value.upper()}-A14B pair: high {self.high_name}, low {self.low_name}"

    @classmethod
    def from_models(cls, high, low=None, high_name: str | None = None, low_name: str | None = None):
        """A pair from MODELs (ours or ComfyUI's native Wan models); kind read from the weights."""
        high_name = high_name or _name_of(high, "model")
        low_name = (low_name or _name_of(low, "low_noise_model")) if low is not None else None
        high_shape = shape_of_model(high, high_name)
        low_shape = shape_of_model(low, low_name) if low is not None else None
        check_partners(high_shape, low_shape, high_name, low_name)
        pair = cls(high_shape.kind, high, low, high_name, low_name, high_shape.text_dim)
        _log_single_expert(pair)
        return pair


def _name_of(model, fallback: str) -> str:
    path = checkpoint_path_of(model) if model is not None else None
    return Path(path).name if path is not None else fallback


def _log_single_expert(pair: Wan22ModelPair) -> None:
    if pair.low is None and pair.kind != ModelKind.TI2V:
        logging.info(
            "[ComfyUI-Wan22] %s is one A14B expert without its partner: it runs every step as a single "
            "model (fine for the low-noise expert alone on images or refining).",
            pair.high_name,
        )


def load_pair(model_path: str | Path, low_path: str | Path | None = None, weight_dtype: str = "default") -> Wan22ModelPair:
    """Loads the model (and its low-noise partner), checking both headers before any weights.

    A pipeline folder holding both experts (release or diffusers layout) gives the pair by itself.
    """
    model_path = Path(model_path)
    if low_path is None:
        low_path = partner_in_folder(model_path)
    high_ckpt = inspect_dit(model_path)
    low_ckpt = inspect_dit(low_path) if low_path is not None else None
    names = (_display_name(model_path), _display_name(low_path) if low_path is not None else None)
    check_partners(_shape(high_ckpt), _shape(low_ckpt) if low_ckpt else None, *names)
    high = expert_from_checkpoint(high_ckpt, weight_dtype)
    low = expert_from_checkpoint(low_ckpt, weight_dtype) if low_ckpt is not None else None
    pair = Wan22ModelPair(high_ckpt.kind, high, low, names[0], names[1], high_ckpt.config.text_dim)
    _log_single_expert(pair)
    logging.info("[ComfyUI-Wan22] loaded %s", pair.describe())
    return pair


def _shape(ckpt) -> ModelShape:
    c = ckpt.config
    return ModelShape(ckpt.kind, c.dim, c.num_layers, c.text_dim)


def _display_name(path: Path) -> str:
    path = Path(path)
    return f"{path.parent.name}/{path.name}" if path.name in ("transformer_2", "low_noise_model") else path.name
