"""The glasses simulator in real headless Chromium, fed a fake camera (a Grocery val photo) and a fake
microphone (espeak-ng saying "what is this"): it must show and speak the product's name."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from browser_util import (
    DESKTOP,
    LAUNCH_ARGS,
    PHONE,
    assert_accessible,
    box_in_viewport,
    horizontal_overflow,
    screenshot,
    tab_through,
    tab_to,
    unringed,
    wait_js,
)
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
def browser(media: tuple[Path, Path]) -> Iterator[Any]:
    """Chromium with the fake camera and microphone."""
    from playwright.sync_api import sync_playwright

    video, mic = media
    with sync_playwright() as p:
        browser = p.chromium.launch(
            executable_path=CHROMIUM,
            args=[
                *LAUNCH_ARGS,
                "--use-fake-ui-for-media-stream", "--use-fake-device-for-media-stream",
                f"--use-file-for-fake-video-capture={video}", f"--use-file-for-fake-audio-capture={mic}",
                "--autoplay-policy=no-user-gesture-required",
            ],
        )
        try:
            yield browser
        finally:
            browser.close()


@pytest.fixture
def page(browser: Any) -> Any:
    return browser.new_context(viewport={"width": 1280, "height": 860}).new_page()


def test_simulator_shows_and_speaks_the_product(page: Any, server: LiveServer, tmp_path: Path) -> None:
    errors: list[str] = []
    page.on("pageerror", lambda exc: errors.append(str(exc)))
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

        def decide(self, probs: Any, group: str | None = None) -> PolicyDecision:
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


# -- issue 14: the newest answer in view, a refused token named, waiting for a helper, keyboard and layout ----------


class AlwaysAsk:
    name = "always-ask"

    def decide(self, probs: Any, group: str | None = None) -> Any:
        from lookloop.domain import Decision
        from lookloop.loop.policies import PolicyDecision

        return PolicyDecision(Decision.ESCALATE, float(max(probs)), 1.0, self.name)


def _ready(page: Any, url: str) -> None:
    page.goto(f"{url}/simulator")
    wait_js(page, "window.__sim && window.__sim.ready", timeout=10_000)
    wait_js(page, "document.getElementById('camera').videoWidth > 0", timeout=20_000)


def _ask(page: Any, question: str, count: int) -> None:
    page.fill("#question", question)
    page.press("#question", "Enter")
    wait_js(page, f"window.__sim.asks.length >= {count}", timeout=30_000)


def _canned_answers(page: Any) -> None:
    """Every typed ask answered at once by the page's network layer: the n-th says "answer n"."""
    n = {"asks": 0}

    def fulfil(route: Any) -> None:
        n["asks"] += 1
        i = n["asks"]
        route.fulfill(status=200, content_type="application/json", body=json.dumps({
            "id": f"ask{i:04d}", "device_id": "anonymous", "question": f"question {i}",
            "created_at": "2026-01-01T00:00:00+00:00", "outcome": "answered", "latency_ms": 3.0,
            "answer": {"text": f"answer {i}", "hud": [f"answer {i}"], "decision": "answer", "skill": "identify",
                       "confidence": 0.9},
        }))

    page.route("**/v1/asks", fulfil)


def test_conversation_shows_the_newest_answer_where_the_eye_is(page: Any, server: LiveServer) -> None:
    """Newest first and scrolled to the top: after ten asks the tenth answer is on screen in the panel (the
    page used to put the newest on top of a list opened scrolled to the oldest)."""
    _ready(page, server.url)
    page.uncheck("#speak")
    _canned_answers(page)
    for i in range(1, 11):
        _ask(page, f"question {i}", i)
    wait_js(page, "document.querySelectorAll('#log li').length === 10")
    log = page.locator("#log").bounding_box()
    assert page.evaluate("document.getElementById('log').scrollHeight > document.getElementById('log').clientHeight")
    entries = page.locator("#log li")
    tops = [entries.nth(i).bounding_box()["y"] for i in range(10)]
    newest = page.locator("#log li", has_text="answer 10").bounding_box()
    assert newest["y"] == min(tops), "the newest answer is not the first one in the panel"
    assert log["y"] - 1 <= newest["y"] and newest["y"] + newest["height"] <= log["y"] + log["height"] + 1, \
        "the newest answer is scrolled out of the conversation panel"


def test_a_refused_device_token_is_named(page: Any, server: LiveServer) -> None:
    """The server refuses the stream's handshake (the page sees a bare close) and answers asks 401: both say the
    token was refused, instead of "connecting…" forever."""
    _ready(page, server.url)
    page.fill("#token", "dev_this-token-was-never-issued")
    page.click("#save-token")
    wait_js(page, "document.getElementById('stream-label').textContent.includes('refused')",
                           timeout=10_000)
    assert page.inner_text("#token-error").startswith("this device token was refused — check it")
    _ask(page, "what is this?", 0)
    wait_js(page, """() => { const s = window.__sim.statuses;
        return s.includes('thinking') && s.lastIndexOf('device token refused') > s.lastIndexOf('thinking'); }""",
                           timeout=20_000)
    assert "refused" in page.locator("#hud").inner_text()
    wait_js(page, "window.__sim.spoken.length > 0")
    assert "token was refused" in page.evaluate("window.__sim.spoken[0].text")
    page.reload()  # the wrong token kept from last time is recognised at once
    wait_js(page, "document.getElementById('token-error').textContent.includes('refused')",
                           timeout=10_000)


def _until(check: Any, timeout: float = 10.0) -> None:
    """Waits for a condition on the server's side."""
    import time

    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            raise AssertionError("the server never got there")
        time.sleep(0.05)


class Unsure(AlwaysAsk):
    """Escalates with no confidence at all: the highest priority in the review queue."""

    def decide(self, probs: Any, group: str | None = None) -> Any:
        from lookloop.domain import Decision
        from lookloop.loop.policies import PolicyDecision

        return PolicyDecision(Decision.ESCALATE, 0.0, 1.0, self.name)


def test_waiting_for_a_helper_is_shown_spoken_and_can_be_cancelled(page: Any, server: LiveServer, grocery: Any,
                                                                    tmp_path: Path) -> None:
    """While a person is found: the time waited and the place in line on the HUD (from the stream's status
    events), Cancel at hand; after the server's time-out a spoken update and "keep waiting", which puts the ask
    back live on the server; the helper's answer shows the question it answers and a thumbnail of the frame;
    Cancel takes the ask out of the review queue."""
    system: Any = server.system  # type: ignore[attr-defined]
    _, token = system.humans.accounts.add_device("waiting-wearer", "simulator")
    other_device, _ = system.humans.accounts.add_device("someone-ahead", "glasses")
    photo = next(i for i in small_val(grocery) if i.label == PRODUCT).path.read_bytes()
    _ready(page, server.url)
    page.fill("#token", token)
    page.click("#save-token")
    wait_js(page, "document.getElementById('stream-label').textContent === 'live answers on'",
                           timeout=10_000)
    saved = system.policy
    ahead = None
    try:
        system.policy = Unsure()
        ahead = system.ask("what is this?", photo, device_id=other_device.id).id  # someone else waits already
        system.policy = AlwaysAsk()
        _ask(page, "what is this?", 1)
        ask_id = page.evaluate("window.__sim.asks[0].id")
        wait = page.locator("#wait-text")
        page.wait_for_selector("#hud-wait", state="visible", timeout=10_000)
        wait_js(page, "window.__sim.waits.length > 0", timeout=10_000)
        assert re.fullmatch(r"Finding a helper · 0:0\d · 2nd in line", wait.inner_text()), wait.inner_text()
        wait_js(page,
            "/0:0[2-9]/.test(document.getElementById('wait-text').textContent)", timeout=10_000)
        assert page.locator("#wait-cancel").is_visible() and page.locator("#wait-keep").is_hidden()

        item = system.humans.queue.for_ask(ask_id)
        system.humans.check_timeout(item.id)  # the server's "no helper answered; still queued"
        page.wait_for_selector("#wait-keep", state="visible", timeout=10_000)
        assert wait.inner_text().startswith("No helper yet · 0:")
        assert "No helper yet" in page.locator("#hud").inner_text()
        wait_js(page,
            "window.__sim.spoken.some(s => s.text.startsWith('No helper has answered yet'))", timeout=10_000)
        assert not system.humans.queue.for_ask(ask_id).live
        screenshot(page, "simulator-waiting", tmp_path)
        assert_accessible(page, "simulator waiting for a helper")
        page.click("#wait-keep")
        assert wait.inner_text().startswith("Still waiting · 0:")
        assert page.locator("#wait-keep").is_hidden()
        _until(lambda: system.humans.queue.for_ask(ask_id).live)  # offered to helpers again
        wait_js(page, "document.getElementById('wait-text').textContent.endsWith('2nd in line')")

        system.humans.cancel(ahead)  # the one ahead gives up: this ask is next
        ahead = None
        system.humans.wait_update(item.id)
        wait_js(page, "document.getElementById('wait-text').textContent.endsWith(\"you're next\")",
                               timeout=10_000)

        system.add_label(ask_id, PRODUCT, source="human", author="helper")
        page.wait_for_selector("#hud-wait", state="hidden", timeout=10_000)
        hud = page.locator("#hud").inner_text()
        assert "“what is this?”" in hud and PRODUCT in hud
        first = page.locator("#log li").first
        assert "what is this?" in first.locator(".q").inner_text() and PRODUCT in first.locator(".a").inner_text()
        assert first.locator("img.thumb").get_attribute("src").startswith("data:image/jpeg;base64,")
        wait_js(page,
            "window.__sim.spoken.some(s => s.text.startsWith('You asked: what is this?') "
            f"&& s.text.includes('{PRODUCT}'))", timeout=20_000)

        _ask(page, "what is this one?", 2)
        second = page.evaluate("window.__sim.asks[1].id")
        page.wait_for_selector("#hud-wait", state="visible", timeout=10_000)
        assert system.humans.queue.for_ask(second).status == "open"
        page.click("#wait-cancel")
        page.wait_for_selector("#hud-wait", state="hidden")
        assert "Cancelled" in page.locator("#hud").inner_text()
        wait_js(page, "document.getElementById('status').dataset.state === 'ready'", timeout=20_000)
        # The ask left the review queue: no helper will spend time on it, and it ended cancelled.
        _until(lambda: system.humans.queue.for_ask(second).status == "cancelled")
        assert system.get_ask(second).outcome == "cancelled"
        assert system.humans.queue.counts()["open"] == 0
        assert "Cancelled" in page.locator("#hud").inner_text()
    finally:
        system.policy = saved
        if ahead is not None:
            system.humans.cancel(ahead)


def test_wrong_answers_are_put_right_in_the_terms_of_the_skill(page: Any, server: LiveServer, tmp_path: Path) -> None:
    """"✗ wrong" never opens a browser prompt. identify: pick one of the other candidates or type a catalogue name
    (suggested from GET /v1/catalog); read: edit the text in place; any other skill: right or wrong only."""
    dialogs: list[str] = []
    page.on("dialog", lambda d: (dialogs.append(d.message), d.dismiss()))
    _ready(page, server.url)
    page.uncheck("#speak")
    answers = [
        {"skill": "identify", "text": "Cucumber — 12.90 SEK", "result": {"label": "Cucumber"},
         "candidates": [{"label": "Cucumber", "score": 0.5}, {"label": "Banana", "score": 0.3},
                        {"label": "Granny-Smith", "score": 0.1}]},
        {"skill": "identify", "text": "Banana — 9.90 SEK", "result": {"label": "Banana"},
         "candidates": [{"label": "Banana", "score": 0.6}]},
        {"skill": "read", "text": "ROWBSPACE42", "result": {"lines": []}, "candidates": []},
        {"skill": "colour", "text": "Yellow", "result": {"colour": "yellow"}, "candidates": []},
    ]
    n = {"asks": 0}

    def fulfil(route: Any) -> None:
        a = answers[n["asks"]]
        n["asks"] += 1
        route.fulfill(status=200, content_type="application/json", body=json.dumps({
            "id": f"ask{n['asks']:04d}", "device_id": "anonymous", "question": f"question {n['asks']}",
            "created_at": "2026-01-01T00:00:00+00:00", "outcome": "answered", "latency_ms": 3.0,
            "answer": {**a, "hud": [a["text"]], "decision": "answer", "confidence": 0.9},
        }))

    sent: list[tuple[str, dict[str, Any]]] = []

    def feedback(route: Any) -> None:
        sent.append((route.request.url.split("/")[-2], json.loads(route.request.post_data)))
        route.fulfill(status=201, content_type="application/json", body="{}")

    page.route("**/v1/asks", fulfil)
    page.route("**/v1/asks/*/feedback", feedback)
    for i in range(1, 5):
        _ask(page, f"question {i}", i)
    entry = {i: page.locator(f"#log li[data-ask='ask{i:04d}']") for i in range(1, 5)}

    # identify: the other candidates to pick from, and a field with catalogue names
    entry[1].get_by_role("button", name="✗ wrong").click()
    fix = entry[1].locator("form.fix")
    assert fix.is_visible() and fix.get_by_text("What was it?").is_visible()
    assert [b.inner_text() for b in fix.locator("button.pick").all()] == ["Banana", "Granny Smith"]
    assert page.evaluate("document.activeElement.textContent") == "Banana"  # the keyboard is on the first choice
    fix.locator("input").fill("oat")
    page.wait_for_selector("#catalog-names option[value='Oatly-Oat-Milk']", state="attached", timeout=10_000)
    assert_accessible(page, "simulator correcting an identify answer")
    screenshot(page, "simulator-correct-identify", tmp_path)
    fix.locator("button.pick", has_text="Granny Smith").click()
    wait_js(page, "window.__sim.feedback.length === 1")
    assert sent[-1] == ("ask0001", {"verdict": "wrong", "correction": "Granny-Smith"})
    assert entry[1].locator(".meta").inner_text() == "thanks — marked wrong — it was Granny Smith"

    # a name typed (no other candidate to pick)
    entry[2].get_by_role("button", name="✗ wrong").click()
    assert entry[2].locator("button.pick").count() == 0
    entry[2].locator("form.fix input").fill("Oatly-Oat-Milk")
    entry[2].locator("form.fix input").press("Enter")
    wait_js(page, "window.__sim.feedback.length === 2")
    assert sent[-1] == ("ask0002", {"verdict": "wrong", "correction": "Oatly-Oat-Milk"})

    # read: the text itself, put right in place
    entry[3].get_by_role("button", name="✗ wrong").click()
    text = entry[3].locator("form.fix textarea")
    assert text.input_value() == "ROWBSPACE42"
    text.fill("ROW B SPACE 42")
    assert_accessible(page, "simulator correcting a read answer")
    entry[3].locator("form.fix button.send").click()
    wait_js(page, "window.__sim.feedback.length === 3")
    assert sent[-1] == ("ask0003", {"verdict": "wrong", "correction": "ROW B SPACE 42"})

    # any other skill: wrong is all there is to say
    entry[4].get_by_role("button", name="✗ wrong").click()
    wait_js(page, "window.__sim.feedback.length === 4")
    assert sent[-1] == ("ask0004", {"verdict": "wrong", "correction": None})
    assert entry[4].locator("form.fix").count() == 0
    assert dialogs == [], dialogs


def _choosers_intercepted(page: Any) -> None:
    """Playwright turns on its file chooser interception when the first listener subscribes, without waiting for
    the browser to confirm it: subscribed just before a key press (as ``expect_file_chooser`` alone does), the
    page's chooser can open first and headless Chromium cancels it at once. Subscribed before the page loads,
    the interception is on long before any key is pressed."""
    page.on("filechooser", lambda _chooser: None)


# The page's camera held back until the test lets it start (getUserMedia for video waits for __releaseCamera()).
HELD_CAMERA = """(() => {
  const media = navigator.mediaDevices, open = media.getUserMedia.bind(media);
  let release;
  const held = new Promise((resolve) => { release = resolve; });
  window.__releaseCamera = release;
  media.getUserMedia = async (constraints) => {
    if (constraints && constraints.video) await held;
    return open(constraints);
  };
})();"""


def test_the_cameras_start_leaves_the_keyboard_focus_where_the_wearer_put_it(browser: Any, server: LiveServer) -> None:
    """A keyboard or screen-reader wearer who moved to a control while the camera was still starting is still there
    once it has started (nothing on the page takes the focus on its own), and Enter works that control."""
    page = browser.new_context(viewport=DESKTOP).new_page()
    _choosers_intercepted(page)
    page.add_init_script(HELD_CAMERA)
    page.goto(f"{server.url}/simulator")
    wait_js(page, "window.__sim && window.__sim.ready", timeout=10_000)
    assert tab_to(page, "#upload-button"), "the photo upload cannot be reached with the keyboard"
    assert page.evaluate("document.getElementById('camera').videoWidth") == 0, "the camera was not held back"
    page.evaluate("window.__releaseCamera()")
    wait_js(page, "document.getElementById('camera').videoWidth > 0", timeout=20_000)
    # Frames are scored once the camera's start has finished (the page then takes frames from it).
    wait_js(page, "document.getElementById('sharp').textContent.includes('sharpness')", timeout=10_000)
    assert page.evaluate("document.activeElement.id") == "upload-button", "the camera's start moved the focus"
    with page.expect_file_chooser(timeout=10_000):
        page.keyboard.press("Enter")


def test_simulator_keyboard_and_layout_at_1280x800(browser: Any, server: LiveServer, grocery: Any,
                                                    tmp_path: Path) -> None:
    """"Hold to talk" and the question box need no scrolling; every control takes the focus visibly; the photo
    upload opens from the keyboard; Space on another control is that control's; axe finds nothing serious."""
    page = browser.new_context(viewport=DESKTOP).new_page()
    _choosers_intercepted(page)
    _ready(page, server.url)
    assert box_in_viewport(page, "#talk") and box_in_viewport(page, "#question"), "the main action is below the fold"

    assert tab_to(page, "#speak"), "the speak checkbox cannot be reached"
    page.keyboard.press("Space")
    assert not page.is_checked("#speak"), "Space on the checkbox started talking instead"
    page.keyboard.press("Space")
    assert page.is_checked("#speak") and "listening" not in page.evaluate("window.__sim.statuses")

    stops = tab_through(page)
    assert len(stops) >= 8 and not unringed(stops), unringed(stops)
    photo = next(i for i in small_val(grocery) if i.label == PRODUCT).path
    page.evaluate("document.activeElement && document.activeElement.blur()")
    assert tab_to(page, "#upload-button"), "the photo upload cannot be reached with the keyboard"
    with page.expect_file_chooser(timeout=10_000) as chooser:
        page.keyboard.press("Enter")
    chooser.value.set_files(str(photo))
    page.wait_for_selector("#still", state="visible")
    page.uncheck("#speak")
    _ask(page, "what is this?", 1)
    wait_js(page, f"document.getElementById('hud').innerText.includes('{PRODUCT}')", timeout=20_000)
    assert_accessible(page, "simulator at 1280×800")
    screenshot(page, "simulator-1280", tmp_path)


def test_simulator_on_a_phone_keeps_the_hud_in_view(browser: Any, server: LiveServer, tmp_path: Path) -> None:
    """At 390×844 with touch: no space-bar hint, nothing scrolls sideways, and after an ask typed with the page
    scrolled down to the question box the HUD comes back into view."""
    page = browser.new_context(viewport=PHONE, is_mobile=True, has_touch=True).new_page()
    _ready(page, server.url)
    assert "space" not in page.inner_text(".hint").lower()
    assert horizontal_overflow(page) <= 0
    assert box_in_viewport(page, "#hud")
    screenshot(page, "simulator-390", tmp_path)
    # As a phone does when its keyboard opens: the question box scrolled to the top, the HUD out of view.
    page.evaluate("document.getElementById('question').scrollIntoView({block: 'start'})")
    page.wait_for_timeout(200)
    assert not box_in_viewport(page, "#hud"), "the page is too short to scroll the HUD away: the test proves nothing"
    page.uncheck("#speak")
    page.tap("#question")
    _ask(page, "what is this?", 1)
    wait_js(page, f"document.getElementById('hud').innerText.includes('{PRODUCT}')", timeout=20_000)
    page.wait_for_timeout(800)  # a smooth scroll
    assert box_in_viewport(page, "#hud"), "the HUD stayed out of view after the ask"
    assert_accessible(page, "simulator on a phone")
    screenshot(page, "simulator-390-answer", tmp_path)
