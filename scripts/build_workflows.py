"""Builds the drag-and-drop templates in workflows/ and their API-format twins in workflows/api/.

One Python description per template (nodes, widget values by name, links by socket name, groups)
is the single source of both formats. Widget order, socket slots and the defaults of widgets a
description leaves out come from a live ComfyUI's /object_info, so the files follow the nodes'
real schemas; tests/server/test_templates.py checks that the committed files equal what this
script generates against the test server.

    python -m scripts.build_workflows           # starts a ComfyUI with the pack, rewrites workflows/
    python -m scripts.build_workflows --check   # exits 1 if a committed file differs

ComfyUI 0.3.75 lists `<pack>/workflows/*.json` (not subfolders) at /api/workflow_templates, so the
API twins sit in workflows/api/ where the template browser does not show them.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import uuid
from dataclasses import dataclass, field
from pathlib import Path

from wan_core.config import DEFAULT_NEGATIVE_PROMPT, KIND_DEFAULTS, ModelKind

REPO = Path(__file__).resolve().parents[1]
WORKFLOWS_DIR = REPO / "workflows"
API_SUBDIR = "api"

# LiteGraph node modes.
MODE_ALWAYS = 0
MODE_BYPASS = 4
# Nodes the frontend draws but never sends to the server (they are not in /object_info).
FRONTEND_ONLY = {"Note", "MarkdownNote"}
WIDGET_TYPES = {"INT", "FLOAT", "STRING", "BOOLEAN", "COMBO"}

# ComfyUI's repackaged files (what the ComfyUI model browser and most users have), with where
# they go and where to get them.
HF_22 = "https://huggingface.co/Comfy-Org/Wan_2.2_ComfyUI_Repackaged/resolve/main/split_files"
HF_21 = "https://huggingface.co/Comfy-Org/Wan_2.1_ComfyUI_repackaged/resolve/main/split_files"
TEXT_ENCODER_FILE = "umt5_xxl_fp8_e4m3fn_scaled.safetensors"
VAE21_FILE = "wan_2.1_vae.safetensors"
VAE22_FILE = "wan2.2_vae.safetensors"
MODEL_FILES = {
    ModelKind.T2V: ("wan2.2_t2v_high_noise_14B_fp8_scaled.safetensors", "wan2.2_t2v_low_noise_14B_fp8_scaled.safetensors"),
    ModelKind.I2V: ("wan2.2_i2v_high_noise_14B_fp8_scaled.safetensors", "wan2.2_i2v_low_noise_14B_fp8_scaled.safetensors"),
    ModelKind.TI2V: ("wan2.2_ti2v_5B_fp16.safetensors", None),
}
DOWNLOADS = {  # file -> (models/ subfolder, url)
    TEXT_ENCODER_FILE: ("text_encoders", f"{HF_21}/text_encoders/{TEXT_ENCODER_FILE}"),
    VAE21_FILE: ("vae", f"{HF_22}/vae/{VAE21_FILE}"),
    VAE22_FILE: ("vae", f"{HF_22}/vae/{VAE22_FILE}"),
    **{name: ("diffusion_models", f"{HF_22}/diffusion_models/{name}")
       for pair in MODEL_FILES.values() for name in pair if name},
}
# The image ComfyUI ships in its input/ folder, so an image template runs on a fresh install.
START_IMAGE_FILE = "example.png"
# The release's 480p size for the A14B templates: it fits a 24 GB GPU with the fp8 experts
# (1280x720, the other released size, is a widget change away).
A14B_TEMPLATE_SIZE = (832, 480)

PROMPTS = {
    ModelKind.T2V: (
        "A red fox trots through fresh snow in a birch forest at sunrise, breath steaming in the cold air. "
        "Low tracking shot beside the fox, soft golden light through the trees, shallow depth of field, "
        "cinematic, natural colours."
    ),
    ModelKind.I2V: (
        "The scene comes to life: gentle wind moves through it, light shifts slowly, and the camera pushes "
        "in a little. Smooth natural motion, cinematic."
    ),
    ModelKind.TI2V: (
        "A small sailboat glides across a calm turquoise bay under a clear sky, sunlight glittering on the "
        "water, gulls circling overhead. Aerial shot slowly orbiting the boat, vivid natural colours."
    ),
}


# ---------------------------------------------------------------------------------------------
# The description


@dataclass
class Node:
    key: str  # name used for wiring inside a description
    type: str
    pos: tuple[int, int]
    size: tuple[int, int]
    widgets: dict = field(default_factory=dict)  # widget name -> value; the rest take the defaults
    title: str | None = None
    mode: int = MODE_ALWAYS
    color: str | None = None  # (color, bgcolor) as the frontend's palettes
    bgcolor: str | None = None
    models: tuple[str, ...] = ()  # files the frontend offers to download when missing


@dataclass
class Group:
    title: str
    members: tuple[str, ...]
    color: str = "#3f789e"


@dataclass
class Graph:
    name: str  # file stem
    nodes: list[Node]
    links: list[tuple[str, str, str, str]]  # (from key, output name, to key, input name)
    groups: list[Group]


GREEN = ("#232", "#353")  # positive prompt
RED = ("#322", "#533")  # negative prompt
YELLOW = ("#432", "#653")  # notes


def notes_text(kind: ModelKind, files: list[str], image: bool) -> str:
    d = KIND_DEFAULTS[kind]
    rows = "\n".join(f"| `{f}` | `ComfyUI/models/{DOWNLOADS[f][0]}/` |" for f in files)
    links = "\n".join(f"- [{f}]({DOWNLOADS[f][1]})" for f in files)
    if kind == ModelKind.TI2V:
        image_line = (
            "**Image to video:** select the *Load Image* node and press **Ctrl+B** to un-bypass it (it is "
            "bypassed, so the graph makes text-to-video); its image becomes the first frame."
        )
    elif image:
        image_line = "**Start image:** pick it in *Load Image*; it is stretched to the video size."
    else:
        image_line = ""
    switch = (
        f"The sampler runs the high-noise expert while t >= {d.boundary} x 1000, then the low-noise one "
        f"(release defaults: shift {d.shift:g}, cfg {d.cfg_high:g}/{d.cfg_low:g}, {d.steps} steps)."
        if d.boundary is not None else
        f"Release defaults: shift {d.shift:g}, cfg {d.cfg_high:g}, {d.steps} steps, {d.fps} fps."
    )
    return (
        "## Files to download\n\n"
        "| file | put it in |\n|---|---|\n" + rows + "\n\n" + links + "\n\n"
        + (image_line + "\n\n" if image_line else "")
        + switch + "\n\nThe video is saved to `ComfyUI/output/` as mp4 and plays in the *Video Combine* node."
    )


def wan_graph(kind: ModelKind, name: str) -> Graph:
    """The shared shape of the three templates: models | prompts | size (+ image) | sampler | video."""
    d = KIND_DEFAULTS[kind]
    high, low = MODEL_FILES[kind]
    vae = VAE22_FILE if d.vae_kind == "wan2.2" else VAE21_FILE
    width, height = (d.width, d.height) if kind == ModelKind.TI2V else A14B_TEMPLATE_SIZE
    has_image = kind in (ModelKind.I2V, ModelKind.TI2V)
    files = [f for f in (high, low, vae, TEXT_ENCODER_FILE) if f]
    col = [0, 420, 920, 1300]  # x of the columns, left to right

    nodes = [
        Node("notes", "MarkdownNote", (col[0] - 500, 0), (460, 520), {"text": notes_text(kind, files, has_image)},
             title="Read me: model files", color=YELLOW[0], bgcolor=YELLOW[1]),
        Node("model", "Wan22ModelLoader", (col[0], 0), (380, 106),
             {"model": high, "low_noise_model": low or "none"}, models=tuple(f for f in (high, low) if f)),
        Node("vae", "Wan22VAELoader", (col[0], 160), (380, 58), {"vae_name": vae}, models=(vae,)),
        Node("clip", "CLIPLoader", (col[0], 270), (380, 106),
             {"clip_name": TEXT_ENCODER_FILE, "type": "wan", "device": "default"}, models=(TEXT_ENCODER_FILE,)),
        Node("positive", "CLIPTextEncode", (col[1], 0), (440, 200), {"text": PROMPTS[kind]},
             title="Positive prompt", color=GREEN[0], bgcolor=GREEN[1]),
        Node("negative", "CLIPTextEncode", (col[1], 250), (440, 200), {"text": DEFAULT_NEGATIVE_PROMPT},
             title="Negative prompt (the release's default)", color=RED[0], bgcolor=RED[1]),
        Node("latent", "Wan22VideoLatent", (col[1], 530), (320, 150),
             {"width": width, "height": height, "length": d.frames, "batch_size": 1}),
        Node("sampler", "Wan22Sampler", (col[2], 0), (340, 420), {
            "seed": 42, "control_after_generate": "fixed", "steps": d.steps, "use_release_defaults": True,
            "cfg": d.cfg_high, "cfg_low_noise": d.cfg_low, "shift": d.shift,
            # The 5B model has one expert: the boundary widget is unused; show the T2V value.
            "boundary": d.boundary if d.boundary is not None else KIND_DEFAULTS[ModelKind.T2V].boundary,
            "sampler_name": "wan_unipc", "scheduler": "wan", "denoise": 1.0,
        }),
        Node("decode", "Wan22VAEDecode", (col[3], 0), (320, 130)),
        Node("combine", "Wan22VideoCombine", (col[3], 200), (420, 520), {
            "frame_rate": d.fps, "filename_prefix": f"Wan2.2/{name}", "format": "h264-mp4", "save_output": True,
        }),
    ]
    links = [
        ("model", "model", "sampler", "model"),
        ("clip", "CLIP", "positive", "clip"),
        ("clip", "CLIP", "negative", "clip"),
        ("positive", "CONDITIONING", "sampler", "positive"),
        ("negative", "CONDITIONING", "sampler", "negative"),
        ("vae", "VAE", "latent", "vae"),
        ("latent", "LATENT", "sampler", "latent"),
        ("sampler", "LATENT", "decode", "samples"),
        ("vae", "VAE", "decode", "vae"),
        ("decode", "IMAGE", "combine", "images"),
    ]
    if low:
        links.append(("model", "low_noise_model", "sampler", "low_noise_model"))
    size_group = ["latent"]
    if has_image:
        bypassed = kind == ModelKind.TI2V
        nodes.append(Node("image", "LoadImage", (col[0], 530), (380, 330), {"image": START_IMAGE_FILE},
                          title="Start image (Ctrl+B to use it)" if bypassed else "Start image",
                          mode=MODE_BYPASS if bypassed else MODE_ALWAYS))
        links.append(("image", "IMAGE", "latent", "start_image"))
        size_group = ["image", "latent"]
    groups = [
        Group("1 · Models", ("model", "vae", "clip")),
        Group("2 · Prompt", ("positive", "negative")),
        Group("3 · Start image & video size" if has_image else "3 · Video size", tuple(size_group)),
        Group("4 · Sample (expert switch at the boundary)" if low else "4 · Sample", ("sampler",)),
        Group("5 · Decode & save", ("decode", "combine")),
    ]
    return Graph(name, nodes, links, groups)


# ---------------------------------------------------------------------------------------------
# The 4-step Lightning (lightx2v distill LoRA) variants of the A14B templates

LIGHTNING_LORAS = {  # Comfy-Org's repackaged 4-step LoRAs: (high-noise expert, low-noise expert)
    ModelKind.T2V: ("wan2.2_t2v_lightx2v_4steps_lora_v1.1_high_noise.safetensors",
                    "wan2.2_t2v_lightx2v_4steps_lora_v1.1_low_noise.safetensors"),
    ModelKind.I2V: ("wan2.2_i2v_lightx2v_4steps_lora_v1_high_noise.safetensors",
                    "wan2.2_i2v_lightx2v_4steps_lora_v1_low_noise.safetensors"),
}
DOWNLOADS.update({name: ("loras", f"{HF_22}/loras/{name}") for pair in LIGHTNING_LORAS.values() for name in pair})
# The distill LoRAs' schedule: 4 steps, no CFG, shift 5, on the grid shifted linspace(1, 0, 5)[:-1]
# (`wan_dpm`): timesteps 1000, 937, 833, 625 (the `wan` grid starts at 0.999: 999, 937, 833, 624).
LIGHTNING = {"steps": 4, "cfg": 1.0, "shift": 5.0, "sampler_name": "euler", "scheduler": "wan_dpm"}


def lightning_notes_text(kind: ModelKind, files: list[str], image: bool) -> str:
    from wan_core.schedule import wan_dpm_schedule

    d = KIND_DEFAULTS[kind]
    schedule = wan_dpm_schedule(LIGHTNING["steps"], LIGHTNING["shift"])
    k = schedule.switch_step(d.boundary)
    t = [str(x) for x in schedule.timesteps.tolist()]
    high, low = LIGHTNING_LORAS[kind]
    base = notes_text(kind, files, image)
    release = base[base.index("The sampler runs"):base.index("\n\nThe video is saved")]
    lightning = (
        f"**4-step Lightning:** `{high}` patches the high-noise expert and `{low}` the low-noise one "
        f"(*Wan2.2 LoRA Loader*). The sampler runs {LIGHTNING['steps']} steps at cfg 1 on both experts "
        f"(one model evaluation per step), shift {LIGHTNING['shift']:g}, the release's boundary {d.boundary}: "
        f"{k} high-noise steps (t {', '.join(t[:k])}) then {len(t) - k} low-noise steps (t {', '.join(t[k:])}), "
        f"the timesteps the LoRAs were distilled on ({LIGHTNING['sampler_name']} on the `wan_dpm` grid). The "
        f"release's 40-step graph is `wan22_{kind.value}_a14b.json`."
    )
    return base.replace(release, lightning)


def lightning_graph(kind: ModelKind, name: str) -> Graph:
    """The A14B template with Wan22LoraLoader between the loader and the sampler, 4 steps, cfg 1."""
    d = KIND_DEFAULTS[kind]
    graph = wan_graph(kind, name)
    high_lora, low_lora = LIGHTNING_LORAS[kind]
    nodes = {n.key: n for n in graph.nodes}
    files = [f for f in (*MODEL_FILES[kind], high_lora, low_lora, VAE21_FILE, TEXT_ENCODER_FILE)]
    nodes["notes"].widgets = {"text": lightning_notes_text(kind, files, kind == ModelKind.I2V)}
    nodes["notes"].size = (460, 640)
    nodes["sampler"].widgets.update({
        "steps": LIGHTNING["steps"], "use_release_defaults": False, "cfg": LIGHTNING["cfg"],
        "cfg_low_noise": LIGHTNING["cfg"], "shift": LIGHTNING["shift"], "boundary": d.boundary,
        "sampler_name": LIGHTNING["sampler_name"], "scheduler": LIGHTNING["scheduler"],
    })
    graph.nodes.append(Node("lora", "Wan22LoraLoader", (0, -260), (380, 180), {
        "lora_high": high_lora, "strength_high": 1.0, "lora_low": low_lora, "strength_low": 1.0,
    }, title="Lightning 4-step LoRAs (per expert)", models=(high_lora, low_lora)))
    graph.links = [link for link in graph.links if link[2] != "sampler" or link[0] != "model"] + [
        ("model", "model", "lora", "model"),
        ("model", "low_noise_model", "lora", "low_noise_model"),
        ("lora", "model", "sampler", "model"),
        ("lora", "low_noise_model", "sampler", "low_noise_model"),
    ]
    graph.groups[0] = Group("1 · Models + Lightning LoRAs", ("lora", "model", "vae", "clip"))
    graph.groups[3] = Group("4 · Sample: 4 steps, cfg 1, 2 + 2 across the boundary", ("sampler",))
    return graph


# ---------------------------------------------------------------------------------------------
# First-last frame and long video (two segments), built on the I2V-A14B graph

END_IMAGE_FILE = START_IMAGE_FILE  # the one image a fresh install has: start = end makes a loop
EXTEND_SEGMENT_FRAMES = (81, 85)  # the first run, then 5 carried frames + 80 new ones
EXTEND_CARRIED_FRAMES = 5  # the first run's last frames that open the second (1 + 4: two latent frames)
EXTEND_PROMPT_2 = (
    "The camera keeps moving forward as the scene continues to unfold, the same light and style, smooth natural "
    "motion, cinematic."
)


def _replace_node(graph: Graph, key: str, **changes) -> None:
    node = next(n for n in graph.nodes if n.key == key)
    for name, value in changes.items():
        setattr(node, name, value)


def _vae_output(graph: Graph) -> str:
    """The VAE loader's output name, as wan_graph wires it."""
    return next(out for src, out, dst, _ in graph.links if src == "vae" and dst == "latent")


def flf_graph(name: str = "wan22_flf2v_a14b") -> Graph:
    """I2V-A14B first-last-frame: a start and an end image, the release's I2V defaults."""
    graph = wan_graph(ModelKind.I2V, name)
    notes = next(n for n in graph.nodes if n.key == "notes")
    notes.widgets["text"] = notes.widgets["text"].replace(
        "**Start image:** pick it in *Load Image*; it is stretched to the video size.",
        "**First and last frame:** pick the video's first frame in *Start image* and its last frame in *End "
        "image*; each is stretched to the video size, and the experts generate the frames between. A batch of "
        "several frames works on either side (give frames of the video's size, or set the latent node's "
        "`resize`).",
    )
    _replace_node(graph, "image", title="Start image (first frame)")
    graph.nodes.append(Node("end_image", "LoadImage", (0, 900), (380, 330), {"image": END_IMAGE_FILE},
                            title="End image (last frame)"))
    graph.links.append(("end_image", "IMAGE", "latent", "end_image"))
    graph.groups[2] = Group("3 · First & last frame, video size", ("image", "end_image", "latent"))
    return graph


def extend_graph(name: str = "wan22_i2v_a14b_extend") -> Graph:
    """I2V-A14B long video in one graph: segment 1 from the start image, segment 2 from segment 1's
    last frames, joined without the repeated frames (81 + 85 - 5 = 161 frames)."""
    first, second = EXTEND_SEGMENT_FRAMES
    carried = EXTEND_CARRIED_FRAMES
    d = KIND_DEFAULTS[ModelKind.I2V]
    graph = wan_graph(ModelKind.I2V, name)
    vae_out = _vae_output(graph)
    notes = next(n for n in graph.nodes if n.key == "notes")
    notes.widgets["text"] = notes.widgets["text"].replace(
        "**Start image:** pick it in *Load Image*; it is stretched to the video size.",
        f"**Long video, two segments:** segment 1 makes {first} frames from the start image; *Last Frames* "
        f"takes its last {carried}, which open segment 2 ({second} frames: the {carried} carried + "
        f"{second - carried} new); *Image From Batch* drops those {carried} repeated frames and *Image Batch* "
        f"joins the two: {first + second - carried} frames ({(first + second - carried) / d.fps:.1f} s at "
        f"{d.fps} fps). Give segment 2 its own prompt. For a third segment, copy group 5 and chain it the same "
        f"way.",
    )
    _replace_node(graph, "latent", widgets={**next(n for n in graph.nodes if n.key == "latent").widgets,
                                            "length": first})
    sampler = next(n for n in graph.nodes if n.key == "sampler")
    _replace_node(graph, "combine", pos=(1780, 0))
    col4 = 1780
    graph.nodes += [
        Node("positive2", "CLIPTextEncode", (420, 1000), (440, 200), {"text": EXTEND_PROMPT_2},
             title="Positive prompt, segment 2", color=GREEN[0], bgcolor=GREEN[1]),
        Node("last", "Wan22LastFrames", (1300, 760), (320, 82), {"frames": carried}),
        Node("latent2", "Wan22VideoLatent", (420, 1250), (320, 150),
             {**next(n for n in graph.nodes if n.key == "latent").widgets, "length": second}),
        Node("sampler2", "Wan22Sampler", (920, 1000), (340, 420), {**sampler.widgets, "seed": 43},
             title="Wan2.2 Sampler, segment 2"),
        Node("decode2", "Wan22VAEDecode", (1300, 1000), (320, 130)),
        Node("drop", "ImageFromBatch", (col4, 600), (320, 106), {"batch_index": carried, "length": 4096},
             title=f"Drop the {carried} repeated frames"),
        Node("join", "ImageBatch", (col4, 760), (320, 70), title="Join the segments"),
    ]
    graph.links.remove(("decode", "IMAGE", "combine", "images"))
    graph.links += [
        ("decode", "IMAGE", "last", "images"),
        ("clip", "CLIP", "positive2", "clip"),
        ("vae", vae_out, "latent2", "vae"),
        ("last", "IMAGE", "latent2", "start_image"),
        ("model", "model", "sampler2", "model"),
        ("model", "low_noise_model", "sampler2", "low_noise_model"),
        ("positive2", "CONDITIONING", "sampler2", "positive"),
        ("negative", "CONDITIONING", "sampler2", "negative"),
        ("latent2", "LATENT", "sampler2", "latent"),
        ("sampler2", "LATENT", "decode2", "samples"),
        ("vae", vae_out, "decode2", "vae"),
        ("decode2", "IMAGE", "drop", "image"),
        ("decode", "IMAGE", "join", "image1"),
        ("drop", "IMAGE", "join", "image2"),
        ("join", "IMAGE", "combine", "images"),
    ]
    graph.groups[3] = Group("4 · Segment 1 (expert switch at the boundary)", ("sampler", "decode"))
    graph.groups[4] = Group(f"5 · Segment 2: continues from the last {carried} frames",
                            ("positive2", "last", "latent2", "sampler2", "decode2"))
    graph.groups.append(Group("6 · Join & save", ("drop", "join", "combine")))
    return graph


def templates() -> list[Graph]:
    return [
        wan_graph(ModelKind.T2V, "wan22_t2v_a14b"),
        wan_graph(ModelKind.I2V, "wan22_i2v_a14b"),
        wan_graph(ModelKind.TI2V, "wan22_ti2v_5b"),
        lightning_graph(ModelKind.T2V, "wan22_t2v_a14b_lightning"),
        lightning_graph(ModelKind.I2V, "wan22_i2v_a14b_lightning"),
        flf_graph(),
        extend_graph(),
    ]


# ---------------------------------------------------------------------------------------------
# Schemas from /object_info


@dataclass
class Schema:
    """What a node's /object_info entry says about its sockets and widgets, in order."""

    sockets: list[tuple[str, str, bool]]  # (name, type, optional)
    widgets: list[tuple[str, object, dict]]  # (name, default or None, options)
    outputs: list[tuple[str, str]]  # (name, type)

    @classmethod
    def of(cls, info: dict, node_type: str) -> Schema:
        if node_type not in info:
            raise KeyError(f"node {node_type!r} is not registered in this ComfyUI (/object_info)")
        entry = info[node_type]
        sockets, widgets = [], []
        for section in ("required", "optional"):
            specs = entry["input"].get(section, {})
            for name in entry.get("input_order", {}).get(section, list(specs)):
                spec = specs[name]
                kind, opts = spec[0], (spec[1] if len(spec) > 1 else {})
                if isinstance(kind, list) or (kind in WIDGET_TYPES and not opts.get("forceInput")):
                    options = kind if isinstance(kind, list) else opts.get("options")
                    default = opts.get("default", options[0] if options else None)
                    widgets.append((name, default, opts))
                else:
                    sockets.append((name, kind, section == "optional"))
        outputs = list(zip(entry["output_name"], entry["output"]))
        return cls(sockets, widgets, outputs)

    def widget_values(self, node: Node) -> tuple[list, dict]:
        """(the UI's widgets_values list, the API's name -> value) for a node's given widgets."""
        given = dict(node.widgets)
        ui, api = [], {}
        for name, default, opts in self.widgets:
            value = given.pop(name, default)
            if value is None:
                raise ValueError(f"{node.key} ({node.type}): widget {name!r} has no default; give it a value")
            ui.append(value)
            api[name] = value
            if opts.get("control_after_generate"):  # the frontend's extra widget after a seed
                ui.append(given.pop("control_after_generate", "randomize"))
            if opts.get("image_upload"):  # the upload button's widget value
                ui.append("image")
        if given:
            raise ValueError(f"{node.key} ({node.type}): no widgets named {sorted(given)}")
        return ui, api


# ---------------------------------------------------------------------------------------------
# The two formats


def _schemas(graph: Graph, info: dict) -> dict[str, Schema | None]:
    return {n.key: None if n.type in FRONTEND_ONLY else Schema.of(info, n.type) for n in graph.nodes}


def _resolve_links(graph: Graph, schemas: dict) -> list[tuple[Node, int, Node, int, str]]:
    """(from node, output slot, to node, socket slot, type) for each link, checked against schemas."""
    by_key = {n.key: n for n in graph.nodes}
    out = []
    for src, out_name, dst, in_name in graph.links:
        outputs = schemas[src].outputs
        slot = next((i for i, (name, _) in enumerate(outputs) if name == out_name), None)
        if slot is None:
            raise ValueError(f"{src} ({by_key[src].type}) has no output {out_name!r}: {outputs}")
        sockets = schemas[dst].sockets
        target = next((i for i, (name, _, _) in enumerate(sockets) if name == in_name), None)
        if target is None:
            raise ValueError(f"{dst} ({by_key[dst].type}) has no input socket {in_name!r}: {sockets}")
        if outputs[slot][1] != sockets[target][1]:
            raise ValueError(f"{src}.{out_name} ({outputs[slot][1]}) cannot feed {dst}.{in_name} ({sockets[target][1]})")
        out.append((by_key[src], slot, by_key[dst], target, outputs[slot][1]))
    return out


def _execution_order(graph: Graph) -> dict[str, int]:
    """Topological order (the frontend's `order` field), ties broken by description order."""
    deps = {n.key: {src for src, _, dst, _ in graph.links if dst == n.key} for n in graph.nodes}
    order, done = {}, set()
    while len(done) < len(graph.nodes):
        ready = next(n.key for n in graph.nodes if n.key not in done and deps[n.key] <= done)
        order[ready] = len(order)
        done.add(ready)
    return order


def node_ids(graph: Graph) -> dict[str, int]:
    return {n.key: i + 1 for i, n in enumerate(graph.nodes)}


def to_ui(graph: Graph, info: dict) -> dict:
    schemas = _schemas(graph, info)
    ids = node_ids(graph)
    links = _resolve_links(graph, schemas)
    order = _execution_order(graph)
    ui_nodes = []
    for node in graph.nodes:
        schema = schemas[node.key]
        if schema is None:
            widgets_values = [node.widgets["text"]]
            inputs, outputs = [], []
        else:
            widgets_values, _ = schema.widget_values(node)
            inputs = []
            for slot, (name, typ, optional) in enumerate(schema.sockets):
                link = next((i + 1 for i, (_, _, d, t, _) in enumerate(links) if d is node and t == slot), None)
                entry = {"name": name, "type": typ, "link": link}
                if optional:
                    entry["shape"] = 7  # the frontend's marker of an optional socket
                inputs.append(entry)
            outputs = []
            for slot, (name, typ) in enumerate(schema.outputs):
                out_links = [i + 1 for i, (s, o, _, _, _) in enumerate(links) if s is node and o == slot]
                outputs.append({"name": name, "type": typ, "links": out_links or None, "slot_index": slot})
        properties = {"Node name for S&R": node.type}
        if node.models:
            properties["models"] = [{"name": f, "url": DOWNLOADS[f][1], "directory": DOWNLOADS[f][0]}
                                    for f in node.models]
        entry = {
            "id": ids[node.key], "type": node.type, "pos": list(node.pos), "size": list(node.size), "flags": {},
            "order": order[node.key], "mode": node.mode, "inputs": inputs, "outputs": outputs,
        }
        if node.title:
            entry["title"] = node.title
        entry["properties"] = properties
        entry["widgets_values"] = widgets_values
        if node.color:
            entry["color"], entry["bgcolor"] = node.color, node.bgcolor
        ui_nodes.append(entry)
    ui_links = [[i + 1, ids[s.key], so, ids[d.key], ds, typ] for i, (s, so, d, ds, typ) in enumerate(links)]
    by_key = {n.key: n for n in graph.nodes}
    ui_groups = [{"id": i + 1, "title": g.title, "bounding": _bounding([by_key[k] for k in g.members]),
                  "color": g.color, "font_size": 24, "flags": {}} for i, g in enumerate(graph.groups)]
    return {
        "id": str(uuid.uuid5(uuid.NAMESPACE_URL, f"comfyui-wan22/workflows/{graph.name}")),
        "revision": 0,
        "last_node_id": len(graph.nodes),
        "last_link_id": len(ui_links),
        "nodes": ui_nodes,
        "links": ui_links,
        "groups": ui_groups,
        "config": {},
        "extra": {"ds": {"scale": 0.6, "offset": [640, 160]}},
        "version": 0.4,
    }


def _bounding(nodes: list[Node]) -> list[int]:
    """A group box around nodes: room for each node's title bar (30) and the group's header."""
    pad, title, header = 15, 30, 45
    x0 = min(n.pos[0] for n in nodes) - pad
    y0 = min(n.pos[1] for n in nodes) - title - header
    x1 = max(n.pos[0] + n.size[0] for n in nodes) + pad
    y1 = max(n.pos[1] + n.size[1] for n in nodes) + pad
    return [x0, y0, x1 - x0, y1 - y0]


def to_api(graph: Graph, info: dict) -> dict:
    """What the frontend queues for this graph: no notes, no bypassed nodes (their links drop)."""
    schemas = _schemas(graph, info)
    ids = node_ids(graph)
    links = _resolve_links(graph, schemas)
    prompt = {}
    for node in graph.nodes:
        if schemas[node.key] is None or node.mode == MODE_BYPASS:
            continue
        _, inputs = schemas[node.key].widget_values(node)
        for src, slot, dst, target, _ in links:
            if dst is node and src.mode != MODE_BYPASS:
                inputs[schemas[node.key].sockets[target][0]] = [str(ids[src.key]), slot]
        prompt[str(ids[node.key])] = {"inputs": inputs, "class_type": node.type,
                                      "_meta": {"title": node.title or info[node.type]["display_name"]}}
    for node in graph.nodes:
        # The frontend passes a bypassed node's inputs through to matching outputs; not modelled here.
        if node.mode == MODE_BYPASS and schemas[node.key] is not None and schemas[node.key].sockets:
            raise ValueError(f"{node.key}: bypassed nodes with input sockets are not supported")
    return prompt


def build_all(info: dict) -> dict[Path, dict]:
    """Relative path -> JSON content of every file this script owns in workflows/."""
    files = {}
    for graph in templates():
        files[Path(f"{graph.name}.json")] = to_ui(graph, info)
        files[Path(API_SUBDIR) / f"{graph.name}.json"] = to_api(graph, info)
    return files


def dumps(content: dict) -> str:
    return json.dumps(content, indent=2, ensure_ascii=False) + "\n"


def live_object_info() -> dict:
    """/object_info of a throwaway ComfyUI with this checkout's pack."""
    sys.path.insert(0, str(REPO / "tests"))
    from comfy_server import ComfyServer

    with tempfile.TemporaryDirectory(prefix="wan22_build_workflows_") as base:
        server = ComfyServer(Path(base)).start()
        try:
            return server.get_json("/object_info")
        finally:
            server.stop()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--check", action="store_true", help="only compare; exit 1 when a file differs")
    args = parser.parse_args(argv)
    files = build_all(live_object_info())
    stale = [p for p, c in files.items()
             if not (WORKFLOWS_DIR / p).is_file() or (WORKFLOWS_DIR / p).read_text(encoding="utf-8") != dumps(c)]
    if args.check:
        for p in stale:
            print(f"stale: workflows/{p}")
        return 1 if stale else 0
    for p in stale:
        (WORKFLOWS_DIR / p).parent.mkdir(parents=True, exist_ok=True)
        (WORKFLOWS_DIR / p).write_text(dumps(files[p]), encoding="utf-8")
        print(f"wrote workflows/{p}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
