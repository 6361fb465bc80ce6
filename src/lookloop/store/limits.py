"""Token buckets kept in the database, so every worker draws on one budget per client.

One statement per request: an UPSERT that refills the bucket by the time passed (on the database's clock, so
workers on several machines agree), takes a token when there is one, and returns what is left.
"""

from __future__ import annotations

import logging
import threading
import time

from sqlalchemy import Engine, Table, case, delete, func
from sqlalchemy.dialects import postgresql

from lookloop.store.tables import RateBucketRow

log = logging.getLogger("lookloop.limits")
_BUCKETS: Table = RateBucketRow.__table__  # type: ignore[assignment]

SWEEP_EVERY_S = 300.0  # how often a process deletes buckets that have refilled (they carry no state)


class SharedBuckets:
    """Token buckets by key in the ``rate_buckets`` table (Postgres)."""

    def __init__(self, engine: Engine) -> None:
        if engine.dialect.name != "postgresql":
            raise ValueError("shared buckets need Postgres; one SQLite process keeps its buckets in memory")
        self._engine = engine.execution_options(isolation_level="AUTOCOMMIT")  # one round trip, no BEGIN/COMMIT
        self._swept = time.monotonic()
        self._sweep_lock = threading.Lock()
        self.longest_refill_s = 0.0

    def take(self, key: str, rate_per_s: float, burst: int) -> float:
        """0.0 when a token was taken, else the seconds until one is free. A database error lets the request
        through (the request itself will meet the same database)."""
        t = _BUCKETS
        now = func.extract("epoch", func.clock_timestamp())
        ins = postgresql.insert(t).values(key=key, tokens=float(burst) - 1.0, stamp=now, allowed=True)
        refill = func.least(float(burst),
                            t.c.tokens + func.greatest(0.0, ins.excluded.stamp - t.c.stamp) * rate_per_s)
        stmt = ins.on_conflict_do_update(
            index_elements=[t.c.key],
            set_={"tokens": case((refill >= 1.0, refill - 1.0), else_=refill),
                  "stamp": func.greatest(ins.excluded.stamp, t.c.stamp), "allowed": refill >= 1.0},
        ).returning(t.c.tokens, t.c.allowed)
        self.longest_refill_s = max(self.longest_refill_s, burst / rate_per_s)
        try:
            with self._engine.connect() as conn:
                tokens, allowed = conn.execute(stmt).one()
        except Exception:
            log.warning("rate-limit bucket unavailable; letting the request through", exc_info=True)
            return 0.0
        self._maybe_sweep()
        if allowed:
            return 0.0
        return max(0.0, (1.0 - float(tokens)) / rate_per_s)

    def _maybe_sweep(self) -> None:
        if time.monotonic() - self._swept < SWEEP_EVERY_S or not self._sweep_lock.acquire(blocking=False):
            return
        try:
            self._swept = time.monotonic()
            t = _BUCKETS
            cutoff = func.extract("epoch", func.clock_timestamp()) - self.longest_refill_s
            with self._engine.connect() as conn:
                conn.execute(delete(t).where(t.c.stamp < cutoff))
        except Exception:
            log.warning("could not sweep refilled rate-limit buckets", exc_info=True)
        finally:
            self._sweep_lock.release()
