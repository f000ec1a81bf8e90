"""Fixtures of the browser tests: one headless Chromium per session, a fresh tab per test."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))

from comfy_browser import ChromiumSession  # noqa: E402


@pytest.fixture(scope="session")
def chromium():
    session = ChromiumSession.start()
    yield session
    session.stop()


@pytest.fixture(scope="session")
def comfy_app(chromium, comfy_server):
    """One tab on the real ComfyUI frontend served by the session's server (opening one costs seconds)."""
    page = chromium.open_app(comfy_server)
    yield page
    page.close()


@pytest.fixture
def comfy_page(comfy_app):
    """The shared tab, reset for this test: no dialog, an empty graph, no console errors yet."""
    comfy_app.reset()
    return comfy_app
