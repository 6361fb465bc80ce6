"""Rate limits per device, per account and per client address (token buckets).

With Postgres the buckets live in the database (``lookloop.store.limits``), so N workers allow the rate once,
not N times; one SQLite process keeps them in memory.

The client address is the direct peer unless it is one of ``Settings.trusted_proxies`` (``server/clients.py``):
a spoofed ``X-Forwarded-For`` buys no fresh bucket.

Installed as one ASGI middleware that also audits operators' state-changing requests, because both need
to know who is calling. The limits come from ``Settings.rate_limit_*`` (0 turns one off).
"""

from __future__ import annotations

import math
import threading
import time
from typing import Any, Protocol

from fastapi import FastAPI, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import JSONResponse
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from lookloop.config import Settings
from lookloop.errors import LookloopError
from lookloop.privacy.audit import WRITE_METHODS, audit_operator_write
from lookloop.server.auth import bearer_token, principal_for_token
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
        token = bearer_token(request)
        principal = principal_for_token(request.app.state.system, token) if token else None
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


class Guard:
    """ASGI middleware: the rate limit of the caller, then the audit of an operator's write once it is answered.

    A plain ASGI middleware (not ``@app.middleware``): no extra task or response copy per request. A caller
    without a token, limited in this process's memory (one SQLite process), needs no thread at all.
    """

    def __init__(self, app: ASGIApp, *, limiter: Limiter) -> None:
        self.app = app
        self.limiter = limiter

    def admit(self, request: Request) -> tuple[Any, float]:
        """Who calls and how long they must wait (in a worker thread: shared buckets are one statement)."""
        principal = _principal(request)
        kind, who = _who(principal, request)
        return principal, self.limiter.check(kind, who)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or not scope["path"].startswith("/v1/"):
            await self.app(scope, receive, send)
            return
        request = Request(scope)
        if "authorization" not in request.headers and isinstance(self.limiter, RateLimiter):
            request.state.principal = None  # no token, buckets in memory: nothing that blocks
            principal, wait = self.admit(request)
        else:
            principal, wait = await run_in_threadpool(self.admit, request)
        if wait > 0:
            refused = JSONResponse(
                {"detail": f"too many requests; try again in {math.ceil(wait)} s"},
                status_code=429,
                headers={"Retry-After": str(math.ceil(wait))},
            )
            await refused(scope, receive, send)
            return
        if principal is None or request.method not in WRITE_METHODS or principal.role != "operator":
            await self.app(scope, receive, send)
            return
        status = 500

        async def watched(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = int(message["status"])
            await send(message)

        try:
            await self.app(scope, receive, watched)
        finally:
            system = request.app.state.system
            await run_in_threadpool(audit_operator_write, system.db, principal, request.method, request.url.path,
                                    status)


def install(app: FastAPI, settings: Settings) -> Limiter:
    """Adds the rate-limit + operator-audit middleware to ``app``; returns the limiter (tests inspect it)."""

    limiter = rate_limiter(settings, app.state.system.db)
    app.state.rate_limiter = limiter
    app.add_middleware(Guard, limiter=limiter)
    return limiter
