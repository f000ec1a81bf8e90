"""The umT5 encoder as a ComfyUI citizen: loaded through comfy.model_management when a prompt
needs encoding, and let go right after.

The object on the WAN22_TEXT_ENCODER socket is a `TextEncoderHandle`: the file and settings, a
ModelPatcher built only when a prompt is not yet cached, and a small cache of embeddings. After
encoding, unless asked to keep it, the patcher leaves `current_loaded_models` and the module is
dropped, so umT5-XXL costs neither VRAM nor private RAM while the experts sample (its weights are
memory-mapped from the file and come back in seconds on the next new prompt). When ComfyUI
unloads all models (`/free`), the embedding caches are dropped too (pack_caches).
"""

from __future__ import annotations

import logging
import os
import threading
from collections import OrderedDict

import comfy.model_management as mm
import comfy.model_patcher
import comfy.ops
import torch

from ..text_encoder_files import inspect_text_encoder, load_text_encoder
from ..weights import WEIGHT_DTYPES as ALL_WEIGHT_DTYPES
from .experts import unload
from .pack_caches import track_text_encoder

log = logging.getLogger("ComfyUI-Wan22")

# umT5 is offered in e4m3fn only, the fp8 format its released ComfyUI file uses.
WEIGHT_DTYPES = {name: dtype for name, dtype in ALL_WEIGHT_DTYPES.items() if name != "fp8_e5m2"}
CACHE_SIZE = 16


class TextEncoderHandle:
    def __init__(self, path: str | os.PathLike, tokenizer_path: str | os.PathLike | None = None,
                 weight_dtype: str = "default", device: str = "default"):
        self.path = path
        self.tokenizer_path = tokenizer_path
        # Header-only checks now, so a wrong file is reported by the loader node.
        _, _, self.config, _ = inspect_text_encoder(path, tokenizer_path)
        self.weight_dtype = WEIGHT_DTYPES[weight_dtype]
        self.load_device = mm.text_encoder_device() if device == "default" else torch.device("cpu")
        self.offload_device = mm.text_encoder_offload_device()
        self.patcher: comfy.model_patcher.ModelPatcher | None = None
        self._cache: OrderedDict[str, torch.Tensor] = OrderedDict()
        self._lock = threading.Lock()
        self.loads = 0  # how many times the weights were read (the cache keeps this low)
        track_text_encoder(self)

    def _ensure_patcher(self) -> comfy.model_patcher.ModelPatcher:
        if self.patcher is None:
            dtype = self.weight_dtype
            compute = torch.bfloat16 if dtype == torch.float8_e4m3fn else dtype
            # comfy.ops layers: partial (low-VRAM) loading, and casting of fp8 weights at use.
            ops = comfy.ops.manual_cast if dtype == torch.float8_e4m3fn else comfy.ops.disable_weight_init
            model = load_text_encoder(self.path, self.tokenizer_path, dtype=dtype, ops=ops, compute_dtype=compute)
            self.patcher = comfy.model_patcher.ModelPatcher(
                model, load_device=self.load_device, offload_device=self.offload_device
            )
            self.loads += 1
        return self.patcher

    def encode(self, texts: list[str], keep_loaded: bool = False) -> list[torch.Tensor]:
        """[tokens, dim] float32 embeddings on ComfyUI's intermediate device, trimmed to real tokens."""
        with self._lock:
            missing = list(dict.fromkeys(t for t in texts if t not in self._cache))
            if missing:
                patcher = self._ensure_patcher()
                try:
                    mm.load_models_gpu([patcher])
                    outputs = patcher.model.encode(missing, device=patcher.load_device)
                    for text, out in zip(missing, outputs):
                        self._remember(text, out.float().to(mm.intermediate_device()))
                finally:
                    if not keep_loaded:
                        self.release()
            for text in texts:
                self._cache.move_to_end(text)
            return [self._cache[t] for t in texts]

    def _remember(self, text: str, embedding: torch.Tensor) -> None:
        self._cache[text] = embedding
        while len(self._cache) > CACHE_SIZE:
            self._cache.popitem(last=False)

    def clear_cache(self) -> tuple[int, int]:
        """Forgets every cached embedding; returns how many there were and their bytes."""
        with self._lock:
            count, nbytes = self.cached_count(), self.cached_bytes()
            self._cache.clear()
        return count, nbytes

    def cached_count(self) -> int:
        return len(self._cache)

    def cached_bytes(self) -> int:
        return sum(t.numel() * t.element_size() for t in list(self._cache.values()))

    def release(self) -> None:
        """Out of current_loaded_models and out of memory; the next new prompt reloads from the file."""
        if self.patcher is None:
            return
        unload(self.patcher)
        self.patcher = None
        mm.soft_empty_cache()
        log.info("[ComfyUI-Wan22] umT5 released after encoding")

    def is_loaded(self) -> bool:
        """Whether this encoder is among ComfyUI's currently loaded models."""
        return self.patcher is not None and any(
            lm.model is not None and (lm.model is self.patcher or lm.model.is_clone(self.patcher))
            for lm in mm.current_loaded_models
        )
