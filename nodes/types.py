"""The pack's own socket types, one definition each. Natives (MODEL, VAE, LATENT, IMAGE,
CONDITIONING, VIDEO, AUDIO) come from comfy_api's io directly."""

from comfy_api.latest import io

# The loaded Wan2.2 model: an expert pair (A14B) or the single TI2V-5B model, with its kind.
Wan22Model = io.Custom("WAN22_MODEL")
# A umT5 text encoder loaded by the pack, with its tokenizer.
Wan22TextEncoder = io.Custom("WAN22_TEXT_ENCODER")
