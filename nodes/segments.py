"""Wan22LastFrames: the last frames of a clip, to condition the next run (long video from segments).

Native ImageFromBatch counts from the front, so taking "the last 5 frames" with it needs the clip's
length typed in, and it silently returns fewer frames when the length changes. The rest of joining
segments is native: ImageFromBatch (batch_index = the carried count) drops the repeated frames of
the next run, ImageBatch joins the two.
"""

from __future__ import annotations

from comfy_api.latest import io

from ..wan_core.errors import WanUserError


class Wan22LastFrames(io.ComfyNode):
    @classmethod
    def define_schema(cls):
        return io.Schema(
            node_id="Wan22LastFrames",
            display_name="Wan2.2 Last Frames (continue a clip)",
            category="Wan2.2",
            description=(
                "The last `frames` frames of a clip, whatever its length. Connect them to the next segment's "
                "Wan22VideoLatent start_image: that run starts from them (I2V-A14B), so drop its first `frames` "
                "frames when joining (ImageFromBatch with batch_index = frames, then ImageBatch)."
            ),
            inputs=[
                io.Image.Input("images", tooltip="The decoded frames of the previous segment."),
                io.Int.Input("frames", default=5, min=1, max=4096,
                             tooltip="How many frames carry over. 5 = one whole latent frame after the first "
                             "(1 + 4), the motion the next run continues."),
            ],
            outputs=[io.Image.Output()],
        )

    @classmethod
    def execute(cls, images, frames) -> io.NodeOutput:
        if images.ndim != 4:
            raise WanUserError(
                f"images: a tensor shaped {list(images.shape)}, but an IMAGE batch is [frames, height, width, "
                f"channels]: connect decoded video frames."
            )
        if frames > images.shape[0]:
            raise WanUserError(
                f"frames: {frames} frames asked, but the clip has only {images.shape[0]}: lower frames or connect "
                f"the whole decoded clip."
            )
        return io.NodeOutput(images[images.shape[0] - frames:].clone())


NODES = [Wan22LastFrames]
