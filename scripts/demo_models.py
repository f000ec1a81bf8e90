"""Small random-weight Wan2.2 models for `make demo` and the template tests.

They are the real architectures (Wan DiT, Wan2.1 / Wan2.2 VAE, umT5 with its sentencepiece
tokenizer) at toy widths, every parameter random, written in the files' real formats: ComfyUI
single-file DiTs (scaled fp8 when the file name says fp8_scaled, fp16 when it says fp16),
ComfyUI-layout VAE safetensors, and a umT5 safetensors with the tokenizer embedded as ComfyUI's
umt5 files carry it. They produce noise-like videos: they show the pipeline, not a picture.

The builders live in the test factories (tests/dit_factory.py, vae_factory.py, text_factory.py);
this module only chooses sizes, seeds and formats and writes the files where ComfyUI looks.
"""

from __future__ import annotations

import os
import sys
from dataclasses import dataclass
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parents[1]
if str(REPO / "tests") not in sys.path:  # the factories are imported as the tests import them
    sys.path.insert(0, str(REPO / "tests"))

import dit_factory  # noqa: E402
import text_factory  # noqa: E402
import vae_factory  # noqa: E402

from wan_core.config import KIND_DEFAULTS, ModelKind  # noqa: E402

# The DiT's text width must equal the umT5's width (the tiny umT5 is 32 wide).
assert dit_factory.TINY_TEXT_DIM == text_factory.TINY["d_model"]

DEMO_PREFIX = "demo_random_"


@dataclass(frozen=True)
class ModelNames:
    """The files a Wan2.2 graph loads (names inside ComfyUI's models/ subfolders)."""

    high: str  # diffusion_models/: the high-noise expert, or the 5B model
    low: str | None  # diffusion_models/: the low-noise expert (A14B only)
    vae: str  # vae/
    text_encoder: str  # text_encoders/


def demo_names(kind: ModelKind) -> ModelNames:
    """Names that say what the files are: random weights of the kind's real architecture."""
    if kind == ModelKind.TI2V:
        return ModelNames(f"{DEMO_PREFIX}wan2.2_ti2v_5B_fp16.safetensors", None,
                          f"{DEMO_PREFIX}wan2.2_vae.safetensors", f"{DEMO_PREFIX}umt5.safetensors")
    return ModelNames(f"{DEMO_PREFIX}wan2.2_{kind.value}_high_noise_fp8_scaled.safetensors",
                      f"{DEMO_PREFIX}wan2.2_{kind.value}_low_noise_fp8_scaled.safetensors",
                      f"{DEMO_PREFIX}wan_2.1_vae.safetensors", f"{DEMO_PREFIX}umt5.safetensors")


def _dit_format(name: str) -> dict:
    """write_comfy_file arguments for the precision a ComfyUI file name announces."""
    if "fp8_scaled" in name:
        return {"scaled_fp8": torch.float8_e4m3fn}
    if "fp16" in name:
        return {"dtype": torch.float16}
    if "bf16" in name:
        return {"dtype": torch.bfloat16}
    return {}


def _replace_atomically(path: Path, write) -> Path:
    """write(temporary path) then rename over `path`: a server that has the old file memory-mapped
    keeps reading the old bytes instead of crashing on a truncated file."""
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_name(f".{path.name}.partial")  # not a model extension: ComfyUI does not list it
    write(partial)
    os.replace(partial, path)
    return path


def write_dit(path: Path, kind: ModelKind, seed: int) -> Path:
    cfg = dit_factory.tiny_config(kind)
    sd = dit_factory.random_state_dict(cfg, seed=seed)
    return _replace_atomically(path, lambda p: dit_factory.write_comfy_file(sd, p, **_dit_format(path.name)))


def write_vae(path: Path, vae_kind: str) -> Path:
    return _replace_atomically(path, lambda p: vae_factory.write_vae(p, vae_kind, "comfy", "tiny", seed=0))


def write_text_encoder(path: Path) -> Path:
    """A tiny umT5 in ComfyUI's umt5 safetensors layout, tokenizer embedded (scaled fp8 if so named)."""
    model = text_factory.reference_model(seed=0)
    fp8 = "fp8" in path.name
    return _replace_atomically(path, lambda p: text_factory.write_comfy_safetensors(p, model, fp8_scaled=fp8))


def write_models(models_root: Path, kind: ModelKind, names: ModelNames, seed: int = 0) -> dict[str, Path]:
    """Writes the random models a `kind` graph needs under ComfyUI's models/ layout; returns the paths.

    The experts get seeds `seed` and `seed + 1`; the VAE and umT5 are the same for every kind (files
    shared by several templates stay identical)."""
    models_root = Path(models_root)
    paths = {"high": write_dit(models_root / "diffusion_models" / names.high, kind, seed)}
    if names.low:
        paths["low"] = write_dit(models_root / "diffusion_models" / names.low, kind, seed + 1)
    paths["vae"] = write_vae(models_root / "vae" / names.vae, KIND_DEFAULTS[kind].vae_kind)
    paths["text_encoder"] = write_text_encoder(models_root / "text_encoders" / names.text_encoder)
    return paths
