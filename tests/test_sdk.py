"""The glasses SDK against a real server on loopback: offline-first asks and feedback, late answers, frames."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import pytest
from conftest import small_val
from sqlalchemy import func, select
from voice_util import LiveServer, needs_espeak, small_app_system, spoken_wav

from lookloop import GlassesClient
from lookloop.device import AskResult, ClientError, FeedbackResult, FrameBuffer, OfflineQueue, Pending, pick_sharpest
from lookloop.device.client import wait_until
from lookloop.device.frames import FrameError, sharpness
from lookloop.device.offline_queue import QueuedItem
from lookloop.domain import Decision
from lookloop.humans.tables import FeedbackRow
from lookloop.loop.policies import PolicyDecision
from lookloop.server.app import create_app
from lookloop.store.tables import AskRow, IdempotencyRow


@pytest.fixture(scope="module")
def system(tmp_path_factory: pytest.TempPathFactory, data_dir: Path, model_dir: Path, grocery):  # type: ignore[no-untyped-def]
    s = small_app_system(tmp_path_factory.mktemp("sdk"), data_dir, model_dir, grocery)
    yield s
    s.db.dispose()


@pytest.fixture(scope="module")
def server(system) -> Iterator[LiveServer]:  # type: ignore[no-untyped-def]
    live = LiveServer(create_app(system=system, warm=False)).start()
    yield live
    live.stop()


@pytest.fixture
def token(system) -> str:  # type: ignore[no-untyped-def]
    _, tok = system.humans.accounts.add_device("sdk-wearer", "test glasses")
    return tok


@pytest.fixture(scope="module")
def banana(grocery) -> bytes:  # type: ignore[no-untyped-def]
    return next(i for i in small_val(grocery) if i.label == "Banana").path.read_bytes()


def _rows(system: Any, keys: list[str]) -> list[AskRow]:  # type: ignore[no-any-unimported]
    with system.db.session() as s:
        ids = select(IdempotencyRow.result_id).where(IdempotencyRow.kind == "ask", IdempotencyRow.key.in_(keys))
        return list(s.scalars(select(AskRow).where(AskRow.id.in_(ids))))


def test_offline_asks_are_answered_and_stored_once_when_the_server_returns(
    system: Any, server: LiveServer, token: str, banana: bytes, tmp_path: Path
) -> None:
    queue_dir = tmp_path / "outbox"
    server.stop()
    glasses = GlassesClient(server.url, token=token, queue_dir=queue_dir, timeout=5)
    asked = [glasses.ask(banana, "what is this?"), glasses.ask(banana), glasses.ask(banana, "what is it?")]
    assert all(isinstance(p, Pending) for p in asked)
    assert glasses.pending == 3 and glasses.online is False
    glasses.close()  # the glasses restart while offline: the outbox is on disk
    keys = [p.idempotency_key for p in asked]
    assert len(set(keys)) == 3 and _rows(system, keys) == []

    delivered: list[Any] = []
    lock = threading.Lock()

    def collect(result: Any) -> None:
        with lock:
            delivered.append(result)

    server.start()
    with GlassesClient(server.url, token=token, queue_dir=queue_dir, retry_every=0.2, on_result=collect) as again:
        assert wait_until(lambda: again.pending == 0, timeout=60)
        assert wait_until(lambda: len(delivered) == 3, timeout=10)
        again.flush()  # nothing left: sending again changes nothing
        results = {r.idempotency_key: r for r in delivered}
        assert sorted(results) == sorted(keys) and len(delivered) == 3  # each answered once
        for key in keys:
            r = results[key]
            assert isinstance(r, AskResult) and r.skill == "identify" and "Banana" in r.text
            assert again.result(Pending(key)) == r

        # A write that reached the server but whose reply was lost is resent with its key: still once.
        queue = OfflineQueue(queue_dir)
        queue.put(QueuedItem(key=keys[0], kind="ask", payload={"question": "what is this?"}, image=banana))
        queue.close()
        resent = again.flush()
        assert [r.id for r in resent] == [results[keys[0]].id]

    rows = _rows(system, keys)
    assert len(rows) == 3 and {r.id for r in rows} == {r.id for r in results.values()}
    device = rows[0].device_id
    with system.db.session() as s:
        assert s.scalar(select(func.count()).select_from(AskRow).where(AskRow.device_id == device)) == 3


def test_online_ask_and_feedback_on_a_pending_ask(
    system: Any, server: LiveServer, token: str, banana: bytes, tmp_path: Path
) -> None:
    with GlassesClient(server.url, token=token, queue_dir=tmp_path / "q") as glasses:
        now = glasses.ask([banana, banana], "what is this?")  # frames: the sharpest is sent
        assert isinstance(now, AskResult) and now.decision in ("answer", "escalate") and glasses.online
        fb = glasses.feedback(now, "right")
        assert isinstance(fb, FeedbackResult) and fb.ask_id == now.id

        server.stop()
        later = glasses.ask(banana, "what is this?")
        correction = glasses.feedback(later, "wrong", correction="Granny Smith")
        assert isinstance(later, Pending) and isinstance(correction, Pending) and glasses.pending == 2
        server.start()
        sent = glasses.flush()
        assert [type(x) for x in sent] == [AskResult, FeedbackResult]
        ask, given = sent
        assert isinstance(ask, AskResult) and isinstance(given, FeedbackResult) and given.ask_id == ask.id
    with system.db.session() as s:
        explicit = s.scalars(select(FeedbackRow).where(FeedbackRow.ask_id == ask.id, FeedbackRow.implicit.is_(False)))
        assert [(f.verdict, f.correction) for f in explicit] == [("wrong", "Granny Smith")]
    assert system.get_ask(ask.id).final_answer is not None


@needs_espeak
def test_voice_ask_through_the_sdk(server: LiveServer, token: str, banana: bytes, tmp_path: Path) -> None:
    with GlassesClient(server.url, token=token, queue_dir=tmp_path / "q", language="en") as glasses:
        result = glasses.ask(banana, audio=spoken_wav("what is this"))
    assert isinstance(result, AskResult)
    assert result.transcript is not None and "what is this" in result.transcript.lower()
    assert result.audio_url is not None and result.skill == "identify"


class AlwaysAsk:
    name = "always-ask"

    def decide(self, probs: np.ndarray, group: str | None = None) -> PolicyDecision:
        return PolicyDecision(Decision.ESCALATE, float(np.max(probs)), 1.0, self.name)


def test_late_human_answer_arrives_on_the_stream(
    system: Any, server: LiveServer, token: str, banana: bytes, tmp_path: Path
) -> None:
    events: list[dict[str, Any]] = []
    saved = system.policy
    system.policy = AlwaysAsk()  # unsure of everything: every ask goes to a human
    try:
        with GlassesClient(server.url, token=token, queue_dir=tmp_path / "q") as glasses:
            glasses.on_answer(events.append)
            assert wait_until(lambda: any(e.get("type") == "hello" for e in events), timeout=20)
            result = glasses.ask(banana, "what is this?")
            assert isinstance(result, AskResult) and result.escalated
            system.add_label(result.id, "Banana", source="human", author="helper")
            assert wait_until(
                lambda: any(e.get("type") == "answer" and e.get("ask_id") == result.id for e in events), timeout=20
            )
    finally:
        system.policy = saved
    answer = next(e for e in events if e.get("type") == "answer")
    assert "Banana" in answer["text"] and answer["source"] == "human"
    assert any(e.get("type") == "status" and e.get("ask_id") == result.id for e in events)


def test_refusals_are_raised_not_queued(server: LiveServer, token: str, tmp_path: Path) -> None:
    with GlassesClient(server.url, token=token, queue_dir=tmp_path / "q") as glasses:
        with pytest.raises(ClientError) as bad:
            glasses.ask(b"this is not an image", "what is this?")
        assert 400 <= bad.value.status < 500 and bad.value.detail
        assert glasses.pending == 0 and len(glasses.queue.failures()) == 1
        for args in [((), {}), ((None, "  "), {}), ((None, None, b""), {})]:
            with pytest.raises(ValueError):
                glasses.ask(*args[0], **args[1])
        with pytest.raises(ValueError):
            glasses.feedback("some-id", "maybe")
        with pytest.raises(ValueError):
            glasses.feedback("some-id", "right", correction="Banana")
    with GlassesClient(server.url, token="dev_not-a-real-token", queue_dir=tmp_path / "q2") as stranger:
        with pytest.raises(ClientError):
            next(stranger.answers())
    with pytest.raises(ValueError):
        GlassesClient(server.url, queue_dir=tmp_path / "q3").stream_url()


def test_pick_sharpest_skips_blurred_frames(banana: bytes) -> None:
    sharp = cv2.imdecode(np.frombuffer(banana, np.uint8), cv2.IMREAD_COLOR)
    blurred = cv2.GaussianBlur(sharp, (0, 0), 6)
    assert sharpness(sharp) > 3 * sharpness(blurred)
    jpeg = bytes(cv2.imencode(".jpg", sharp)[1].tobytes())
    assert pick_sharpest([blurred, jpeg, blurred]) is jpeg
    # Among equally sharp frames the newest wins; only the last ``last`` frames count.
    a, b = sharp.copy(), sharp.copy()
    assert pick_sharpest([a, b]) is b
    assert pick_sharpest([sharp, blurred, blurred], last=2) is not sharp
    buf = FrameBuffer(size=3)
    assert buf.best() is None
    for frame in (sharp, blurred, blurred, blurred):
        buf.push(frame)
    assert len(buf) == 3 and buf.best() is not sharp  # the sharp frame scrolled out
    with pytest.raises(FrameError):
        pick_sharpest([])
    with pytest.raises(FrameError):
        sharpness(b"not an image")
