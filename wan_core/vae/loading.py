"""Wan VAE files -> a state dict in ComfyUI's names + its VaeConfig: official .pth, ComfyUI
.safetensors, diffusers AutoencoderKLWan folders.

All are brought to the release's naming, which is also ComfyUI's (comfy.ldm.wan.vae / vae2_2);
the kind and widths are read from the tensors' shapes, so tiny test VAEs load the same way as the
real ones. Building the model is ComfyUI's job (wan_core.comfy_bridge.vae_patcher); this module
imports no ComfyUI.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from pathlib import Path

import torch

from ..errors import WanUserError
from ..weights import WeightFileError, open_state_dict, tensor_shape
from .kinds import NUM_RES_BLOCKS, WAN21, WAN22, VaeConfig

# Prefixes some tools put in front of the VAE's own names.
KEY_PREFIXES = ("first_stage_model.", "vae.", "model.")

_RESNET_PARTS = {"norm1": "residual.0", "conv1": "residual.2", "norm2": "residual.3", "conv2": "residual.6",
                 "conv_shortcut": "shortcut"}


def _resnet(rest: str) -> str:
    part, _, tail = rest.partition(".")
    return f"{_RESNET_PARTS.get(part, part)}.{tail}"


def diffusers_to_release_key(key: str, residual: bool) -> str:
    """One AutoencoderKLWan parameter name -> the release's name."""
    r = NUM_RES_BLOCKS
    rules: list[tuple[str, object]] = [
        (r"^quant_conv\.(.*)", lambda m: f"conv1.{m[1]}"),
        (r"^post_quant_conv\.(.*)", lambda m: f"conv2.{m[1]}"),
        (r"^(encoder|decoder)\.conv_in\.(.*)", lambda m: f"{m[1]}.conv1.{m[2]}"),
        (r"^(encoder|decoder)\.norm_out\.(.*)", lambda m: f"{m[1]}.head.0.{m[2]}"),
        (r"^(encoder|decoder)\.conv_out\.(.*)", lambda m: f"{m[1]}.head.2.{m[2]}"),
        (r"^(encoder|decoder)\.mid_block\.resnets\.(\d+)\.(.*)",
         lambda m: f"{m[1]}.middle.{2 * int(m[2])}.{_resnet(m[3])}"),
        (r"^(encoder|decoder)\.mid_block\.attentions\.0\.(.*)", lambda m: f"{m[1]}.middle.1.{m[2]}"),
    ]
    if residual:
        rules += [
            (r"^encoder\.down_blocks\.(\d+)\.resnets\.(\d+)\.(.*)",
             lambda m: f"encoder.downsamples.{m[1]}.downsamples.{m[2]}.{_resnet(m[3])}"),
            (r"^encoder\.down_blocks\.(\d+)\.downsampler\.(.*)",
             lambda m: f"encoder.downsamples.{m[1]}.downsamples.{r}.{m[2]}"),
            (r"^decoder\.up_blocks\.(\d+)\.resnets\.(\d+)\.(.*)",
             lambda m: f"decoder.upsamples.{m[1]}.upsamples.{m[2]}.{_resnet(m[3])}"),
            (r"^decoder\.up_blocks\.(\d+)\.upsampler\.(.*)",
             lambda m: f"decoder.upsamples.{m[1]}.upsamples.{r + 1}.{m[2]}"),
        ]
    else:
        # Wan2.1 keeps one flat list per side: the encoder's is the same list; the decoder's has
        # (r + 1) residual blocks and one upsample per stage.
        rules += [
            (r"^encoder\.down_blocks\.(\d+)\.(.*)", lambda m: f"encoder.downsamples.{m[1]}.{_flat_part(m[2])}"),
            (r"^decoder\.up_blocks\.(\d+)\.resnets\.(\d+)\.(.*)",
             lambda m: f"decoder.upsamples.{int(m[1]) * (r + 2) + int(m[2])}.{_resnet(m[3])}"),
            (r"^decoder\.up_blocks\.(\d+)\.upsamplers\.0\.(.*)",
             lambda m: f"decoder.upsamples.{int(m[1]) * (r + 2) + r + 1}.{m[2]}"),
        ]
    for pattern, rename in rules:
        m = re.match(pattern, key)
        if m:
            return rename(m)
    return key


def _flat_part(rest: str) -> str:
    # A flat encoder entry is a residual block (norm1/conv1/...) or a resample (resample/time_conv).
    return _resnet(rest) if rest.split(".")[0] in _RESNET_PARTS else rest


def is_diffusers_layout(keys) -> bool:
    return any(k.startswith(("decoder.up_blocks.", "encoder.down_blocks.", "post_quant_conv.")) for k in keys)


def release_state_dict(sd: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Any supported layout -> {release name: tensor} (tensors are not copied)."""
    keys = list(sd.keys())
    for prefix in KEY_PREFIXES:
        if keys and all(k.startswith(prefix) for k in keys):
            keys = [k[len(prefix) :] for k in keys]
            sd = {k: sd[prefix + k] for k in keys}
            break
    if is_diffusers_layout(keys):
        residual = any(".resnets." in k for k in keys if k.startswith("encoder.down_blocks."))
        return {diffusers_to_release_key(k, residual): sd[k] for k in keys}
    return {k: sd[k] for k in keys}


def config_from_shapes(sd: Mapping[str, torch.Tensor], name: str) -> VaeConfig:
    needed = ("conv2.weight", "encoder.conv1.weight", "decoder.head.0.gamma")
    missing = [k for k in needed if k not in sd]
    if missing:
        raise WanUserError(
            f"{name}: not a Wan VAE (it lacks {', '.join(missing)}). Choose the Wan2.1 VAE "
            f"(wan_2.1_vae.safetensors / Wan2.1_VAE.pth) or the Wan2.2 VAE (wan2.2_vae.safetensors / "
            f"Wan2.2_VAE.pth)."
        )
    residual = any(k.startswith("decoder.upsamples.0.upsamples.") for k in sd)
    kind = WAN22 if residual else WAN21
    z = tensor_shape(sd, "conv2.weight")[0]
    in_channels = tensor_shape(sd, "encoder.conv1.weight")[1]
    if z != kind.z_dim or in_channels != 3 * kind.patch**2:
        raise WanUserError(
            f"{name}: looks like a {kind.name} VAE but has {z} latent channels and {in_channels} input "
            f"channels (expected {kind.z_dim} and {3 * kind.patch**2}). It is not a Wan VAE the pack knows; "
            f"use the release's Wan2.1 or Wan2.2 VAE file."
        )
    enc_dim = tensor_shape(sd, "encoder.conv1.weight")[0]
    dec_dim = tensor_shape(sd, "decoder.head.0.gamma")[0]
    return VaeConfig(kind=kind, enc_dim=enc_dim, dec_dim=dec_dim)


def _weights_location(path: Path) -> Path:
    # A diffusers pipeline folder holds the VAE in vae/.
    if path.is_dir() and (path / "vae").is_dir() and not any(path.glob("*.safetensors")):
        return path / "vae"
    return path


def read_vae_state_dict(path) -> tuple[dict[str, torch.Tensor], VaeConfig, str]:
    """Reads a Wan2.1 or Wan2.2 VAE file: ({ComfyUI's name: tensor as stored, file-backed where the
    format allows}, its config, the name to show the user). Foreign files raise a WanUserError."""
    path = _weights_location(Path(path))
    sd = release_state_dict(open_state_dict(path))
    return sd, config_from_shapes(sd, path.name), path.name


def check_against_model(sd: Mapping[str, torch.Tensor], expected: Mapping[str, tuple[int, ...]], cfg: VaeConfig,
                        name: str) -> dict[str, torch.Tensor]:
    """The file's tensors for exactly the model's parameters (`expected`: name -> shape), or a
    WeightFileError naming the file and what is missing, extra or misshapen."""
    missing = sorted(set(expected) - set(sd))
    unexpected = sorted(set(sd) - set(expected))
    wrong = [k for k in expected if k in sd and tuple(tensor_shape(sd, k)) != tuple(expected[k])]
    if missing or unexpected or wrong:
        detail = "; ".join(
            f"{label}: {', '.join(keys[:4])}{' ...' if len(keys) > 4 else ''}"
            for label, keys in (("missing", missing), ("unexpected", unexpected), ("wrong shape", wrong))
            if keys
        )
        raise WeightFileError(
            f"{name}: does not match a {cfg.kind.name} VAE ({detail}). The file is damaged or is a "
            f"different model: use the release's VAE file."
        )
    return {k: sd[k] for k in expected}
