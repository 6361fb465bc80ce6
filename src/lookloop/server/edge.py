"""What every request meets first: a cap on its body and the security headers on its response.

**Body caps.** Every route takes at most ``Settings.max_json_bytes`` of body unless it is an upload marked with
``upload_cap`` (the image and audio limits plus a small allowance for the form around them). A declared
``Content-Length`` over the cap is refused with 413 before a byte is read; a body without one (chunked) is
counted as it arrives and reading stops at the cap. An upload route that forgot its cap gets the small one
(uploads refused, never unbounded); ``tests/test_edge.py`` checks every multipart operation of the schema.

**Security headers.** Every HTTP response gets a Content-Security-Policy without inline script or style
(the pages load their scripts and styles from ``/pages/``; the API docs pages, whose Swagger UI and ReDoc set
styles from script, also allow inline styles, never inline script), ``frame-ancestors 'none'`` and
``X-Frame-Options: DENY``,
``X-Content-Type-Options: nosniff``, ``Referrer-Policy: no-referrer`` and a Permissions-Policy that lets only
our own pages use the camera and microphone.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from typing import Any, TypeVar

from fastapi import FastAPI
from starlette.exceptions import HTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from lookloop.config import Settings

F = TypeVar("F", bound=Callable[..., Any])
FORM_ALLOWANCE = 64 * 1024  # multipart boundaries, part headers and the small text fields beside the files
_CAP_ATTR = "__lookloop_body_cap__"

CSP = "; ".join((
    "default-src 'self'",
    "script-src 'self'",
    "style-src 'self'",
    "img-src 'self' blob: data:",
    "media-src 'self' blob:",
    "connect-src 'self'",  # CSP3: 'self' covers ws:/wss: to this host; the host's own ws(s) is added per request
    "font-src 'self'",
    "object-src 'none'",
    "base-uri 'none'",
    "form-action 'self'",
    "frame-ancestors 'none'",
))
HEADERS = {
    "x-frame-options": "DENY",
    "x-content-type-options": "nosniff",
    "referrer-policy": "no-referrer",
    "permissions-policy": "camera=(self), microphone=(self), geolocation=(), payment=(), usb=()",
    "cross-origin-opener-policy": "same-origin",
}
_HOST = re.compile(r"^[A-Za-z0-9.\-]+(:\d{1,5})?$|^\[[0-9A-Fa-f:.]+\](:\d{1,5})?$")


# -- body caps ------------------------------------------------------------------------------------------------


def upload_cap(cap: Callable[[Settings], int]) -> Callable[[F], F]:
    """Marks an upload endpoint: its whole body may be ``cap(settings)`` bytes (put it under ``@router.post``)."""

    def mark(endpoint: F) -> F:
        setattr(endpoint, _CAP_ATTR, cap)
        return endpoint

    return mark


class BodyTooLarge(HTTPException):
    """Raised from ``receive`` once a body outgrows its cap; FastAPI answers it as a 413."""

    def __init__(self, limit: int) -> None:
        super().__init__(status_code=413, detail=f"the request body is over the limit of {limit} bytes")


def _content_length(scope: Scope) -> int | None | bool:
    """The declared length; None when absent; False when it is not a number."""
    for name, value in scope.get("headers", ()):
        if name == b"content-length":
            text = value.decode("latin-1").strip()
            return int(text) if text.isdigit() else False
    return None


async def _answer(send: Send, status: int, detail: str) -> None:
    body = json.dumps({"detail": detail}).encode()
    await send({"type": "http.response.start", "status": status,
                "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode()),
                            (b"connection", b"close")]})
    await send({"type": "http.response.body", "body": body})


class BodyLimit:
    """ASGI middleware: the body cap of the route a request went to.

    The route is known once the router ran, which is before its handler reads a byte: the cap is looked up
    (``scope["endpoint"]``) on the first read. A declared length over it is refused before reading anything;
    a chunked body is counted and reading stops at the cap. A handler that never reads the body still answers
    413 when the declared length is over the cap (its own answer is dropped), like Starlette's body limit.
    """

    def __init__(self, app: ASGIApp, *, settings: Settings) -> None:
        self.app = app
        self.settings = settings

    def cap(self, scope: Scope) -> int:
        cap = getattr(scope.get("endpoint"), _CAP_ATTR, None)
        return int(cap(self.settings)) if cap is not None else self.settings.max_json_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        declared = _content_length(scope)
        if declared is False:
            await _answer(send, 400, "the Content-Length header is not a number")
            return
        seen = 0

        async def capped() -> Message:
            nonlocal seen
            limit = self.cap(scope)
            if isinstance(declared, int) and declared > limit:
                raise BodyTooLarge(limit)  # refused before a byte is read
            message = await receive()
            if message["type"] == "http.request":
                seen += len(message.get("body", b""))
                if seen > limit:
                    raise BodyTooLarge(limit)  # and nothing more is read
            return message

        started = refused = False

        async def watched(message: Message) -> None:
            nonlocal started, refused
            if refused:
                return
            if message["type"] == "http.response.start":
                started = True
                limit = self.cap(scope)
                if isinstance(declared, int) and declared > limit and message.get("status") != 413:
                    refused = True  # the handler never read the body it was sent: refuse it all the same
                    await _answer(send, 413, f"the request body is over the limit of {limit} bytes")
                    return
            await send(message)

        try:
            await self.app(scope, capped, watched)
        except BodyTooLarge as exc:  # raised where no handler turned it into a response
            if started:
                raise
            await _answer(send, 413, str(exc.detail))


# -- security headers ---------------------------------------------------------------------------------------


def security_headers(scope: Scope) -> list[tuple[bytes, bytes]]:
    """The headers every response carries; the CSP names this host's WebSocket origins too."""
    csp = CSP
    host = next((v.decode("latin-1") for k, v in scope.get("headers", ()) if k == b"host"), "")
    if _HOST.match(host):
        csp = csp.replace("connect-src 'self'", f"connect-src 'self' ws://{host} wss://{host}")
    pairs = [(b"content-security-policy", csp.encode())]
    pairs += [(k.encode(), v.encode()) for k, v in HEADERS.items()]
    return pairs


class SecurityHeaders:
    """ASGI middleware: adds the security headers to every HTTP response (a route's own CSP is kept)."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        extra = security_headers(scope)

        async def with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                headers = list(message.get("headers", ()))
                present = {k.lower() for k, _ in headers}
                headers += [(k, v) for k, v in extra if k not in present]
                message = {**message, "headers": headers}
            await send(message)

        await self.app(scope, receive, with_headers)


def install_body_caps(app: FastAPI, settings: Settings) -> None:
    """Install before any ``@app.middleware("http")``: those run the app in a task group that would wrap the
    cap's 413 into an exception group FastAPI answers with 400; innermost, it reaches FastAPI as it is."""
    app.add_middleware(BodyLimit, settings=settings)


def install_headers(app: FastAPI) -> None:
    """Install last: outermost, so every response gets the headers (the 413 of a refused body too)."""
    app.add_middleware(SecurityHeaders)
