"""The event bus between workers: in process, and over Postgres LISTEN/NOTIFY with a re-query on reconnect."""

from __future__ import annotations

import datetime as dt
import os
import threading
import time
from collections.abc import Iterator
from typing import Any

import pytest
from conftest import reset_postgres
from sqlalchemy import text

from lookloop.store.bus import LocalBus, LocalNetwork, PostgresBus, event_bus
from lookloop.store.db import Database


def _wait(cond: Any, timeout: float = 10.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if cond():
            return True
        time.sleep(0.01)
    return bool(cond())


def test_the_local_bus_reaches_the_other_members_only_and_survives_a_failing_handler() -> None:
    net = LocalNetwork()
    a, b, c = LocalBus(net), LocalBus(net), LocalBus(net)
    got: dict[str, list[dict[str, Any]]] = {"a": [], "b": [], "c": []}
    a.subscribe("ch", got["a"].append)
    b.subscribe("ch", lambda _p: 1 / 0)  # a broken subscriber: the others still hear, the publisher never fails
    b.subscribe("ch", got["b"].append)
    c.subscribe("other", got["c"].append)
    a.publish("ch", {"item": "i1"})
    assert got["a"] == []  # its own event: applied before it was published
    assert [p["item"] for p in got["b"]] == ["i1"]
    assert got["c"] == []
    with pytest.raises(ValueError):
        a.publish("ch", {"blob": "x" * 10_000})  # ids only: a frame or a text does not fit


def test_sqlite_gets_the_in_process_bus(tmp_path: Any) -> None:
    db = Database(f"sqlite:///{tmp_path / 'x.db'}")
    assert isinstance(event_bus(db.engine), LocalBus)
    db.dispose()


@pytest.fixture
def pg() -> Iterator[Database]:
    url = os.environ.get("LOOKLOOP_TEST_POSTGRES_URL")
    if not url:
        pytest.skip("LOOKLOOP_TEST_POSTGRES_URL is not set (CI sets it)")
    reset_postgres(url)
    db = Database(url)
    yield db
    db.dispose()


def _bus(db: Database) -> PostgresBus:
    bus = event_bus(db.engine)
    assert isinstance(bus, PostgresBus)
    return bus


def test_notify_reaches_the_other_process_and_not_the_publisher(pg: Database) -> None:
    a, b = _bus(pg), _bus(pg)
    heard_a: list[dict[str, Any]] = []
    heard_b: list[dict[str, Any]] = []
    a.subscribe("lookloop_test", heard_a.append)
    b.subscribe("lookloop_test", heard_b.append)
    a.start()
    b.start()
    try:
        assert a.wait_connected(10) and b.wait_connected(10)
        for i in range(5):
            a.publish("lookloop_test", {"item": f"i{i}"})
        assert _wait(lambda: len(heard_b) == 5)
        assert [p["item"] for p in heard_b] == [f"i{i}" for i in range(5)]  # in the order published
        time.sleep(0.2)
        assert heard_a == []
    finally:
        a.close()
        b.close()


def test_a_listener_killed_by_the_server_reconnects_and_re_queries_what_it_missed(pg: Database) -> None:
    """The listening connection is ended (as a restart or a network cut would); an event published while it is
    down is not heard, but the re-query after the reconnect finds its row."""
    with pg.engine.begin() as conn:
        conn.execute(text("CREATE TABLE bus_rows (id text PRIMARY KEY, at timestamptz NOT NULL DEFAULT now())"))
    a, b = _bus(pg), _bus(pg)
    heard: list[str] = []
    caught_up = threading.Event()

    def re_query(since: dt.datetime) -> None:
        with pg.engine.begin() as conn:
            rows = conn.execute(text("SELECT id FROM bus_rows WHERE at >= :since ORDER BY at"), {"since": since})
            heard.extend(f"requery:{r[0]}" for r in rows)
        caught_up.set()

    b.subscribe("lookloop_test", lambda p: heard.append(f"event:{p['id']}"))
    b.on_reconnect(re_query)
    a.start()
    b.start()
    try:
        assert b.wait_connected(10)
        pid = b.backend_pid()
        assert pid is not None
        with pg.engine.begin() as conn:
            conn.execute(text("INSERT INTO bus_rows (id) VALUES ('before')"))
        a.publish("lookloop_test", {"id": "before"})
        assert _wait(lambda: "event:before" in heard)
        with pg.engine.begin() as conn:
            assert conn.execute(text("SELECT pg_terminate_backend(:pid)"), {"pid": pid}).scalar()
        assert _wait(lambda: not b.connected.is_set(), 5)
        with pg.engine.begin() as conn:  # the change commits while nobody listens
            conn.execute(text("INSERT INTO bus_rows (id) VALUES ('missed')"))
        a.publish("lookloop_test", {"id": "missed"})
        assert caught_up.wait(15), "no re-query after the reconnect"
        assert b.reconnects == 1 and b.backend_pid() not in (None, pid)
        assert "requery:missed" in heard
        a.publish("lookloop_test", {"id": "after"})  # and it listens again
        assert _wait(lambda: "event:after" in heard)
    finally:
        a.close()
        b.close()
