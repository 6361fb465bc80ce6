"""Rate limits per device, per account and per client address (token buckets).

With Postgres the buckets live in the database (``lookloop.store.limits``), so N workers allow the rate once,
not N times; one SQLite process keeps them in memory.

The client address is the direct peer unless it is one of ``Settings.trusted_proxies`` (``server/clients.py``):
a spoofed ``X-Forwarded-For`` buys no fresh bucket.

Installed as one HTTP middleware that also audits operators' state-changing requests, because both need
to know who is calling. The limits come from ``Settings.rate_limit_*`` (0 turns one off).
"""

from __future__ import annotations

import math
import threading
import time
from collections.abc import Awaitable, Callable
from typing import Any, Protocol

from fastapi import FastAPI, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import JSONResponse, Response

from lookloop.config import Settings
from lookloop.errors import LookloopError
from lookloop.privacy.audit import WRITE_METHODS, audit_operator_write
from lookloop.server.auth import current_principal
from lookloop.server.clients import client_address
from lookloop.store.db import Database
from lookloop.store.limits import SharedBuckets


class Limiter(Protocol):
    def check(self, kind: str, who: str) -> float: ...


class TokenBucket:
    """``rate`` tokens per second up to ``burst``; one request takes one token."""

    def __init__(self, rate: float, burst: int, now: float) -> None:
        self.rate = rate
        self.burst = float(burst)
        self.tokens = float(burst)
        self.stamp = now

    def take(self, now: float) -> float:
        """0.0 when allowed, else the seconds until a token is free."""
        self.tokens = min(self.burst, self.tokens + max(0.0, now - self.stamp) * self.rate)
        self.stamp = max(now, self.stamp)
        if self.tokens >= 1.0:
            self.tokens -= 1.0
            return 0.0
        return (1.0 - self.tokens) / self.rate


class RateLimiter:
    """Buckets by key (``device:…``, ``account:…``, ``ip:…``), each with its kind's rate."""

    def __init__(self, per_minute: dict[str, float], burst: int, *, max_keys: int = 50_000) -> None:
        self.per_minute = per_minute
        self.burst = burst
        self.max_keys = max_keys
        self._buckets: dict[str, TokenBucket] = {}
        self._lock = threading.Lock()

    @classmethod
    def from_settings(cls, settings: Settings) -> RateLimiter:
        return cls(
            {
                "device": settings.rate_limit_device_per_min,
                "account": settings.rate_limit_account_per_min,
                "ip": settings.rate_limit_anonymous_per_min,
            },
            settings.rate_limit_burst,
        )

    def check(self, kind: str, who: str, now: float | None = None) -> float:
        """0.0 when the request may go ahead, else the seconds to wait (Retry-After)."""
        rate = self.per_minute.get(kind, 0.0)
        if rate <= 0:
            return 0.0
        now = time.monotonic() if now is None else now
        key = f"{kind}:{who}"
        with self._lock:
            bucket = self._buckets.get(key)
            if bucket is None:
                if len(self._buckets) >= self.max_keys:
                    self._evict(now)
                bucket = self._buckets[key] = TokenBucket(rate / 60.0, self.burst, now)
            return bucket.take(now)

    def _evict(self, now: float) -> None:
        # Buckets that have refilled completely carry no state worth keeping.
        full = [k for k, b in self._buckets.items() if b.tokens + (now - b.stamp) * b.rate >= b.burst]
        for k in full:
            del self._buckets[k]
        if len(self._buckets) >= self.max_keys:
            self._buckets.clear()


class SharedRateLimiter:
    """The same limits with the buckets in the database: every worker draws on one budget per client."""

    def __init__(self, per_minute: dict[str, float], burst: int, buckets: SharedBuckets) -> None:
        self.per_minute = per_minute
        self.burst = burst
        self.buckets = buckets

    def check(self, kind: str, who: str) -> float:
        """0.0 when the request may go ahead, else the seconds to wait (Retry-After); one statement."""
        rate = self.per_minute.get(kind, 0.0)
        if rate <= 0:
            return 0.0
        return self.buckets.take(f"{kind}:{who}", rate / 60.0, self.burst)


def rate_limiter(settings: Settings, db: Database) -> Limiter:
    """Shared buckets on Postgres (any number of workers), in-process ones otherwise (one process)."""
    local = RateLimiter.from_settings(settings)
    if db.engine.dialect.name != "postgresql":
        return local
    return SharedRateLimiter(local.per_minute, local.burst, SharedBuckets(db.engine))


def _principal(request: Request) -> Any:
    """The caller (cached on the request), or None; a bad token here is left for the route to reject."""
    if hasattr(request.state, "principal"):
        return request.state.principal
    principal = None
    try:

        principal = current_principal(request)
    except (LookloopError, ImportError):
        principal = None
    request.state.principal = principal
    return principal


def _who(principal: Any, request: Request) -> tuple[str, str]:
    if principal is not None and getattr(principal, "kind", "") == "device" and principal.device_id:
        return "device", str(principal.device_id)
    if principal is not None and getattr(principal, "account_id", None):
        return "account", str(principal.account_id)
    return "ip", client_address(request)


def install(app: FastAPI, settings: Settings) -> Limiter:
    """Adds the rate-limit + operator-audit middleware to ``app``; returns the limiter (tests inspect it)."""

    limiter = rate_limiter(settings, app.state.system.db)
    app.state.rate_limiter = limiter

    def admit(request: Request) -> tuple[Any, float]:
        """Who calls and how long they must wait (in a worker thread: shared buckets are one statement)."""
        principal = _principal(request)
        kind, who = _who(principal, request)
        return principal, limiter.check(kind, who)

    @app.middleware("http")
    async def guard(request: Request, call_next: Callable[[Request], Awaitable[Response]]) -> Response:
        if not request.url.path.startswith("/v1/"):
            return await call_next(request)
        principal, wait = await run_in_threadpool(admit, request)
        if wait > 0:
            return JSONResponse(
                {"detail": f"too many requests; try again in {math.ceil(wait)} s"},
                status_code=429,
                headers={"Retry-After": str(math.ceil(wait))},
            )
        response = await call_next(request)
        if principal is not None and request.method in WRITE_METHODS and principal.role == "operator":
            system = request.app.state.system
            await run_in_threadpool(
                audit_operator_write, system.db, principal, request.method, request.url.path, response.status_code
            )
        return response

    return limiter
