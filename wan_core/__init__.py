"""The engine of the pack: Wan2.2 models, VAEs, text encoder, schedules and solvers.

Importable and testable without a ComfyUI server. ComfyUI imports live only in `nodes/` and in
`wan_core.comfy_glue` (the one place that moves weights through comfy.model_management); the
math modules import torch, einops and numpy only.
"""
