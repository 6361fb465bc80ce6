"""A local stand-in for an OpenAI-compatible chat server (vLLM, Ollama, llama-server) for tests.

Speaks ``POST /v1/chat/completions`` (plain JSON and SSE streaming) and ``GET /health``. Tell it how to
misbehave with ``server.mode``: ``ok``, ``slow`` (waits ``server.delay_s`` before answering), ``error``
(HTTP 500 with an OpenAI-style error), ``malformed`` (200 with a body that is not JSON), ``stream_error``
(an ``error`` event mid-stream). Replies: ``server.canned`` maps a source text found in the last user turn
to its reply; otherwise it echoes ``echo: <text>``. Every request body is kept in ``server.requests``.
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any


class FakeOpenAIServer(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self) -> None:
        super().__init__(("127.0.0.1", 0), _Handler)
        self.mode = "ok"
        self.delay_s = 2.0
        self.canned: dict[str, str] = {}
        self.requests: list[dict[str, Any]] = []

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}/v1"

    def reply_for(self, messages: list[dict[str, Any]]) -> str:
        last = next((m for m in reversed(messages) if m.get("role") == "user"), {"content": ""})
        content = last.get("content", "")
        if isinstance(content, list):
            text = " ".join(str(p.get("text", "")) for p in content if p.get("type") == "text")
            images = sum(1 for p in content if p.get("type") == "image_url")
        else:
            text, images = str(content), 0
        # the longest matching source wins, so a sentence is not shadowed by a word inside it
        for source in sorted(self.canned, key=len, reverse=True):
            if source in text:
                return self.canned[source]
        suffix = f" [{images} image(s)]" if images else ""
        return f"echo: {text}{suffix}"


class _Handler(BaseHTTPRequestHandler):
    server: FakeOpenAIServer
    protocol_version = "HTTP/1.1"

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - silence the test output
        return

    def _send(self, status: int, body: bytes, content_type: str = "application/json") -> None:
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def do_GET(self) -> None:  # noqa: N802 - http.server's naming
        if self.path.rstrip("/") in ("/health", "/v1/models"):
            self._send(200, json.dumps({"status": "ok", "data": [{"id": "fake-model"}]}).encode())
        else:
            self._send(404, json.dumps({"error": {"message": "not found"}}).encode())

    def do_POST(self) -> None:  # noqa: N802
        length = int(self.headers.get("Content-Length") or 0)
        raw = self.rfile.read(length)
        if self.path != "/v1/chat/completions":
            self._send(404, json.dumps({"error": {"message": f"no route {self.path}"}}).encode())
            return
        try:
            body = json.loads(raw)
        except json.JSONDecodeError:
            self._send(400, json.dumps({"error": {"message": "request body is not JSON"}}).encode())
            return
        body["_auth"] = self.headers.get("Authorization", "")
        self.server.requests.append(body)
        mode = self.server.mode
        if mode == "slow":
            time.sleep(self.server.delay_s)
        if mode == "error":
            self._send(500, json.dumps({"error": {"message": "model overloaded", "type": "server_error"}}).encode())
            return
        if mode == "malformed":
            self._send(200, b"<html>definitely not json</html>", "text/html")
            return
        reply = self.server.reply_for(body.get("messages") or [])
        model = body.get("model", "fake-model")
        if not body.get("stream"):
            payload = {
                "id": "chatcmpl-fake",
                "object": "chat.completion",
                "model": model,
                "choices": [{"index": 0, "message": {"role": "assistant", "content": reply}, "finish_reason": "stop"}],
            }
            self._send(200, json.dumps(payload).encode())
            return
        self.send_response(200)
        self.send_header("Content-Type", "text/event-stream")
        self.send_header("Cache-Control", "no-cache")
        self.send_header("Connection", "close")
        self.end_headers()
        self.close_connection = True
        self._event({"choices": [{"index": 0, "delta": {"role": "assistant"}}]})
        pieces = _pieces(reply)
        for i, piece in enumerate(pieces):
            if mode == "stream_error" and i == len(pieces) // 2:
                self._event({"error": {"message": "the model crashed"}})
                return
            self._event({"choices": [{"index": 0, "delta": {"content": piece}}]})
            self.wfile.write(b": keep-alive comment\n\n")
        self._event({"choices": [{"index": 0, "delta": {}, "finish_reason": "stop"}]})
        self.wfile.write(b"data: [DONE]\n\n")
        self.wfile.flush()

    def _event(self, obj: dict[str, Any]) -> None:
        self.wfile.write(f"data: {json.dumps(obj, ensure_ascii=False)}\n\n".encode())
        self.wfile.flush()


def _pieces(text: str, size: int = 3) -> list[str]:
    return [text[i : i + size] for i in range(0, len(text), size)] or [""]


@contextmanager
def fake_openai() -> Iterator[FakeOpenAIServer]:
    """Runs the stand-in server on a free local port for the duration of the block."""
    server = FakeOpenAIServer()
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield server
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=5)
