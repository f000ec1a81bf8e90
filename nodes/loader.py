"""Wan22ModelLoader: Wan2.2 DiT files and folders of every format, out as native MODELs."""

from __future__ import annotations

import os
from pathlib import Path

import folder_paths
from comfy_api.latest import io

from ..wan_core.checkpoints import EXPERT_SUBFOLDERS, WEIGHT_DTYPES
from ..wan_core.comfy_bridge.pair import load_pair
from ..wan_core.errors import WanUserError

FOLDER = "diffusion_models"
NONE = "none"
WEIGHT_FILES = (".safetensors", ".pth", ".pt", ".bin")


def _is_checkpoint_folder(path: Path) -> bool:
    """A release, diffusers or single-expert folder (decided by what it holds)."""
    if any((path / sub).is_dir() for pair in EXPERT_SUBFOLDERS for sub in pair):
        return True
    if any(path.glob("*.safetensors.index.json")):
        return True
    return (path / "config.json").is_file() and any(path.glob("*.safetensors"))


def model_choices() -> list[str]:
    """Files and checkpoint folders under models/diffusion_models, folders ending in '/'.

    Files inside a listed folder (its shards) are not offered on their own."""
    folders: list[str] = []
    for root in folder_paths.get_folder_paths(FOLDER):
        if not os.path.isdir(root):
            continue
        for dirpath, dirnames, _ in os.walk(root, followlinks=True):
            here = Path(dirpath)
            if here != Path(root) and _is_checkpoint_folder(here):
                folders.append(here.relative_to(root).as_posix() + "/")
                dirnames.clear()  # its subfolders are its experts, not separate choices
    inside = tuple(folders)
    files = [f for f in folder_paths.get_filename_list(FOLDER) if not f.replace(os.sep, "/").startswith(inside)]
    return sorted(set(folders)) + files


def resolve_choice(name: str, input_name: str) -> Path:
    if name.endswith("/"):
        for root in folder_paths.get_folder_paths(FOLDER):
            path = Path(root) / name.rstrip("/")
            if path.is_dir():
                return path
    else:
        full = folder_paths.get_full_path(FOLDER, name)
        if full is not None:
            return Path(full)
    raise WanUserError(
        f"{input_name} {name!r} is not in models/{FOLDER} any more. Refresh the page and pick a file or "
        f"folder that is there."
    )


class Wan22ModelLoader(io.ComfyNode):
    @classmethod
    def define_schema(cls):
        choices = model_choices()
        return io.Schema(
            node_id="Wan22ModelLoader",
            display_name="Wan2.2 Model Loader",
            category="Wan2.2",
            description=(
                "Loads a Wan2.2 model from models/diffusion_models: the TI2V-5B model, or the high-noise "
                "expert of an A14B pair with its low-noise partner. Files (ComfyUI single files, fp16/bf16/"
                "fp8/scaled fp8) and folders (official release, diffusers) are recognised by their "
                "contents. Nothing is put on the GPU until sampling."
            ),
            inputs=[
                io.Combo.Input("model", options=choices,
                               tooltip="The TI2V-5B model, the high-noise expert of an A14B pair, or a "
                               "release/diffusers folder holding both experts."),
                io.Combo.Input("low_noise_model", options=[NONE, *choices], default=NONE,
                               tooltip="The low-noise expert of the same release. 'none': the model runs "
                               "every step alone (the 5B model, or one A14B expert on its own)."),
                io.Combo.Input("weight_dtype", options=list(WEIGHT_DTYPES), default="default",
                               tooltip="default keeps the file's precision; the others convert while loading."),
            ],
            outputs=[
                io.Model.Output("model_out", display_name="model",
                                tooltip="The high-noise expert of an A14B pair, or the TI2V-5B model."),
                io.Model.Output("low_noise_model_out", display_name="low_noise_model",
                                tooltip="The low-noise expert (empty when there is none): connect it to the "
                                "sampler's low_noise_model, through any native patch nodes you like."),
            ],
        )

    @classmethod
    def execute(cls, model, low_noise_model, weight_dtype) -> io.NodeOutput:
        high_path = resolve_choice(model, "model")
        low_path = None if low_noise_model == NONE else resolve_choice(low_noise_model, "low_noise_model")
        pair = load_pair(high_path, low_path, weight_dtype)
        return io.NodeOutput(pair.high, pair.low)


NODES = [Wan22ModelLoader]
