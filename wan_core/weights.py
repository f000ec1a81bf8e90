"""Reading weight files without inflating them in RAM.

One reader for every model of the pack (DiT, VAE, text encoder). It answers a lazy mapping of
key -> tensor:

- `.safetensors`: the header is parsed here and each tensor is a view into a private,
  copy-on-write memory map of the file. Nothing is read until a tensor is used, and pages that
  are only read stay file-backed (the kernel can drop them), so an idle model costs no second
  private RAM copy.
- `.pth` / `.pt` / `.bin`: `torch.load(weights_only=True, mmap=True)`; arbitrary pickled objects
  are refused, never unpickled.
- a folder with `*.safetensors.index.json`: the shards it names, each checked to exist.

Every failure is a `WeightFileError` naming the file and what to do about it.
"""

from __future__ import annotations

import json
import os
import pickle
import struct
import sys
from collections.abc import Iterator, Mapping
from pathlib import Path

import torch

from .errors import WanUserError

SAFETENSORS_DTYPES = {
    "F64": torch.float64,
    "F32": torch.float32,
    "F16": torch.float16,
    "BF16": torch.bfloat16,
    "F8_E4M3": torch.float8_e4m3fn,
    "F8_E5M2": torch.float8_e5m2,
    "I64": torch.int64,
    "I32": torch.int32,
    "I16": torch.int16,
    "I8": torch.int8,
    "U8": torch.uint8,
    "BOOL": torch.bool,
}
# The storage dtypes a loader node offers ("default": what the file holds, or what ComfyUI picks).
WEIGHT_DTYPES = {
    "default": None,
    "bf16": torch.bfloat16,
    "fp16": torch.float16,
    "fp32": torch.float32,
    "fp8_e4m3fn": torch.float8_e4m3fn,
    "fp8_e5m2": torch.float8_e5m2,
}
PICKLE_SUFFIXES = (".pth", ".pt", ".bin", ".ckpt")
# A header larger than this is not a safetensors header but a different or damaged file.
MAX_HEADER_BYTES = 100 * 1024 * 1024


class WeightFileError(WanUserError):
    """A weight file that cannot be read as it is."""


class SafetensorsFile(Mapping):
    """Lazy key -> tensor view of one .safetensors file, backed by a private memory map."""

    def __init__(self, path: str | os.PathLike):
        self.path = Path(path)
        self.header, self.metadata, self._data_start = _read_safetensors_header(self.path)
        self._storage: torch.UntypedStorage | None = None

    def _mapped(self) -> torch.UntypedStorage:
        if self._storage is None:
            nbytes = self.path.stat().st_size
            self._storage = torch.UntypedStorage.from_file(str(self.path), shared=False, nbytes=nbytes)
        return self._storage

    def __getitem__(self, key: str) -> torch.Tensor:
        info = self.header[key]
        dtype = SAFETENSORS_DTYPES[info["dtype"]]
        start, end = info["data_offsets"]
        offset = self._data_start + start
        raw = torch.empty(0, dtype=torch.uint8).set_(self._mapped(), offset, (end - start,))
        if end == start:
            return torch.empty(info["shape"], dtype=dtype)
        itemsize = torch.empty(0, dtype=dtype).element_size()
        if offset % itemsize:
            # Old writers did not align tensors; a misaligned view is impossible, so copy this one.
            raw = raw.clone()
        return raw.view(dtype).reshape(info["shape"])

    def shape(self, key: str) -> tuple[int, ...]:
        """The shape of a tensor, read from the header alone."""
        return tuple(self.header[key]["shape"])

    def holds(self, t: torch.Tensor) -> bool:
        """Whether `t` is a view of this file's memory map (rather than a copy of it)."""
        # The live map owns its address range, so equal data pointers mean the same storage.
        return self._storage is not None and t.untyped_storage().data_ptr() == self._storage.data_ptr()

    def read_copy(self, t: torch.Tensor) -> torch.Tensor:
        """A view of this file copied into process memory with plain file reads.

        Going around the map keeps the file's pages out of this process (they stay in the page
        cache, reclaimable, and not in its RSS), and the copy is anonymous memory, which the
        kernel does not drop under memory pressure as it drops clean file pages.
        """
        if not self.holds(t) or not t.is_contiguous():
            raise ValueError(f"{self.path.name}: read_copy needs a contiguous view of this file")
        out = torch.empty_like(t, memory_format=torch.contiguous_format)
        buffer = memoryview(out.reshape(-1).view(torch.uint8).numpy())
        offset = t.storage_offset() * t.element_size()
        with open(self.path, "rb", buffering=0) as f:
            f.seek(offset)
            done = 0
            while done < len(buffer):
                n = f.readinto(buffer[done:])
                if not n:
                    raise WeightFileError(f"{self.path.name}: the file ended while reading weights; it changed on disk.")
                done += n
        return out

    def drop_mapped_pages(self) -> int:
        """Gives the map's resident pages back to the kernel (madvise MADV_DONTNEED): they leave
        this process's RSS, and the next read of a view faults them in again from the page cache
        or the disk. The map is private and the views are only read (a patch applied in place is
        undone before unloading), so what comes back is the file's content. Returns the bytes."""
        if self._storage is None or sys.platform != "linux":
            return 0
        import ctypes
        import mmap

        addr, nbytes = self._storage.data_ptr(), self._storage.nbytes()
        start = addr - addr % mmap.PAGESIZE
        libc = ctypes.CDLL(None, use_errno=True)
        libc.madvise.argtypes = (ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int)
        if libc.madvise(start, nbytes + addr - start, 4):  # 4: MADV_DONTNEED
            return 0
        return nbytes

    def __iter__(self) -> Iterator[str]:
        return iter(self.header)

    def __len__(self) -> int:
        return len(self.header)


def safetensors_files(source: Mapping[str, torch.Tensor]) -> list[SafetensorsFile]:
    """The memory-mapped files behind a lazy mapping from `open_state_dict`."""
    if isinstance(source, RenamedStateDict):
        return safetensors_files(source.source)
    if isinstance(source, ShardedStateDict):
        return [f for part in source.parts for f in safetensors_files(part)]
    return [source] if isinstance(source, SafetensorsFile) else []


def _read_safetensors_header(path: Path) -> tuple[dict, dict, int]:
    size = path.stat().st_size
    damaged = (
        f"{path.name}: the safetensors header is unreadable ({{why}}). The file is truncated or is "
        f"not a safetensors file: download it again, and check it finished downloading."
    )
    with open(path, "rb") as f:
        head = f.read(8)
        if len(head) < 8:
            raise WeightFileError(damaged.format(why=f"the file has only {size} bytes"))
        (header_len,) = struct.unpack("<Q", head)
        if header_len > min(MAX_HEADER_BYTES, size - 8):
            raise WeightFileError(damaged.format(why=f"it claims a {header_len}-byte header in a {size}-byte file"))
        try:
            header = json.loads(f.read(header_len))
        except (UnicodeDecodeError, json.JSONDecodeError) as e:
            raise WeightFileError(damaged.format(why=f"its JSON does not parse: {e}")) from None
    if not isinstance(header, dict):
        raise WeightFileError(damaged.format(why="its header is not a JSON object"))
    metadata = header.pop("__metadata__", None) or {}
    data_start = 8 + header_len
    data_len = size - data_start
    for key, info in header.items():
        try:
            begin, end = info["data_offsets"]
            known = info["dtype"] in SAFETENSORS_DTYPES
        except (TypeError, KeyError, ValueError):
            raise WeightFileError(damaged.format(why=f"tensor {key!r} has a malformed entry")) from None
        if not known:
            raise WeightFileError(
                f"{path.name}: tensor {key!r} has dtype {info['dtype']}, which the pack cannot read. "
                f"Use an fp32, fp16, bf16 or fp8 release of this model."
            )
        if end > data_len:
            raise WeightFileError(
                damaged.format(why=f"tensor {key!r} ends at byte {end} but the file holds {data_len} bytes of data")
            )
    return header, metadata, data_start


def _load_pickled_state_dict(path: Path) -> dict[str, torch.Tensor]:
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True, mmap=True)
    except pickle.UnpicklingError as e:
        raise WeightFileError(
            f"{path.name}: holds Python objects other than tensors, and the pack loads only plain state "
            f"dicts (weights_only=True, so nothing in the file is ever executed). Use the release's "
            f"original file or a .safetensors version. Detail: {str(e).splitlines()[0]}"
        ) from None
    except (RuntimeError, EOFError, OSError) as e:
        raise WeightFileError(
            f"{path.name}: cannot be read as a PyTorch state dict ({str(e).splitlines()[0]}). The file is "
            f"damaged or incomplete: download it again."
        ) from None
    # Some trainers nest the weights one level down.
    for nest in ("state_dict", "model", "module"):
        if isinstance(obj, dict) and nest in obj and isinstance(obj[nest], dict):
            obj = obj[nest]
    if not isinstance(obj, dict) or not obj or not all(isinstance(v, torch.Tensor) for v in obj.values()):
        raise WeightFileError(
            f"{path.name}: is not a plain state dict of tensors. Use the release's original file or a "
            f".safetensors version."
        )
    return obj


class ShardedStateDict(Mapping):
    """Several files seen as one mapping (official and diffusers sharded checkpoints)."""

    def __init__(self, parts: list[Mapping]):
        self._where: dict[str, Mapping] = {}
        for part in parts:
            for key in part:
                self._where[key] = part
        self.parts = parts

    def __getitem__(self, key: str) -> torch.Tensor:
        return self._where[key][key]

    def shape(self, key: str) -> tuple[int, ...]:
        part = self._where[key]
        return part.shape(key) if hasattr(part, "shape") else tuple(part[key].shape)

    def __iter__(self) -> Iterator[str]:
        return iter(self._where)

    def __len__(self) -> int:
        return len(self._where)


class RenamedStateDict(Mapping):
    """A lazy view of a state dict under other key names (new name -> source name), so a
    checkpoint in another layout is read under the pack's names without copying anything."""

    def __init__(self, source: Mapping[str, torch.Tensor], names: dict[str, str], fmt: str = ""):
        self.source = source
        self.names = names
        self.format = fmt  # what the source layout was, for messages

    def __getitem__(self, key: str) -> torch.Tensor:
        return self.source[self.names[key]]

    def __contains__(self, key: object) -> bool:
        return key in self.names

    def shape(self, key: str) -> tuple[int, ...]:
        return tensor_shape(self.source, self.names[key])

    def __iter__(self) -> Iterator[str]:
        return iter(self.names)

    def __len__(self) -> int:
        return len(self.names)


def weight_files_in_folder(folder: Path) -> list[Path]:
    """The shards of a checkpoint folder: those its index names, else its single weight file."""
    indexes = sorted(folder.glob("*.safetensors.index.json"))
    if indexes:
        index = indexes[0]
        try:
            weight_map = json.loads(index.read_text())["weight_map"]
        except (json.JSONDecodeError, KeyError, TypeError) as e:
            raise WeightFileError(f"{index}: the shard index is not valid JSON with a weight_map ({e}).") from None
        shards = sorted(set(weight_map.values()))
        missing = [s for s in shards if not (folder / s).is_file()]
        if missing:
            raise WeightFileError(
                f"{folder}: the checkpoint is missing {len(missing)} of its {len(shards)} shards "
                f"({', '.join(missing)}). Download the missing files into that folder."
            )
        return [folder / s for s in shards]
    singles = sorted(folder.glob("*.safetensors")) or sorted(
        p for p in folder.iterdir() if p.suffix in PICKLE_SUFFIXES
    )
    if not singles:
        raise WeightFileError(f"{folder}: no .safetensors or .pth weights in this folder.")
    if len(singles) > 1:
        raise WeightFileError(
            f"{folder}: holds several weight files ({', '.join(p.name for p in singles)}) but no "
            f"*.safetensors.index.json saying how they fit together. Restore the index file."
        )
    return singles


def open_state_dict(path: str | os.PathLike) -> Mapping[str, torch.Tensor]:
    """A lazy state dict for a file or a checkpoint folder; tensors stay on the CPU, memory-mapped."""
    path = Path(path)
    if not path.exists():
        raise WeightFileError(f"{path}: no such file or folder.")
    files = weight_files_in_folder(path) if path.is_dir() else [path]
    parts: list[Mapping] = []
    for file in files:
        if file.suffix == ".safetensors":
            parts.append(SafetensorsFile(file))
        elif file.suffix in PICKLE_SUFFIXES:
            parts.append(_load_pickled_state_dict(file))
        else:
            raise WeightFileError(
                f"{file.name}: not a weight file the pack reads (.safetensors, .pth, .pt, .bin)."
            )
    return parts[0] if len(parts) == 1 else ShardedStateDict(parts)


def file_holding(source: Mapping[str, torch.Tensor], t: torch.Tensor) -> SafetensorsFile | None:
    """The safetensors file of `source` (a lazy mapping from `open_state_dict`, possibly renamed
    or sharded) whose memory map `t` is a contiguous view of, else None (a copy, or not ours)."""
    if isinstance(source, RenamedStateDict):
        return file_holding(source.source, t)
    if isinstance(source, ShardedStateDict):
        return next((f for part in source.parts if (f := file_holding(part, t)) is not None), None)
    if isinstance(source, SafetensorsFile) and source.holds(t) and t.is_contiguous():
        return source
    return None


def tensor_shape(state_dict: Mapping[str, torch.Tensor], key: str) -> tuple[int, ...]:
    """A tensor's shape without reading its data where the source allows it."""
    if hasattr(state_dict, "shape"):
        return state_dict.shape(key)
    return tuple(state_dict[key].shape)
