"""HTTP routes of the pack: the schedule the sampler node plots, and what model management holds.

`GET /wan22/schedule?steps=&shift=&boundary=&scheduler=&denoise=&kind=&use_release_defaults=`
answers the sigmas, DiT timesteps and expert switch step that Wan22Sampler would use with those
widget values. The browser never does schedule math itself: the numbers come from the same
`build_schedule` and settings resolution the sampler runs. Bad values answer HTTP 400 with a
message naming the value.

`GET /wan22/loaded_models` lists what comfy.model_management holds loaded right now, so users (and
the server tests) can see, e.g., that umT5 left after encoding and that one expert is loaded at a time.
`GET /wan22/caches` says what the pack caches (text encoders alive, their cached embeddings and
bytes), which ComfyUI's `/free` empties (wan_core/comfy_bridge/pack_caches.py).

The routes register themselves on import when a ComfyUI server is running (ComfyUI creates its
PromptServer before it loads custom nodes); imported without one (in-process tests) nothing happens.
"""

from __future__ import annotations

import logging
import math
import sys
from collections.abc import Mapping

from ..wan_core.comfy_bridge.pack_caches import cache_report
from ..wan_core.comfy_bridge.sampling import SAMPLER_NAMES, SCHEDULER_NAMES, build_schedule
from ..wan_core.config import KIND_DEFAULTS, ModelKind
from ..wan_core.errors import WanUserError
from .sampler import resolve_settings

log = logging.getLogger("ComfyUI-Wan22")

SCHEDULE_PATH = "/wan22/schedule"
LOADED_MODELS_PATH = "/wan22/loaded_models"
CACHES_PATH = "/wan22/caches"
# The route's own cost limit (a plot of more steps than this says nothing more).
MAX_STEPS = 10000
# The widgets use_release_defaults replaces with the loaded model's release values.
RELEASE_WIDGETS = ("shift", "boundary", "cfg", "cfg_low_noise")
_TRUE = {"1", "true", "yes", "on"}
_FALSE = {"0", "false", "no", "off"}


class _PairFacts:
    """The two facts `resolve_settings` reads from a loaded pair: its defaults and whether it has a
    low-noise expert. Lets the route resolve settings exactly as the sampler does, without weights."""

    def __init__(self, kind: ModelKind | None):
        self.defaults = KIND_DEFAULTS[kind] if kind is not None else None
        one_model = kind is not None and KIND_DEFAULTS[kind].experts == 1
        self.low = None if one_model else True


def _query_int(query: Mapping[str, str], name: str, default: int, lo: int, hi: int) -> int:
    raw = query.get(name)
    if raw is None or raw == "":
        return default
    try:
        value = int(raw)
    except ValueError:
        raise WanUserError(f"{name} must be a whole number, got {raw!r}.") from None
    if not lo <= value <= hi:
        raise WanUserError(f"{name} must be between {lo} and {hi}, got {value}.")
    return value


def _query_float(query: Mapping[str, str], name: str, default: float) -> float:
    raw = query.get(name)
    if raw is None or raw == "":
        return default
    try:
        value = float(raw)
    except ValueError:
        raise WanUserError(f"{name} must be a number, got {raw!r}.") from None
    if not math.isfinite(value):
        raise WanUserError(f"{name} must be a finite number, got {raw!r}.")
    return value


def _query_bool(query: Mapping[str, str], name: str, default: bool) -> bool:
    raw = query.get(name)
    if raw is None or raw == "":
        return default
    if raw.lower() in _TRUE:
        return True
    if raw.lower() in _FALSE:
        return False
    raise WanUserError(f"{name} must be true or false, got {raw!r}.")


def _query_kind(query: Mapping[str, str]) -> ModelKind | None:
    raw = query.get("kind") or ""
    if raw == "":
        return None
    try:
        return ModelKind(raw)
    except ValueError:
        known = ", ".join(k.value for k in ModelKind)
        raise WanUserError(f"kind must be one of {known} (or empty when unknown), got {raw!r}.") from None


def _release_values(kind: ModelKind) -> dict:
    d = KIND_DEFAULTS[kind]
    return {"shift": d.shift, "boundary": d.boundary, "cfg": d.cfg_high, "cfg_low_noise": d.cfg_low,
            "steps": d.steps}


def schedule_answer(query: Mapping[str, str]) -> dict:
    """The route's JSON for a query (strings, as they arrive). Raises WanUserError on a bad value."""
    t2v = KIND_DEFAULTS[ModelKind.T2V]
    steps = _query_int(query, "steps", t2v.steps, 1, MAX_STEPS)
    shift = _query_float(query, "shift", t2v.shift)
    boundary = _query_float(query, "boundary", t2v.boundary)
    denoise = _query_float(query, "denoise", 1.0)
    scheduler = query.get("scheduler") or SCHEDULER_NAMES[0]
    if scheduler not in SCHEDULER_NAMES:
        raise WanUserError(f"scheduler must be one of {', '.join(SCHEDULER_NAMES)}, got {scheduler!r}.")
    if not shift > 0:
        raise WanUserError(f"shift must be greater than 0, got {shift}: the release uses 5 or 12.")
    use_release = _query_bool(query, "use_release_defaults", False)
    kind = _query_kind(query)

    answer = {
        "kind": kind.value if kind is not None else None,
        "use_release_defaults": use_release,
        "release": _release_values(kind) if kind is not None else None,
        # On, with no known model: the sampler will use values this route cannot know yet.
        "widgets_ignored": list(RELEASE_WIDGETS) if use_release else [],
        "steps": steps,
        "scheduler": scheduler,
        "denoise": denoise,
    }
    if use_release and kind is None:
        answer.update(shift=None, boundary=None, sigmas=None, timesteps=None, switch_step=None)
        return answer

    # cfg values do not shape the schedule; the sampler's resolution still checks steps and boundary.
    settings = resolve_settings(
        _PairFacts(kind), 0, steps, use_release, t2v.cfg_high, t2v.cfg_low, shift, boundary, SAMPLER_NAMES[0],
        scheduler, denoise,
    )
    schedule = build_schedule(settings)
    switch = schedule.switch_step(settings.boundary) if settings.boundary is not None else None
    answer.update(
        shift=settings.shift,
        boundary=settings.boundary,
        sigmas=[float(s) for s in schedule.sigmas.tolist()],
        timesteps=[int(t) for t in schedule.timesteps.tolist()],
        switch_step=switch,
    )
    return answer


async def get_schedule(request):
    from aiohttp import web

    try:
        return web.json_response(schedule_answer(request.rel_url.query))
    except WanUserError as e:
        return web.json_response({"error": str(e)}, status=400)


async def get_loaded_models(request):
    import comfy.model_management as mm
    from aiohttp import web

    rows = [
        {"model": type(lm.model.model).__name__, "device": str(lm.device), "loaded_bytes": int(lm.model_loaded_memory())}
        for lm in mm.current_loaded_models if lm.model is not None
    ]
    return web.json_response(rows)


async def get_caches(request):
    from aiohttp import web

    return web.json_response(cache_report())


def register_routes(routes) -> None:
    routes.get(SCHEDULE_PATH)(get_schedule)
    routes.get(LOADED_MODELS_PATH)(get_loaded_models)
    routes.get(CACHES_PATH)(get_caches)


def _register_with_running_server() -> None:
    # Only a ComfyUI that is starting has imported `server`; importing it here would start one's worth
    # of machinery in a plain test process.
    server = sys.modules.get("server")
    instance = getattr(getattr(server, "PromptServer", None), "instance", None)
    if instance is None:
        return
    register_routes(instance.routes)
    log.debug("[ComfyUI-Wan22] routes %s, %s, %s registered", SCHEDULE_PATH, LOADED_MODELS_PATH, CACHES_PATH)


_register_with_running_server()
