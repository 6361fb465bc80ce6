"""Events between the processes that share one database: "this row changed, re-read it".

A payload names rows by id and nothing else (never frames, text or labels): a process that receives one re-reads
the rows from the database and acts on what it finds there, so an event can neither carry nor forge content.
A process never receives its own events: it has applied the change already when it publishes.

``LocalBus``: within one process (SQLite, one worker), delivered synchronously to the other members of the same
``LocalNetwork`` (none in a single-process deployment; tests join two systems to one network).
``PostgresBus``: ``NOTIFY`` after the change committed, one dedicated ``LISTEN`` connection per process in a
thread, reconnected with back-off; after every reconnect the ``on_reconnect`` callbacks re-query what may have been
missed while it was down, so nothing is lost.
"""

from __future__ import annotations

import datetime as dt
import json
import logging
import queue
import threading
import uuid
from collections.abc import Callable
from typing import Any, Protocol

from sqlalchemy import Engine, text

log = logging.getLogger("lookloop.bus")

Payload = dict[str, Any]
Handler = Callable[[Payload], None]
# Called after a reconnect with the time from which events may have been missed.
Reconnected = Callable[[dt.datetime], None]

MAX_PAYLOAD = 7000  # bytes: Postgres refuses NOTIFY payloads from 8000
ORIGIN = "_o"  # the payload key naming the publishing process (set by the bus)
CATCH_UP_SLACK = dt.timedelta(seconds=2)  # re-query a little before the last moment the listener was known alive


class EventBus(Protocol):
    """Publish-subscribe between the processes sharing one database."""

    @property
    def origin(self) -> str: ...

    def publish(self, channel: str, payload: Payload) -> None: ...

    def subscribe(self, channel: str, callback: Handler) -> None: ...

    def on_reconnect(self, callback: Reconnected) -> None: ...

    def start(self) -> None: ...

    def close(self) -> None: ...


def _check(payload: Payload) -> str:
    body = json.dumps(payload, separators=(",", ":"), sort_keys=True)
    if len(body.encode()) > MAX_PAYLOAD:
        raise ValueError("an event payload names rows by id: this one is too large")
    return body


def _run(handler: Handler, channel: str, payload: Payload) -> None:
    try:
        handler(payload)
    except Exception:  # one failing subscriber must not stop the others or the publisher
        log.exception("event handler for %s failed", channel)


class _Subscribers:
    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._handlers: dict[str, list[Handler]] = {}
        self._reconnected: list[Reconnected] = []

    def add(self, channel: str, callback: Handler) -> bool:
        """True when ``channel`` is new."""
        with self._lock:
            new = channel not in self._handlers
            self._handlers.setdefault(channel, []).append(callback)
            return new

    def of(self, channel: str) -> list[Handler]:
        with self._lock:
            return list(self._handlers.get(channel, ()))

    def channels(self) -> list[str]:
        with self._lock:
            return sorted(self._handlers)

    def add_reconnect(self, callback: Reconnected) -> None:
        with self._lock:
            self._reconnected.append(callback)

    def reconnected(self) -> list[Reconnected]:
        with self._lock:
            return list(self._reconnected)


class LocalNetwork:
    """The processes a ``LocalBus`` reaches: its members, all in this process."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._members: list[LocalBus] = []

    def join(self, bus: LocalBus) -> None:
        with self._lock:
            self._members.append(bus)

    def leave(self, bus: LocalBus) -> None:
        with self._lock:
            if bus in self._members:
                self._members.remove(bus)

    def others(self, bus: LocalBus) -> list[LocalBus]:
        with self._lock:
            return [m for m in self._members if m is not bus]


class LocalBus:
    """In-process delivery to the other members of one network, synchronously in the publisher's thread."""

    def __init__(self, network: LocalNetwork | None = None) -> None:
        self._origin = uuid.uuid4().hex[:12]
        self.network = network or LocalNetwork()
        self.network.join(self)
        self._subs = _Subscribers()

    @property
    def origin(self) -> str:
        return self._origin

    def publish(self, channel: str, payload: Payload) -> None:
        message = json.loads(_check({**payload, ORIGIN: self._origin}))  # what a process would receive
        for member in self.network.others(self):
            member.deliver(channel, message)

    def deliver(self, channel: str, payload: Payload) -> None:
        for handler in self._subs.of(channel):
            _run(handler, channel, dict(payload))

    def subscribe(self, channel: str, callback: Handler) -> None:
        self._subs.add(channel, callback)

    def on_reconnect(self, callback: Reconnected) -> None:
        self._subs.add_reconnect(callback)  # an in-process bus never loses its connection

    def start(self) -> None:
        return None

    def close(self) -> None:
        self.network.leave(self)


class PostgresBus:
    """``NOTIFY`` to publish (on the application's pool, after the change committed); ``LISTEN`` on one dedicated
    connection read by a thread. Handlers run in one thread per channel, in the order events arrived."""

    def __init__(self, url: str, engine: Engine, *, backoff_max_s: float = 5.0, poll_s: float = 0.5) -> None:
        self._origin = uuid.uuid4().hex[:12]
        self.url = url  # a libpq URL (postgresql://…)
        self._engine = engine.execution_options(isolation_level="AUTOCOMMIT")
        self.backoff_max_s = backoff_max_s
        self.poll_s = poll_s  # how often the listener looks up from waiting (to stop, or to listen to new channels)
        self._subs = _Subscribers()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._lanes: dict[str, queue.Queue[Payload | None]] = {}
        self._lane_threads: list[threading.Thread] = []
        self._lock = threading.Lock()
        self._conn: Any = None  # the listening connection, while open
        self._listening: set[str] = set()
        self.connected = threading.Event()  # set while listening
        self.reconnects = 0

    @property
    def origin(self) -> str:
        return self._origin

    # -- publishing ---------------------------------------------------------------------------------------

    def publish(self, channel: str, payload: Payload) -> None:
        """Sends after the caller's transaction committed (one autocommit statement); never raises: a process
        that misses an event catches up on its next reconnect or poll."""
        body = _check({**payload, ORIGIN: self._origin})
        try:
            with self._engine.connect() as conn:
                conn.execute(text("SELECT pg_notify(:channel, :body)"), {"channel": channel, "body": body})
        except Exception:
            log.warning("could not publish an event on %s", channel, exc_info=True)

    # -- subscribing --------------------------------------------------------------------------------------

    def subscribe(self, channel: str, callback: Handler) -> None:
        if not channel.isidentifier() or channel.lower() != channel:
            raise ValueError(f"channel names are lower-case identifiers: {channel!r}")
        if self._subs.add(channel, callback):
            with self._lock:
                lane: queue.Queue[Payload | None] = queue.Queue()
                self._lanes[channel] = lane
                if self._thread is not None:
                    self._start_lane(channel, lane)

    def on_reconnect(self, callback: Reconnected) -> None:
        self._subs.add_reconnect(callback)

    # -- running ------------------------------------------------------------------------------------------

    def start(self) -> None:
        """Starts listening (idempotent); returns at once, the first connection is made in the thread."""
        with self._lock:
            if self._thread is not None:
                return
            self._stop.clear()
            self._thread = threading.Thread(target=self._listen_forever, name="lookloop-bus", daemon=True)
            self._thread.start()
            for channel, lane in self._lanes.items():
                self._start_lane(channel, lane)

    def _start_lane(self, channel: str, lane: queue.Queue[Payload | None]) -> None:
        t = threading.Thread(target=self._drain, args=(channel, lane), name=f"lookloop-bus-{channel}", daemon=True)
        t.start()
        self._lane_threads.append(t)

    def close(self) -> None:
        with self._lock:
            thread, self._thread = self._thread, None
            lanes = list(self._lanes.values())
            lane_threads, self._lane_threads = self._lane_threads, []
        self._stop.set()
        for lane in lanes:
            lane.put(None)
        if thread is not None:
            thread.join(timeout=5)
        for t in lane_threads:
            t.join(timeout=5)

    def wait_connected(self, timeout: float) -> bool:
        return self.connected.wait(timeout)

    def _drain(self, channel: str, lane: queue.Queue[Payload | None]) -> None:
        while True:
            payload = lane.get()
            if payload is None or self._stop.is_set():
                return
            for handler in self._subs.of(channel):
                _run(handler, channel, dict(payload))

    def _listen_forever(self) -> None:
        import psycopg

        delay = 0.1
        alive_at: dt.datetime | None = None  # the last moment the previous connection was known to listen
        while not self._stop.is_set():
            try:
                with psycopg.connect(self.url, autocommit=True, connect_timeout=5) as conn:
                    self._conn = conn
                    self._listening = set()
                    self._listen_new(conn)
                    self.connected.set()
                    delay = 0.1
                    if alive_at is not None:
                        self.reconnects += 1
                        self._catch_up(alive_at - CATCH_UP_SLACK)
                    while not self._stop.is_set():
                        alive_at = dt.datetime.now(dt.UTC)
                        for note in conn.notifies(timeout=self.poll_s):
                            self._received(note.channel, note.payload)
                        self._listen_new(conn)
            except Exception as exc:
                if self._stop.is_set():
                    break
                log.warning("event listener lost its connection (%s); reconnecting in %.1f s", exc, delay)
            finally:
                self._conn = None
                self.connected.clear()
            if self._stop.wait(delay):
                break
            delay = min(self.backoff_max_s, delay * 2)

    def _listen_new(self, conn: Any) -> None:
        from psycopg import sql

        for channel in self._subs.channels():
            if channel not in self._listening:
                conn.execute(sql.SQL("LISTEN {}").format(sql.Identifier(channel)))
                self._listening.add(channel)

    def backend_pid(self) -> int | None:
        """The listening connection's server process (tests end it to see the bus reconnect)."""
        conn = self._conn
        return int(conn.info.backend_pid) if conn is not None else None

    def _received(self, channel: str, body: str) -> None:
        try:
            payload = json.loads(body)
        except ValueError:
            log.warning("ignored an event on %s that is not JSON", channel)
            return
        if not isinstance(payload, dict) or payload.get(ORIGIN) == self._origin:
            return  # our own: applied before it was published
        lane = self._lanes.get(channel)
        if lane is not None:
            lane.put(payload)

    def _catch_up(self, since: dt.datetime) -> None:
        for callback in self._subs.reconnected():
            try:
                callback(since)
            except Exception:  # the next callback still runs; this one's owner polls as a fallback
                log.exception("re-query after reconnect failed")


def event_bus(engine: Engine) -> EventBus:
    """The bus for a database: ``NOTIFY``/``LISTEN`` on Postgres, in-process otherwise."""
    if engine.dialect.name == "postgresql":
        return PostgresBus(engine.url.set(drivername="postgresql").render_as_string(hide_password=False), engine)
    return LocalBus()
