"""Shared fixtures. `comfy_server` is one real ComfyUI for the whole session; a failing test that
used it gets the server log attached to its report."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))

from comfy_server import ComfyServer  # noqa: E402


@pytest.fixture(scope="session")
def comfy_server(tmp_path_factory):
    server = ComfyServer(tmp_path_factory.mktemp("comfy_base")).start()
    yield server
    server.stop()


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    outcome = yield
    report = outcome.get_result()
    if report.when == "call" and report.failed and "comfy_server" in getattr(item, "fixturenames", ()):
        server = item.funcargs.get("comfy_server")
        if server is not None:
            report.sections.append(("ComfyUI server log (tail)", server.log_tail()))
