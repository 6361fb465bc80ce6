"""The glasses SDK: ask about a frame by voice or text, give feedback, hear late human answers.

Offline-first: every ask and every piece of feedback is written to an on-disk outbox with an
idempotency key *before* it is sent, and leaves the outbox only when the server acknowledged it.
While the server is unreachable the call returns ``Pending`` at once; the outbox is sent on the next
call, on ``flush()``, by the optional retry thread, and when the answer stream reconnects. The server
honours the ``Idempotency-Key`` header, so a write that was sent but not acknowledged (a dropped
connection) is stored and answered once however often it is resent.

    with GlassesClient("http://localhost:8000", token="dev_…", queue_dir="~/.lookloop") as glasses:
        result = glasses.ask(frame_jpeg, audio=wav_bytes)      # AskResult, or Pending while offline
        glasses.feedback(result, "wrong", correction="Oatly oat milk")
        for event in glasses.answers():                        # late answers from human helpers
            print(event["text"])
"""

from __future__ import annotations

import json
import logging
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, cast
from urllib.parse import quote, urlsplit, urlunsplit

import httpx
import numpy as np
from websockets.exceptions import ConnectionClosed, InvalidStatus
from websockets.sync.client import connect

from lookloop.device.frames import Frame, pick_sharpest
from lookloop.device.offline_queue import OfflineQueue, QueuedItem, new_key

log = logging.getLogger("lookloop.device")

ImageInput = bytes | bytearray | str | Path | np.ndarray | Sequence[Frame] | None
DEFAULT_QUESTION = "what is this?"
# Statuses after which a resend may succeed: the server (or a proxy before it) is down or busy.
_RETRYABLE = {408, 425, 429, 500, 502, 503, 504}
_MAX_ATTEMPTS_ON_500 = 20


class ClientError(Exception):
    """The server refused a request for good (4xx): resending the same request cannot help."""

    def __init__(self, status: int, detail: str) -> None:
        super().__init__(f"{status}: {detail}")
        self.status = status
        self.detail = detail


class _Unreachable(Exception):
    """The server could not be reached or answered with a retryable status."""


@dataclass(frozen=True)
class AskResult:
    """The server's answer to one ask."""

    id: str
    text: str
    hud: list[str]
    skill: str
    confidence: float
    decision: str
    outcome: str
    final_answer: str | None = None
    transcript: str | None = None
    audio_url: str | None = None
    idempotency_key: str | None = None
    raw: dict[str, Any] = field(default_factory=dict, repr=False)

    @property
    def escalated(self) -> bool:
        """True when a human helper was asked; their answer arrives later on ``answers()``."""
        return self.decision == "escalate"

    @classmethod
    def from_json(cls, data: dict[str, Any], key: str | None = None) -> AskResult:
        ask = data.get("ask", data)  # the voice endpoint wraps the ask with its transcript and audio
        answer = ask.get("answer", {})
        transcript = data.get("transcript")
        return cls(
            id=str(ask["id"]),
            text=str(answer.get("text", "")),
            hud=[str(line) for line in answer.get("hud", [])],
            skill=str(answer.get("skill", "")),
            confidence=float(answer.get("confidence", 0.0)),
            decision=str(answer.get("decision", "")),
            outcome=str(ask.get("outcome", "")),
            final_answer=ask.get("final_answer"),
            transcript=transcript.get("text") if isinstance(transcript, dict) else None,
            audio_url=data.get("audio_url"),
            idempotency_key=key,
            raw=data,
        )


@dataclass(frozen=True)
class Pending:
    """Kept on disk, to be sent when the server is back (``GlassesClient.result(pending)`` then)."""

    idempotency_key: str
    kind: str = "ask"
    reason: str = "offline"


@dataclass(frozen=True)
class FeedbackResult:
    """The server took the wearer's verdict on ``ask_id``."""

    ask_id: str
    verdict: str
    idempotency_key: str
    raw: dict[str, Any] = field(default_factory=dict, repr=False)


Delivered = AskResult | FeedbackResult


def _image_bytes(image: ImageInput) -> bytes | None:
    if image is None:
        return None
    if isinstance(image, bytes | bytearray):
        return bytes(image)
    if isinstance(image, str | Path):
        return Path(image).expanduser().read_bytes()
    if isinstance(image, np.ndarray):
        return _encode_jpeg(image)
    frames = list(image)
    return _image_bytes(pick_sharpest(frames)) if frames else None


def _encode_jpeg(array: np.ndarray) -> bytes:
    import cv2  # OpenCV's native libraries load on first use

    ok, buf = cv2.imencode(".jpg", array, [int(cv2.IMWRITE_JPEG_QUALITY), 90])
    if not ok:
        raise ValueError(f"could not encode a frame of shape {array.shape} as JPEG")
    return bytes(buf.tobytes())


def _detail(response: httpx.Response) -> str:
    try:
        body = response.json()
    except ValueError:
        return response.text[:300] or response.reason_phrase
    return str(body.get("detail", body)) if isinstance(body, dict) else str(body)


class GlassesClient:
    """A device's connection to a lookloop server, with a durable outbox for when it is away.

    ``token``: the device token (``dev_…``); without one asks are anonymous (when the server allows
    it) and there is no answer stream. ``queue_dir``: where the outbox lives (default
    ``~/.lookloop/outbox``). ``retry_every``: seconds between background resends (None: only on
    calls and ``flush()``). ``on_result``: called with every result of a queued write once it is sent.
    """

    def __init__(
        self,
        base_url: str,
        token: str | None = None,
        queue_dir: str | Path | None = None,
        *,
        language: str | None = None,
        speak: bool = True,
        timeout: float = 30.0,
        retry_every: float | None = None,
        on_result: Callable[[Delivered], None] | None = None,
        transport: httpx.BaseTransport | None = None,
    ) -> None:
        self.base_url = base_url.rstrip("/")
        self.token = token
        self.language = language
        self.speak = speak
        self.on_result = on_result
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        # A short connect timeout: with no network the wearer hears "will send" in seconds, not half a minute.
        limits = httpx.Timeout(timeout, connect=min(timeout, 3.0))
        self._http = httpx.Client(base_url=self.base_url, headers=headers, timeout=limits, transport=transport)
        self.queue = OfflineQueue(Path(queue_dir).expanduser() if queue_dir else Path.home() / ".lookloop" / "outbox")
        self._flush_lock = threading.Lock()
        self._stop = threading.Event()
        self._threads: list[threading.Thread] = []
        self._ws: Any = None
        self.online: bool | None = None  # None until the first request tells
        if retry_every is not None:
            if retry_every <= 0:
                raise ValueError("retry_every must be positive seconds")
            self._spawn(self._retry_loop, retry_every)

    # -- asking -----------------------------------------------------------------------------------------

    def ask(
        self,
        image: ImageInput = None,
        question: str | None = None,
        audio: bytes | None = None,
        *,
        skill: str | None = None,
        language: str | None = None,
    ) -> AskResult | Pending:
        """Ask about ``image`` (JPEG/PNG bytes, a path, a BGR array, or the last few frames: the sharpest
        is sent) with a spoken ``audio`` clip (WAV/WebM/Ogg) or a typed ``question``.

        Returns the answer, or ``Pending`` when the server is unreachable (the ask waits on disk).
        Raises ``ClientError`` when the server refuses the ask (bad image, empty question …).
        """
        if audio is not None and not audio:
            raise ValueError("the audio clip is empty")
        if question is not None and not question.strip():
            raise ValueError("the question is empty")
        data = _image_bytes(image)
        if audio is None and question is None:
            if data is None:
                raise ValueError("give a question, an audio clip or an image")
            question = DEFAULT_QUESTION
        payload: dict[str, Any] = {"question": question, "skill": skill, "language": language or self.language,
                                   "speak": self.speak}
        item = QueuedItem(key=new_key(), kind="ask", payload=payload, image=data, audio=audio)
        return cast("AskResult | Pending", self._submit(item))

    def feedback(
        self, ask: AskResult | Pending | str, verdict: str, correction: str | None = None
    ) -> FeedbackResult | Pending:
        """The wearer's verdict (``right`` or ``wrong``, with an optional correction) on an answer.

        ``ask`` may still be ``Pending``: the feedback then waits for its ask and follows it.
        """
        if verdict not in ("right", "wrong"):
            raise ValueError("verdict must be 'right' or 'wrong'")
        if correction is not None and not correction.strip():
            correction = None
        if correction is not None and verdict == "right":
            raise ValueError("a correction goes with the verdict 'wrong'")
        payload: dict[str, Any] = {"verdict": verdict, "correction": correction, "ask_id": None, "ask_key": None}
        if isinstance(ask, AskResult):
            payload["ask_id"] = ask.id
        elif isinstance(ask, Pending):
            payload["ask_key"] = ask.idempotency_key
        else:
            payload["ask_id"] = ask
        item = QueuedItem(key=new_key(), kind="feedback", payload=payload)
        return cast("FeedbackResult | Pending", self._submit(item))

    def _submit(self, item: QueuedItem) -> Any:
        # Write-ahead: on disk before the first byte leaves, so a crash mid-request loses nothing.
        self.queue.put(item)
        try:
            self._flush(live_key=item.key)
        except _Unreachable:
            pass
        result = self._delivered(item)
        return result if result is not None else Pending(item.key, item.kind, "offline")

    def _delivered(self, item: QueuedItem) -> Delivered | None:
        stored = self.queue.sent_result(item.key)
        if stored is None:
            return None
        if item.kind == "ask":
            return AskResult.from_json(stored, item.key)
        return FeedbackResult(stored.get("ask_id", ""), item.payload["verdict"], item.key, stored)

    def result(self, pending: Pending) -> Delivered | None:
        """What the server answered to a write that was queued, once it was sent; else None."""
        return self._delivered(QueuedItem(key=pending.idempotency_key, kind=pending.kind, payload={"verdict": ""}))

    @property
    def pending(self) -> int:
        """How many writes wait in the outbox."""
        return len(self.queue)

    # -- sending the outbox -----------------------------------------------------------------------------

    def flush(self) -> list[Delivered]:
        """Send everything in the outbox, oldest first; stops quietly at the first sign of no server.

        Returns what was delivered by this call. Writes the server refuses for good are set aside
        (``queue.failures()``) rather than retried forever.
        """
        try:
            return self._flush()
        except _Unreachable:
            return []

    def _flush(self, live_key: str | None = None) -> list[Delivered]:
        delivered: list[Delivered] = []
        with self._flush_lock:
            for item in self.queue.pending():
                try:
                    result = self._send(item)
                except _Unreachable as exc:
                    self.online = False
                    self.queue.note_attempt(item.key, str(exc))
                    if item.attempts + 1 >= _MAX_ATTEMPTS_ON_500 and "status 500" in str(exc):
                        self.queue.mark_failed(item.key, str(exc))
                        continue
                    raise
                except ClientError as exc:
                    self.queue.mark_failed(item.key, exc.detail)
                    if item.key == live_key:
                        raise
                    log.warning("the server refused queued %s %s: %s", item.kind, item.key, exc.detail)
                    continue
                self.online = True
                delivered.append(result)
        for result in delivered:
            if self.on_result is not None and result.idempotency_key != live_key:
                try:
                    self.on_result(result)
                except Exception:  # a faulty callback must not lose the rest of the outbox
                    log.exception("on_result callback failed")
        return delivered

    def _post(self, url: str, key: str, **kwargs: Any) -> dict[str, Any]:
        try:
            response = self._http.post(url, headers={"Idempotency-Key": key}, **kwargs)
        except httpx.TransportError as exc:
            raise _Unreachable(f"{type(exc).__name__}: {exc}") from exc
        if response.status_code in _RETRYABLE:
            raise _Unreachable(f"status {response.status_code}: {_detail(response)}")
        if response.status_code >= 400:
            raise ClientError(response.status_code, _detail(response))
        body: dict[str, Any] = response.json()
        return body

    def _send(self, item: QueuedItem) -> Delivered:
        p = item.payload
        if item.kind == "ask":
            form = {k: str(v) for k, v in (("question", p.get("question")), ("skill", p.get("skill"))) if v}
            files: dict[str, tuple[str, bytes, str]] = {}
            if item.image is not None:
                files["image"] = ("frame.jpg", item.image, "application/octet-stream")
            if item.audio is not None:
                files["audio"] = ("clip", item.audio, "application/octet-stream")
                if p.get("language"):
                    form["language"] = str(p["language"])
                form["speak"] = "true" if p.get("speak", True) else "false"
                body = self._post("/v1/asks/voice", item.key, data=form, files=files)
            else:
                body = self._post("/v1/asks", item.key, data=form, files=files or None)
            ask = body.get("ask", body)
            self.queue.mark_sent(item.key, str(ask["id"]), body)
            return AskResult.from_json(body, item.key)
        ask_id = p.get("ask_id") or (self.queue.sent_ask_id(p["ask_key"]) if p.get("ask_key") else None)
        if not ask_id:
            raise ClientError(409, "the ask this feedback is about was never delivered")
        body = self._post(
            f"/v1/asks/{quote(ask_id, safe='')}/feedback",
            item.key,
            json={"verdict": p["verdict"], "correction": p.get("correction")},
        )
        self.queue.mark_sent(item.key, ask_id, {**body, "ask_id": ask_id})
        return FeedbackResult(ask_id, p["verdict"], item.key, body)

    def _retry_loop(self, every: float) -> None:
        while not self._stop.wait(every):
            if len(self.queue):
                self.flush()

    def _spawn(self, target: Callable[..., None], *args: Any) -> threading.Thread:
        thread = threading.Thread(target=target, args=args, daemon=True, name=f"lookloop-{target.__name__}")
        self._threads.append(thread)
        thread.start()
        return thread

    # -- late answers -----------------------------------------------------------------------------------

    def stream_url(self) -> str:
        """The WebSocket URL of this device's answer stream."""
        if not self.token:
            raise ValueError("the answer stream needs a device token")
        parts = urlsplit(self.base_url)
        scheme = "wss" if parts.scheme == "https" else "ws"
        path = parts.path.rstrip("/") + "/v1/devices/stream"
        return urlunsplit((scheme, parts.netloc, path, f"token={quote(self.token, safe='')}", ""))

    def answers(self, *, reconnect: bool = True, max_backoff: float = 10.0) -> Iterator[dict[str, Any]]:
        """Events pushed to this device (``{"type": "answer", "ask_id", "text", "hud", …}`` and status
        events), reconnecting after a lost connection and sending the outbox on each reconnect.

        Ends when ``close()`` is called (or, with ``reconnect=False``, when the connection drops).
        Raises ``ClientError`` when the server rejects the token.
        """

        backoff = 0.5
        while not self._stop.is_set():
            try:
                with connect(self.stream_url(), open_timeout=10, close_timeout=2) as ws:
                    self._ws = ws
                    backoff = 0.5
                    if len(self.queue):
                        self.flush()
                    while not self._stop.is_set():
                        try:
                            message = ws.recv(timeout=0.5)
                        except TimeoutError:
                            continue
                        event = json.loads(message)
                        if isinstance(event, dict):
                            yield event
            except InvalidStatus as exc:
                status = exc.response.status_code
                if status in (401, 403):
                    raise ClientError(status, "the server refused this device token") from exc
            except ConnectionClosed as exc:
                code = exc.rcvd.code if exc.rcvd is not None else None
                if code in (4401, 4403, 1008):
                    reason = exc.rcvd.reason if exc.rcvd is not None else ""
                    raise ClientError(401, f"the server closed the stream: {reason}") from exc
            except OSError:
                pass
            finally:
                self._ws = None
            if not reconnect:
                return
            self._stop.wait(backoff)
            backoff = min(max_backoff, backoff * 2)

    def on_answer(self, callback: Callable[[dict[str, Any]], None]) -> threading.Thread:
        """Call ``callback`` with every streamed event from a background thread (until ``close()``)."""

        def run() -> None:
            try:
                for event in self.answers():
                    callback(event)
            except ClientError as exc:
                log.error("answer stream stopped: %s", exc)

        return self._spawn(run)

    # -- lifecycle --------------------------------------------------------------------------------------

    def close(self) -> None:
        """Stop the background threads and close connections; the outbox stays on disk."""
        self._stop.set()
        ws = self._ws
        if ws is not None:
            try:
                ws.close()
            except Exception:  # already closing: nothing to release
                pass
        for thread in self._threads:
            if thread is not threading.current_thread():
                thread.join(timeout=5)
        self._http.close()
        self.queue.close()

    def __enter__(self) -> GlassesClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def wait_until(predicate: Callable[[], bool], timeout: float = 30.0, every: float = 0.05) -> bool:
    """Poll ``predicate`` until it holds or ``timeout`` passes (handy in scripts and tests)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(every)
    return bool(predicate())
