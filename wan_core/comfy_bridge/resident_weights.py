"""Keep an expert's weights in process memory while it computes on the CPU.

The pack's weights are views of a memory-mapped file, so an idle expert costs no RAM. But clean
file pages are what the kernel drops first under memory pressure, and a DiT reads every weight
in every step: with the machine's RAM full, each step re-read the whole model from disk (the
real TI2V-5B: 10 GB per step, twice native's step time in docs/benchmarks.md). Native ComfyUI
copies weights into anonymous memory, which stays put.

So, on the CPU, "loading" an expert does what loading does on a GPU: it copies the file-backed
weights into memory the process owns, and unloading gives that memory back and returns to the
file views. An idle expert (the other half of a pair) stays file-backed. The hooks are
ModelPatcher callbacks, so model management's ordinary load/unload drives them and clones (LoRA)
share them; weights a patch has replaced are no longer file views and are left alone.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping

import comfy.model_management as mm
import comfy.patcher_extension
import torch

from ..weights import file_holding

# A copy is made only when this much more RAM than the weights is free, so loading cannot be
# what pushes the machine out of memory (the file views then keep working, only slower).
HEADROOM = 1.1


def keep_resident_on_cpu(patcher, source: Mapping[str, torch.Tensor]) -> None:
    """Registers the load/unload hooks on an expert's ModelPatcher; `source` is the lazy state
    dict its weights were assigned from."""
    patcher.add_callback(comfy.patcher_extension.CallbacksMP.ON_LOAD, _on_load(source))
    patcher.add_callback(comfy.patcher_extension.CallbacksMP.ON_DETACH, _on_detach)


def _tensors(model) -> dict[str, torch.Tensor]:
    return model.diffusion_model.state_dict(keep_vars=True)


def _on_load(source):
    def on_load(patcher, device_to, *_args):
        if device_to is None or torch.device(device_to).type != "cpu":
            return  # on an accelerator the load itself copied the weights off the file
        model = patcher.model
        copies: dict = model.__dict__.setdefault("wan22_file_views", {})
        # Only file views: tensors converted to another dtype or replaced by a patch are copies.
        views = {
            name: (t, f) for name, t in _tensors(model).items()
            if name not in copies and (f := file_holding(source, t.data)) is not None
        }
        size = sum(t.numel() * t.element_size() for t, _ in views.values())
        if not size:
            return
        free = mm.get_free_memory(torch.device("cpu"))
        if size * HEADROOM > free:
            logging.warning(
                "[ComfyUI-Wan22] %.1f GB of weights stay memory-mapped (%.1f GB of RAM free): steps may "
                "re-read them from disk under memory pressure", size / 2**30, free / 2**30,
            )
            return
        for name, (t, file) in views.items():
            copy = file.read_copy(t.data)
            copies[name] = (t.data, copy.data_ptr())
            t.data = copy
        logging.info("[ComfyUI-Wan22] copied %.2f GB of weights from the file into RAM", size / 2**30)

    return on_load


def _on_detach(patcher, unpatch_all):
    """Back to the file views (the copies are freed), unless something replaced a weight since."""
    if not unpatch_all:
        return
    model = patcher.model
    copies = model.__dict__.get("wan22_file_views")
    if not copies:
        return
    tensors = _tensors(model)
    for name, (view, copy_ptr) in list(copies.items()):
        t = tensors.get(name)
        if t is not None and t.data_ptr() == copy_ptr:
            t.data = view
        del copies[name]
