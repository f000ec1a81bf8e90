"""Text nodes: load umT5 in any release format, encode the positive and negative prompts.

The conditioning is ComfyUI's own format, `[[tensor[1, 512, dim], {"pooled_output": None}]]`, as
native CLIPTextEncode gives for a "wan" CLIPLoader: the real tokens followed by zero rows up to 512.
That is also what the release's DiT sees (it zero-pads the trimmed output to 512), so native
samplers and Wan22Sampler get the release's numbers from it.
"""

from __future__ import annotations

import logging

import folder_paths
from comfy_api.latest import io

from ..wan_core.comfy_bridge.text_encoder import WEIGHT_DTYPES, TextEncoderHandle
from ..wan_core.config import DEFAULT_NEGATIVE_PROMPT, TEXT_LEN
from ..wan_core.errors import WanUserError
from ..wan_core.umt5 import pad_context
from .types import Wan22TextEncoder

log = logging.getLogger("ComfyUI-Wan22")


class Wan22TextEncoderLoader(io.ComfyNode):
    @classmethod
    def define_schema(cls):
        return io.Schema(
            node_id="Wan22TextEncoderLoader",
            display_name="Wan2.2 Text Encoder Loader (umT5)",
            category="Wan2.2",
            description=(
                "Loads umT5-XXL from models/text_encoders: ComfyUI's umt5_xxl_fp16 / fp8_e4m3fn_scaled "
                "safetensors, the release's models_t5_umt5-xxl-enc-bf16.pth (with its google/umt5-xxl "
                "tokenizer folder beside it) or a Hugging Face UMT5EncoderModel folder. The weights are "
                "read only when a new prompt is encoded, and freed after."
            ),
            inputs=[
                io.Combo.Input("text_encoder_name", options=folder_paths.get_filename_list("text_encoders")),
                io.Combo.Input("device", options=["default", "cpu"], default="default",
                               tooltip="default: where ComfyUI puts text encoders; cpu keeps VRAM for the experts."),
                io.Combo.Input("weight_dtype", options=list(WEIGHT_DTYPES), default="default",
                               tooltip="default: the file's dtype (fp8 files compute in bf16)."),
            ],
            outputs=[Wan22TextEncoder.Output(display_name="text_encoder")],
        )

    @classmethod
    def execute(cls, text_encoder_name, device, weight_dtype) -> io.NodeOutput:
        path = folder_paths.get_full_path("text_encoders", text_encoder_name)
        if path is None:
            raise WanUserError(
                f"text_encoder_name {text_encoder_name!r} is not in models/text_encoders: put the file there "
                f"and refresh the node list."
            )
        return io.NodeOutput(TextEncoderHandle(path, weight_dtype=weight_dtype, device=device))


class Wan22TextEncode(io.ComfyNode):
    @classmethod
    def define_schema(cls):
        return io.Schema(
            node_id="Wan22TextEncode",
            display_name="Wan2.2 Text Encode (umT5)",
            category="Wan2.2",
            description=(
                "Encodes the positive and negative prompts with umT5 (up to 512 tokens each, longer prompts "
                "are cut with a warning). An empty negative uses the release's negative prompt. Unchanged "
                "prompts reuse their embeddings without loading the encoder."
            ),
            inputs=[
                Wan22TextEncoder.Input("text_encoder"),
                io.String.Input("positive", multiline=True, dynamic_prompts=True),
                io.String.Input("negative", multiline=True, dynamic_prompts=True, default=DEFAULT_NEGATIVE_PROMPT),
                io.Boolean.Input("keep_loaded", default=False, optional=True,
                                 tooltip="Keep umT5 loaded after encoding (faster prompt changes, less memory "
                                         "for the experts)."),
            ],
            outputs=[
                io.Conditioning.Output(display_name="positive"),
                io.Conditioning.Output(display_name="negative"),
            ],
        )

    @classmethod
    def execute(cls, text_encoder: TextEncoderHandle, positive: str, negative: str,
                keep_loaded: bool = False) -> io.NodeOutput:
        if not positive.strip():
            raise WanUserError("positive prompt is empty: describe the video you want in the positive text box.")
        if not negative.strip():
            log.info("[ComfyUI-Wan22] negative prompt is empty: using the release's default negative prompt")
            negative = DEFAULT_NEGATIVE_PROMPT
        pos, neg = text_encoder.encode([positive, negative], keep_loaded=keep_loaded)
        return io.NodeOutput(to_conditioning(pos), to_conditioning(neg))


def to_conditioning(embedding) -> list:
    """[tokens, dim] -> ComfyUI CONDITIONING, zero-padded to the 512 tokens the DiT reads."""
    return [[pad_context(embedding, TEXT_LEN).unsqueeze(0), {"pooled_output": None}]]


NODES = [Wan22TextEncoderLoader, Wan22TextEncode]
