"""Streaming, memory-bounded encode and decode over any native Wan VAE (a comfy.sd.VAE holding
ComfyUI's Wan2.1 or Wan2.2 module: the pack's loader's or native VAELoader's).

`WanChunkCodec` runs ComfyUI's encoder and decoder one causal chunk at a time with their own
causal feature caches (the `feat_cache` lists of comfy.ldm.wan), in the call order ComfyUI's
`Decoder3d.forward` uses, so the cache slots and the numbers are native's. One change in the order
of work, not in the arithmetic: after the decoder's last temporal upsample every layer works frame
by frame (2D or causal in time), so the full-resolution stages run one output frame at a time
instead of four. Their causal caches hold the same two frames either way; the activations of the
costliest stages shrink fourfold. wan_core.vae.streaming does the tiling and OOM retries.

`decode_iter` / `encode` place the VAE through comfy.model_management first (vae.patcher).
"""

from __future__ import annotations

from collections.abc import Iterator

import comfy.ldm.wan.vae as wan21
import comfy.ldm.wan.vae2_2 as wan22
import comfy.model_management as mm
import torch

from ..errors import WanUserError
from ..vae import streaming
from ..vae.kinds import WAN21, WAN22, VaeConfig, VaeKind

# Pixels of the largest tile one call asks model management to keep free beside the weights.
WORKING_TILE_PIXELS = 512 * 512
CACHE_T = 2  # frames each causal conv keeps from the past (ComfyUI's and the release's)


def wan_config(vae, name: str = "vae") -> VaeConfig:
    """The kind and widths of a native VAE, or a WanUserError naming the input when it is not a
    Wan2.1/Wan2.2 VAE."""
    model = getattr(vae, "first_stage_model", None)
    if isinstance(model, wan22.WanVAE):
        kind = WAN22
    elif isinstance(model, wan21.WanVAE):
        kind = WAN21
    else:
        what = f"a {type(model).__name__} VAE" if model is not None else f"a {type(vae).__name__}"
        raise WanUserError(
            f"{name}: {what}, not a Wan VAE. Connect the Wan2.1 VAE (wan_2.1_vae.safetensors, for the "
            f"A14B models) or the Wan2.2 VAE (wan2.2_vae.safetensors, for TI2V-5B), from the Wan2.2 VAE "
            f"Loader or native Load VAE."
        )
    return VaeConfig(kind=kind, enc_dim=model.encoder.conv1.weight.shape[0],
                     dec_dim=model.decoder.head[0].gamma.shape[0])


def wan_vae_kind(vae, name: str = "vae") -> VaeKind:
    """The Wan VAE kind (z_dim, stride, name) of a native VAE; see wan_config."""
    return wan_config(vae, name).kind


def _count_causal_convs(module: torch.nn.Module) -> int:
    return sum(isinstance(m, wan21.CausalConv3d) for m in module.modules())


def _is_temporal_upsample(layer: torch.nn.Module) -> bool:
    return any(getattr(m, "mode", None) == "upsample3d" for m in layer.modules())


def _receptive_radius(layers: list[torch.nn.Module]) -> int:
    """How many rows (or columns) of the first layer's input an output pixel of the last layer
    reads on each side: the spatial convolutions' radii, halved (rounding up) back through each 2x
    upsample. Walked from the output back, in the order the modules run (a block's shortcut adds
    no reach: DupUp3D only repeats pixels)."""
    radius = 0
    for module in reversed([m for layer in layers for m in layer.modules()]):
        if isinstance(module, torch.nn.Upsample):
            radius = -(-radius // 2)
        elif isinstance(module, (torch.nn.Conv2d, torch.nn.Conv3d)):
            radius += (module.kernel_size[-1] - 1) // 2
    return radius


class CausalState:
    """The causal cache of one stream (a video, or one strip or tile of it)."""

    def __init__(self, slots: int):
        self.cache: list = [None] * slots
        self.first = True


class WanChunkCodec:
    """One causal chunk at a time through a native Wan VAE's modules (see the module docstring)."""

    def __init__(self, vae, name: str = "vae"):
        self.cfg = wan_config(vae, name)
        self.vae = vae
        self.model = vae.first_stage_model
        decoder = self.model.decoder
        temporal = [i for i, layer in enumerate(decoder.upsamples) if _is_temporal_upsample(layer)]
        self._per_frame_from = temporal[-1] + 1 if temporal else 0
        # Exact strips split the decoder after its first temporal upsample: the layers before it run
        # at low resolution and hold the only non-local layer (the middle attention), the layers
        # after it are convolutions whose reach is `strip_halo` rows of their input.
        self._strips_from = temporal[0] + 1 if temporal else 0
        low = decoder.upsamples[: self._strips_from]
        high = list(decoder.upsamples[self._strips_from :]) + [decoder.head]
        self.strip_halo = _receptive_radius(high)
        self.low_scale = 2 ** sum(isinstance(m, torch.nn.Upsample) for m in low.modules())
        self.low_channels = [m for m in low.modules() if isinstance(m, torch.nn.Conv2d)][-1].out_channels
        self._slots = max(_count_causal_convs(self.model.decoder), _count_causal_convs(self.model.encoder))
        self._residual = self.cfg.kind.residual

    @property
    def device(self) -> torch.device:
        return torch.device(self.vae.device)

    @property
    def dtype(self) -> torch.dtype:
        return self.vae.vae_dtype

    def new_state(self) -> CausalState:
        return CausalState(self._slots)

    # --- decode --------------------------------------------------------------------------
    def _cached_conv(self, conv, x, cache, idx):
        """A causal conv outside a block, as Decoder3d/Encoder3d run conv1 and the head's conv."""
        i = idx[0]
        keep = x[:, :, -CACHE_T:].clone()
        if keep.shape[2] < CACHE_T and cache[i] is not None:
            keep = torch.cat([cache[i][:, :, -1:].to(keep.device), keep], dim=2)
        x = conv(x, cache_list=cache, cache_idx=i)  # the old cache is dropped during the conv
        cache[i] = keep
        idx[0] += 1
        return x

    def _up(self, layer, x, cache, idx, first):
        if isinstance(layer, wan21.AttentionBlock):
            return layer(x)
        if self._residual and isinstance(layer, wan22.Up_ResidualBlock):
            return layer(x, cache, idx, first)
        return layer(x, cache, idx)

    def _head(self, x, cache, idx):
        for layer in self.model.decoder.head:
            x = self._cached_conv(layer, x, cache, idx) if isinstance(layer, wan21.CausalConv3d) else layer(x)
        return x

    def decode_chunk(self, z: torch.Tensor, state: CausalState) -> torch.Tensor:
        """One raw latent frame [B, z, 1, h, w] -> its pixel frames [B, 3, t, H, W] in [-1, 1]
        (t = 1 for the stream's first call, 4 after)."""
        idx = [0]
        x = self._decode_low(z, state.cache, idx, state.first)
        out = self._decode_high(x, state.cache, idx, state.first)
        state.first = False
        return out

    def decode_low(self, z: torch.Tensor, state: CausalState) -> torch.Tensor:
        """The low-resolution half of decode_chunk (up to the first temporal upsample, included): its
        whole-frame features, which decode_high takes, whole or as strips of rows or columns."""
        x = self._decode_low(z, state.cache, [0], state.first)
        state.first = False
        return x

    def decode_high(self, x: torch.Tensor, state: CausalState) -> torch.Tensor:
        """The rest of decode_chunk over decode_low's features (or a strip of them, with its own state:
        the strip's output is exact except within `strip_halo` input rows of a cut edge)."""
        out = self._decode_high(x, state.cache, [0], state.first)
        state.first = False
        return out

    def _decode_low(self, z, cache, idx, first):
        decoder = self.model.decoder
        x = self._cached_conv(decoder.conv1, self.model.conv2(z), cache, idx)
        for layer in decoder.middle:
            x = layer(x) if isinstance(layer, wan21.AttentionBlock) else layer(x, cache, idx)
        for layer in decoder.upsamples[: self._strips_from]:
            x = self._up(layer, x, cache, idx, first)
        return x

    def _decode_high(self, x, cache, idx, first):
        decoder = self.model.decoder
        for layer in decoder.upsamples[self._strips_from : self._per_frame_from]:
            x = self._up(layer, x, cache, idx, first)
        late = decoder.upsamples[self._per_frame_from :]
        start = idx[0]
        frames = []
        for f in range(x.shape[2]):
            idx[0] = start
            y = x[:, :, f : f + 1]
            for layer in late:
                y = self._up(layer, y, cache, idx, first)
            y = self._head(y, cache, idx)
            if self._residual:
                y = wan22.unpatchify(y, patch_size=self.cfg.kind.patch)
            frames.append(y.clamp_(-1.0, 1.0))
            del y
        del x
        return frames[0] if len(frames) == 1 else torch.cat(frames, dim=2)

    # --- encode --------------------------------------------------------------------------
    def encode_chunk(self, pixels: torch.Tensor, state: CausalState) -> torch.Tensor:
        """Pixels of one causal chunk (frame 0 alone, then 4) [B, 3, t, H, W] in [-1, 1] -> the mean
        of its latent frame(s)."""
        if self._residual:
            pixels = wan22.patchify(pixels, patch_size=self.cfg.kind.patch)
        out = self.model.encoder(pixels, feat_cache=state.cache, feat_idx=[0])
        state.first = False
        return self.model.conv1(out)[:, : self.cfg.z_dim]


# --- through model management ------------------------------------------------------------
def _load(vae, codec: WanChunkCodec, bytes_per_pixel: float) -> None:
    mm.load_models_gpu([vae.patcher], memory_required=int(bytes_per_pixel * WORKING_TILE_PIXELS),
                       force_full_load=getattr(vae, "disable_offload", False))


def decode_iter(vae, latent: torch.Tensor, tile: int | None = None, overlap: int | None = None,
                vae_name: str = "vae", latent_name: str = "samples", strips: int = 0) -> Iterator[torch.Tensor]:
    """Raw latent [B, z, T, h, w] -> pixel chunks [B, 3, t, H, W] in [-1, 1] (float32, CPU): 1
    frame, then 4 per latent frame. tile: pixels; 0 = whole frames; None = whole frames when they
    fit the free memory, else exact strips or tiles (streaming.decode_video). strips: >= 2 = that
    many exact strips. Bad inputs fail here, before anything is loaded."""
    codec = WanChunkCodec(vae, vae_name)
    kind = codec.cfg.kind
    from ..vae.validation import check_latent

    check_latent(latent, kind.z_dim, kind.name, latent_name)
    return _decode_iter(vae, codec, latent, tile, overlap, latent_name, strips)


def _decode_iter(vae, codec, latent, tile, overlap, latent_name, strips) -> Iterator[torch.Tensor]:
    _load(vae, codec, streaming.decode_bytes_per_pixel(codec))
    free = mm.get_free_memory(codec.device) if tile is None else None
    chunks = streaming.decode_video(codec, latent, tile=tile, overlap=overlap, free_memory=free, name=latent_name,
                                    check=mm.throw_exception_if_processing_interrupted, strips=strips)
    try:
        yield from chunks
    finally:
        chunks.close()
        mm.soft_empty_cache()


def decode(vae, latent: torch.Tensor, tile: int | None = None, overlap: int | None = None,
           vae_name: str = "vae", strips: int = 0) -> torch.Tensor:
    """The whole video [B, 3, T, H, W] in [-1, 1] (float32, CPU)."""
    chunks = decode_iter(vae, latent, tile=tile, overlap=overlap, vae_name=vae_name, strips=strips)
    return torch.cat(list(chunks), dim=2)


def encode(vae, pixels: torch.Tensor, tile: int | None = None, overlap: int | None = None,
           vae_name: str = "vae", pixels_name: str = "pixels") -> torch.Tensor:
    """Pixels [B, 3, T, H, W] in [-1, 1] -> raw latent (float32) on ComfyUI's intermediate device.
    tile: as decode_iter's."""
    codec = WanChunkCodec(vae, vae_name)
    kind = codec.cfg.kind
    from ..vae.validation import check_pixels

    check_pixels(pixels, kind.stride, kind.name, pixels_name)
    _load(vae, codec, streaming.encode_bytes_per_pixel(codec))
    free = mm.get_free_memory(codec.device) if tile is None else None
    try:
        latent = streaming.encode_video(codec, pixels, tile=tile, overlap=overlap, free_memory=free,
                                        name=pixels_name)
    finally:
        mm.soft_empty_cache()
    return latent.to(mm.intermediate_device())
