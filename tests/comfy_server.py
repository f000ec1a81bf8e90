"""A real ComfyUI server for tests: started from .comfyui/ with the pack linked in, on a free
loopback port, with its own base directory; stopped by its PID.

The base directory holds custom_nodes/ (a link to this checkout, so any worktree tests itself,
and one to the test-only nodes of tests/comfy_test_nodes), models/, input/, output/ and temp/. Tests write tiny model files under `models_dir(...)` while the
server runs: ComfyUI lists model folders afresh on each request.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.parse
import urllib.request
import uuid
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
COMFYUI_DIR = REPO / ".comfyui"
PACK_DIR_NAME = "comfyui-wan22"
# Test-only nodes (tests/comfy_test_nodes), linked next to the pack; never shipped.
TEST_NODES_DIR, TEST_NODES_NAME = REPO / "tests" / "comfy_test_nodes", "wan22_test_nodes"
START_TIMEOUT_S = 300


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class PromptFailed(AssertionError):
    """The server reported an execution error for a prompt."""


class ComfyServer:
    def __init__(self, base_dir: Path, port: int | None = None, extra_args: tuple[str, ...] = (), cpu: bool = True):
        self.base_dir = Path(base_dir)
        self.cpu = cpu  # False: ComfyUI picks the GPU (benchmarks on a device machine)
        self.port = port or free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log_path = self.base_dir / "server.log"
        self.extra_args = extra_args
        self.proc: subprocess.Popen | None = None
        self.client_id = uuid.uuid4().hex

    # --- lifecycle -------------------------------------------------------------------------
    def start(self) -> ComfyServer:
        if not (COMFYUI_DIR / "main.py").is_file():
            raise RuntimeError(f"{COMFYUI_DIR} has no ComfyUI: run `make dev` first")
        for sub in ("custom_nodes", "input", "output", "temp", "user"):
            (self.base_dir / sub).mkdir(parents=True, exist_ok=True)
        link = self.base_dir / "custom_nodes" / PACK_DIR_NAME
        if not link.exists():
            link.symlink_to(REPO, target_is_directory=True)
        test_nodes = self.base_dir / "custom_nodes" / TEST_NODES_NAME
        if not test_nodes.exists():
            test_nodes.symlink_to(TEST_NODES_DIR, target_is_directory=True)
        cmd = [
            sys.executable, "main.py", *(["--cpu"] if self.cpu else []), "--listen", "127.0.0.1",
            "--port", str(self.port), "--base-directory", str(self.base_dir), "--disable-auto-launch",
            *self.extra_args,
        ]
        env = dict(os.environ, PYTHONUNBUFFERED="1")
        self._log = open(self.log_path, "wb")
        self.proc = subprocess.Popen(
            cmd, cwd=COMFYUI_DIR, stdout=self._log, stderr=subprocess.STDOUT, env=env, start_new_session=True
        )
        deadline = time.monotonic() + START_TIMEOUT_S
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"ComfyUI exited with {self.proc.returncode} while starting:\n{self.log_tail()}")
            try:
                self.get_json("/system_stats", timeout=2)
                return self
            except (urllib.error.URLError, ConnectionError, TimeoutError, OSError):
                time.sleep(0.5)
        self.stop()
        raise RuntimeError(f"ComfyUI did not answer within {START_TIMEOUT_S}s:\n{self.log_tail()}")

    def stop(self) -> None:
        if self.proc is None:
            return
        if self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait()
        self._log.close()
        self.proc = None

    def log_text(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def log_tail(self, chars: int = 20000) -> str:
        return self.log_text()[-chars:]

    def models_dir(self, folder: str) -> Path:
        path = self.base_dir / "models" / folder
        path.mkdir(parents=True, exist_ok=True)
        return path

    # --- HTTP ------------------------------------------------------------------------------
    def get(self, path: str, timeout: float = 30) -> bytes:
        with urllib.request.urlopen(self.url + path, timeout=timeout) as r:
            return r.read()

    def get_json(self, path: str, timeout: float = 30):
        return json.loads(self.get(path, timeout=timeout))

    def post_json(self, path: str, payload: dict, timeout: float = 30):
        req = urllib.request.Request(
            self.url + path, data=json.dumps(payload).encode(), headers={"Content-Type": "application/json"}
        )
        try:
            with urllib.request.urlopen(req, timeout=timeout) as r:
                return json.loads(r.read() or b"null")
        except urllib.error.HTTPError as e:
            body = e.read().decode(errors="replace")
            raise AssertionError(f"POST {path} -> HTTP {e.code}: {body}") from None

    def queue(self, prompt: dict, workflow: dict | None = None) -> str:
        """Posts an API-format prompt; returns its id. Validation errors raise with the server's text.

        `workflow`: the UI graph, sent as the frontend sends it (extra_pnginfo), so outputs that
        embed the workflow (images, videos) get it."""
        payload = {"prompt": prompt, "client_id": self.client_id}
        if workflow is not None:
            payload["extra_data"] = {"extra_pnginfo": {"workflow": workflow}}
        return self.post_json("/prompt", payload)["prompt_id"]

    def history(self, prompt_id: str) -> dict:
        return self.get_json(f"/history/{prompt_id}").get(prompt_id, {})

    def view(self, filename: str, subfolder: str = "", type: str = "output") -> bytes:
        query = urllib.parse.urlencode({"filename": filename, "subfolder": subfolder, "type": type})
        return self.get(f"/view?{query}")

    # --- running prompts -------------------------------------------------------------------
    def run(self, prompt: dict, timeout: float = 900, on_message=None, workflow: dict | None = None) -> dict:
        """Queues a prompt, follows it over the websocket until it ends, returns its history entry.

        `on_message(msg)` sees every websocket JSON message of this prompt (progress, executing,
        custom events). Raises PromptFailed with the server's error on an execution error.
        """
        import websocket  # websocket-client, a dev requirement

        ws = websocket.create_connection(
            f"ws://127.0.0.1:{self.port}/ws?clientId={self.client_id}", timeout=timeout
        )
        try:
            prompt_id = self.queue(prompt, workflow)
            deadline = time.monotonic() + timeout
            while time.monotonic() < deadline:
                raw = ws.recv()
                if isinstance(raw, bytes):  # binary frames are latent previews
                    if on_message:
                        on_message({"type": "binary_preview", "data": raw})
                    continue
                msg = json.loads(raw)
                data = msg.get("data", {})
                if data.get("prompt_id") not in (None, prompt_id):
                    continue
                if on_message:
                    on_message(msg)
                if msg["type"] == "execution_error":
                    raise PromptFailed(
                        f"{data.get('node_type')}: {data.get('exception_message')}\n"
                        + "".join(data.get("traceback", [])[-6:])
                    )
                if msg["type"] == "execution_interrupted":
                    raise PromptFailed("execution interrupted")
                if msg["type"] == "executing" and data.get("node") is None and data.get("prompt_id") == prompt_id:
                    break
                if msg["type"] == "execution_success":
                    break
            else:
                raise TimeoutError(f"prompt {prompt_id} did not finish within {timeout}s")
        finally:
            ws.close()
        return self.settled_history(prompt_id)

    def settled_history(self, prompt_id: str, wait_s: float = 30) -> dict:
        """The history entry of a finished prompt. The server announces the end over the websocket
        a moment before it stores the history, so wait (bounded) for the entry to appear."""
        deadline = time.monotonic() + wait_s
        entry = self.history(prompt_id)
        while not entry.get("status", {}).get("completed") and time.monotonic() < deadline:
            time.sleep(0.1)
            entry = self.history(prompt_id)
        return entry

    def run_expecting_error(self, prompt: dict, timeout: float = 600) -> str:
        """Runs a prompt that must fail; returns the server's error message."""
        try:
            self.run(prompt, timeout=timeout)
        except PromptFailed as e:
            return str(e)
        except AssertionError as e:  # rejected at validation (HTTP 400)
            return str(e)
        raise AssertionError("the prompt was expected to fail, but it ran")


def output_files(history_entry: dict) -> list[dict]:
    """All files a prompt's nodes reported in their UI output (images, videos, gifs...)."""
    files = []
    for node_output in history_entry.get("outputs", {}).values():
        for items in node_output.values():
            if isinstance(items, list):
                files.extend(i for i in items if isinstance(i, dict) and "filename" in i)
    return files
