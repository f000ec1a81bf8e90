"""What the pack holds between prompts, and letting it go when ComfyUI frees memory.

The pack's long-lived objects are node outputs, which ComfyUI's own output cache owns: the
experts (their weights are views of memory-mapped files), the VAE, and the text encoder handles
with their embedding caches. ComfyUI's `/free` route says when to let go:

- `free_memory`: ComfyUI resets its output cache, so every pack object and its file maps are
  dropped with the outputs that held them (nothing more to do here);
- `unload_models` (also implied by `free_memory`, and done by ComfyUI on an out-of-memory error
  or with --disable-smart-memory): `comfy.model_management.unload_all_models()` runs between
  prompts. Outputs stay cached then, so the pack drops what is only a cache: each live text
  encoder's embeddings, and the encoder module if it was kept loaded.

ComfyUI 0.3.75 has no callback for that moment, so `install()` wraps `unload_all_models` once
(the module attribute main.py and execution.py call); the wrapper calls ComfyUI's function first
and never changes what it does.
"""

from __future__ import annotations

import logging
import weakref

import comfy.model_management as mm

log = logging.getLogger("ComfyUI-Wan22")

_text_encoders: weakref.WeakSet = weakref.WeakSet()


def track_text_encoder(handle) -> None:
    """Called by each TextEncoderHandle: it is freed with the others when ComfyUI unloads all."""
    _text_encoders.add(handle)


def free_pack_caches() -> dict:
    """Drops every live text encoder's embedding cache and module; returns what was freed."""
    freed = {"text_encoders": 0, "embeddings": 0, "embedding_bytes": 0}
    for handle in list(_text_encoders):
        count, nbytes = handle.clear_cache()
        handle.release()
        freed["text_encoders"] += 1
        freed["embeddings"] += count
        freed["embedding_bytes"] += nbytes
    if freed["embeddings"]:
        log.info("[ComfyUI-Wan22] freed %d cached text embeddings (%.1f MB) as ComfyUI unloaded all models",
                 freed["embeddings"], freed["embedding_bytes"] / 2**20)
    return freed


def cache_report() -> dict:
    """What the pack's caches hold now (for the /wan22/caches route and tests)."""
    handles = list(_text_encoders)
    return {
        "text_encoders": len(handles),
        "embeddings": sum(h.cached_count() for h in handles),
        "embedding_bytes": sum(h.cached_bytes() for h in handles),
        "text_encoders_loaded": sum(1 for h in handles if h.patcher is not None),
    }


def install() -> None:
    """Frees the pack's caches whenever ComfyUI unloads all models (once per process)."""
    original = mm.unload_all_models
    if getattr(original, "wan22_frees_pack_caches", False):
        return

    def unload_all_models(*args, **kwargs):
        result = original(*args, **kwargs)
        try:
            free_pack_caches()
        except Exception:  # noqa: BLE001 - freeing a cache must never break ComfyUI's own unload
            log.exception("[ComfyUI-Wan22] freeing the pack's caches failed")
        return result

    unload_all_models.wan22_frees_pack_caches = True
    unload_all_models.__wrapped__ = original
    unload_all_models.__doc__ = original.__doc__
    mm.unload_all_models = unload_all_models
