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


@pytest.fixture
def comfy_page(chromium, comfy_server):
    """The real ComfyUI frontend, served by the session's server, ready in a fresh tab."""
    page = chromium.open_app(comfy_server)
    yield page
    page.close()
