"""Wan LoRA files -> weight patches keyed by the model's own state-dict names (pure key mapping).

One normaliser for every Wan LoRA layout in use. A file key is `<prefix><module><suffix>`:

- prefix: `diffusion_model.`, `model.diffusion_model.`, `transformer.` (diffusers module names),
  `lora_unet_` (kohya: dots of the module name written as underscores), or none;
- module: the official Wan name (`blocks.0.self_attn.q`) or diffusers' (`blocks.0.attn1.to_q`),
  renamed through the one official<->diffusers table in `checkpoints.py`;
- suffix: a low-rank pair (`lora_down`/`lora_up` + optional `alpha`, `lora_A`/`lora_B`,
  `lora.down`/`lora.up`), a full difference (`.diff` on the weight or a parameter, `.diff_b` on
  the bias), or `blocks.N.diff_m`, a difference added to `blocks.N.modulation` (the newer
  lightx2v distill LoRAs carry these; native ComfyUI 0.3.75 drops them).

Matching is against the model's keys and shapes, so a Wan2.1 14B LoRA lands on a Wan2.2 A14B
expert (same block layout) and its image-branch keys (`img_emb`, `k_img`) are reported as
unmatched. Only `.safetensors` is read; pickled files are refused (loading them can run code).
Nothing here imports ComfyUI: the node turns the result into ComfyUI patches.
"""

from __future__ import annotations

import re
from collections import defaultdict
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

import torch

from .checkpoints import official_to_diffusers_key
from .errors import WanUserError
from .weights import PICKLE_SUFFIXES, SafetensorsFile

# Longest first: "model.diffusion_model." must win over "diffusion_model.".
PREFIXES = ("model.diffusion_model.", "diffusion_model.", "transformer.", "lora_unet_", "")
# suffix -> role. Checked longest first so ".diff_b" is not read as ".diff".
SUFFIXES = {
    ".lora_down.weight": "down", ".lora_up.weight": "up",
    ".lora_A.weight": "down", ".lora_B.weight": "up",
    ".lora_A.default.weight": "down", ".lora_B.default.weight": "up",
    ".lora.down.weight": "down", ".lora.up.weight": "up",
    ".alpha": "alpha",
    ".diff_b": "diff_b", ".diff_m": "diff_m", ".diff": "diff",
}
_SUFFIX_ORDER = sorted(SUFFIXES, key=len, reverse=True)
MODEL_PREFIX = "diffusion_model."  # ComfyUI's BaseModel state-dict prefix of the DiT


@dataclass(frozen=True)
class LowRankPatch:
    """W += strength * alpha / rank * up @ down (alpha None: scale 1)."""

    up: torch.Tensor  # [out, rank, ...]
    down: torch.Tensor  # [rank, in, ...]
    alpha: float | None

    @property
    def rank(self) -> int:
        return self.down.shape[0]

    def delta(self, shape) -> torch.Tensor:
        """The fp32 difference this patch adds at strength 1."""
        scale = 1.0 if self.alpha is None else self.alpha / self.rank
        return (scale * (self.up.flatten(1).float() @ self.down.flatten(1).float())).reshape(shape)


@dataclass(frozen=True)
class DiffPatch:
    """W += strength * diff."""

    diff: torch.Tensor

    def delta(self, shape) -> torch.Tensor:
        return self.diff.float().reshape(shape)


@dataclass
class LoraMatch:
    """What a LoRA file does to one model."""

    name: str
    patches: dict[str, LowRankPatch | DiffPatch]  # model state-dict key -> patch
    applied: list[str]  # file keys that went into a patch
    unmatched: list[str]  # file keys that did not
    shape_mismatches: list[str] = field(default_factory=list)  # file keys whose target has another shape

    @property
    def total(self) -> int:
        return len(self.applied) + len(self.unmatched)

    def guess(self) -> str:
        return guess_lora_purpose(self.unmatched, self.shape_mismatches)


def read_lora_file(path: str | Path) -> Mapping[str, torch.Tensor]:
    """A LoRA file's tensors, lazily from a memory map. Pickled formats are refused."""
    path = Path(path)
    if path.suffix.lower() in PICKLE_SUFFIXES:
        raise WanUserError(
            f"{path.name}: a {path.suffix} LoRA is a pickle, and unpickling can run arbitrary code, so it is not "
            f"read. Use the .safetensors version of this LoRA (every Wan LoRA trainer writes one), or convert it "
            f"with a trusted script."
        )
    if path.suffix.lower() != ".safetensors":
        raise WanUserError(f"{path.name}: not a .safetensors file. Pick a LoRA saved as .safetensors.")
    return SafetensorsFile(path)


def _underscored(name: str) -> str:
    return name.replace(".", "_")


def _split_suffix(name: str) -> tuple[str, str] | None:
    for suffix in _SUFFIX_ORDER:
        if name.endswith(suffix):
            return name[: -len(suffix)], SUFFIXES[suffix]
    return None


class _ModelNames:
    """The model's patchable tensors, findable by any alias of their module: official or
    diffusers names, dotted or with kohya's underscores."""

    def __init__(self, shapes: Mapping[str, tuple[int, ...]], prefix: str):
        self.prefix = prefix
        self.shapes = {k[len(prefix):]: tuple(s) for k, s in shapes.items() if k.startswith(prefix)}
        lookup: dict[str, set[str]] = defaultdict(set)
        for key in self.shapes:
            module = self._module_of(key)
            diffusers = official_to_diffusers_key(key)
            diffusers_module = diffusers[: len(diffusers) - (len(key) - len(module))]
            for alias in (module, diffusers_module):
                lookup[_underscored(alias)].add(module)
        # An underscored name shared by two modules would be ambiguous: keep only unique ones.
        self.lookup = {alias: next(iter(mods)) for alias, mods in lookup.items() if len(mods) == 1}

    @staticmethod
    def _module_of(key: str) -> str:
        for tail in (".weight", ".bias"):
            if key.endswith(tail):
                return key[: -len(tail)]
        return key  # a bare parameter (modulation tables)

    def module(self, alias: str) -> str | None:
        return self.lookup.get(_underscored(alias))

    def target(self, module: str, role: str) -> str | None:
        """The state-dict key (without prefix) a patch of this role on this module changes."""
        if role == "diff_b":
            key = module + ".bias"
        elif module in self.shapes and role in ("diff", "diff_m"):
            key = module  # a bare parameter: modulation, or what diff_m resolved to
        else:
            key = module + ".weight"
        return key if key in self.shapes else None


def _parse(file_key: str) -> tuple[str, str] | None:
    """file key -> (module alias, role), or None for a key of no known layout."""
    split = _split_suffix(file_key)
    if split is None:
        return None
    stem, role = split
    for prefix in PREFIXES:
        if stem.startswith(prefix):
            stem = stem[len(prefix):]
            break
    if role == "diff_m":
        stem += ".modulation"  # blocks.N.diff_m is the difference of blocks.N.modulation
    return stem, role


def match_lora(lora: Mapping[str, torch.Tensor], model_shapes: Mapping[str, tuple[int, ...]], name: str,
               model_prefix: str = MODEL_PREFIX) -> LoraMatch:
    """Maps a LoRA's tensors onto a model whose state-dict keys and shapes are `model_shapes`
    (ComfyUI's names, e.g. `diffusion_model.blocks.0.self_attn.q.weight`)."""
    names = _ModelNames(model_shapes, model_prefix)
    groups: dict[tuple[str, str], dict[str, str]] = defaultdict(dict)  # (module, kind) -> role -> file key
    unmatched: list[str] = []
    for file_key in lora.keys():
        parsed = _parse(file_key)
        module = names.module(parsed[0]) if parsed else None
        if module is None:
            unmatched.append(file_key)
            continue
        role = parsed[1]
        kind = "lowrank" if role in ("down", "up", "alpha") else role
        groups[(module, kind)][role] = file_key

    patches: dict[str, LowRankPatch | DiffPatch] = {}
    applied: list[str] = []
    mismatched: list[str] = []
    for (module, kind), roles in groups.items():
        keys = list(roles.values())
        target = names.target(module, "down" if kind == "lowrank" else kind)
        if target is None or (kind == "lowrank" and not {"down", "up"} <= roles.keys()):
            unmatched += keys
            continue
        shape = names.shapes[target]
        if kind == "lowrank":
            alpha = lora[roles["alpha"]].item() if "alpha" in roles else None
            patch = LowRankPatch(lora[roles["up"]], lora[roles["down"]], alpha)
            fits = _low_rank_fits(patch, shape)
        else:
            diff = lora[roles[kind]]
            fits = diff.numel() == _numel(shape) and diff.shape[0] == shape[0]
            patch = DiffPatch(diff.reshape(shape) if fits else diff)  # ComfyUI adds only equal shapes
        if not fits:
            unmatched += keys
            mismatched += keys
            continue
        patches[model_prefix + target] = patch
        applied += keys
    return LoraMatch(name, patches, sorted(applied), sorted(unmatched), sorted(mismatched))


def _numel(shape) -> int:
    n = 1
    for s in shape:
        n *= s
    return n


def _low_rank_fits(patch: LowRankPatch, shape) -> bool:
    up, down = patch.up, patch.down
    if up.ndim < 2 or down.ndim < 2 or up.shape[1] != down.shape[0]:
        return False
    return up.shape[0] == shape[0] and down.flatten(1).shape[1] * up.shape[0] == _numel(shape)


_FOREIGN_LAYOUTS = [
    # (regex on file keys, what such a file is for)
    (r"(input_blocks|output_blocks|middle_block|down_blocks|up_blocks|mid_block)", "keys of an SD1.x/SDXL UNet"),
    (r"(double_blocks|single_blocks|single_transformer_blocks)", "a Flux or HunyuanVideo LoRA"),
    (r"joint_blocks", "an SD3 LoRA"),
    (r"transformer_blocks", "the LoRA of another DiT (transformer_blocks: Qwen-Image, LTX-Video, CogVideoX, Mochi)"),
    (r"(lora_te\d?_|text_encoder|text_model)", "a text-encoder LoRA"),
]


def guess_lora_purpose(unmatched: list[str], shape_mismatches: list[str]) -> str:
    """A short description of what a LoRA whose keys did not match is probably for."""
    if shape_mismatches:
        return ("a Wan LoRA for a model of another size (e.g. Wan2.1 1.3B, or the 5B model vs an A14B expert): "
                "its layer names match but not its shapes")
    for pattern, purpose in _FOREIGN_LAYOUTS:
        if any(re.search(pattern, k) for k in unmatched):
            return purpose
    if any(re.search(r"(^|[._])blocks[._]\d+[._]", k) for k in unmatched):
        return "a Wan-like LoRA whose layer names this model does not have"
    return "no layout of a Wan LoRA"
