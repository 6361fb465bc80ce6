"""End to end in real headless Chromium: a wearer asks about a photo the model cannot place → it appears on
the reviewer page → the reviewer answers with the keyboard → the wearer's stream gets the answer → the same
photo asked again is answered without a human. Also saves the page's screenshot to docs/review-page.png."""

from __future__ import annotations

import asyncio
import json
import socket
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from browser_util import csp_violations, wait_js
from humans_util import unknown_photo

from lookloop.server.app import create_app
from lookloop.system import Lookloop

CHROMIUM = Path("/usr/bin/chromium")
REPO = Path(__file__).resolve().parents[1]
pytestmark = [
    pytest.mark.browser,
    pytest.mark.skipif(not CHROMIUM.exists(), reason="needs Debian's chromium at /usr/bin/chromium"),
]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture
def server(small_system: Lookloop) -> Iterator[str]:
    import uvicorn

    port = _free_port()
    srv = uvicorn.Server(uvicorn.Config(create_app(system=small_system, warm=True), host="127.0.0.1", port=port,
                                        log_level="warning"))
    thread = threading.Thread(target=srv.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 60
    while not srv.started:
        assert time.monotonic() < deadline, "the server did not start"
        time.sleep(0.05)
    yield f"http://127.0.0.1:{port}"
    srv.should_exit = True
    thread.join(10)


class WearerStream:
    """The wearer's WebSocket, read in a thread, events collected."""

    def __init__(self, url: str) -> None:
        self.url = url
        self.events: list[dict[str, Any]] = []
        self.ready = threading.Event()
        self.stop = threading.Event()
        self.thread = threading.Thread(target=lambda: asyncio.run(self._run()), daemon=True)
        self.thread.start()
        assert self.ready.wait(10), "the wearer's stream did not open"

    async def _run(self) -> None:
        from websockets.asyncio.client import connect
        from websockets.exceptions import ConnectionClosed

        async with connect(self.url) as ws:
            while not self.stop.is_set():
                try:
                    raw = await asyncio.wait_for(ws.recv(), 0.2)
                except TimeoutError:
                    continue
                except ConnectionClosed:  # the server went down at the end of the test
                    return
                event = json.loads(raw)
                self.events.append(event)
                if event.get("type") == "hello":
                    self.ready.set()

    def wait_for(self, kind: str, timeout: float = 30) -> dict[str, Any]:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            for e in self.events:
                if e.get("type") == kind:
                    return e
            time.sleep(0.05)
        raise AssertionError(f"no {kind!r} event on the wearer's stream; got {self.events}")


def test_wearer_to_reviewer_page_and_back(server: str, small_system: Lookloop, grocery) -> None:  # type: ignore[no-untyped-def]
    from playwright.sync_api import expect, sync_playwright

    accounts = small_system.humans.accounts
    _, device = accounts.add_device("wendy", "browser-test glasses")
    accounts.add_account("rita", "reviewer", "reviewer-pass")
    photo = unknown_photo(small_system, grocery)
    stream = WearerStream(server.replace("http://", "ws://") + f"/v1/devices/stream?token={device}")
    headers = {"Authorization": f"Bearer {device}"}

    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=str(CHROMIUM),
                                     args=["--no-sandbox", "--disable-background-networking", "--disable-gpu"])
        page = browser.new_page(viewport={"width": 1280, "height": 760})
        refused: list[str] = []
        page.on("console", csp_violations(refused))  # the page works under its Content-Security-Policy
        page.goto(server + "/review")
        page.fill("#username", "rita")
        page.fill("#password", "reviewer-pass")
        page.press("#password", "Enter")
        expect(page.locator("#empty")).to_be_visible(timeout=15_000)
        expect(page.locator("#conn")).to_have_class("conn on", timeout=10_000)

        r = httpx.post(server + "/v1/asks", data={"question": "what is this?"}, headers=headers, timeout=60,
                       files={"image": ("photo.jpg", photo.path.read_bytes())})
        assert r.status_code == 200, r.text
        first = r.json()
        assert first["answer"]["decision"] == "escalate"

        # The live item is pushed to the page: frame, question, AI answer and candidates on screen.
        expect(page.locator("#badge-live")).to_be_visible(timeout=15_000)
        expect(page.locator("#question")).to_have_text("what is this?")
        expect(page.locator("#candidates li").first).to_be_visible()
        wait_js(page, "document.getElementById('frame').naturalWidth > 0", timeout=10_000)
        assert stream.wait_for("status")["status"] == "asking a helper"

        # Keyboard only: "/" opens the text box, type the product, Enter accepts.
        page.keyboard.press("/")
        page.keyboard.type(photo.label)
        page.keyboard.press("Enter")
        expect(page.locator("#flash")).to_contain_text(photo.label, timeout=10_000)
        expect(page.locator("#empty")).to_be_visible(timeout=10_000)
        expect(page.locator("#st-done")).to_have_text("1")

        answer = stream.wait_for("answer")
        assert answer["ask_id"] == first["id"] and answer["source"] == "human" and answer["final"] is True
        assert photo.label.split("-")[0] in answer["text"]

        again = httpx.post(server + "/v1/asks", data={"question": "what is this?"}, headers=headers, timeout=60,
                           files={"image": ("photo.jpg", photo.path.read_bytes())}).json()
        assert again["answer"]["decision"] == "answer"
        assert again["answer"]["result"]["label"] == photo.label
        assert small_system.humans.queue.for_ask(again["id"]) is None
        assert not refused, refused
        browser.close()
    stream.stop.set()
    stream.thread.join(5)


def test_review_page_screenshot(server: str, small_system: Lookloop, grocery) -> None:  # type: ignore[no-untyped-def]
    """docs/review-page.png: the page with a live item, candidates and the picked one highlighted."""
    from playwright.sync_api import expect, sync_playwright

    accounts = small_system.humans.accounts
    _, device = accounts.add_device("wendy", "screenshot glasses")
    accounts.add_account("rita", "reviewer", "reviewer-pass")
    photo = unknown_photo(small_system, grocery)
    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=str(CHROMIUM),
                                     args=["--no-sandbox", "--disable-background-networking", "--disable-gpu"])
        page = browser.new_page(viewport={"width": 1280, "height": 760})
        refused: list[str] = []
        page.on("console", csp_violations(refused))  # the page works under its Content-Security-Policy
        page.goto(server + "/review")
        page.fill("#username", "rita")
        page.fill("#password", "reviewer-pass")
        page.press("#password", "Enter")
        expect(page.locator("#empty")).to_be_visible(timeout=15_000)
        r = httpx.post(server + "/v1/asks", data={"question": "what is this?"}, timeout=60,
                       headers={"Authorization": f"Bearer {device}"},
                       files={"image": ("photo.jpg", photo.path.read_bytes())})
        assert r.status_code == 200
        expect(page.locator("#badge-live")).to_be_visible(timeout=15_000)
        wait_js(page, "document.getElementById('frame').naturalWidth > 0", timeout=10_000)
        page.keyboard.press("2")
        expect(page.locator("#candidates li.picked")).to_have_count(1)
        out = REPO / "docs" / "review-page.png"
        out.parent.mkdir(exist_ok=True)
        page.screenshot(path=str(out))
        assert out.stat().st_size > 10_000
        assert not refused, refused
        browser.close()
