"""Back-off for failed sign-ins, per username and per client address, kept in the database so every worker
shares it.

After ``free`` failures in a row, each further try must wait ``base * 2**(failures - free)`` seconds (capped)
after the last failure; a try that comes sooner is refused without checking the password (and is not counted,
so nobody can stretch another's wait beyond the cap). A success clears both counters; failures older than
``forget_after`` start afresh.
"""

from __future__ import annotations

import datetime as dt
import hashlib
from collections.abc import Callable
from dataclasses import dataclass

from sqlalchemy import case, delete, select, update
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.orm import Session

from lookloop.domain import as_utc, utcnow
from lookloop.humans.tables import LoginFailureRow
from lookloop.store.db import Database

FORGET_AFTER = dt.timedelta(days=1)


@dataclass(frozen=True)
class BackoffPolicy:
    per_account: int = 5
    per_address: int = 20
    base_s: float = 1.0
    max_s: float = 900.0

    def wait_s(self, failures: int, free: int) -> float:
        """How long after the last failure another try must wait."""
        if failures < free:
            return 0.0
        return min(self.max_s, self.base_s * 2.0 ** min(failures - free, 60))


def _key(kind: str, value: str) -> str:
    return hashlib.sha256(f"{kind}:{value}".encode()).hexdigest()


class LoginThrottle:
    """Counts failed sign-ins per username and per client address and says how long the next must wait."""

    def __init__(self, db: Database, policy: BackoffPolicy | None = None, *,
                 clock: Callable[[], dt.datetime] = utcnow) -> None:
        self.db = db
        self.policy = policy or BackoffPolicy()
        self.clock = clock

    def _keys(self, username: str, address: str | None) -> list[tuple[str, str, int]]:
        keys = [("account", _key("account", username), self.policy.per_account)]
        if address:
            keys.append(("address", _key("address", address), self.policy.per_address))
        return keys

    def retry_after(self, username: str, address: str | None) -> float:
        """Seconds until a sign-in as ``username`` from ``address`` may be tried (0: now)."""
        keys = self._keys(username, address)
        now = self.clock()
        with self.db.session() as s:
            rows = {r.key: r for r in s.scalars(select(LoginFailureRow).where(
                LoginFailureRow.key.in_([k for _, k, _ in keys]))).all()}
        wait = 0.0
        for _, key, free in keys:
            row = rows.get(key)
            if row is None:
                continue
            last = as_utc(row.last_failure_at)
            if now - last > FORGET_AFTER:
                continue
            until = last + dt.timedelta(seconds=self.policy.wait_s(row.failures, free))
            wait = max(wait, (until - now).total_seconds())
        return wait

    def failed(self, username: str, address: str | None) -> None:
        """Counts a failure against both the username and the address (atomically: workers share the rows)."""
        now = self.clock()
        with self.db.session() as s:
            for kind, key, _ in self._keys(username, address):
                _bump(s, kind, key, now)
            # Old rows carry nothing worth keeping.
            s.execute(delete(LoginFailureRow).where(LoginFailureRow.last_failure_at < now - FORGET_AFTER))

    def succeeded(self, username: str, address: str | None) -> None:
        with self.db.session() as s:
            s.execute(delete(LoginFailureRow).where(
                LoginFailureRow.key.in_([k for _, k, _ in self._keys(username, address)])))


def _bump(s: Session, kind: str, key: str, now: dt.datetime) -> None:
    """failures + 1 (or 1 when the last failure was forgotten), inserting the row when new, in one statement."""
    row = LoginFailureRow
    counted = case((row.last_failure_at < now - FORGET_AFTER, 1), else_=row.failures + 1)
    dialect = s.get_bind().dialect.name
    if dialect in ("postgresql", "sqlite"):
        insert = postgresql.insert if dialect == "postgresql" else sqlite.insert
        stmt = insert(row).values(key=key, kind=kind, failures=1, last_failure_at=now)
        s.execute(stmt.on_conflict_do_update(index_elements=[row.key],
                                             set_={"failures": counted, "last_failure_at": now}))
        return
    done = s.execute(update(row).where(row.key == key).values(failures=counted, last_failure_at=now))
    if not getattr(done, "rowcount", 0):
        s.add(row(key=key, kind=kind, failures=1, last_failure_at=now))
