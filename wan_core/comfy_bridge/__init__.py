"""The only part of wan_core that imports ComfyUI: adapters that make the pack's models ordinary
ComfyUI citizens (ModelPatcher, comfy.model_management). Everything else in wan_core is plain
torch and runs without ComfyUI."""
