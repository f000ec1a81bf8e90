"""The pack's ComfyUI nodes (V3 schema): thin classes that validate inputs, call wan_core and
shape outputs. Each node module lists its classes here."""

from ..wan_core.comfy_bridge import pack_caches
from . import latent, loader, lora, sampler, segments, text, vae, video

# The pack's caches are freed when ComfyUI unloads all models (/free, out of memory).
pack_caches.install()

NODE_LIST: list = []
NODE_LIST += text.NODES
NODE_LIST += loader.NODES
NODE_LIST += video.NODES
NODE_LIST += sampler.NODES
NODE_LIST += vae.NODES
NODE_LIST += latent.NODES
NODE_LIST += lora.NODES
NODE_LIST += segments.NODES

# The frontend extension's HTTP routes: they register themselves only when a ComfyUI server runs.
from . import routes  # noqa: E402,F401
