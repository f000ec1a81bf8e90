"""RAM across runs: one server runs 30 prompts (T2V pair, TI2V-5B and I2V pair graphs in turn, new
seeds and prompt texts, two prompts interrupted mid-run and bad inputs between), and its RSS after
each prompt stays within 5% of its RSS after the fifth. Then ComfyUI's `/free` empties what the
pack caches: `unload_models` drops the text embeddings and unloads the experts, `free_memory`
also drops the node outputs, so the model files are no longer mapped.

The server is this module's own, so other tests' prompts do not move its RSS."""

from __future__ import annotations

import sys
import threading
import time
from pathlib import Path

import pytest
import torch
from PIL import Image

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from comfy_server import ComfyServer, PromptFailed  # noqa: E402
from dit_factory import random_state_dict, tiny_config, write_comfy_file  # noqa: E402
from text_factory import reference_model, write_comfy_safetensors  # noqa: E402
from vae_factory import write_vae  # noqa: E402

pytestmark = pytest.mark.server

PROMPTS = 30
REFERENCE = 5  # RSS after this prompt is the reference
TOLERANCE = 0.05
TEXT = "mem_umt5_tiny.safetensors"
VAE21, VAE22 = "mem_wan21_vae_tiny.safetensors", "mem_wan22_vae_tiny.safetensors"
FILES = {"t2v": ("mem_t2v_high.safetensors", "mem_t2v_low.safetensors"),
         "i2v": ("mem_i2v_high.safetensors", "mem_i2v_low.safetensors"),
         "ti2v": ("mem_ti2v_5b.safetensors", "none")}


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    server = ComfyServer(tmp_path_factory.mktemp("memory_base")).start()
    dit_dir = server.models_dir("diffusion_models")
    for kind, (high, low) in FILES.items():
        cfg = tiny_config(kind, num_layers=1)
        write_comfy_file(random_state_dict(cfg, seed=1), dit_dir / high)
        if low != "none":
            write_comfy_file(random_state_dict(cfg, seed=2), dit_dir / low)
    write_comfy_safetensors(server.models_dir("text_encoders") / TEXT, reference_model(seed=3), dtype=torch.float32)
    write_vae(server.models_dir("vae") / VAE21, "wan2.1", "comfy", "tiny", seed=4)
    write_vae(server.models_dir("vae") / VAE22, "wan2.2", "comfy", "tiny", seed=5)
    Image.new("RGB", (48, 32), (200, 80, 30)).save(server.base_dir / "input" / "mem_start.png")
    yield server
    server.stop()


def graph(kind: str, seed: int, steps: int = 2, start_image: bool | None = None) -> dict:
    high, low = FILES[kind]
    prompt = {
        "1": {"class_type": "Wan22TextEncoderLoader",
              "inputs": {"text_encoder_name": TEXT, "device": "default", "weight_dtype": "default"}},
        # A new prompt text each run: the embedding cache fills and must stay bounded.
        "2": {"class_type": "Wan22TextEncode",
              "inputs": {"text_encoder": ["1", 0], "positive": f"ka lo mi ren tas {seed}", "negative": ""}},
        "3": {"class_type": "Wan22ModelLoader", "inputs": {"model": high, "low_noise_model": low,
                                                           "weight_dtype": "default"}},
        "4": {"class_type": "Wan22VAELoader", "inputs": {"vae_name": VAE22 if kind == "ti2v" else VAE21}},
        "5": {"class_type": "Wan22VideoLatent",
              "inputs": {"vae": ["4", 0], "width": 32, "height": 32, "length": 5, "batch_size": 1}},
        "6": {"class_type": "Wan22Sampler", "inputs": {
            "model": ["3", 0], "low_noise_model": ["3", 1], "positive": ["2", 0], "negative": ["2", 1],
            "latent": ["5", 0], "seed": seed, "steps": steps, "use_release_defaults": True, "cfg": 4.0,
            "cfg_low_noise": 3.0, "shift": 12.0, "boundary": 0.875, "sampler_name": "wan_unipc", "scheduler": "wan",
            "denoise": 1.0}},
        "7": {"class_type": "Wan22VAEDecode", "inputs": {"vae": ["4", 0], "samples": ["6", 0]}},
        "8": {"class_type": "PreviewImage", "inputs": {"images": ["7", 0]}},
    }
    if start_image if start_image is not None else kind == "i2v":
        prompt["9"] = {"class_type": "LoadImage", "inputs": {"image": "mem_start.png"}}
        prompt["5"]["inputs"]["start_image"] = ["9", 0]
    return prompt


def rss(server: ComfyServer) -> int:
    with open(f"/proc/{server.proc.pid}/status") as f:
        return next(int(line.split()[1]) * 1024 for line in f if line.startswith("VmRSS:"))


def mapped_model_files(server: ComfyServer) -> set[str]:
    with open(f"/proc/{server.proc.pid}/maps") as f:
        return {line.split()[-1] for line in f if "/models/" in line and line.rstrip().endswith(".safetensors")}


def interrupted_run(server: ComfyServer, seed: int) -> None:
    ticks = []

    def on_message(msg):
        if msg.get("type") == "progress" and msg["data"].get("node") == "6":
            ticks.append(msg["data"]["value"])
            if len(ticks) == 2:
                threading.Thread(target=server.post_json, args=("/interrupt", {}), daemon=True).start()

    with pytest.raises(PromptFailed, match="interrupted"):
        server.run(graph("t2v", seed, steps=200), on_message=on_message, timeout=120)
    assert len(ticks) < 200


def bad_inputs(server: ComfyServer, n: int) -> None:
    if n % 2:
        assert "need a start image" in server.run_expecting_error(graph("i2v", n, start_image=False))
    else:
        missing = graph("t2v", n)
        missing["3"]["inputs"]["model"] = "mem_not_there.safetensors"
        assert "mem_not_there" in server.run_expecting_error(missing)


def wait_for(predicate, timeout: float = 30) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.2)
    return predicate()


def test_rss_stays_flat_across_30_prompts_and_free_releases_the_pack_caches(server):
    kinds = ["t2v", "ti2v", "i2v"]
    after = []
    for n in range(1, PROMPTS + 1):
        if n in (8, 19):
            interrupted_run(server, 1000 + n)
        if n in (6, 12, 23):
            bad_inputs(server, n)
        kind = kinds[(n - 1) % len(kinds)]
        history = server.run(graph(kind, seed=n), timeout=120)
        assert history["outputs"]["6"]["wan22_sampler"][0]["kind"] == kind
        after.append(rss(server))
    reference = after[REFERENCE - 1]
    drift = [round(r / reference - 1, 4) for r in after[REFERENCE:]]
    mb = [round(r / 2**20) for r in after]
    print(f"RSS after each prompt (MiB): {mb}; drift from prompt {REFERENCE}: max {max(map(abs, drift)):.2%}")
    assert max(abs(d) for d in drift) <= TOLERANCE, f"RSS after each prompt (MiB): {mb}"

    caches = server.get_json("/wan22/caches")
    assert caches["text_encoders"] >= 1 and 1 <= caches["embeddings"] <= 16, caches
    assert mapped_model_files(server), "the experts' files should be mapped while their outputs are cached"

    # unload_models: ComfyUI unloads every model; the pack drops its text embeddings with them.
    server.post_json("/free", {"unload_models": True})
    assert wait_for(lambda: server.get_json("/wan22/caches")["embeddings"] == 0), server.get_json("/wan22/caches")
    assert wait_for(lambda: not server.get_json("/wan22/loaded_models")), server.get_json("/wan22/loaded_models")

    # free_memory: ComfyUI drops its cached node outputs, and with them the pack's file maps.
    server.post_json("/free", {"unload_models": True, "free_memory": True})
    assert wait_for(lambda: not mapped_model_files(server)), mapped_model_files(server)
    assert wait_for(lambda: server.get_json("/wan22/caches")["text_encoders"] == 0), server.get_json("/wan22/caches")

    # And the server still serves.
    server.run(graph("ti2v", seed=99), timeout=120)
