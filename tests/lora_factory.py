"""Random LoRAs for the tiny DiTs of dit_factory, written in every Wan LoRA layout in use.

`random_lora(cfg, seed)` gives the content in official names (module -> up/down/alpha, and full
differences for weights, biases and modulation tables); `write_lora(content, path, layout)`
writes it in one layout; `merge_by_hand(state_dict, content, strength)` is the fp32 reference
(W + strength * alpha/rank * up @ down; diffs added at strength), independent of wan_core.loras.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import torch
from safetensors.torch import save_file

from wan_core.checkpoints import official_to_diffusers_key
from wan_core.config import DiTConfig

# Linear (and one conv) modules a Wan LoRA trains, official names; N: every block.
LOW_RANK_MODULES = [
    "blocks.N.self_attn.q", "blocks.N.self_attn.k", "blocks.N.self_attn.v", "blocks.N.self_attn.o",
    "blocks.N.cross_attn.q", "blocks.N.cross_attn.k", "blocks.N.cross_attn.v", "blocks.N.cross_attn.o",
    "blocks.N.ffn.0", "blocks.N.ffn.2",
    "text_embedding.0", "time_embedding.2", "time_projection.1", "head.head", "patch_embedding",
]
# (module, tensor) full differences: `.diff` on a weight, `.diff_b` on a bias.
DIFF_WEIGHTS = ["blocks.N.norm3", "blocks.N.self_attn.norm_q"]
DIFF_BIASES = ["blocks.N.self_attn.q", "blocks.N.ffn.2", "head.head"]

# Layouts: name -> (key prefix, down suffix, up suffix, alpha written, official names or diffusers,
# underscores in module names, diff_m written). "comfy_no_diff_m" is what native reads in full.
LAYOUTS = {
    "comfy_lora_down": ("diffusion_model.", ".lora_down.weight", ".lora_up.weight", True, "official", False, True),
    "lightx2v_lora_AB": ("diffusion_model.", ".lora_A.weight", ".lora_B.weight", True, "official", False, True),
    "model_prefix_lora_dot": ("model.diffusion_model.", ".lora.down.weight", ".lora.up.weight", True, "official", False, True),
    "diffusers": ("transformer.", ".lora_A.weight", ".lora_B.weight", False, "diffusers", False, False),
    "kohya": ("lora_unet_", ".lora_down.weight", ".lora_up.weight", True, "official", True, False),
    "comfy_no_diff_m": ("diffusion_model.", ".lora_down.weight", ".lora_up.weight", True, "official", False, False),
}
# The layouts native LoraLoaderModelOnly 0.3.75 reads completely.
NATIVE_LAYOUTS = ["comfy_no_diff_m", "kohya"]


@dataclass
class LoraContent:
    low_rank: dict[str, tuple[torch.Tensor, torch.Tensor, float]]  # module -> (up, down, alpha)
    diffs: dict[str, torch.Tensor]  # official state-dict key -> difference
    modulation: dict[str, torch.Tensor] = field(default_factory=dict)  # "blocks.N" -> diff_m

    def with_alpha(self, written: bool) -> LoraContent:
        """The content as a file without alpha keys reads it (alpha = rank: scale 1)."""
        if written:
            return self
        return LoraContent({m: (u, d, float(d.shape[0])) for m, (u, d, _) in self.low_rank.items()}, self.diffs,
                           self.modulation)

    def without_modulation(self) -> LoraContent:
        return LoraContent(self.low_rank, self.diffs, {})


def _modules(names, num_layers):
    out = []
    for n in names:
        out += [n.replace(".N.", f".{i}.") for i in range(num_layers)] if ".N." in n else [n]
    return out


def random_lora(cfg: DiTConfig, seed: int = 0, rank: int = 4, alpha: float = 2.0, scale: float = 0.3) -> LoraContent:
    from dit_factory import state_dict_shapes

    shapes = state_dict_shapes(cfg)
    g = torch.Generator().manual_seed(seed)
    low_rank = {}
    for module in _modules(LOW_RANK_MODULES, cfg.num_layers):
        w = shapes[module + ".weight"]
        fan_in = int(torch.Size(w[1:]).numel())
        up = torch.randn(w[0], rank, generator=g) * scale / rank**0.5
        down = torch.randn(rank, *w[1:], generator=g) / fan_in**0.5
        low_rank[module] = (up, down, alpha)
    diffs = {}
    for module in _modules(DIFF_WEIGHTS, cfg.num_layers):
        diffs[module + ".weight"] = torch.randn(shapes[module + ".weight"], generator=g) * 0.1
    for module in _modules(DIFF_BIASES, cfg.num_layers):
        diffs[module + ".bias"] = torch.randn(shapes[module + ".bias"], generator=g) * 0.05
    modulation = {f"blocks.{i}": torch.randn(1, 6, cfg.dim, generator=g) * 0.05 for i in range(cfg.num_layers)}
    return LoraContent(low_rank, diffs, modulation)


def write_lora(content: LoraContent, path: Path, layout: str, extra: dict | None = None) -> Path:
    prefix, down_sfx, up_sfx, with_alpha, names, underscores, with_diff_m = LAYOUTS[layout]

    def name(module: str) -> str:
        if names == "diffusers":
            module = official_to_diffusers_key(module + ".weight")[: -len(".weight")]
        return module.replace(".", "_") if underscores else module

    out = {}
    for module, (up, down, alpha) in content.low_rank.items():
        out[prefix + name(module) + down_sfx] = down
        out[prefix + name(module) + up_sfx] = up
        if with_alpha:
            out[prefix + name(module) + ".alpha"] = torch.tensor(alpha)
    for key, diff in content.diffs.items():
        module, tensor = key.rsplit(".", 1)
        out[prefix + name(module) + (".diff" if tensor == "weight" else ".diff_b")] = diff
    if with_diff_m:
        for block, diff in content.modulation.items():
            out[prefix + name(block) + ".diff_m"] = diff
    out.update(extra or {})
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    save_file({k: v.contiguous() for k, v in out.items()}, str(path))
    return path


def applied_tensor_count(content: LoraContent, layout: str) -> int:
    """How many tensors of a file written by `write_lora` a full reader applies."""
    _, _, _, with_alpha, _, _, with_diff_m = LAYOUTS[layout]
    n = len(content.low_rank) * (3 if with_alpha else 2) + len(content.diffs)
    return n + (len(content.modulation) if with_diff_m else 0)


def merge_by_hand(state_dict: dict, content: LoraContent, strength: float) -> dict:
    """The reference: the LoRA merged into official-name fp32 weights."""
    out = {k: v.float().clone() for k, v in state_dict.items()}
    for module, (up, down, alpha) in content.low_rank.items():
        w = out[module + ".weight"]
        rank = down.shape[0]
        w += strength * (alpha / rank) * (up.flatten(1) @ down.flatten(1)).reshape(w.shape)
    for key, diff in content.diffs.items():
        out[key] += strength * diff
    for block, diff in content.modulation.items():
        out[block + ".modulation"] += strength * diff
    return out


def sd_unet_lora(path: Path) -> Path:
    """A LoRA of an SD/SDXL UNet (kohya names), for the refusal test."""
    g = torch.Generator().manual_seed(0)
    out = {}
    for block in ("lora_unet_down_blocks_0_attentions_0_proj_in", "lora_unet_mid_block_attentions_0_proj_out",
                  "lora_te1_text_model_encoder_layers_0_mlp_fc1"):
        out[block + ".lora_down.weight"] = torch.randn(4, 320, generator=g)
        out[block + ".lora_up.weight"] = torch.randn(320, 4, generator=g)
        out[block + ".alpha"] = torch.tensor(4.0)
    save_file(out, str(path))
    return Path(path)
