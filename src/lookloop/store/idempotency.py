"""Idempotency receipts: a write retried with its ``Idempotency-Key`` is applied once, for whoever sent it.

One mechanism for every keyed write (asks, voice asks, labels, feedback). A receipt is keyed by

* the caller: ``device:<id>`` or ``account:<id>``. A key is never shared between callers, so another device
  (or a caller with no token) that sends a wearer's key learns nothing and changes nothing. Callers without
  a token have no identity to scope a key by: their keys are not honoured at all (``scoped`` gives None);
* the kind of write (``ask``, ``voice``, ``label``, ``feedback``): one key on two routes is two writes;
* the key itself,

and stores the fingerprint of the request (a sha256 of its canonical form) and the id of what it produced.
The same caller, kind, key and fingerprint get the stored result again; the same key with another request
is refused (422) rather than silently answered with the first result.

The receipt is added in the same transaction as the write (``Request.claim``), so the write and its receipt
commit together or not at all (a crash in between leaves neither, and the retry applies the write). Two
concurrent requests with one key: within a process the second waits for the first and gets its result; across
processes the second commit fails on the receipt's primary key, and ``once`` answers with the first result.
"""

from __future__ import annotations

import hashlib
import json
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import TypeVar

from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from lookloop.errors import BadInput
from lookloop.store.db import Database
from lookloop.store.tables import IdempotencyRow

T = TypeVar("T")

MAX_KEY_CHARS = 160  # the header allows 128; derived keys add a short prefix
KINDS = ("ask", "voice", "label", "feedback")


@dataclass(frozen=True)
class Key:
    """A client's ``Idempotency-Key`` and the caller it belongs to (``device:<id>`` or ``account:<id>``)."""

    caller: str
    value: str

    def __post_init__(self) -> None:
        if not self.caller or self.caller.startswith("anonymous"):
            raise ValueError("an idempotency key needs a caller with an identity")
        if not self.value or len(self.value) > MAX_KEY_CHARS:
            raise BadInput(f"the Idempotency-Key must be 1 to {MAX_KEY_CHARS} characters")

    def derived(self, prefix: str) -> Key:
        """The key of a write made on behalf of this one (e.g. the label a feedback correction adds)."""
        return Key(self.caller, f"{prefix}:{self.value}"[:MAX_KEY_CHARS])


def scoped(caller: str | None, value: str | None) -> Key | None:
    """The key scoped to its caller; None without a key or without an identity (nothing is replayed then)."""
    value = (value or "").strip()
    if not value or not caller:
        return None
    return Key(caller, value)


def device_caller(device_id: str) -> str | None:
    """The caller name of a device; None for anonymous asks."""
    return None if not device_id or device_id == "anonymous" else f"device:{device_id}"


def account_caller(account_id: str) -> str:
    return f"account:{account_id}"


def fingerprint(**parts: object) -> str:
    """sha256 of the canonical form of a request (sorted keys, compact JSON)."""
    canonical = json.dumps(parts, sort_keys=True, separators=(",", ":"), ensure_ascii=False, default=str)
    return hashlib.sha256(canonical.encode()).hexdigest()


def content_sha(data: bytes | None) -> str | None:
    """The sha256 of an uploaded body (an image, an audio clip) for a fingerprint; None when absent."""
    return hashlib.sha256(data).hexdigest() if data is not None else None


@dataclass(frozen=True)
class Request:
    """One keyed write: what kind, whose key (None: not keyed) and the fingerprint of the request."""

    kind: str
    key: Key | None
    fingerprint: str

    def __post_init__(self) -> None:
        if self.kind not in KINDS:
            raise ValueError(f"unknown kind of write {self.kind!r}")

    def claim(self, session: Session, result_id: str) -> None:
        """Adds the receipt in the caller's transaction, so the write and its receipt commit together."""
        if self.key is None:
            return
        session.add(IdempotencyRow(caller=self.key.caller, kind=self.kind, key=self.key.value,
                                   fingerprint=self.fingerprint, result_id=result_id))

    def replayed(self, db: Database) -> str | None:
        """The result id of this write when it was applied already; None when it is new.

        ``BadInput`` (422) when the caller used the key for a different request.
        """
        if self.key is None:
            return None
        with db.session() as s:
            row = s.get(IdempotencyRow, (self.key.caller, self.kind, self.key.value))
            if row is None:
                return None
            stored_fp, result_id = row.fingerprint, row.result_id
        if stored_fp is not None and stored_fp != self.fingerprint:  # None: a receipt from before fingerprints
            raise BadInput(
                f"this Idempotency-Key was already used for a different {self.kind} request; "
                "send a new key with a new request (a retry must repeat the request exactly)"
            )
        return result_id


def once(db: Database, request: Request, apply: Callable[[], T], replay: Callable[[str], T]) -> T:
    """Applies a keyed write once: ``apply`` makes the write and calls ``request.claim`` in its transaction;
    ``replay`` loads what an earlier application produced (from its result id)."""
    if request.key is None:
        return apply()
    with _guard(db, request):
        done = request.replayed(db)
        if done is not None:
            return replay(done)
        try:
            return apply()
        except IntegrityError:
            # Another process applied the same key between our look and our commit: answer with its result.
            done = request.replayed(db)
            if done is None:
                raise
            return replay(done)


# In-process guard: concurrent requests with one key wait for each other instead of all doing the work.
class _Slot:
    __slots__ = ("lock", "users")

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.users = 0


_slots: dict[tuple[str, str, str, str], _Slot] = {}
_slots_lock = threading.Lock()


@contextmanager
def _guard(db: Database, request: Request) -> Iterator[None]:
    assert request.key is not None
    ident = (db.url, request.kind, request.key.caller, request.key.value)
    with _slots_lock:
        slot = _slots.setdefault(ident, _Slot())
        slot.users += 1
    try:
        with slot.lock:
            yield
    finally:
        with _slots_lock:
            slot.users -= 1
            if slot.users == 0:
                _slots.pop(ident, None)
