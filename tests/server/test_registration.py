"""The pack installs into the real ComfyUI: every node registered under Wan2.2, no import
failure in the log, the frontend extension served."""

import re

import pytest

pytestmark = pytest.mark.server

PACK_NODES = {
    "Wan22VideoCombine",
    "Wan22TextEncoderLoader",
    "Wan22TextEncode",
    "Wan22ModelLoader",
    "Wan22Sampler",
    "Wan22VideoLatent",
    "Wan22VAELoader",
    "Wan22VAEEncode",
    "Wan22VAEDecode",
}


def test_every_pack_node_is_registered_under_wan22(comfy_server):
    info = comfy_server.get_json("/object_info")
    missing = sorted(PACK_NODES - info.keys())
    assert not missing, f"nodes not registered: {missing}"
    for node_id in PACK_NODES:
        category = info[node_id]["category"]
        assert category == "Wan2.2" or category.startswith("Wan2.2/"), (node_id, category)
    stray = sorted(k for k, v in info.items() if v["python_module"].endswith("comfyui-wan22") and k not in PACK_NODES)
    assert not stray, f"pack nodes missing from this test's list: {stray}"


def test_server_log_shows_no_import_failure_for_the_pack(comfy_server):
    log = comfy_server.log_text()
    assert re.search(r"IMPORT FAILED.*comfyui-wan22", log) is None, log[-5000:]
    assert "Cannot import" not in "\n".join(line for line in log.splitlines() if "comfyui-wan22" in line)
    assert re.search(r"\d+\.\d+ seconds: .*custom_nodes/comfyui-wan22$", log, re.M), log[-5000:]


def test_frontend_extension_is_served(comfy_server):
    extensions = comfy_server.get_json("/extensions")
    ours = [e for e in extensions if e.startswith("/extensions/comfyui-wan22/")]
    assert "/extensions/comfyui-wan22/wan22.js" in ours, extensions
    # js/ holds several modules; wan22.js is the one that registers the extension.
    script = comfy_server.get("/extensions/comfyui-wan22/wan22.js").decode()
    assert "registerExtension" in script
