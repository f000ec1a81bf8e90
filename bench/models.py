"""Random-weight model files for the benchmarks, in ComfyUI's file formats, written once into a
cache folder and reused by later runs (speed and memory do not depend on the weight values).

Tiny models come from the test factories (tests/dit_factory.py, tests/vae_factory.py). Real-size DiTs (TI2V-5B: 10 GB in
bf16, an A14B expert: 28.6 GB, 14.3 GB in scaled fp8) are streamed to disk one tensor at a time, so
writing one never holds more than its largest tensor in memory.

`fill="pool"` writes each matrix weight from a pool of random values, read from a random offset
per tensor: drawing an A14B pair's 28 billion numbers one by one takes over an hour on a 2-core
machine, the pool writes at disk speed. Every weight is still a random value of the right spread
(scaled fp8: one pool over the format's range, the scale per tensor; other dtypes: one pool per
fan-in); they only repeat with the pool's period.
"""

from __future__ import annotations

import json
import struct
import sys
import zlib
from dataclasses import dataclass
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parents[1]
if str(REPO / "tests") not in sys.path:  # the test factories are plain modules in tests/
    sys.path.insert(0, str(REPO / "tests"))

import dit_factory  # noqa: E402

from wan_core.config import DiTConfig  # noqa: E402

# Names of ComfyUI's model folders the files go in.
DIFFUSION_MODELS, VAE = "diffusion_models", "vae"

_SAFETENSORS_DTYPE = {torch.bfloat16: "BF16", torch.float16: "F16", torch.float32: "F32",
                      torch.float8_e4m3fn: "F8_E4M3", torch.float8_e5m2: "F8_E5M2"}
_DTYPE_TAG = {torch.bfloat16: "bf16", torch.float16: "fp16", torch.float32: "fp32",
              torch.float8_e4m3fn: "fp8_scaled"}


@dataclass(frozen=True)
class DiTSpec:
    """One DiT file: its config, storage dtype and seed. fp8 means ComfyUI's scaled fp8 layout."""

    name: str  # e.g. "tiny_t2v_high"
    config: DiTConfig
    dtype: torch.dtype = torch.bfloat16
    seed: int = 0
    fill: str = "random"  # or "pool": see the module's docstring

    @property
    def filename(self) -> str:
        c = self.config
        pool = "_pool" if self.fill == "pool" else ""
        return (f"{self.name}_d{c.dim}_l{c.num_layers}_f{c.ffn_dim}_t{c.text_dim}_{_DTYPE_TAG[self.dtype]}{pool}"
                f"_s{self.seed}.safetensors")


class ModelCache:
    """`root/models/<comfy folder>/<file>`: a bench server's models folder links here."""

    def __init__(self, root: Path, device: str = "cpu"):
        self.root = Path(root)
        self.device = device  # where random DiT weights are drawn (a GPU draws 14 B in seconds)
        self.models = self.root / "models"
        for folder in (DIFFUSION_MODELS, VAE):
            (self.models / folder).mkdir(parents=True, exist_ok=True)

    def _path(self, folder: str, name: str) -> Path:
        return self.models / folder / name

    def _once(self, folder: str, name: str, write) -> str:
        """Writes a file through a temporary name, so an interrupted write is never reused."""
        path = self._path(folder, name)
        if not path.exists():
            tmp = path.with_name(path.name + ".partial")
            write(tmp)
            tmp.rename(path)
        return name

    def dit(self, spec: DiTSpec) -> str:
        return self._once(DIFFUSION_MODELS, spec.filename,
                          lambda p: write_random_dit(p, spec.config, spec.dtype, spec.seed, spec.fill, self.device))

    def vae(self, kind: str, size: str) -> str:
        import vae_factory

        def write(path: Path):
            dtype = torch.float32 if size == "tiny" else torch.bfloat16
            # write_vae picks the format from fmt, not the suffix: the partial name is fine.
            vae_factory.write_vae(path, kind, "comfy", size, dtype=dtype, seed=0)

        return self._once(VAE, f"{kind.replace('.', '')}_vae_{size}.safetensors", write)


def _tensor_seed(seed: int, key: str) -> int:
    return (seed * 1_000_003 + zlib.crc32(key.encode())) & 0x7FFFFFFF


def _random_tensor(key: str, shape: tuple[int, ...], gen: torch.Generator) -> torch.Tensor:
    """Every parameter random and activations O(1): the init rules of tests/dit_factory.py.
    Drawn on the generator's device."""
    device = gen.device
    if key.endswith("modulation"):
        return torch.randn(shape, generator=gen, device=device) * 0.1
    if ".norm" in key and key.endswith("weight"):
        return 1 + torch.randn(shape, generator=gen, device=device) * 0.1
    if key.endswith("bias"):
        return torch.randn(shape, generator=gen, device=device) * 0.05
    fan_in = 1
    for n in shape[1:]:
        fan_in *= n
    return (torch.rand(shape, generator=gen, device=device) * 2 - 1) / fan_in**0.5


def _stored(key: str, t: torch.Tensor, dtype: torch.dtype) -> list[tuple[str, torch.Tensor]]:
    """The tensors a file holds for one parameter: ComfyUI's scaled fp8 stores each 2-D weight as
    fp8 plus an fp32 scalar `scale_weight`, and keeps the rest in bf16."""
    if dtype in (torch.float8_e4m3fn, torch.float8_e5m2):
        if t.ndim == 2 and key.endswith(".weight"):
            scale = (t.abs().max() / torch.finfo(dtype).max).clamp(min=1e-12)
            return [(key, (t / scale).to(dtype)), (key[: -len("weight")] + "scale_weight", scale.reshape(()))]
        return [(key, t.to(torch.bfloat16))]
    return [(key, t.to(dtype))]


POOL_BYTES = 64 * 2**20


class _Pool:
    """Random values of a matrix's spread, handed out as each tensor's bytes from a random offset,
    wrapping around. Scaled fp8: values over the format's range (|w| * scale then spans
    U(+-1/sqrt(fan_in))); other dtypes: U(+-1/sqrt(fan_in)) itself, one pool per fan-in."""

    def __init__(self, dtype: torch.dtype, seed: int):
        self.dtype, self.gen = dtype, torch.Generator().manual_seed(seed)
        self.fp8 = dtype in (torch.float8_e4m3fn, torch.float8_e5m2)
        self.pools: dict[int, bytes] = {}

    def _pool(self, fan_in: int) -> bytes:
        key = 0 if self.fp8 else fan_in
        if key not in self.pools:
            spread = torch.finfo(self.dtype).max if self.fp8 else 1 / fan_in**0.5
            values = (torch.rand(POOL_BYTES // self.dtype.itemsize, generator=self.gen) * 2 - 1) * spread
            self.pools[key] = values.to(self.dtype).view(torch.uint8).numpy().tobytes()
        return self.pools[key]

    def write(self, f, shape: tuple[int, ...]) -> None:
        fan_in = int(torch.Size(shape[1:]).numel())
        pool = self._pool(fan_in)
        nbytes = int(torch.Size(shape).numel()) * self.dtype.itemsize
        start = int(torch.randint(0, len(pool) // self.dtype.itemsize, (1,), generator=self.gen)) * self.dtype.itemsize
        while nbytes > 0:
            chunk = pool[start:start + nbytes]
            f.write(chunk)
            nbytes -= len(chunk)
            start = 0
        if self.fp8:
            f.write(torch.tensor(1 / fan_in**0.5 / torch.finfo(self.dtype).max).numpy().tobytes())


def write_random_dit(path: Path, cfg: DiTConfig, dtype: torch.dtype = torch.bfloat16, seed: int = 0,
                     fill: str = "random", device: str = "cpu") -> Path:
    """A ComfyUI single-file DiT (official key names, no prefix) of random weights, streamed:
    the safetensors header is computed from the shapes, then each tensor is drawn (on `device`;
    the values differ between devices, the layout does not) and written."""
    shapes = dit_factory.state_dict_shapes(cfg)
    fp8 = dtype in (torch.float8_e4m3fn, torch.float8_e5m2)
    if fill not in ("random", "pool"):
        raise ValueError(f"fill={fill!r}: 'random' or 'pool'")
    pool = _Pool(dtype, seed) if fill == "pool" else None
    layout = []  # (key, dtype, shape) in file order, as _stored yields them
    for key, shape in shapes.items():
        if fp8 and len(shape) == 2 and key.endswith(".weight"):
            layout += [(key, dtype, shape), (key[: -len("weight")] + "scale_weight", torch.float32, ())]
        else:
            layout.append((key, torch.bfloat16 if fp8 else dtype, shape))
    if fp8:
        layout.append(("scaled_fp8", dtype, (0,)))
    header, offset = {}, 0
    for key, dt, shape in layout:
        nbytes = dt.itemsize
        for n in shape:
            nbytes *= n
        header[key] = {"dtype": _SAFETENSORS_DTYPE[dt], "shape": list(shape), "data_offsets": [offset, offset + nbytes]}
        offset += nbytes
    blob = json.dumps(header, separators=(",", ":")).encode()
    blob += b" " * (-len(blob) % 8)  # data starts 8-byte aligned
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "wb") as f:
        f.write(struct.pack("<Q", len(blob)))
        f.write(blob)
        for key, shape in shapes.items():
            if pool is not None and len(shape) == 2 and key.endswith(".weight"):
                pool.write(f, shape)  # and its scale_weight, for scaled fp8
                continue
            gen = torch.Generator(device=device).manual_seed(_tensor_seed(seed, key))
            for stored_key, t in _stored(key, _random_tensor(key, shape, gen), dtype):
                assert header[stored_key]["dtype"] == _SAFETENSORS_DTYPE[t.dtype], stored_key
                f.write(t.contiguous().reshape(-1).view(torch.uint8).cpu().numpy().data)
    return path
