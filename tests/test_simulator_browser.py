"""The glasses simulator in real headless Chromium, fed a fake camera (a Grocery val photo) and a fake
microphone (espeak-ng saying "what is this"): it must show and speak the product's name."""

from __future__ import annotations

import os
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from browser_util import csp_violations, wait_js
from conftest import REPO, small_val
from voice_util import LiveServer, needs_espeak, needs_ffmpeg, small_app_system, spoken_wav

from lookloop.server.app import create_app

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser") or "/usr/bin/chromium"
pytestmark = [
    needs_espeak,
    needs_ffmpeg,
    pytest.mark.skipif(not Path(CHROMIUM).exists(), reason="chromium is not installed (apt-get install chromium)"),
]
PRODUCT = "Banana"


@pytest.fixture(scope="module")
def media(tmp_path_factory: pytest.TempPathFactory, grocery) -> tuple[Path, Path]:  # type: ignore[no-untyped-def]
    """A fake camera video (.y4m) of a val photo and a fake microphone file saying "what is this"."""
    folder = tmp_path_factory.mktemp("media")
    photo = next(i for i in small_val(grocery) if i.label == PRODUCT).path
    video = folder / "camera.y4m"
    subprocess.run(
        ["ffmpeg", "-hide_banner", "-loglevel", "error", "-y", "-loop", "1", "-i", str(photo), "-t", "2", "-r", "10",
         "-vf", "scale=640:480:force_original_aspect_ratio=increase,crop=640:480", "-pix_fmt", "yuv420p",
         str(video)],
        check=True, timeout=60,
    )
    mic = folder / "mic.wav"
    mic.write_bytes(spoken_wav("what is this", lead_s=0.4, tail_s=4.0, rate=48_000))
    return video, mic


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory, data_dir: Path, model_dir: Path, grocery) -> Iterator[LiveServer]:  # type: ignore[no-untyped-def]
    system = small_app_system(tmp_path_factory.mktemp("sim"), data_dir, model_dir, grocery)
    with LiveServer(create_app(system=system, warm=False)) as live:
        live.system = system  # type: ignore[attr-defined]
        yield live
    system.db.dispose()


@pytest.fixture
def page(media: tuple[Path, Path]) -> Iterator[Any]:
    from playwright.sync_api import sync_playwright

    video, mic = media
    with sync_playwright() as p:
        browser = p.chromium.launch(
            executable_path=CHROMIUM,
            args=[
                "--no-sandbox", "--disable-background-networking", "--disable-gpu",
                "--use-fake-ui-for-media-stream", "--use-fake-device-for-media-stream",
                f"--use-file-for-fake-video-capture={video}", f"--use-file-for-fake-audio-capture={mic}",
                "--autoplay-policy=no-user-gesture-required",
            ],
        )
        try:
            context = browser.new_context(viewport={"width": 1280, "height": 860})
            yield context.new_page()
        finally:
            browser.close()


def test_simulator_shows_and_speaks_the_product(page: Any, server: LiveServer, tmp_path: Path) -> None:
    errors: list[str] = []
    page.on("pageerror", lambda exc: errors.append(str(exc)))
    page.on("console", csp_violations(errors))
    speech_responses: list[Any] = []
    page.on("response", lambda r: speech_responses.append(r) if "/v1/speech/" in r.url else None)

    page.goto(f"{server.url}/simulator")
    assert page.locator("#status").inner_text() == "ready"
    # The fake camera is live and frames are being scored.
    wait_js(page, "document.getElementById('camera').videoWidth > 0", timeout=20_000)
    wait_js(page, "document.getElementById('sharp').textContent.includes('sharpness')", timeout=10_000)

    talk = page.locator("#talk")
    box = talk.bounding_box()
    assert box is not None
    page.mouse.move(box["x"] + box["width"] / 2, box["y"] + box["height"] / 2)
    page.mouse.down()
    wait_js(page, "window.__sim.statuses.includes('listening')", timeout=5_000)
    page.wait_for_timeout(2600)  # holding the button while "what is this" plays into the fake microphone
    page.mouse.up()

    wait_js(page, "window.__sim.asks.length > 0", timeout=90_000)
    wait_js(page, "window.__sim.spoken.length > 0 && window.__sim.spoken[0].played === true",
                           timeout=30_000)
    sim = page.evaluate("window.__sim")
    body = sim["asks"][0]
    assert "what is this" in body["transcript"]["text"].lower()
    assert body["ask"]["answer"]["skill"] == "identify"
    assert body["ask"]["answer"]["result"]["label"] == PRODUCT

    hud = page.locator("#hud").inner_text()
    assert PRODUCT in hud
    spoken = sim["spoken"][0]
    assert spoken["via"] == "server" and spoken["url"].startswith("/v1/speech/") and PRODUCT in spoken["text"]
    assert any(r.status == 200 and r.headers.get("content-type") == "audio/wav" for r in speech_responses)
    assert page.evaluate("document.getElementById('voice').played.length") > 0
    # Never silent: the page went through listening and thinking before it spoke.
    statuses = sim["statuses"]
    assert statuses.index("listening") < statuses.index("thinking") < statuses.index("speaking")
    assert errors == []

    shot = tmp_path / "simulator.png"
    page.screenshot(path=str(shot), full_page=True)
    if os.environ.get("LOOKLOOP_UPDATE_SCREENSHOT"):
        (REPO / "docs").mkdir(exist_ok=True)
        shutil.copyfile(shot, REPO / "docs" / "simulator.png")


def test_simulator_keeps_asks_while_offline(page: Any, server: LiveServer) -> None:
    page.goto(f"{server.url}/simulator")
    wait_js(page, "window.__sim && window.__sim.ready", timeout=10_000)
    # The ask carries a camera frame: wait for the fake camera, or the resent ask has no image.
    wait_js(page, "document.getElementById('camera').videoWidth > 0", timeout=20_000)
    page.route("**/v1/asks", lambda route: route.abort("connectionrefused"))
    page.fill("#question", "what is this?")
    page.press("#question", "Enter")
    wait_js(page, "document.getElementById('status').dataset.state === 'offline'", timeout=10_000)
    assert page.locator("#status").inner_text() == "offline — will send"
    assert page.locator("#outbox").inner_text() == "1 waiting to send"
    page.unroute("**/v1/asks")
    # The outbox is retried every few seconds; once sent, the answer shows and the outbox is empty.
    wait_js(page, "window.__sim.asks.length > 0", timeout=40_000)
    wait_js(page, "JSON.parse(localStorage.getItem('lookloop.sim.outbox') || '[]').length === 0",
                           timeout=10_000)
    assert page.locator("#outbox").is_hidden()


def test_late_human_answer_reaches_the_page_by_its_device_stream(page: Any, server: LiveServer) -> None:
    from lookloop.domain import Decision
    from lookloop.loop.policies import PolicyDecision

    system: Any = server.system  # type: ignore[attr-defined]
    _, token = system.humans.accounts.add_device("sim-wearer", "simulator")

    class AlwaysAsk:
        name = "always-ask"

        def decide(self, probs: Any) -> PolicyDecision:
            return PolicyDecision(Decision.ESCALATE, float(max(probs)), 1.0, self.name)

    page.goto(f"{server.url}/simulator")
    wait_js(page, "window.__sim && window.__sim.ready", timeout=10_000)
    page.fill("#token", token)
    page.click("#save-token")
    wait_js(page, "document.getElementById('stream-label').textContent === 'live answers on'",
                           timeout=10_000)
    wait_js(page, "document.getElementById('camera').videoWidth > 0", timeout=20_000)
    saved = system.policy
    system.policy = AlwaysAsk()
    try:
        page.fill("#question", "what is this?")
        page.press("#question", "Enter")
        wait_js(page, "window.__sim.asks.length > 0", timeout=30_000)
    finally:
        system.policy = saved
    wait_js(page, "document.getElementById('status').dataset.state === 'asking'", timeout=20_000)
    ask_id = page.evaluate("window.__sim.asks[0].id")
    system.add_label(ask_id, PRODUCT, source="human", author="helper")
    wait_js(page,
        "window.__sim.events.some(e => e.type === 'answer') && window.__sim.spoken.length >= 2 "
        "&& window.__sim.spoken[1].played === true", timeout=20_000)
    assert PRODUCT in page.locator("#hud").inner_text()
    late = page.evaluate("window.__sim.spoken[1]")
    assert late["via"] == "server" and PRODUCT in late["text"]
    wait_js(page, "document.getElementById('status').dataset.state === 'ready'", timeout=10_000)
