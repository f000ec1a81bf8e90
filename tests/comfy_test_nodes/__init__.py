"""Test-only nodes, linked into the test server's custom_nodes next to the pack (never shipped).

- Wan22TestConditioning: seeded random CONDITIONING of any width. Native loaders read no text
  width from a Wan file (they assume umT5-XXL's 4096), and no tiny text encoder gives 4096-wide
  embeddings, so pack-vs-native tests feed both sides this instead of a text encoder.
- Wan22TestCountingCompile: native TorchCompileModel's mechanism (comfy_api's
  set_torch_compile_wrapper) with a backend that records every call of a compiled graph under a
  label; Wan22TestCompiledCalls reports (and clears) the record once its LATENT input exists.
"""

import torch
from comfy_api.latest import ComfyExtension, io
from comfy_api.torch_helpers import set_torch_compile_wrapper

CALLS: list[str] = []  # labels of compiled-graph calls, in order, since the last report
COMPILED: dict[str, int] = {}  # label -> graphs compiled


class Wan22TestConditioning(io.ComfyNode):
    @classmethod
    def define_schema(cls):
        return io.Schema(
            node_id="Wan22TestConditioning",
            category="_for_testing/wan22",
            inputs=[io.Int.Input("seed", default=0), io.Int.Input("tokens", default=7, min=1),
                    io.Int.Input("width", default=4096, min=1, max=65536)],
            outputs=[io.Conditioning.Output(display_name="positive"), io.Conditioning.Output(display_name="negative")],
        )

    @classmethod
    def execute(cls, seed, tokens, width) -> io.NodeOutput:
        g = torch.Generator().manual_seed(seed)
        positive, negative = (torch.randn(1, tokens, width, generator=g) * 0.5 for _ in range(2))
        return io.NodeOutput([[positive, {}]], [[negative, {}]])


def counting_backend(label: str):
    def backend(graph_module, example_inputs):
        COMPILED[label] = COMPILED.get(label, 0) + 1

        def run(*args):
            CALLS.append(label)
            return graph_module.forward(*args)

        return run

    return backend


class Wan22TestCountingCompile(io.ComfyNode):
    @classmethod
    def define_schema(cls):
        return io.Schema(
            node_id="Wan22TestCountingCompile",
            category="_for_testing/wan22",
            inputs=[io.Model.Input("model"), io.String.Input("label"),
                    io.String.Input("module", default="diffusion_model",
                                    tooltip="the model object to compile, as set_torch_compile_wrapper's keys")],
            outputs=[io.Model.Output()],
        )

    @classmethod
    def execute(cls, model, label, module="diffusion_model") -> io.NodeOutput:
        m = model.clone()
        set_torch_compile_wrapper(model=m, backend=counting_backend(label), keys=[module])
        return io.NodeOutput(m)


class Wan22TestCompiledCalls(io.ComfyNode):
    @classmethod
    def define_schema(cls):
        return io.Schema(
            node_id="Wan22TestCompiledCalls",
            category="_for_testing/wan22",
            inputs=[io.Latent.Input("samples")],
            outputs=[],
            is_output_node=True,
        )

    @classmethod
    def execute(cls, samples) -> io.NodeOutput:
        report = {"calls": list(CALLS), "compiled": dict(COMPILED)}
        CALLS.clear()
        COMPILED.clear()
        return io.NodeOutput(ui={"compiled_calls": [report]})

    @classmethod
    def fingerprint_inputs(cls, samples):
        return float("nan")  # always runs: the record changes between prompts


class Wan22TestNodes(ComfyExtension):
    async def get_node_list(self):
        return [Wan22TestConditioning, Wan22TestCountingCompile, Wan22TestCompiledCalls]


async def comfy_entrypoint() -> Wan22TestNodes:
    return Wan22TestNodes()
