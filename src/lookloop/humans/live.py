"""In-process pub/sub for the live path: wearers' device streams and reviewers' sockets.

Asks are answered in a threadpool, so publishing must be safe from any thread: events are handed to the
event loop with ``call_soon_threadsafe`` and land in per-subscriber bounded ``asyncio.Queue``s.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import threading
from collections.abc import Callable
from typing import Any

from starlette.websockets import WebSocketDisconnect

Event = dict[str, Any]
QUEUE_SIZE = 256


class LiveHub:
    """Subscribers by device id (wearers) and by account id (reviewers)."""

    def __init__(self) -> None:
        self._loop: asyncio.AbstractEventLoop | None = None
        self._lock = threading.Lock()
        self._wearers: dict[str, set[asyncio.Queue[Event]]] = {}
        self._reviewers: dict[str, set[asyncio.Queue[Event]]] = {}
        self._roles: dict[str, str] = {}
        self._turn = itertools.count()

    # -- loop -----------------------------------------------------------------------------------------------

    def bind(self, loop: asyncio.AbstractEventLoop) -> None:
        self._loop = loop

    @property
    def bound(self) -> bool:
        return self._loop is not None and not self._loop.is_closed()

    def _in_loop(self) -> bool:
        try:
            return asyncio.get_running_loop() is self._loop
        except RuntimeError:
            return False

    def _deliver(self, queues: list[asyncio.Queue[Event]], event: Event) -> None:
        def put() -> None:
            for q in queues:
                try:
                    q.put_nowait(event)
                except asyncio.QueueFull:  # a stalled client loses events rather than stalling the server
                    pass

        if not queues or not self.bound:
            return
        if self._in_loop():
            put()
        else:
            assert self._loop is not None
            try:
                self._loop.call_soon_threadsafe(put)
            except RuntimeError:  # the loop closed while shutting down
                pass

    def call_later(self, delay: float, fn: Callable[[], None]) -> None:
        """Runs ``fn`` in a worker thread after ``delay`` seconds (thread-safe; a no-op without a loop)."""
        if not self.bound:
            return
        loop = self._loop
        assert loop is not None

        def fire() -> None:
            loop.run_in_executor(None, fn)

        def schedule() -> None:
            loop.call_later(delay, fire)

        if self._in_loop():
            schedule()
        else:
            try:
                loop.call_soon_threadsafe(schedule)
            except RuntimeError:
                pass

    # -- wearers --------------------------------------------------------------------------------------------

    def subscribe_wearer(self, device_id: str) -> asyncio.Queue[Event]:
        q: asyncio.Queue[Event] = asyncio.Queue(QUEUE_SIZE)
        with self._lock:
            self._wearers.setdefault(device_id, set()).add(q)
        return q

    def unsubscribe_wearer(self, device_id: str, q: asyncio.Queue[Event]) -> None:
        with self._lock:
            subs = self._wearers.get(device_id)
            if subs is not None:
                subs.discard(q)
                if not subs:
                    del self._wearers[device_id]

    def send_device(self, device_id: str, event: Event) -> None:
        with self._lock:
            queues = list(self._wearers.get(device_id, ()))
        self._deliver(queues, event)

    def wearer_online(self, device_id: str) -> bool:
        with self._lock:
            return bool(self._wearers.get(device_id))

    # -- reviewers ------------------------------------------------------------------------------------------

    def subscribe_reviewer(self, account_id: str, role: str) -> asyncio.Queue[Event]:
        q: asyncio.Queue[Event] = asyncio.Queue(QUEUE_SIZE)
        with self._lock:
            self._reviewers.setdefault(account_id, set()).add(q)
            self._roles[account_id] = role
        return q

    def unsubscribe_reviewer(self, account_id: str, q: asyncio.Queue[Event]) -> bool:
        """Removes a socket; True when the reviewer has no socket left (went off duty)."""
        with self._lock:
            subs = self._reviewers.get(account_id)
            if subs is not None:
                subs.discard(q)
                if not subs:
                    del self._reviewers[account_id]
                    self._roles.pop(account_id, None)
                    return True
            return subs is None

    def reviewers_on_duty(self) -> list[str]:
        """On-duty reviewers (an open socket), rotated so ties go round-robin."""
        with self._lock:
            ids = sorted(self._reviewers)
        if not ids:
            return []
        k = next(self._turn) % len(ids)
        return ids[k:] + ids[:k]

    def send_reviewer(self, account_id: str, event: Event) -> None:
        with self._lock:
            queues = list(self._reviewers.get(account_id, ()))
        self._deliver(queues, event)

    def broadcast_reviewers(self, event: Event) -> None:
        with self._lock:
            queues = [q for subs in self._reviewers.values() for q in subs]
        self._deliver(queues, event)


async def relay(websocket: Any, queue: asyncio.Queue[dict[str, Any]]) -> None:
    """Sends every event from ``queue`` down the socket and answers pings, until the client goes away."""

    async def pump() -> None:
        while True:
            await websocket.send_json(await queue.get())

    sender = asyncio.create_task(pump())
    try:
        while True:
            msg = await websocket.receive_json()
            if isinstance(msg, dict) and msg.get("type") == "ping":
                await websocket.send_json({"type": "pong"})
    except (WebSocketDisconnect, RuntimeError, ValueError):
        pass
    finally:
        sender.cancel()
        with contextlib.suppress(BaseException):
            await sender
