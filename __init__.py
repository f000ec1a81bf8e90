"""ComfyUI-Wan22: ComfyUI's entry point for the pack (V3 node API).

ComfyUI imports this file from custom_nodes/. It registers the pack's nodes through
`comfy_entrypoint()` and serves the frontend extension from ./js. On a ComfyUI too old for the
V3 node API it logs one line saying what to update and registers nothing, so ComfyUI starts.
"""

import logging
import sys

WEB_DIRECTORY = "./js"
MIN_COMFYUI_VERSION = "0.3.75"


def _comfyui_version() -> str:
    try:
        from comfyui_version import __version__

        return __version__
    except ImportError:
        return "unknown"


try:
    from comfy_api.latest import ComfyExtension, io  # noqa: F401  (io: probe that V3 is complete)

    _V3_MISSING = None
except ImportError as e:  # ComfyUI before the V3 node API
    _V3_MISSING = e

if _V3_MISSING is None:
    from .nodes import NODE_LIST

    class Wan22Extension(ComfyExtension):
        async def get_node_list(self):
            return list(NODE_LIST)

    async def comfy_entrypoint() -> Wan22Extension:
        return Wan22Extension()

elif "folder_paths" in sys.modules:  # ComfyUI is the host, but an old one
    logging.error(
        "[ComfyUI-Wan22] needs ComfyUI %s or newer (the V3 node API, comfy_api.latest); this ComfyUI is "
        "%s. Update ComfyUI and restart. The pack's nodes are not loaded.",
        MIN_COMFYUI_VERSION,
        _comfyui_version(),
    )

if _V3_MISSING is not None:
    # An empty classic mapping: ComfyUI loads the pack as "no nodes" instead of warning about it.
    # (Outside ComfyUI, e.g. pytest importing the repo root as a package, this is all that happens.)
    NODE_CLASS_MAPPINGS = {}
