"""`make demo`: the T2V-A14B and TI2V-5B templates run in a real ComfyUI on random-weight models.

On a machine without Wan2.2 weights it writes small random models of the real architectures into
demo_out/models (named demo_random_*), starts ComfyUI (.comfyui/, the pack linked in, CPU) with
demo_out/ as its base directory, queues the templates' API twins (workflows/api/) with their file
names pointed at those models, their sizes made small and the native umT5 nodes swapped for the
pack's, and prints each mp4, the step where the sampler switched experts and the wall time.
The server is stopped by its PID on exit, Ctrl-C included.

The helpers that turn a template into a runnable small prompt are shared with
tests/server/test_templates.py, so the tests run the templates the way the demo does.
"""

from __future__ import annotations

import copy
import json
import signal
import sys
import time
from dataclasses import dataclass
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "tests"))

from comfy_server import ComfyServer, output_files  # noqa: E402

from scripts.demo_models import ModelNames, demo_names, write_models  # noqa: E402
from wan_core.config import ModelKind  # noqa: E402

API_DIR = REPO / "workflows" / "api"
DEMO_DIR = REPO / "demo_out"
# (template, model kind, width, height, frames): small sizes of the right strides (16 px for the
# A14B latent, 32 px for the 5B one) so each run takes seconds; steps stay the release's, so the
# printed switch step is the one a real run has.
DEMO_RUNS = (
    ("wan22_t2v_a14b", ModelKind.T2V, 192, 128, 17),
    ("wan22_ti2v_5b", ModelKind.TI2V, 192, 128, 17),
)
SAMPLER_UI_KEY = "wan22_sampler"


def load_api(template: str) -> dict:
    return json.loads((API_DIR / f"{template}.json").read_text(encoding="utf-8"))


def load_ui(template: str) -> dict:
    return json.loads((REPO / "workflows" / f"{template}.json").read_text(encoding="utf-8"))


def nodes_of(prompt: dict, class_type: str) -> list[str]:
    return [nid for nid, node in prompt.items() if node["class_type"] == class_type]


def only(prompt: dict, class_type: str) -> str:
    ids = nodes_of(prompt, class_type)
    if len(ids) != 1:
        raise ValueError(f"expected one {class_type} node, found {len(ids)}")
    return ids[0]


def template_names(prompt: dict) -> ModelNames:
    """The model files an API twin loads (the text encoder is CLIPLoader's file)."""
    loader = prompt[only(prompt, "Wan22ModelLoader")]["inputs"]
    low = loader["low_noise_model"]
    return ModelNames(
        high=loader["model"], low=None if low == "none" else low,
        vae=prompt[only(prompt, "Wan22VAELoader")]["inputs"]["vae_name"],
        text_encoder=prompt[only(prompt, "CLIPLoader")]["inputs"]["clip_name"],
    )


def swap_text_encoder(prompt: dict) -> dict:
    """Native CLIPLoader + two CLIPTextEncode -> the pack's Wan22TextEncoderLoader + Wan22TextEncode,
    same file, same prompts. A small random umT5 cannot load through native CLIPLoader (type "wan"
    builds the fixed umT5-XXL architecture); the pack's loader reads the size from the file."""
    prompt = copy.deepcopy(prompt)
    clip_id = only(prompt, "CLIPLoader")
    sampler = prompt[only(prompt, "Wan22Sampler")]["inputs"]
    pos_id, neg_id = sampler["positive"][0], sampler["negative"][0]
    texts = {nid: prompt[nid]["inputs"]["text"] for nid in (pos_id, neg_id)}
    prompt[clip_id] = {
        "class_type": "Wan22TextEncoderLoader",
        "inputs": {"text_encoder_name": prompt[clip_id]["inputs"]["clip_name"], "device": "default",
                   "weight_dtype": "default"},
        "_meta": {"title": "Wan2.2 Text Encoder Loader (umT5)"},
    }
    prompt[pos_id] = {
        "class_type": "Wan22TextEncode",
        "inputs": {"text_encoder": [clip_id, 0], "positive": texts[pos_id], "negative": texts[neg_id]},
        "_meta": {"title": "Wan2.2 Text Encode (umT5)"},
    }
    del prompt[neg_id]
    for node in prompt.values():  # everything fed by the two encoders now reads the one node's outputs
        for name, value in node["inputs"].items():
            if value == [neg_id, 0]:
                node["inputs"][name] = [pos_id, 1]
    return prompt


def point_files(prompt: dict, names: ModelNames) -> dict:
    """The same graph loading other files (the loaders' file widgets only)."""
    prompt = copy.deepcopy(prompt)
    loader = prompt[only(prompt, "Wan22ModelLoader")]["inputs"]
    loader["model"], loader["low_noise_model"] = names.high, names.low or "none"
    prompt[only(prompt, "Wan22VAELoader")]["inputs"]["vae_name"] = names.vae
    for nid in nodes_of(prompt, "CLIPLoader"):
        prompt[nid]["inputs"]["clip_name"] = names.text_encoder
    for nid in nodes_of(prompt, "Wan22TextEncoderLoader"):
        prompt[nid]["inputs"]["text_encoder_name"] = names.text_encoder
    return prompt


def resize(prompt: dict, width: int, height: int, length: int, steps: int | None = None) -> dict:
    prompt = copy.deepcopy(prompt)
    prompt[only(prompt, "Wan22VideoLatent")]["inputs"].update(width=width, height=height, length=length)
    if steps is not None:
        prompt[only(prompt, "Wan22Sampler")]["inputs"]["steps"] = steps
    return prompt


@dataclass
class RunResult:
    template: str
    video: Path  # the file on disk
    video_ref: dict  # filename / subfolder / type as the server reports it
    sampler: dict  # the sampler's UI summary (switch_step, timesteps, ...)
    seconds: float
    history: dict


def run_template(server: ComfyServer, template: str, prompt: dict, workflow: dict | None = None,
                 timeout: float = 600) -> RunResult:
    start = time.monotonic()
    history = server.run(prompt, timeout=timeout, workflow=workflow)
    seconds = time.monotonic() - start
    sampler_id = only(prompt, "Wan22Sampler")
    summary = history["outputs"][sampler_id][SAMPLER_UI_KEY][0]
    videos = [f for f in output_files(history) if f["filename"].endswith((".mp4", ".webm", ".gif", ".webp"))]
    if len(videos) != 1:
        raise AssertionError(f"{template}: expected one video in the outputs, got {videos}")
    ref = videos[0]
    folder = {"output": "output", "temp": "temp"}[ref["type"]]
    path = server.base_dir / folder / ref.get("subfolder", "") / ref["filename"]
    return RunResult(template, path, ref, summary, seconds, history)


def demo_prompt(template: str, kind: ModelKind, width: int, height: int, length: int) -> dict:
    return resize(point_files(swap_text_encoder(load_api(template)), demo_names(kind)), width, height, length)


def _interrupt(signum, frame):
    raise KeyboardInterrupt


def main() -> int:
    t0 = time.monotonic()
    base = DEMO_DIR
    models = base / "models"
    print(f"[demo] writing random-weight Wan2.2 models (real architectures, toy widths) to {models}", flush=True)
    written = {}  # the umT5 file is shared by both graphs
    for _, kind, *_ in DEMO_RUNS:
        written.update({p: None for p in write_models(models, kind, demo_names(kind)).values()})
    for path in written:
        print(f"         {path.relative_to(REPO)}")
    server = ComfyServer(base)
    # SIGTERM (e.g. a CI runner stopping the job) unwinds like Ctrl-C, through the finally below.
    signal.signal(signal.SIGTERM, _interrupt)
    results = []
    try:
        print(f"[demo] starting ComfyUI with the pack (log: {server.log_path.relative_to(REPO)})", flush=True)
        server.start()
        print(f"[demo] ComfyUI is up at {server.url} (pid {server.proc.pid})", flush=True)
        for template, kind, width, height, length in DEMO_RUNS:
            prompt = demo_prompt(template, kind, width, height, length)
            steps = prompt[only(prompt, "Wan22Sampler")]["inputs"]["steps"]
            print(f"[demo] {template}: {width}x{height}, {length} frames, {steps} steps ...", flush=True)
            result = run_template(server, template, prompt, workflow=load_ui(template))
            results.append(result)
            print(f"[demo]   video:       {result.video}")
            switch = result.sampler["switch_step"]
            if result.sampler["boundary"] is None:
                print("[demo]   experts:     one model (TI2V-5B has no expert switch)")
            else:
                print(f"[demo]   switch step: {switch} of {result.sampler['steps']} "
                      f"(high-noise expert for steps 1-{switch}, low-noise after)")
            print(f"[demo]   {result.sampler['text']}")
            print(f"[demo]   wall time:   {result.seconds:.1f} s", flush=True)
    except KeyboardInterrupt:
        print("\n[demo] interrupted", flush=True)
        return 130
    finally:
        server.stop()
        print("[demo] ComfyUI stopped", flush=True)
    print(f"[demo] done in {time.monotonic() - t0:.1f} s total\n")
    print(NEXT_STEPS)
    return 0


NEXT_STEPS = """Next:
  * Open the UI: `make run`, then http://127.0.0.1:8188 . The templates are under
    Workflow > Browse Templates (custom nodes: comfyui-wan22), or drag a file from workflows/
    (wan22_t2v_a14b.json, wan22_i2v_a14b.json, wan22_ti2v_5b.json) onto the canvas. Dropping a
    demo mp4 from demo_out/output/ onto the canvas restores its graph.
  * Real weights: put the files listed in each template's "Read me" note into
    .comfyui/models/ (diffusion_models/, vae/, text_encoders/; your own ComfyUI's models/ if the
    pack is installed there) and queue the template as it is: its file names are ComfyUI's
    repackaged names (wan2.2_t2v_high_noise_14B_fp8_scaled.safetensors, wan_2.1_vae.safetensors,
    umt5_xxl_fp8_e4m3fn_scaled.safetensors, ...).
  * The demo's random models in the UI: cd .comfyui && ../.venv/bin/python main.py --cpu
    --base-directory ../demo_out   (their files are demo_out/models/*/demo_random_*)"""


if __name__ == "__main__":
    sys.exit(main())
