"""The injectable layer set.

Every model in wan_core is built from an `ops` namespace with the classes below. Standalone it
is plain `torch.nn`; inside ComfyUI the nodes pass a `comfy.ops` class instead, so ComfyUI's
low-VRAM partial loading, fp8 manual cast and LoRA weight patches apply to our layers as they do
to its own. Only the names used here may be relied on: comfy.ops provides all of them.
"""

from torch import nn


class TorchOps:
    Linear = nn.Linear
    Conv2d = nn.Conv2d
    Conv3d = nn.Conv3d
    LayerNorm = nn.LayerNorm
    GroupNorm = nn.GroupNorm
    RMSNorm = nn.RMSNorm
    Embedding = nn.Embedding
