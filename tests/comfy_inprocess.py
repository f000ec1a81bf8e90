"""ComfyUI's runtime in the test process, for tests of code that talks to comfy.model_management
without a server (the server tests cover the HTTP side).

`comfy()` puts the pinned .comfyui/ on sys.path and imports it on the CPU. `pack()` imports this
checkout as the package ComfyUI sees (`comfyui_wan22`), so the nodes' relative imports work. Do not
mix `wan_core` imported top-level with `comfyui_wan22.wan_core` in one test: they are two copies.
"""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
COMFYUI_DIR = REPO / ".comfyui"
PACK_MODULE = "comfyui_wan22"


def comfy():
    if str(COMFYUI_DIR) not in sys.path:
        sys.path.insert(0, str(COMFYUI_DIR))
    from comfy.cli_args import args

    args.cpu = True  # as `main.py --cpu`: must be set before model_management picks a device
    import comfy.model_management  # noqa: F401  (imports ComfyUI's runtime on the CPU)

    return sys.modules["comfy"]


def pack():
    comfy()
    if PACK_MODULE in sys.modules:
        return sys.modules[PACK_MODULE]
    spec = importlib.util.spec_from_file_location(
        PACK_MODULE, REPO / "__init__.py", submodule_search_locations=[str(REPO)]
    )
    module = importlib.util.module_from_spec(spec)
    sys.modules[PACK_MODULE] = module
    spec.loader.exec_module(module)
    return module
