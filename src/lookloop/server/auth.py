"""Authentication dependencies: bearer tokens for devices (``dev_…``) and signed-in accounts (``ses_…``).

Use ``Depends(current_principal)`` where anonymous callers are allowed (it returns None for them) and
``Depends(require("operator"))`` where a role is needed; an operator passes every reviewer check.
WebSockets carry the token as ``?token=…`` because browsers cannot set headers on them.
"""

from __future__ import annotations

from collections.abc import Callable

from fastapi import Request, WebSocket
from sqlalchemy import select

from lookloop.errors import Forbidden, NotFound, Unauthorized
from lookloop.humans.accounts import Principal
from lookloop.humans.tables import ReviewItemRow
from lookloop.system import Lookloop

__all__ = ["Principal", "current_principal", "require", "bearer_token", "principal_for_token", "websocket_principal"]


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


def current_principal(request: Request) -> Principal | None:
    """The caller, or None when no token was sent; a bad token is a 401, never a silent anonymous."""
    token = bearer_token(request)
    if token is None:
        return None
    system: Lookloop = request.app.state.system
    return principal_for_token(system, token)


def require(*roles: str) -> Callable[[Request], Principal]:
    """A dependency that admits only callers holding one of ``roles``."""
    allowed = roles or ("wearer", "reviewer", "operator")

    def dependency(request: Request) -> Principal:
        principal = current_principal(request)
        if principal is None:
            raise Unauthorized("sign in first: send 'Authorization: Bearer <token>'")
        if not principal.allows(*allowed):
            raise Forbidden(f"this needs the role {' or '.join(allowed)}; you are {principal.role}")
        return principal

    dependency.__name__ = f"require_{'_'.join(allowed)}"
    return dependency


def websocket_principal(websocket: WebSocket, *roles: str) -> Principal:
    """The principal of a socket's ``?token=`` (or Authorization header); raises Unauthorized/Forbidden."""
    token = websocket.query_params.get("token")
    if not token:
        header = websocket.headers.get("authorization", "")
        token = header.partition(" ")[2].strip() or None
    if not token:
        raise Unauthorized("connect with ?token=<token>")
    system: Lookloop = websocket.app.state.system
    principal = principal_for_token(system, token)
    if roles and not principal.allows(*roles):
        raise Forbidden(f"this stream needs the role {' or '.join(roles)}")
    return principal


def ask_device_id(system: Lookloop, principal: Principal | None, requested: str | None) -> str:
    """The device an ask is recorded under: the token's device, an operator's choice, or 'anonymous'."""
    if principal is None:
        if not system.settings.allow_anonymous_asks:
            raise Unauthorized("asks need a device token: send 'Authorization: Bearer dev_…'")
        return "anonymous"
    if principal.kind == "device":
        assert principal.device_id is not None
        if requested not in (None, "", "anonymous", principal.device_id):
            raise Forbidden("a device asks only as itself")
        return principal.device_id
    if principal.allows("operator"):
        return requested or "anonymous"
    raise Forbidden("reviewers do not ask; use a device token")


def _in_review(system: Lookloop, ask_id: str | None) -> bool:
    if ask_id is None:
        return False
    with system.db.session() as s:
        row = s.scalars(
            select(ReviewItemRow.id).where(
                ReviewItemRow.ask_id == ask_id, ReviewItemRow.status.in_(("open", "operator"))
            )
        ).first()
    return row is not None


def check_ask_access(
    system: Lookloop, principal: Principal | None, device_id: str, ask_id: str | None = None
) -> None:
    """Who may read an ask: anyone holding an anonymous ask's id, its wearer's devices, operators, and
    reviewers while the ask waits in the review queue."""
    if device_id == "anonymous":
        return
    if principal is None:
        raise Unauthorized("sign in to read this ask")
    if principal.kind == "account" and principal.allows("operator"):
        return
    if principal.kind == "account" and principal.allows("reviewer") and _in_review(system, ask_id):
        return  # reviewers see only what the queue gives them (and frames only redacted)
    if principal.device_id == device_id:
        return
    if principal.wearer_id and device_id in system.humans.accounts.devices_of_wearer(principal.wearer_id):
        return
    # Not 403: a stranger learns nothing about whether the id exists.

    raise NotFound("no such ask")
