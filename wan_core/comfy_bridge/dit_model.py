"""A Wan2.2 expert as an ordinary ComfyUI model.

Each expert is a `comfy.model_base.WAN21` (A14B: T2V, and I2V with its image concat) or `WAN22`
(TI2V-5B: per-frame timesteps, first-frame conditioning) whose `diffusion_model` is our WanDiT
built from `comfy.ops` layers, wrapped in a plain `comfy.model_patcher.ModelPatcher`. So native
KSampler, ModelSamplingSD3, LoRA loaders and TorchCompileModel accept it unchanged, and
comfy.model_management loads, offloads and partially loads it like any other model.

Weights are assigned from the file's memory map, so an idle expert costs no RAM; loading it for
compute copies them off the file (to the GPU, or into process memory on a CPU: resident_weights).
"""

from __future__ import annotations

import dataclasses
import logging
from pathlib import Path

import comfy.model_base
import comfy.model_management as mm
import comfy.model_patcher
import comfy.ops
import comfy.patcher_extension
import comfy.supported_models
import torch

from ..checkpoints import FP8_DTYPES, DiTCheckpoint, inspect_dit, parse_weight_dtype, stored_tensors
from ..config import KIND_DEFAULTS, ModelKind
from ..dit import WanDiT
from .resident_weights import keep_resident_on_cpu

# bf16 first: the release computes in bf16 (fp16 can overflow in the 14B experts).
SUPPORTED_COMPUTE = [torch.bfloat16, torch.float16, torch.float32]

# ComfyUI's own model configs for each kind: latent format, LoRA key maps, text encoder hints.
_COMFY_CONFIGS = {
    ModelKind.T2V: (comfy.supported_models.WAN21_T2V, "t2v"),
    ModelKind.I2V: (comfy.supported_models.WAN21_I2V, "i2v"),
    ModelKind.TI2V: (comfy.supported_models.WAN22_T2V, "t2v"),
}


class ComfyWanDiT(WanDiT):
    """WanDiT whose forward runs through ComfyUI's diffusion-model wrappers (as ComfyUI's own
    WanModel does), so extensions that wrap the diffusion model see ours too."""

    def forward(self, x, timestep, context, clip_fea=None, time_dim_concat=None, transformer_options=None, **kwargs):
        transformer_options = transformer_options or {}
        wrappers = comfy.patcher_extension.get_all_wrappers(
            comfy.patcher_extension.WrappersMP.DIFFUSION_MODEL, transformer_options
        )
        return comfy.patcher_extension.WrapperExecutor.new_class_executor(super().forward, self, wrappers).execute(
            x, timestep, context, clip_fea, time_dim_concat, transformer_options, **kwargs
        )


def _dit_factory(ckpt: DiTCheckpoint):
    """What BaseModel calls as `unet_model(**unet_config, device=..., operations=...)`: our DiT,
    built on the meta device (the weights are assigned from the file afterwards)."""

    def build(dtype=None, operations=None, **_unet_config):
        return ComfyWanDiT(ckpt.config, ops=operations, device="meta", dtype=dtype)

    return build


class Wan22Expert(comfy.model_base.WAN21):
    """An A14B expert: ComfyUI's Wan2.1-architecture model class around our DiT."""

    def __init__(self, model_config, ckpt: DiTCheckpoint, device=None):
        comfy.model_base.BaseModel.__init__(
            self, model_config, comfy.model_base.ModelType.FLOW, device=device, unet_model=_dit_factory(ckpt)
        )
        self.image_to_video = ckpt.kind == ModelKind.I2V


class Wan22DenseModel(comfy.model_base.WAN22):
    """The TI2V-5B model: ComfyUI's Wan2.2 model class (per-frame timesteps) around our DiT."""

    def __init__(self, model_config, ckpt: DiTCheckpoint, device=None):
        comfy.model_base.BaseModel.__init__(
            self, model_config, comfy.model_base.ModelType.FLOW, device=device, unet_model=_dit_factory(ckpt)
        )
        self.image_to_video = True


def _model_config(ckpt: DiTCheckpoint, weight_dtype: torch.dtype, load_device):
    cls, model_type = _COMFY_CONFIGS[ckpt.kind]
    c = ckpt.config
    unet_config = {
        "image_model": "wan2.1", "model_type": model_type, "dim": c.dim, "ffn_dim": c.ffn_dim,
        "num_heads": c.num_heads, "num_layers": c.num_layers, "in_dim": c.in_dim, "out_dim": c.out_dim,
        "text_dim": c.text_dim, "freq_dim": c.freq_dim, "patch_size": c.patch_size, "eps": c.eps,
    }
    config = cls(unet_config)
    # The release's shift, so native samplers on the bare MODEL start from the right schedule.
    config.sampling_settings = {"shift": KIND_DEFAULTS[ckpt.kind].shift}
    compute = mm.unet_manual_cast(weight_dtype, load_device, SUPPORTED_COMPUTE)
    config.set_inference_dtype(weight_dtype, compute)
    if ckpt.scaled_fp8 is not None:
        config.scaled_fp8 = ckpt.scaled_fp8
        # comfy's scaled fp8 layers: fp8 weight x fp32 scale, cast per call to the compute dtype.
        config.custom_operations = comfy.ops.scaled_fp8_ops(override_dtype=ckpt.scaled_fp8)
    else:
        # Casting layers always: the DiT asks some layers for fp32 (norms, time embedding, head)
        # and the others for the compute dtype, whatever the weights are stored in.
        config.custom_operations = comfy.ops.manual_cast
    return config, compute


def _storage_dtype(ckpt: DiTCheckpoint, chosen: torch.dtype | None, load_device) -> torch.dtype:
    if chosen is not None:
        return chosen
    if ckpt.file_dtype != torch.float32:  # keep the file's dtype: the weights stay a view of it
        return ckpt.file_dtype
    params = sum(int(torch.Size(ckpt.weights.shape(k)).numel()) for k in ckpt.weights.keys())
    return mm.unet_dtype(model_params=params, supported_dtypes=SUPPORTED_COMPUTE, weight_dtype=ckpt.file_dtype)


def load_expert(path: str | Path, weight_dtype: str = "default") -> comfy.model_patcher.ModelPatcher:
    """One Wan2.2 DiT file or folder -> a ModelPatcher, weights memory-mapped on the CPU."""
    return expert_from_checkpoint(inspect_dit(path), weight_dtype)


def expert_from_checkpoint(ckpt: DiTCheckpoint, weight_dtype: str = "default") -> comfy.model_patcher.ModelPatcher:
    load_device = mm.get_torch_device()
    offload_device = mm.unet_offload_device()
    storage = _storage_dtype(ckpt, parse_weight_dtype(weight_dtype), load_device)
    keep_scaled = ckpt.scaled_fp8 is not None and weight_dtype == "default"
    model_config, compute = _model_config(ckpt if keep_scaled else _unscaled(ckpt), storage, load_device)
    # Tensors other than matrix weights (norm gains, biases, modulation tables) stay in the
    # compute dtype when the matrices are stored in fp8.
    other = storage if storage not in FP8_DTYPES else (compute or torch.float32)
    cls = Wan22DenseModel if ckpt.kind == ModelKind.TI2V else Wan22Expert
    model = cls(model_config, ckpt, device=offload_device)
    dit = model.diffusion_model
    state = dict(stored_tensors(ckpt, storage, other, keep_scaled=keep_scaled, device=offload_device))
    if keep_scaled:  # layers the file did not scale still get comfy's scale parameter
        for name, module in dit.named_modules():
            if hasattr(module, "scale_weight") and f"{name}.scale_weight" not in state:
                state[f"{name}.scale_weight"] = torch.ones((), dtype=torch.float32)
    dit.load_state_dict(state, strict=True, assign=True)
    dit.requires_grad_(False)
    dit.dtype = storage
    model.eval()
    logging.info(
        "[ComfyUI-Wan22] %s: %s; weights %s, compute %s", ckpt.path.name, ckpt.description, storage, compute or storage
    )
    model.wan22_checkpoint = ckpt.path  # on the model, not the patcher: clones (LoRA) share it
    patcher = comfy.model_patcher.ModelPatcher(model, load_device=load_device, offload_device=offload_device)
    keep_resident_on_cpu(patcher, ckpt.weights)  # file views only while idle: see resident_weights
    return patcher


def _unscaled(ckpt: DiTCheckpoint) -> DiTCheckpoint:
    """The same checkpoint seen without its fp8 scales (they are multiplied out while loading)."""
    return dataclasses.replace(ckpt, scaled_fp8=None)


def checkpoint_path_of(model: comfy.model_patcher.ModelPatcher) -> Path | None:
    """The file or folder a MODEL was loaded from by this pack, else None."""
    return getattr(getattr(model, "model", None), "wan22_checkpoint", None)


def dit_of(patcher) -> WanDiT | None:
    """Our WanDiT inside a MODEL, or None for a model this pack did not load."""
    dm = getattr(getattr(patcher, "model", None), "diffusion_model", None)
    return dm if isinstance(dm, WanDiT) else None
