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
        ("vae", "WAN22_VAE", "latent", "vae"),
        ("latent", "LATENT", "sampler", "latent"),
        ("sampler", "LATENT", "decode", "samples"),
        ("vae", "WAN22_VAE", "decode", "vae"),
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


def templates() -> list[Graph]:
    return [
        wan_graph(ModelKind.T2V, "wan22_t2v_a14b"),
        wan_graph(ModelKind.I2V, "wan22_i2v_a14b"),
        wan_graph(ModelKind.TI2V, "wan22_ti2v_5b"),
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
