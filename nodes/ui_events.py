"""Messages to the frontend through ComfyUI's PromptServer (the js extension listens; no polling).
Silent when no server runs (nodes executed in-process by tests)."""

from __future__ import annotations


def _server():
    try:
        from server import PromptServer
    except ImportError:
        return None
    return getattr(PromptServer, "instance", None)


def send_event(event: str, data: dict) -> None:
    server = _server()
    if server is not None and server.client_id is not None:
        server.send_sync(event, data, server.client_id)


def send_progress_text(text: str, node_id) -> None:
    server = _server()
    if server is not None and node_id is not None:
        server.send_progress_text(text, node_id)
