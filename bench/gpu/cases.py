"""The GPU check's cases, most important first (a run cut short keeps the first ones), and their
tiny twins for the CPU rehearsal. Built from bench/cases.py's case type and model specs."""

from __future__ import annotations

from dataclasses import dataclass, replace

import torch

from ..cases import FP8, Case, _a14b, _ti2v
from ..models import dit_factory

CAP_GB = 24.0


@dataclass(frozen=True)
class GpuCase:
    case: Case
    high_steps: int | None = None  # A14B: steps on the high-noise expert; the boundary is put after them
    decode: bool = False  # also time the VAE decode of the final latent (pack node vs native VAEDecode)

    @property
    def name(self) -> str:
        return self.case.name


def gpu_cases() -> list[GpuCase]:
    ti2v = _ti2v("ti2v-5b-bf16-1280x704x121", dit_factory.real_config("ti2v"), torch.bfloat16, 1280, 704, 121, 2)
    pair = _a14b("a14b-fp8-832x480x81", dit_factory.real_config("t2v"), FP8, 832, 480, 81, 2, "real")
    return [
        GpuCase(ti2v, decode=True),
        GpuCase(pair, high_steps=1),
        GpuCase(replace(pair, name=pair.name + "-24gb", vram_cap_gb=CAP_GB), high_steps=1),
    ]


def _tiny(kind: str):
    # dim a multiple of 128 and text_dim 4096: what native ComfyUI's Wan model accepts.
    return dit_factory.tiny_config(kind, dim=256, num_layers=2, ffn_dim=256, text_dim=4096)


def rehearsal_cases() -> list[GpuCase]:
    """The same three cases with tiny random DiTs at 32x32x5 / 64x64x5: seconds on a CPU. The 5B
    case keeps the real-size Wan2.2 VAE (native ComfyUI builds that VAE at its released width
    only), on a 32x32 clip."""
    ti2v = _ti2v("ti2v-5b-bf16-1280x704x121", _tiny("ti2v"), torch.bfloat16, 32, 32, 5, 2)
    pair = _a14b("a14b-fp8-832x480x81", _tiny("t2v"), FP8, 64, 64, 5, 2, "tiny")
    tagged = [GpuCase(ti2v, decode=True), GpuCase(pair, high_steps=1),
              GpuCase(replace(pair, name=pair.name + "-24gb", vram_cap_gb=CAP_GB), high_steps=1)]
    return [replace(c, case=replace(c.case, name="tiny-" + c.case.name)) for c in tagged]
