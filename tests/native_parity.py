"""Pack-vs-native graphs for the real server: the pack's one Wan22Sampler against native's two
KSamplerAdvanced split at the same step, on the same tiny random weights.

- `Prompt`: an API-format prompt built node by node (`add` returns the node id, `out` a socket).
- `Split`: one run's settings (steps, switch step, shift, cfg per phase, seed) and the boundary
  that makes the pack switch at that step on ComfyUI's `simple` schedule.
- `pack_models` / `native_model`: the pack's loader, native UNETLoader.
- `pack_sample` / `native_sample`: the two sides. Native: each model through ModelSamplingSD3
  (shift), KSamplerAdvanced 0..k with leftover noise, then k..end without new noise.
- Conditioning comes from the test-only node Wan22TestConditioning (tests/comfy_test_nodes).
- `save_latent` / `run_latents`: native SaveLatent writes each final latent; the test reads the
  files back from the server's output folder.
- `write_lora`: a random LoRA in ComfyUI's generic format (`diffusion_model.<module>.lora_up/down`).
- `write_tiny_sd3`: the smallest non-Wan diffusion model native UNETLoader loads (an SD3 MMDiT of
  depth 1), for the bad-input tests.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file

TOLERANCE = 1e-5  # max |pack - native| / std(native): the bound
GUARD = 1e-3  # a patch on one expert alone must move the result by 100x the tolerance


class Prompt:
    def __init__(self):
        self.nodes: dict[str, dict] = {}

    def add(self, class_type: str, **inputs) -> str:
        node_id = str(len(self.nodes) + 1)
        self.nodes[node_id] = {"class_type": class_type, "inputs": inputs}
        return node_id

    def only(self, keep) -> Prompt:
        """The nodes that the SaveLatent nodes whose label passes `keep(label)` depend on. A prompt
        holding no other node also drops the others from ComfyUI's output cache (it keeps only the
        nodes of the current prompt), so they run afresh in a later prompt."""
        wanted = [i for i, n in self.nodes.items() if n["class_type"] == "SaveLatent" and keep(latent_label(n))]
        needed, stack = set(), list(wanted)
        while stack:
            node_id = stack.pop()
            if node_id in needed:
                continue
            needed.add(node_id)
            stack += [v[0] for v in self.nodes[node_id]["inputs"].values() if isinstance(v, list)]
        sub = Prompt()
        sub.nodes = {i: n for i, n in self.nodes.items() if i in needed}
        return sub


def out(node_id: str, index: int = 0) -> list:
    return [node_id, index]


def shifted(shift: float, t: float) -> float:
    """ComfyUI's time_snr_shift: the flow shift of a timestep fraction."""
    return t if shift == 1.0 else shift * t / (1 + (shift - 1) * t)


def simple_sigmas(steps: int, shift: float) -> list[float]:
    """ComfyUI's `simple` scheduler on ModelSamplingDiscreteFlow(shift, multiplier 1000), float64."""
    stride = 1000 / steps
    return [shifted(shift, (1000 - int(x * stride)) / 1000) for x in range(steps)] + [0.0]


@dataclass(frozen=True)
class Split:
    steps: int = 4
    switch: int = 2  # the first step of the low-noise expert
    shift: float = 5.0
    cfg_high: float = 3.5
    cfg_low: float = 2.5
    seed: int = 11

    @property
    def boundary(self) -> float:
        """Halfway between the timesteps of the last high step and the first low step (3 decimals:
        the widget's step), so the pack's router puts exactly `switch` steps on the high expert."""
        sig = simple_sigmas(self.steps, self.shift)
        last_high, first_low = math.floor(sig[self.switch - 1] * 1000), math.floor(sig[self.switch] * 1000)
        assert last_high - first_low >= 2, f"steps {self.switch - 1} and {self.switch} are too close to split"
        return round((last_high + first_low) / 2000, 3)


def pack_models(p: Prompt, model: str, low_noise_model: str | None = None, weight_dtype: str = "default"):
    """The pack's loader: (model, low_noise_model) MODEL sockets, the second None without a partner."""
    loader = p.add("Wan22ModelLoader", model=model, low_noise_model=low_noise_model or "none", weight_dtype=weight_dtype)
    return out(loader, 0), (out(loader, 1) if low_noise_model else None)


def native_model(p: Prompt, name: str) -> list:
    return out(p.add("UNETLoader", unet_name=name, weight_dtype="default"))


def pack_sample(p: Prompt, model, low, positive, negative, latent, split: Split) -> str:
    """The pack's sampler, release defaults off, euler / simple; `low` None for a single model."""
    inputs = dict(model=model, positive=positive, negative=negative, latent=latent, seed=split.seed,
                  steps=split.steps, use_release_defaults=False, cfg=split.cfg_high, cfg_low_noise=split.cfg_low,
                  shift=split.shift, boundary=split.boundary, sampler_name="euler", scheduler="simple", denoise=1.0)
    if low is not None:
        inputs["low_noise_model"] = low
    return p.add("Wan22Sampler", **inputs)


def native_sample(p: Prompt, model, low, positive, negative, latent, split: Split) -> str:
    """Native's two KSamplerAdvanced split at `split.switch` (one run over every step without `low`)."""
    common = dict(noise_seed=split.seed, steps=split.steps, sampler_name="euler", scheduler="simple",
                  positive=positive, negative=negative)
    high = p.add("ModelSamplingSD3", model=model, shift=split.shift)
    if low is None:
        return p.add("KSamplerAdvanced", model=out(high), add_noise="enable", cfg=split.cfg_high, latent_image=latent,
                     start_at_step=0, end_at_step=10000, return_with_leftover_noise="disable", **common)
    first = p.add("KSamplerAdvanced", model=out(high), add_noise="enable", cfg=split.cfg_high, latent_image=latent,
                  start_at_step=0, end_at_step=split.switch, return_with_leftover_noise="enable", **common)
    low_sampling = p.add("ModelSamplingSD3", model=low, shift=split.shift)
    return p.add("KSamplerAdvanced", model=out(low_sampling), add_noise="disable", cfg=split.cfg_low,
                 latent_image=out(first), start_at_step=split.switch, end_at_step=10000,
                 return_with_leftover_noise="disable", **common)


def save_latent(p: Prompt, latent, label: str) -> str:
    return p.add("SaveLatent", samples=latent, filename_prefix=f"native_parity/{label}")


def latent_label(node: dict) -> str:
    return node["inputs"]["filename_prefix"].split("/", 1)[1]


def run_latents(server, p: Prompt, **run_kwargs) -> tuple[dict[str, torch.Tensor], dict]:
    """Runs the prompt; returns {label: final latent} of its SaveLatent nodes, and the history."""
    history = server.run(p.nodes, **run_kwargs)
    latents = {}
    for node_id, node in p.nodes.items():
        if node["class_type"] != "SaveLatent":
            continue
        label = latent_label(node)
        (item,) = history["outputs"][node_id]["latents"]
        path = server.base_dir / "output" / item["subfolder"] / item["filename"]
        latents[label] = load_file(str(path))["latent_tensor"]
    return latents, history


def relative_error(ours: torch.Tensor, reference: torch.Tensor) -> float:
    assert ours.shape == reference.shape, (ours.shape, reference.shape)
    return float((ours.double() - reference.double()).abs().max() / reference.double().std())


def assert_equal_latents(ours: torch.Tensor, native: torch.Tensor, what: str) -> float:
    error = relative_error(ours, native)
    print(f"{what}: max |pack - native| / std(native) = {error:.2e}")
    assert error <= TOLERANCE, f"{what}: pack differs from native by {error:.2e} of the latent's std"
    return error


def assert_changes(changed: torch.Tensor, plain: torch.Tensor, what: str) -> float:
    change = relative_error(changed, plain)
    print(f"{what}: moves the result by {change:.2e} of the latent's std")
    assert change > GUARD, f"{what} changes the result by only {change:.2e}: the parity test could not see it"
    return change


def sampler_summary(history: dict, node_id: str) -> dict | None:
    """The pack's sampler report (switch step, experts used) if the node returned one."""
    items = history.get("outputs", {}).get(node_id, {}).get("wan22_sampler")
    return items[0] if items else None


# ---------------------------------------------------------------------------------------------
# Files


LORA_MODULES = ("self_attn.q", "self_attn.k", "self_attn.v", "self_attn.o",
                "cross_attn.q", "cross_attn.k", "cross_attn.v", "cross_attn.o", "ffn.0", "ffn.2")


def write_lora(path: Path, cfg, seed: int, rank: int = 4, strength: float = 0.3) -> Path:
    """A random LoRA on every linear layer of every block, in ComfyUI's generic key format.

    The update up @ down * alpha / rank has about `strength` times the std of the weights it
    patches (the factory's weights are U(+-1/sqrt(fan_in)))."""
    g = torch.Generator().manual_seed(seed)
    shapes = {"ffn.0": (cfg.ffn_dim, cfg.dim), "ffn.2": (cfg.dim, cfg.ffn_dim)}
    sd = {}
    for block in range(cfg.num_layers):
        for module in LORA_MODULES:
            rows, cols = shapes.get(module, (cfg.dim, cfg.dim))
            key = f"diffusion_model.blocks.{block}.{module}"
            weight_std = 1 / math.sqrt(3 * cols)
            sd[f"{key}.lora_down.weight"] = torch.randn(rank, cols, generator=g) / math.sqrt(cols)
            sd[f"{key}.lora_up.weight"] = torch.randn(rows, rank, generator=g) * (
                strength * weight_std * math.sqrt(cols) / math.sqrt(rank)
            )
            sd[f"{key}.alpha"] = torch.tensor(float(rank))
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    save_file(sd, str(path))
    return path


def write_tiny_sd3(path: Path, seed: int = 0) -> Path:
    """An SD3 MMDiT of depth 1 (hidden 64, one head): not Wan, and native UNETLoader loads it.

    Built with ComfyUI's own class (so the keys are exactly what its detection reads), every
    parameter random."""
    import comfy_inprocess

    comfy_inprocess.comfy()
    import comfy.ops
    from comfy.ldm.modules.diffusionmodules.mmdit import MMDiT

    model = MMDiT(
        in_channels=16, out_channels=16, depth=1, patch_size=2, adm_in_channels=32,
        context_embedder_config={"target": "torch.nn.Linear", "params": {"in_features": 32, "out_features": 64}},
        pos_embed_max_size=8, num_patches=64, pos_embed_scaling_factor=None, dtype=torch.float32,
        device="cpu", operations=comfy.ops.disable_weight_init,
    )
    g = torch.Generator().manual_seed(seed)
    sd = {k: torch.randn(v.shape, generator=g) * 0.05 for k, v in model.state_dict().items()}
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    save_file(sd, str(path))
    return path
