"""An expert's weights: views of its file while idle, process memory while it computes.

The pack's weights are views of a memory-mapped file, so an idle expert costs no RAM. Three
moments need care, because a file view is not ordinary memory:

- Loading on the CPU. Clean file pages are what the kernel drops first under memory pressure,
  and a DiT reads every weight in every step: with the machine's RAM full, each step re-read the
  whole model from disk (the real TI2V-5B: 10 GB per step, twice native's step time in
  docs/benchmarks.md). So "loading" on the CPU does what loading does on a GPU: it copies the
  weights into memory the process owns (plain file reads, so the file's pages never enter RSS).
- Page-locking. Partial loading on a GPU pins the weights it leaves on the host; pinning a file
  view would lock the page cache. A weight is copied into process memory before it is pinned.
- Unloading. Whatever the device, an unloaded expert goes back to its file views (copies made
  for the CPU, weights brought back from a GPU), so it holds no host RAM while idle. An expert
  that computed from its views (too little RAM for a copy) leaves the file's pages mapped in the
  process: they are given back too, or the idle expert would keep its whole file in RSS.

The hooks are ModelPatcher callbacks and a ModelPatcher subclass (clones keep the class), so
model management's ordinary load, offload and unload drive them and LoRA clones share them;
a weight a patch has replaced is left alone.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping

import comfy.model_management as mm
import comfy.model_patcher
import comfy.patcher_extension
import torch

from ..weights import file_holding, safetensors_files

# A copy is made only when this much more RAM than the weights is free, so loading cannot be
# what pushes the machine out of memory (the file views then keep working, only slower).
HEADROOM = 1.1


class FileBackedModelPatcher(comfy.model_patcher.ModelPatcher):
    """A ModelPatcher whose weights may be views of a weight file: a weight ComfyUI page-locks
    (partial loading on a GPU) is copied into process memory first."""

    def pin_weight_to_device(self, key):
        weight, _, _ = comfy.model_patcher.get_key_weight(self.model, key)
        source = self.model.__dict__.get("wan22_weight_source")
        file = file_holding(source, weight.data) if source is not None else None
        if file is not None:
            weight.data = file.read_copy(weight.data)
        return super().pin_weight_to_device(key)


def file_backed_patcher(model, source: Mapping[str, torch.Tensor], load_device, offload_device):
    """The MODEL of an expert whose weights were just assigned from `source` (the lazy state dict
    of `open_state_dict`): remembers each weight's file view and registers the load/unload hooks."""
    model.wan22_weight_source = source
    model.wan22_file_views = {name: t.data for name, (t, _) in _current_views(model).items()}
    patcher = FileBackedModelPatcher(model, load_device=load_device, offload_device=offload_device)
    patcher.add_callback(comfy.patcher_extension.CallbacksMP.ON_LOAD, _on_load)
    patcher.add_callback(comfy.patcher_extension.CallbacksMP.ON_DETACH, _on_detach)
    return patcher


def _tensors(model) -> dict[str, torch.Tensor]:
    return model.diffusion_model.state_dict(keep_vars=True)


def _current_views(model) -> dict[str, tuple[torch.Tensor, object]]:
    """name -> (tensor, its file) for the weights that are views of the weight file right now
    (tensors converted to another dtype, copied, or replaced by a patch are not)."""
    source = model.__dict__.get("wan22_weight_source")
    if source is None:
        return {}
    return {name: (t, f) for name, t in _tensors(model).items() if (f := file_holding(source, t.data)) is not None}


def _nbytes(views) -> int:
    return sum(t.numel() * t.element_size() for t, _ in views.values())


def _on_load(patcher, device_to, *_args):
    if device_to is None or torch.device(device_to).type != "cpu":
        return  # on an accelerator the load itself copied the weights off the file
    views = _current_views(patcher.model)
    size = _nbytes(views)
    if not size:
        return
    free = mm.get_free_memory(torch.device("cpu"))
    if size * HEADROOM > free:
        logging.warning(
            "[ComfyUI-Wan22] %.1f GB of weights stay memory-mapped (%.1f GB of RAM free): steps may "
            "re-read them from disk under memory pressure", size / 2**30, free / 2**30,
        )
        return
    for t, file in views.values():
        t.data = file.read_copy(t.data)
    logging.info("[ComfyUI-Wan22] copied %.2f GB of weights from the file into RAM", size / 2**30)


def _on_detach(patcher, unpatch_all):
    """Back to the file views once the weights are unpatched and on the host: copies made for
    the CPU and weights brought back from a GPU are freed. A weight whose dtype or shape no
    longer matches its view (converted, or replaced by something else) is left as it is."""
    if not unpatch_all:
        return
    tensors = _tensors(patcher.model)
    for name, view in patcher.model.__dict__.get("wan22_file_views", {}).items():
        t = tensors.get(name)
        if t is None or t.data_ptr() == view.data_ptr() or t.device.type != "cpu":
            continue
        if t.dtype == view.dtype and t.shape == view.shape:
            t.data = view
    source = patcher.model.__dict__.get("wan22_weight_source")
    if source is not None:
        for file in safetensors_files(source):
            file.drop_mapped_pages()


def file_view_bytes(patcher) -> int:
    """Bytes of the expert's weights that are views of its file right now. On the CPU they are
    page cache, which the free-memory estimate counts as free although the expert reads them."""
    return _nbytes(_current_views(patcher.model))
