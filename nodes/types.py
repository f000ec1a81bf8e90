"""The pack's own socket types, one definition each. Natives (MODEL, VAE, LATENT, IMAGE,
CONDITIONING, VIDEO, AUDIO) come from comfy_api's io directly."""

from comfy_api.latest import io

# A Wan2.1 (z16) or Wan2.2 (z48) VAE loaded by the pack.
Wan22Vae = io.Custom("WAN22_VAE")
# A umT5 text encoder loaded by the pack, with its tokenizer.
Wan22TextEncoder = io.Custom("WAN22_TEXT_ENCODER")
