"""A durable outbox on the glasses: asks and feedback made offline wait here until the server returns.

SQLite in WAL mode with ``synchronous=FULL``: an item is on disk before ``put`` returns, so a crash or a
flat battery loses nothing. Each item carries the idempotency key it was created with; it is resent
with that key until the server acknowledges it, so the server applies it exactly once.
"""

from __future__ import annotations

import json
import sqlite3
import threading
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

_SCHEMA = """
CREATE TABLE IF NOT EXISTS outbox (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    key TEXT NOT NULL UNIQUE,
    kind TEXT NOT NULL,
    payload TEXT NOT NULL,
    image BLOB,
    audio BLOB,
    created_at REAL NOT NULL,
    attempts INTEGER NOT NULL DEFAULT 0,
    last_error TEXT
);
CREATE TABLE IF NOT EXISTS sent (
    key TEXT PRIMARY KEY,
    kind TEXT NOT NULL,
    ask_id TEXT,
    result TEXT,
    sent_at REAL NOT NULL
);
CREATE TABLE IF NOT EXISTS failed (
    key TEXT PRIMARY KEY,
    kind TEXT NOT NULL,
    payload TEXT NOT NULL,
    error TEXT NOT NULL,
    failed_at REAL NOT NULL
);
"""


def new_key() -> str:
    """A fresh idempotency key (uuid4 hex)."""
    return uuid.uuid4().hex


@dataclass
class QueuedItem:
    """One write waiting to be sent: ``kind`` is ``ask`` or ``feedback``."""

    key: str
    kind: str
    payload: dict[str, Any]
    image: bytes | None = None
    audio: bytes | None = None
    created_at: float = field(default_factory=time.time)
    attempts: int = 0
    last_error: str | None = None


class OfflineQueue:
    """FIFO of ``QueuedItem`` in ``<directory>/outbox.sqlite3``, safe to share between threads."""

    def __init__(self, directory: str | Path) -> None:
        self.directory = Path(directory)
        self.directory.mkdir(parents=True, exist_ok=True)
        self.path = self.directory / "outbox.sqlite3"
        self._lock = threading.RLock()
        self._conn = sqlite3.connect(self.path, check_same_thread=False, isolation_level=None)
        self._conn.execute("PRAGMA journal_mode=WAL")
        self._conn.execute("PRAGMA synchronous=FULL")
        self._conn.executescript(_SCHEMA)

    @contextmanager
    def _tx(self) -> Iterator[sqlite3.Connection]:
        with self._lock:
            self._conn.execute("BEGIN IMMEDIATE")
            try:
                yield self._conn
            except BaseException:
                self._conn.execute("ROLLBACK")
                raise
            self._conn.execute("COMMIT")

    def put(self, item: QueuedItem) -> None:
        """Store an item durably; putting a key twice keeps the first."""
        with self._tx() as c:
            c.execute(
                "INSERT OR IGNORE INTO outbox (key, kind, payload, image, audio, created_at) VALUES (?,?,?,?,?,?)",
                (item.key, item.kind, json.dumps(item.payload), item.image, item.audio, item.created_at),
            )

    def pending(self) -> list[QueuedItem]:
        """Items not yet acknowledged, oldest first."""
        with self._lock:
            rows = self._conn.execute(
                "SELECT key, kind, payload, image, audio, created_at, attempts, last_error FROM outbox ORDER BY seq"
            ).fetchall()
        return [
            QueuedItem(key=r[0], kind=r[1], payload=json.loads(r[2]), image=r[3], audio=r[4], created_at=r[5],
                       attempts=r[6], last_error=r[7])
            for r in rows
        ]

    def __len__(self) -> int:
        with self._lock:
            return int(self._conn.execute("SELECT COUNT(*) FROM outbox").fetchone()[0])

    def note_attempt(self, key: str, error: str) -> None:
        with self._tx() as c:
            c.execute("UPDATE outbox SET attempts = attempts + 1, last_error = ? WHERE key = ?", (error[:500], key))

    def mark_sent(self, key: str, ask_id: str | None, result: dict[str, Any] | None) -> None:
        """The server acknowledged ``key``: move it from the outbox to the sent log in one transaction."""
        with self._tx() as c:
            row = c.execute("SELECT kind FROM outbox WHERE key = ?", (key,)).fetchone()
            kind = row[0] if row else "ask"
            c.execute("DELETE FROM outbox WHERE key = ?", (key,))
            c.execute(
                "INSERT OR REPLACE INTO sent (key, kind, ask_id, result, sent_at) VALUES (?,?,?,?,?)",
                (key, kind, ask_id, json.dumps(result) if result is not None else None, time.time()),
            )

    def mark_failed(self, key: str, error: str) -> None:
        """The server refused ``key`` for good (a 4xx): keep it aside instead of retrying forever."""
        with self._tx() as c:
            row = c.execute("SELECT kind, payload FROM outbox WHERE key = ?", (key,)).fetchone()
            if row is None:
                return
            c.execute("DELETE FROM outbox WHERE key = ?", (key,))
            c.execute(
                "INSERT OR REPLACE INTO failed (key, kind, payload, error, failed_at) VALUES (?,?,?,?,?)",
                (key, row[0], row[1], error[:500], time.time()),
            )

    def sent_ask_id(self, key: str) -> str | None:
        """The server's ask id for an ask queued under ``key``, once it was sent."""
        with self._lock:
            row = self._conn.execute("SELECT ask_id FROM sent WHERE key = ?", (key,)).fetchone()
        return str(row[0]) if row and row[0] else None

    def sent_result(self, key: str) -> dict[str, Any] | None:
        with self._lock:
            row = self._conn.execute("SELECT result FROM sent WHERE key = ?", (key,)).fetchone()
        return json.loads(row[0]) if row and row[0] else None

    def failures(self) -> list[tuple[str, str, str]]:
        """(key, kind, error) of items the server refused."""
        with self._lock:
            rows = self._conn.execute("SELECT key, kind, error FROM failed ORDER BY failed_at").fetchall()
        return [(str(r[0]), str(r[1]), str(r[2])) for r in rows]

    def prune_sent(self, older_than_s: float = 7 * 24 * 3600) -> int:
        """Forget acknowledgements older than a week (they only map queued keys to ask ids)."""
        with self._tx() as c:
            cur = c.execute("DELETE FROM sent WHERE sent_at < ?", (time.time() - older_than_s,))
            return int(cur.rowcount)

    def close(self) -> None:
        with self._lock:
            self._conn.close()
