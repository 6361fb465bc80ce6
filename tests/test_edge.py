"""At the edge: every route caps its request body (refused before reading when declared too long, reading stops
at the cap when chunked), and every response carries the security headers; the pages need no inline script."""

from __future__ import annotations

import re
import socket
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from conftest import make_settings
from fastapi.testclient import TestClient

from lookloop.server.app import create_app
from lookloop.system import Lookloop

PAGES = Path(__file__).resolve().parents[1] / "src" / "lookloop" / "server" / "pages"
MB = 1024 * 1024


@pytest.fixture
def system(tmp_path: Path, data_dir: Path, model_dir: Path) -> Iterator[Lookloop]:
    s = Lookloop(make_settings(tmp_path, data_dir, model_dir))
    s.migrate()
    yield s
    s.db.dispose()


@pytest.fixture
def client(system: Lookloop) -> Iterator[TestClient]:
    with TestClient(create_app(system=system, warm=False), raise_server_exceptions=False) as c:
        yield c


@pytest.fixture
def server(system: Lookloop) -> Iterator[int]:
    """The app under uvicorn on loopback, as `lookloop serve` runs it; yields its port."""
    import uvicorn

    from lookloop.cli.serve import server_options

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = int(sock.getsockname()[1])
    srv = uvicorn.Server(uvicorn.Config(create_app(system=system, warm=False), host="127.0.0.1", port=port,
                                        **server_options()))
    thread = threading.Thread(target=srv.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 30
    while not srv.started:
        assert thread.is_alive() and time.monotonic() < deadline, "the server did not start"
        time.sleep(0.02)
    yield port
    srv.should_exit = True
    thread.join(15)


def _status(reply: bytes) -> int:
    return int(reply.split(b" ", 2)[1])


def _read_reply(conn: socket.socket, reply: bytes = b"") -> bytes:
    """What the server answers, up to its refusal's message (or until it closes)."""
    while b"over the limit" not in reply:
        more = conn.recv(65536)
        if not more:
            break
        reply += more
    return reply


# -- body caps ----------------------------------------------------------------------------------------------

def test_a_declared_50mb_login_body_is_refused_before_it_is_sent(server: int) -> None:
    with socket.create_connection(("127.0.0.1", server), timeout=3) as conn:
        conn.sendall(b"POST /v1/auth/login HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
                     b"Content-Length: " + str(50 * MB).encode() + b"\r\n\r\n")
        reply = _read_reply(conn)  # times out if the server waits for the 50 MB
    assert _status(reply) == 413 and b"over the limit" in reply


def test_reading_a_chunked_body_stops_at_the_cap(server: int) -> None:
    chunk = b"x" * 65536
    sent = 0
    with socket.create_connection(("127.0.0.1", server), timeout=5) as conn:
        conn.sendall(b"POST /v1/auth/login HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
                     b"Transfer-Encoding: chunked\r\n\r\n")
        conn.setblocking(False)
        reply = b""
        while sent < 50 * MB and not reply:
            try:
                conn.sendall(f"{len(chunk):x}\r\n".encode() + chunk + b"\r\n")
                sent += len(chunk)
            except (BlockingIOError, BrokenPipeError, ConnectionResetError):
                time.sleep(0.01)
            try:
                reply = conn.recv(65536)
            except BlockingIOError:
                pass
        conn.setblocking(True)
        reply = _read_reply(conn, reply)
    assert _status(reply) == 413 and b"over the limit" in reply
    assert sent < 8 * MB, f"the server read {sent} bytes before refusing"


def test_json_routes_take_a_small_body_and_uploads_their_own_caps(client: TestClient, system: Lookloop) -> None:
    cap = system.settings.max_json_bytes
    r = client.post("/v1/auth/login", content=b'{"username": "' + b"a" * cap + b'"}',
                    headers={"Content-Type": "application/json"})
    assert r.status_code == 413 and r.json()["detail"] == f"the request body is over the limit of {cap} bytes"
    assert r.headers["X-Content-Type-Options"] == "nosniff"

    def chunks(total: int) -> Iterator[bytes]:
        for _ in range(total // 65536):
            yield b"x" * 65536

    assert client.post("/v1/auth/login", content=chunks(4 * MB), headers={"Content-Type": "application/json"}
                       ).status_code == 413
    # A route that never reads a body still refuses one declared too long.
    assert client.post("/v1/review/next", content=b"x" * (cap + 1)).status_code == 413
    # A frame under the image limit passes the cap (and is then judged as an image); one over is refused.
    limit = system.settings.max_image_bytes
    ok = client.post("/v1/asks", data={"question": "what is this?"}, files={"image": ("a.jpg", b"x" * (limit - 1))})
    assert ok.status_code == 415
    big = client.post("/v1/asks", data={"question": "what is this?"}, files={"image": ("a.jpg", b"x" * (limit + MB))})
    assert big.status_code == 413


def test_every_upload_operation_in_the_schema_has_an_upload_cap(client: TestClient, system: Lookloop) -> None:
    """Generated from the schema: a new multipart route that forgot its cap would refuse a modest upload."""
    schema = client.get("/openapi.json").json()
    uploads = [(path, method) for path, ops in schema["paths"].items() for method, op in ops.items()
               if "multipart/form-data" in op.get("requestBody", {}).get("content", {})]
    assert ("/v1/asks", "post") in uploads and ("/v1/asks/voice", "post") in uploads
    body = b"x" * (system.settings.max_json_bytes * 4)
    for path, method in uploads:
        r = client.request(method.upper(), path, files={"image": ("a.jpg", body)})
        assert r.status_code != 413, f"{method.upper()} {path} takes only the small JSON cap"


# -- security headers ---------------------------------------------------------------------------------------

def _check_headers(r: Any, *, inline_styles: bool = False) -> None:
    csp = r.headers["Content-Security-Policy"]
    directives = {d.split()[0]: d.split()[1:] for d in csp.split("; ")}
    assert "'unsafe-inline'" not in directives["script-src"] and "'unsafe-eval'" not in directives["script-src"]
    assert ("'unsafe-inline'" in directives.get("style-src", [])) == inline_styles
    assert directives["frame-ancestors"] == ["'none'"] and directives["object-src"] == ["'none'"]
    assert r.headers["X-Frame-Options"] == "DENY"
    assert r.headers["X-Content-Type-Options"] == "nosniff"
    assert r.headers["Referrer-Policy"] == "no-referrer"


def test_every_response_carries_the_security_headers(client: TestClient) -> None:
    app: Any = client.app

    @app.get("/boom", include_in_schema=False)
    def boom() -> None:
        raise RuntimeError("unexpected")

    for path in ("/review", "/dashboard", "/simulator", "/start", "/docs", "/redoc", "/pages/review.js", "/healthz",
                 "/v1/auth/me", "/openapi.json", "/no-such-page", "/boom"):
        r = client.get(path)
        assert r.status_code in (200, 401, 404, 500), path
        # Swagger UI and ReDoc set styles from their scripts: those two pages allow inline styles, never script.
        _check_headers(r, inline_styles=path in ("/docs", "/redoc"))
    assert client.get("/boom").status_code == 500
    page = client.get("/review").headers["Content-Security-Policy"]
    assert "script-src 'self';" in page and "style-src 'self';" in page  # the pages need nothing inline
    # The docs pages load everything from this host (no CDN): their policy names no other origin.
    assert "https:" not in client.get("/docs").headers["Content-Security-Policy"]


@pytest.mark.parametrize("page", sorted(p.name for p in PAGES.glob("*.html")))
def test_pages_have_no_inline_script_handler_or_style(page: str) -> None:
    html = (PAGES / page).read_text()
    for tag in re.findall(r"<script\b[^>]*>", html, flags=re.I):
        assert "src=" in tag, f"{page}: inline script {tag}"
    assert not re.search(r"<style\b", html, flags=re.I), f"{page}: inline <style>"
    assert not re.search(r"\son[a-z]+\s*=", html, flags=re.I), f"{page}: inline event handler"
    assert not re.search(r"\sstyle\s*=", html, flags=re.I), f"{page}: inline style attribute"
    assert "javascript:" not in html.lower()


# -- ask threads --------------------------------------------------------------------------------------------

def test_asks_take_turns_on_their_own_threads_and_other_routes_are_not_held_up(
        tmp_path: Path, data_dir: Path, model_dir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import httpx
    from voice_util import LiveServer

    system = Lookloop(make_settings(tmp_path, data_dir, model_dir, ask_threads=2))
    system.migrate()
    release = threading.Event()
    lock = threading.Lock()
    inside = [0, 0]  # now, most at once
    answer = system.ask

    def slow_ask(*args: Any, **kwargs: Any) -> Any:
        with lock:
            inside[0] += 1
            inside[1] = max(inside[1], inside[0])
        try:
            release.wait(30)
            return answer(*args, **kwargs)
        finally:
            with lock:
                inside[0] -= 1

    monkeypatch.setattr(system, "ask", slow_ask)
    with LiveServer(create_app(system=system, warm=False)) as server, \
            httpx.Client(base_url=server.url, timeout=60) as http:
        replies: list[int] = []

        def ask(i: int) -> None:
            with httpx.Client(base_url=server.url, timeout=60) as own:
                replies.append(own.post("/v1/asks", data={"question": f"hello {i}"}).status_code)

        threads = [threading.Thread(target=ask, args=(i,)) for i in range(5)]
        for t in threads:
            t.start()
        deadline = time.monotonic() + 10
        while inside[0] < 2:
            assert time.monotonic() < deadline, "the asks never reached the worker"
            time.sleep(0.01)
        time.sleep(0.5)
        assert inside[0] == 2  # the other three wait their turn on the event loop, not on threads of their own
        t0 = time.monotonic()
        assert http.get("/v1/catalog").status_code == 200
        assert time.monotonic() - t0 < 5  # a route on the shared threads is answered while the asks wait
        release.set()
        for t in threads:
            t.join(60)
        assert sorted(replies) == [200] * 5
        assert inside[1] == 2
    system.db.dispose()


def test_api_workers_sharing_a_machine_each_take_their_share_of_its_cores(
        tmp_path: Path, data_dir: Path, model_dir: Path) -> None:
    from lookloop.models.embedder import usable_cores

    alone = make_settings(tmp_path, data_dir, model_dir)
    assert alone.api_workers_per_machine == 1 and alone.ask_threads_per_worker == 6
    shared = make_settings(tmp_path, data_dir, model_dir, api_workers_per_machine=2)
    assert shared.ask_threads_per_worker == 3  # the machine's ask threads, shared
    crowded = make_settings(tmp_path, data_dir, model_dir, api_workers_per_machine=16)
    assert crowded.ask_threads_per_worker == 2  # never fewer than 2: one slow ask must not hold up the rest
    for settings, workers in ((alone, 1), (shared, 2), (crowded, 16)):
        system = Lookloop(settings)
        try:
            assert system.serving.embedder.threads == max(1, usable_cores() // workers)
        finally:
            system.close()
            system.db.dispose()
