"""Authentication: who is calling, from bearer tokens for devices (``dev_…``) and signed-in accounts (``ses_…``).

Use ``Depends(current_principal)`` where anonymous callers are allowed (it returns None for them). What a
caller may do is decided in ``server/policies.py`` (``Depends(require("operator"))`` and ``Access``).
WebSockets carry the token as ``?token=…`` because browsers cannot set headers on them.
"""

from __future__ import annotations

from fastapi import Request, Security, WebSocket
from fastapi.concurrency import run_in_threadpool
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer

from lookloop.errors import Unauthorized
from lookloop.humans.accounts import Principal
from lookloop.system import Lookloop

__all__ = ["Principal", "bearer_token", "current_principal", "principal_for_token", "websocket_principal",
           "websocket_token"]


def bearer_token(request: Request) -> str | None:
    header = request.headers.get("authorization")
    if not header:
        return None
    scheme, _, token = header.partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        raise Unauthorized("the Authorization header must read 'Bearer <token>'")
    return token.strip()


def principal_for_token(system: Lookloop, token: str) -> Principal:
    return system.humans.accounts.principal(token)


# Declares the scheme in the OpenAPI document (the Authorize button of /docs); the header is read below.
BEARER = HTTPBearer(
    auto_error=False, scheme_name="token",
    description="A device token (dev_…, from `lookloop devices add`) or a session token (ses_…, from "
                "POST /v1/auth/login).",
)


async def current_principal(
    request: Request, declared: HTTPAuthorizationCredentials | None = Security(BEARER)  # noqa: B008
) -> Principal | None:
    """The caller, or None when no token was sent; a bad token is a 401, never a silent anonymous.

    Async, so that a request without a token is told apart without a thread; the token's lookup (a database
    read) runs in one, once per request: a caller the rate limiter already looked up is reused.
    """
    token = bearer_token(request)
    if token is None:
        return None
    known: Principal | None = getattr(request.state, "principal", None)
    if known is not None:
        return known
    system: Lookloop = request.app.state.system
    return await run_in_threadpool(principal_for_token, system, token)


def websocket_token(websocket: WebSocket) -> str:
    """A socket's ``?token=`` (or Authorization header); Unauthorized without one."""
    token = websocket.query_params.get("token")
    if not token:
        header = websocket.headers.get("authorization", "")
        token = header.partition(" ")[2].strip() or None
    if not token:
        raise Unauthorized("connect with ?token=<token>")
    return token


def websocket_principal(websocket: WebSocket) -> Principal:
    """The principal of a socket's token; Unauthorized without a good one."""
    system: Lookloop = websocket.app.state.system
    return principal_for_token(system, websocket_token(websocket))
