"""In-process pub/sub for the live path: wearers' device streams and reviewers' sockets.

Asks are answered in a threadpool, so publishing must be safe from any thread: events are handed to the
event loop with ``call_soon_threadsafe`` and land in per-subscriber bounded ``asyncio.Queue``s.

A stream lives only as long as the credentials it was opened with: revoking them (``LiveHub.close``) ends it
at once, and every stream re-checks its token on each message in or out and every ``CHECK_EVERY_S`` while
quiet, so a revocation made by another process ends it within a second too.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import threading
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

from starlette.websockets import WebSocketDisconnect

from lookloop.humans.accounts import Accounts, token_hash

Event = dict[str, Any]
QUEUE_SIZE = 256
CHECK_EVERY_S = 0.5  # a quiet stream re-checks its token this often (with the check's cache: within 1 s)
REVOKED_CLOSE_CODE = 4401  # a socket whose credentials stopped counting closes with this code and the reason
_WAKE: Event = {"type": "wake"}  # put on a closed stream's queue so its sender stops waiting (never sent)

# None while the stream's credentials still count, else why they stopped.
Verify = Callable[[], Awaitable[str | None]]


class Subscription:
    """One open stream: the queue its events land in, whose it is, and why it was closed (None while open)."""

    def __init__(self, owner: str, credential: str) -> None:
        self.owner = owner  # the device id (wearers) or the account id (reviewers)
        self.credential = credential  # the sha256 of the token it was opened with
        self.queue: asyncio.Queue[Event] = asyncio.Queue(QUEUE_SIZE)
        self.reason: str | None = None

    @property
    def closed(self) -> bool:
        return self.reason is not None

    def end(self, reason: str) -> None:
        """Marks the stream closed (in the event loop's thread)."""
        if self.reason is None:
            self.reason = reason
        with contextlib.suppress(asyncio.QueueFull):  # a full queue wakes its sender anyway
            self.queue.put_nowait(_WAKE)


def token_verifier(accounts: Accounts, token: str) -> Verify:
    """The per-message check of a stream's token: the cached verdict when fresh, else one look-up in a thread."""

    async def verify() -> str | None:
        standing = accounts.cached_standing(token)
        if standing is None:
            standing = await asyncio.to_thread(accounts.standing, token)
        return None if standing.valid else standing.reason

    return verify


class LiveHub:
    """Subscribers by device id (wearers) and by account id (reviewers)."""

    def __init__(self) -> None:
        self._loop: asyncio.AbstractEventLoop | None = None
        self._lock = threading.Lock()
        self._wearers: dict[str, set[Subscription]] = {}
        self._reviewers: dict[str, set[Subscription]] = {}
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

        if queues:
            self._in_loop_call(put)

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

    def _in_loop_call(self, fn: Callable[[], None]) -> None:
        """Runs ``fn`` in the event loop's thread (now when already there; a no-op without a loop)."""
        if self._in_loop():
            fn()
        elif self.bound:
            assert self._loop is not None
            with contextlib.suppress(RuntimeError):  # the loop closed while shutting down
                self._loop.call_soon_threadsafe(fn)

    # -- revocation -----------------------------------------------------------------------------------------

    def close(self, reason: str, *, account_id: str | None = None, credential: str | None = None,
              device_id: str | None = None) -> int:
        """Ends the streams of revoked credentials: an account's (all, or only those opened with the session
        whose token digest is ``credential``) or a device's. They leave the hub before this returns, so no
        later event reaches them; their sockets close with ``reason``. Thread-safe; returns how many closed."""
        closed: list[Subscription] = []
        with self._lock:
            for subs_of, owner in ((self._reviewers, account_id), (self._wearers, device_id)):
                if owner is None or owner not in subs_of:
                    continue
                subs = subs_of[owner]
                gone = {sub for sub in subs if credential is None or sub.credential == credential}
                subs -= gone
                if not subs:
                    del subs_of[owner]
                    if subs_of is self._reviewers:
                        self._roles.pop(owner, None)
                for sub in gone:
                    sub.reason = reason  # seen at once by the stream's sender, whatever thread this is
                closed.extend(gone)
        if closed:
            def end() -> None:
                for sub in closed:
                    sub.end(reason)

            self._in_loop_call(end)
        return len(closed)

    # -- wearers --------------------------------------------------------------------------------------------

    def subscribe_wearer(self, device_id: str, token: str) -> Subscription:
        sub = Subscription(device_id, token_hash(token))
        with self._lock:
            self._wearers.setdefault(device_id, set()).add(sub)
        return sub

    def unsubscribe_wearer(self, sub: Subscription) -> None:
        with self._lock:
            subs = self._wearers.get(sub.owner)
            if subs is not None:
                subs.discard(sub)
                if not subs:
                    del self._wearers[sub.owner]

    def send_device(self, device_id: str, event: Event) -> None:
        with self._lock:
            queues = [sub.queue for sub in self._wearers.get(device_id, ())]
        self._deliver(queues, event)

    def wearer_online(self, device_id: str) -> bool:
        with self._lock:
            return bool(self._wearers.get(device_id))

    # -- reviewers ------------------------------------------------------------------------------------------

    def subscribe_reviewer(self, account_id: str, role: str, token: str) -> Subscription:
        sub = Subscription(account_id, token_hash(token))
        with self._lock:
            self._reviewers.setdefault(account_id, set()).add(sub)
            self._roles[account_id] = role
        return sub

    def unsubscribe_reviewer(self, sub: Subscription) -> bool:
        """Removes a socket; True when the reviewer has no socket left (went off duty)."""
        with self._lock:
            subs = self._reviewers.get(sub.owner)
            if subs is not None:
                subs.discard(sub)
                if not subs:
                    del self._reviewers[sub.owner]
                    self._roles.pop(sub.owner, None)
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

    def send_reviewer(self, account_id: str, event: Event) -> bool:
        """Sends to the reviewer's sockets; False when they have none left (gone off duty, or revoked)."""
        with self._lock:
            queues = [sub.queue for sub in self._reviewers.get(account_id, ())]
        self._deliver(queues, event)
        return bool(queues)

    def broadcast_reviewers(self, event: Event) -> None:
        with self._lock:
            queues = [sub.queue for subs in self._reviewers.values() for sub in subs]
        self._deliver(queues, event)


async def guarded(sub: Subscription, verify: Verify, *, every: float = CHECK_EVERY_S
                  ) -> AsyncIterator[Event | None]:
    """The stream's events while its credentials count (checked before each one), and None after every
    ``every`` seconds of quiet (checked then too). Ends, with ``sub.reason`` set, once they stop counting."""
    while True:
        if not sub.closed and (why := await verify()) is not None:
            sub.end(why)
        if sub.closed:
            return
        try:
            event = await asyncio.wait_for(sub.queue.get(), every)
        except TimeoutError:
            yield None
            continue
        if event is _WAKE:
            continue
        if not sub.closed and (why := await verify()) is not None:
            sub.end(why)
        if sub.closed:
            return
        yield event


async def relay(websocket: Any, sub: Subscription, verify: Verify) -> None:
    """Sends the stream's events down the socket and answers pings, until the client goes away or the
    credentials stop counting; then the socket closes with ``REVOKED_CLOSE_CODE`` and the reason."""

    async def pump() -> None:
        async for event in guarded(sub, verify):
            if event is not None:
                await websocket.send_json(event)

    async def listen() -> None:
        while True:
            msg = await websocket.receive_json()
            if (why := await verify()) is not None:
                sub.end(why)
                return
            if isinstance(msg, dict) and msg.get("type") == "ping":
                await websocket.send_json({"type": "pong"})

    tasks = [asyncio.create_task(pump()), asyncio.create_task(listen())]
    try:
        await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for task in tasks:
            task.cancel()
        for task in tasks:
            with contextlib.suppress(BaseException):  # a client gone away, or our own cancellation
                await task
    if sub.reason is not None:
        with contextlib.suppress(WebSocketDisconnect, RuntimeError):  # the client may be gone already
            await websocket.close(code=REVOKED_CLOSE_CODE, reason=sub.reason[:120])
