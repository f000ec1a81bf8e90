"""The benchmark cases of each suite: which models, which video size, which sampler settings.

Sizes are pixels (width x height x frames). Every case compares the pack and native ComfyUI with
the same ComfyUI sampler and scheduler (`sampler`/`scheduler`), and adds pack-only rows
(`pack_only`: the release's own solver and grid, which native ComfyUI does not have).
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace

import torch

from wan_core.config import KIND_DEFAULTS, ModelKind

from .models import DiTSpec, dit_factory

FP8 = torch.float8_e4m3fn


@dataclass(frozen=True)
class Case:
    name: str
    kind: ModelKind
    high: DiTSpec  # the TI2V-5B model, or the high-noise expert
    low: DiTSpec | None  # the low-noise expert of an A14B pair
    vae: tuple[str, str]  # (wan2.1 | wan2.2, tiny | real)
    width: int
    height: int
    frames: int
    steps: int
    cfg_high: float
    cfg_low: float
    shift: float
    boundary: float | None
    sampler: str = "euler"
    scheduler: str = "simple"
    pack_only: tuple[tuple[str, str], ...] = (("wan_unipc", "wan"),)
    vram_cap_gb: float | None = None  # GPU: cap the server's device memory to this
    server_args: tuple[str, ...] = ()  # given to both servers alike
    seed: int = 42
    notes: str = ""
    native_not_run: str = ""  # why native's graph is not run for this case (empty: it is run)
    memory_target_gb: float | None = None  # the pack's peak RSS target, reported against the measure
    repeat_prompts: int = 0  # > 0: the pack's graph this many times in one server, new seed each (RSS after each)
    extra: dict = field(default_factory=dict, compare=False)

    @property
    def size(self) -> str:
        return f"{self.width}x{self.height}x{self.frames}"

    def latent_shape(self) -> tuple[int, int, int, int]:
        d = KIND_DEFAULTS[self.kind]
        st, ss, _ = d.vae_stride
        return (d.latent_channels, (self.frames - 1) // st + 1, self.height // ss, self.width // ss)

    def tokens(self) -> int:
        _, f, h, w = self.latent_shape()
        return f * (h // 2) * (w // 2)


def _a14b(name, cfg, dtype, width, height, frames, steps, vae_size, **kw) -> Case:
    d = KIND_DEFAULTS[ModelKind.T2V]
    return Case(
        name=name, kind=ModelKind.T2V,
        high=DiTSpec(f"{cfg.dim}_t2v_high", cfg, dtype, seed=1), low=DiTSpec(f"{cfg.dim}_t2v_low", cfg, dtype, seed=2),
        vae=("wan2.1", vae_size), width=width, height=height, frames=frames, steps=steps,
        cfg_high=d.cfg_high, cfg_low=d.cfg_low, shift=d.shift, boundary=d.boundary, **kw,
    )


def _ti2v(name, cfg, dtype, width, height, frames, steps, fill="random", **kw) -> Case:
    d = KIND_DEFAULTS[ModelKind.TI2V]
    return Case(
        name=name, kind=ModelKind.TI2V, high=DiTSpec(f"{cfg.dim}_ti2v", cfg, dtype, seed=3, fill=fill), low=None,
        vae=("wan2.2", "real"), width=width, height=height, frames=frames, steps=steps,
        cfg_high=d.cfg_high, cfg_low=d.cfg_high, shift=d.shift, boundary=None, **kw,
    )


def _expert_file_gb(spec: DiTSpec) -> float:
    """The size of an expert's file, from its shapes and storage dtype (scaled fp8: fp8 matrices
    with one fp32 scale each, the rest bf16), GB."""
    from wan_core.checkpoints import expected_shapes

    total = 0
    for key, shape in expected_shapes(spec.config).items():
        n = int(torch.Size(shape).numel())
        matrix = len(shape) == 2 and key.endswith(".weight")
        total += n * (spec.dtype.itemsize if matrix else 2) + (4 if matrix else 0)
    return total / 1e9


def real_a14b_fp8_case() -> Case:
    """The real A14B pair (dim 5120, 40 layers, ffn 13824) in ComfyUI's scaled fp8, one high and
    one low step at 64x64x5 (boundary 0.95 splits the 2-step shift-12 grid 1+1), cfg 1, the pack only:
    its target is peak RSS <= 17.5 GB, one expert resident at a time."""
    case = _a14b("a14b-real-fp8", dit_factory.real_config("t2v"), FP8, 64, 64, 5, 2, "tiny",
                 pack_only=(), memory_target_gb=17.5)
    # cfg 1: one model evaluation per step, half the CPU time; at 32 tokens the weights, not the
    # activations, are the memory.
    case = replace(case, boundary=0.95, cfg_high=1.0, cfg_low=1.0, high=replace(case.high, fill="pool"),
                   low=replace(case.low, fill="pool"))
    both = _expert_file_gb(case.high) + _expert_file_gb(case.low)
    return replace(case, native_not_run=(
        f"native's graph (two UNETLoader) holds both experts in RAM: {both:.1f} GB of weights "
        f"(2 x {both / 2:.1f} GB files) before any activation, more than this machine's RAM"),
        notes="real A14B experts (scaled fp8, pool-filled random weights), tiny Wan2.1 VAE, 32 tokens")


def _tiny_a14b_config(dim: int, layers: int, ffn: int):
    # dim a multiple of 128 and text_dim 4096: what native ComfyUI's Wan model accepts.
    return dit_factory.tiny_config("t2v", dim=dim, num_layers=layers, ffn_dim=ffn, text_dim=4096)


def smoke_cases() -> list[Case]:
    """CI: seconds. A tiny A14B pair on a 64x64x5 clip, 4 steps (switch after step 2)."""
    cfg = _tiny_a14b_config(256, 2, 256)
    return [_a14b("a14b-tiny-smoke", cfg, torch.bfloat16, 64, 64, 5, 4, "tiny", pack_only=())]


def cpu_cases() -> list[Case]:
    tiny = _tiny_a14b_config(512, 4, 1536)
    return [
        _a14b("a14b-tiny", tiny, torch.bfloat16, 256, 256, 17, 8, "tiny"),
        # The real 5B DiT (5.0 B parameters, 10 GB of bf16) at 32 tokens. Both servers get
        # --bf16-unet: native ComfyUI would otherwise upcast it to 20 GB of fp32 on a CPU, which
        # this 24 GB machine cannot hold next to anything else; the pack keeps the file's bf16.
        # 5 steps: the first tick (loading) is left out, so 4 timed steps give a median worth reading.
        _ti2v("ti2v-5b-real", dit_factory.real_config("ti2v"), torch.bfloat16, 128, 128, 5, 5,
              server_args=("--bf16-unet",), pack_only=(),
              notes="real TI2V-5B DiT (bf16) and real Wan2.2 VAE, 32 tokens"),
        real_a14b_fp8_case(),
        # RAM across runs on the real 5B: 4 prompts in one server (~10 min here), new seed each, 1 step each.
        _ti2v("rss-across-runs-5b", dit_factory.real_config("ti2v"), torch.bfloat16, 128, 128, 5, 1,
              fill="pool", server_args=("--bf16-unet",), pack_only=(), repeat_prompts=4,
              native_not_run="RSS across runs is measured on the pack's graph only",
              notes="real TI2V-5B DiT (bf16, pool-filled) and real Wan2.2 VAE; the pack's graph 4 times"),
    ]


def gpu_cases() -> list[Case]:
    """The issue's GPU suite: real-size random weights, bf16 and fp8, full GPU and a 24 GB cap."""
    a14b = dit_factory.real_config("t2v")
    ti2v = dit_factory.real_config("ti2v")
    cases = []
    for dtype, tag in ((torch.bfloat16, "bf16"), (FP8, "fp8")):
        for width, height in ((832, 480), (1280, 720)):
            base = _a14b(f"a14b-{width}x{height}x81-{tag}", a14b, dtype, width, height, 81, 40, "real")
            cases += [base, replace(base, name=base.name + "-24gb", vram_cap_gb=24.0, pack_only=())]
        base = _ti2v(f"ti2v-5b-1280x704x121-{tag}", ti2v, dtype, 1280, 704, 121, 50)
        cases += [base, replace(base, name=base.name + "-24gb", vram_cap_gb=24.0, pack_only=())]
    return cases


SUITES = {"smoke": smoke_cases, "cpu": cpu_cases, "gpu": gpu_cases}


def select(suite: str, parts: str | None, steps: int | None = None, size: str | None = None) -> list[Case]:
    """The suite's cases whose name contains any of the comma-separated `parts`; `steps` and
    `size` (WxHxF) override every selected case."""
    cases = SUITES[suite]()
    if parts:
        wanted = [p.strip() for p in parts.split(",") if p.strip()]
        cases = [c for c in cases if any(w in c.name for w in wanted)]
    if steps:
        cases = [replace(c, steps=steps) for c in cases]
    if size:
        w, h, f = (int(v) for v in size.lower().split("x"))
        cases = [replace(c, width=w, height=h, frames=f) for c in cases]
    return cases
