"""The VAE nodes in the real ComfyUI server, on tiny random VAE files in models/vae: the pack's
loader gives a native VAE, so the pack's VAE works in native VAEEncode/VAEDecode and native
VAELoader's VAE works in the pack's encode/decode, all agreeing with native on the same file;
every bad input (a VAE of the wrong kind or not a Wan VAE included) fails with a clear message
and the server keeps serving."""

import datetime
import io

import numpy as np
import pytest
import torch
from PIL import Image
from vae_factory import write_vae

pytestmark = pytest.mark.server

VAE21, VAE22 = "srv_vae21.safetensors", "srv_vae22.safetensors"


def png(server, name, height, width, seed, alpha=False):
    rng = np.random.default_rng(seed)
    # Smooth gradients plus a little noise: a picture, not pure noise.
    y, x = np.mgrid[0:height, 0:width]
    base = np.stack([x / width, y / height, (x + y) / (width + height)], -1)
    rgb = np.clip(base + 0.1 * rng.standard_normal(base.shape), 0, 1)
    mode, data = "RGB", (rgb * 255).astype(np.uint8)
    if alpha:
        mode, data = "RGBA", np.concatenate([data, np.full((height, width, 1), 200, np.uint8)], -1)
    Image.fromarray(data, mode).save(server.base_dir / "input" / name)
    return name


@pytest.fixture(scope="module")
def files(comfy_server):
    vae_dir = comfy_server.models_dir("vae")
    write_vae(vae_dir / VAE21, "wan2.1", "comfy", seed=21)
    write_vae(vae_dir / VAE22, "wan2.2", "comfy", seed=22)
    return {
        "a": png(comfy_server, "vae_a.png", 32, 48, 1),
        "b": png(comfy_server, "vae_b.png", 32, 48, 2),
        "odd": png(comfy_server, "vae_odd.png", 36, 40, 3),
        "rgba": png(comfy_server, "vae_rgba.png", 32, 48, 4, alpha=True),
    }


def five_frames(files, first="1"):
    """Nodes giving an IMAGE batch of 5 frames (a, b, a, b, a) from two PNGs; output node id '5'."""
    n = int(first)
    return {
        str(n): {"class_type": "LoadImage", "inputs": {"image": files["a"]}},
        str(n + 1): {"class_type": "LoadImage", "inputs": {"image": files["b"]}},
        str(n + 2): {"class_type": "ImageBatch", "inputs": {"image1": [str(n), 0], "image2": [str(n + 1), 0]}},
        str(n + 3): {"class_type": "ImageBatch", "inputs": {"image1": [str(n + 2), 0], "image2": [str(n + 2), 0]}},
        str(n + 4): {"class_type": "ImageBatch", "inputs": {"image1": [str(n + 3), 0], "image2": [str(n), 0]}},
    }


def saved_frames(server, history, node_id):
    images = history["outputs"][node_id]["images"]
    return np.stack([
        np.asarray(Image.open(io.BytesIO(server.view(i["filename"], i["subfolder"], i["type"]))), dtype=np.int16)
        for i in images
    ])


def test_our_and_native_vae_nodes_are_interchangeable(comfy_server, files):
    prompt = five_frames(files)
    prompt.update({
        "10": {"class_type": "Wan22VAELoader", "inputs": {"vae_name": VAE21}},
        "11": {"class_type": "VAELoader", "inputs": {"vae_name": VAE21}},
        "12": {"class_type": "Wan22VAEEncode", "inputs": {"vae": ["10", 0], "pixels": ["5", 0]}},
        "13": {"class_type": "VAEEncode", "inputs": {"vae": ["11", 0], "pixels": ["5", 0]}},
        # native all the way; then each pack node on native's VAE, each native node on the pack's VAE
        "14": {"class_type": "VAEDecode", "inputs": {"vae": ["11", 0], "samples": ["13", 0]}},
        "15": {"class_type": "Wan22VAEDecode", "inputs": {"vae": ["11", 0], "samples": ["13", 0]}},
        "16": {"class_type": "VAEDecode", "inputs": {"vae": ["10", 0], "samples": ["13", 0]}},
        "17": {"class_type": "Wan22VAEDecode", "inputs": {"vae": ["10", 0], "samples": ["12", 0]}},
        "18": {"class_type": "VAEEncode", "inputs": {"vae": ["10", 0], "pixels": ["5", 0]}},
        "19": {"class_type": "Wan22VAEEncode", "inputs": {"vae": ["11", 0], "pixels": ["5", 0]}},
        "20": {"class_type": "VAEDecode", "inputs": {"vae": ["11", 0], "samples": ["18", 0]}},
        "21": {"class_type": "VAEDecode", "inputs": {"vae": ["11", 0], "samples": ["19", 0]}},
    })
    names = {"14": "native", "15": "pack_decode_native_vae", "16": "native_decode_pack_vae",
             "17": "pack_all", "20": "native_encode_pack_vae", "21": "pack_encode_native_vae"}
    for i, (node, name) in enumerate(names.items()):
        prompt[str(30 + i)] = {"class_type": "SaveImage", "inputs": {"images": [node, 0], "filename_prefix": f"vae_{name}"}}
    history = comfy_server.run(prompt)
    frames = {name: saved_frames(comfy_server, history, str(30 + i)) for i, name in enumerate(names.values())}
    native = frames.pop("native")
    assert native.shape == (5, 32, 48, 3)
    assert native.std() > 5  # real pictures, not a flat colour
    for name, got in frames.items():
        # 8-bit PNGs: equal up to one level where a value sits on a rounding boundary.
        assert got.shape == native.shape and np.abs(got - native).max() <= 1, name


def test_the_pack_loaders_wan22_vae_works_in_native_nodes(comfy_server, files):
    # Native VAELoader builds only the release's Wan2.2 widths; the pack's loader reads any width.
    prompt = five_frames(files)
    prompt.update({
        "10": {"class_type": "Wan22VAELoader", "inputs": {"vae_name": VAE22}},
        "12": {"class_type": "Wan22VAEEncode", "inputs": {"vae": ["10", 0], "pixels": ["5", 0]}},
        "13": {"class_type": "VAEEncode", "inputs": {"vae": ["10", 0], "pixels": ["5", 0]}},
        "14": {"class_type": "VAEDecode", "inputs": {"vae": ["10", 0], "samples": ["13", 0]}},
        "15": {"class_type": "Wan22VAEDecode", "inputs": {"vae": ["10", 0], "samples": ["12", 0]}},
        "16": {"class_type": "SaveImage", "inputs": {"images": ["14", 0], "filename_prefix": "vae22_native"}},
        "17": {"class_type": "SaveImage", "inputs": {"images": ["15", 0], "filename_prefix": "vae22_pack"}},
    })
    history = comfy_server.run(prompt)
    native, pack = saved_frames(comfy_server, history, "16"), saved_frames(comfy_server, history, "17")
    assert native.shape == pack.shape == (5, 32, 48, 3)
    assert np.abs(native - pack).max() <= 1 and native.std() > 5


def run_error(server, prompt):
    message = server.run_expecting_error(prompt)
    assert server.get_json("/system_stats")  # still serving
    return message


def test_bad_inputs_fail_clearly_and_the_server_keeps_serving(comfy_server, files):
    loaders = {
        "10": {"class_type": "Wan22VAELoader", "inputs": {"vae_name": VAE21}},
        "11": {"class_type": "Wan22VAELoader", "inputs": {"vae_name": VAE22}},
    }
    # a Wan2.1 latent into the Wan2.2 VAE, and the reverse
    for enc, dec, channels, other in (("10", "11", 16, "wan2.1"), ("11", "10", 48, "wan2.2")):
        prompt = {**five_frames(files), **loaders,
                  "12": {"class_type": "Wan22VAEEncode", "inputs": {"vae": [enc, 0], "pixels": ["5", 0]}},
                  "13": {"class_type": "Wan22VAEDecode", "inputs": {"vae": [dec, 0], "samples": ["12", 0]}},
                  "14": {"class_type": "PreviewImage", "inputs": {"images": ["13", 0]}}}
        message = run_error(comfy_server, prompt)
        assert f"samples: has {channels} channels (a {other} latent)" in message, message

    # native VAELoader's Wan2.1 VAE with a Wan2.2 latent, and a VAE that is not a Wan VAE at all
    prompt = {**five_frames(files), **loaders,
              "12": {"class_type": "Wan22VAEEncode", "inputs": {"vae": ["11", 0], "pixels": ["5", 0]}},
              "20": {"class_type": "VAELoader", "inputs": {"vae_name": VAE21}},
              "13": {"class_type": "Wan22VAEDecode", "inputs": {"vae": ["20", 0], "samples": ["12", 0]}},
              "14": {"class_type": "PreviewImage", "inputs": {"images": ["13", 0]}}}
    message = run_error(comfy_server, prompt)
    assert "samples: has 48 channels (a wan2.2 latent), but the vae is a wan2.1 VAE" in message, message
    prompt = {**five_frames(files),
              "20": {"class_type": "VAELoader", "inputs": {"vae_name": "pixel_space"}},
              "13": {"class_type": "Wan22VAEEncode", "inputs": {"vae": ["20", 0], "pixels": ["5", 0]}},
              "14": {"class_type": "PreviewAny", "inputs": {"source": ["13", 0]}}}
    message = run_error(comfy_server, prompt)
    assert "vae: a PixelspaceConversionVAE VAE, not a Wan VAE" in message, message

    # width/height not a multiple of the stride
    prompt = {**loaders, "1": {"class_type": "LoadImage", "inputs": {"image": files["odd"]}},
              "12": {"class_type": "Wan22VAEEncode", "inputs": {"vae": ["10", 0], "pixels": ["1", 0]}},
              "13": {"class_type": "PreviewAny", "inputs": {"source": ["12", 0]}}}
    message = run_error(comfy_server, prompt)
    assert "pixels: 40x36 is not a multiple of 8" in message, message

    # a frame count that is not 4k+1
    prompt = {**five_frames(files), **loaders,
              "12": {"class_type": "Wan22VAEEncode", "inputs": {"vae": ["10", 0], "pixels": ["3", 0]}},
              "13": {"class_type": "PreviewAny", "inputs": {"source": ["12", 0]}}}
    message = run_error(comfy_server, prompt)
    assert "pixels: 2 frames" in message and "Use 1 or 5 frames" in message, message

    # a .pth holding something other than tensors
    torch.save({"conv2.weight": torch.zeros(1), "trained": datetime.date(2025, 7, 28)}, comfy_server.models_dir("vae") / "srv_bad.pth")
    message = run_error(comfy_server, {"1": {"class_type": "Wan22VAELoader", "inputs": {"vae_name": "srv_bad.pth"}},
                                       "2": {"class_type": "PreviewAny", "inputs": {"source": ["1", 0]}}})
    assert "srv_bad.pth" in message and "other than tensors" in message, message


def test_an_rgba_image_is_converted_with_a_log_line(comfy_server, files):
    prompt = {
        "1": {"class_type": "LoadImage", "inputs": {"image": files["rgba"]}},
        "2": {"class_type": "JoinImageWithAlpha", "inputs": {"image": ["1", 0], "alpha": ["1", 1]}},
        "10": {"class_type": "Wan22VAELoader", "inputs": {"vae_name": VAE22}},
        "12": {"class_type": "Wan22VAEEncode", "inputs": {"vae": ["10", 0], "pixels": ["2", 0]}},
        "13": {"class_type": "Wan22VAEDecode", "inputs": {"vae": ["10", 0], "samples": ["12", 0]}},
        "14": {"class_type": "SaveImage", "inputs": {"images": ["13", 0], "filename_prefix": "vae_rgba"}},
    }
    history = comfy_server.run(prompt)
    assert saved_frames(comfy_server, history, "14").shape == (1, 32, 48, 3)
    assert "pixels: RGBA frames: the alpha channel is dropped" in comfy_server.log_text()
