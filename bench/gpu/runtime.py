"""ComfyUI and the pack in this process, from any ComfyUI tree (the kit's on the GPU machine).

As tests/comfy_inprocess.py does for the tests, but with the tree and the device chosen: the GPU
check runs on CUDA (`cpu=False`), its rehearsal on the CPU.
"""

from __future__ import annotations

import importlib
import importlib.util
import os
import platform
import sys
from pathlib import Path

from tests.comfy_inprocess import PACK_MODULE, REPO

# Modules the check imports from the GPU machine's own python3 (bench/gpu/machine_packages.txt);
# checked before any model file is written, so a missing one costs seconds, not the lease.
MACHINE_MODULES = ("torch", "torchvision", "numpy", "safetensors", "einops", "sentencepiece", "PIL", "yaml",
                   "scipy", "tqdm", "psutil", "transformers", "tokenizers", "packaging")
KIT_MODULES = ("av", "torchsde", "trampoline")


def missing_modules() -> list[str]:
    missing = []
    for name in (*MACHINE_MODULES, *KIT_MODULES):
        try:
            importlib.import_module(name)
        except Exception as e:  # noqa: BLE001  (any failure to import is what we report)
            missing.append(f"{name} ({type(e).__name__}: {e})")
    return missing


def import_comfy(comfyui_dir: Path, cpu: bool):
    """ComfyUI's runtime from `comfyui_dir`, on the CPU or the default CUDA device."""
    comfyui_dir = Path(comfyui_dir).resolve()
    if not (comfyui_dir / "comfy" / "model_management.py").is_file():
        raise SystemExit(f"bench.gpu: {comfyui_dir} holds no ComfyUI tree (make gpu-kit builds .gpu-kit/comfyui)")
    if str(comfyui_dir) not in sys.path:
        sys.path.insert(0, str(comfyui_dir))
    from comfy.cli_args import args

    args.cpu = cpu  # read once, when model_management is first imported
    import comfy.model_management as mm

    loaded_from = Path(mm.__file__).resolve()
    if comfyui_dir not in loaded_from.parents:
        raise SystemExit(f"bench.gpu: comfy was already imported from {loaded_from}, not {comfyui_dir}")
    return mm


def import_pack():
    """This checkout as the package ComfyUI sees (`comfyui_wan22`), so relative imports work."""
    if PACK_MODULE in sys.modules:
        return sys.modules[PACK_MODULE]
    spec = importlib.util.spec_from_file_location(PACK_MODULE, REPO / "__init__.py",
                                                  submodule_search_locations=[str(REPO)])
    module = importlib.util.module_from_spec(spec)
    sys.modules[PACK_MODULE] = module
    spec.loader.exec_module(module)
    if not hasattr(module, "comfy_entrypoint"):
        raise SystemExit("bench.gpu: the pack did not register its nodes (ComfyUI's V3 API missing?)")
    return module


def pack_nodes() -> dict:
    """node_id -> node class, from the pack's node list."""
    nodes = importlib.import_module(PACK_MODULE + ".nodes")
    return {cls.define_schema().node_id: cls for cls in nodes.NODE_LIST}


def machine() -> str:
    import torch

    cores = len(os.sched_getaffinity(0))
    try:
        with open("/proc/meminfo") as f:
            mem = f"{int(f.readline().split()[1]) / 2**20:.0f} GB RAM"
    except OSError:
        mem = "? RAM"
    if torch.cuda.is_available():
        p = torch.cuda.get_device_properties(0)
        gpu = f"{p.name} ({p.total_memory / 2**30:.0f} GiB), CUDA {torch.version.cuda}"
    else:
        gpu = "no GPU"
    return (f"{gpu}; {cores} CPU cores, {mem}; Python {platform.python_version()}, torch {torch.__version__}, "
            f"{platform.platform()}")


def preflight() -> None:
    """Imports everything the runs will use, so that a missing piece fails in seconds, before any
    model file is written (on the GPU machine, minutes of the lease)."""
    for name in ("comfy.sd", "comfy.samplers", "comfy.sample", "comfy.k_diffusion.sampling", "comfy.ldm.wan.model",
                 "comfy.ldm.wan.vae2_2", "comfy_extras.nodes_model_advanced", "nodes", "latent_preview",
                 "folder_paths", "node_helpers", PACK_MODULE + ".wan_core.comfy_bridge.dit_model",
                 PACK_MODULE + ".wan_core.comfy_bridge.sampling", "bench.gpu.runner", "vae_factory", "dit_factory"):
        importlib.import_module(name)
    missing = {"Wan22VAELoader", "Wan22VAEDecode"} - pack_nodes().keys()
    if missing:
        raise SystemExit(f"bench.gpu: the pack has no {', '.join(sorted(missing))} node")
