"""The audit log: who revealed, deleted, purged or changed what, and when. Append-only from the app."""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from typing import Any

from sqlalchemy import select

from lookloop.privacy.tables import AuditRow
from lookloop.store.db import Database

# Methods that change state: an operator's request with one of these is always audited.
WRITE_METHODS = frozenset({"POST", "PUT", "PATCH", "DELETE"})


@dataclass(frozen=True)
class AuditEntry:
    id: str
    at: dt.datetime
    actor: str
    role: str
    action: str
    target: str
    detail: dict[str, Any]


def record(db: Database, *, actor: str, role: str, action: str, target: str = "", **detail: Any) -> str:
    """Appends one entry and returns its id (committed before the caller goes on)."""
    row = AuditRow(actor=actor[:128], role=role[:24], action=action[:64], target=target[:256], detail=detail)
    with db.session() as s:
        s.add(row)
    return row.id


def entries(
    db: Database, *, action: str | None = None, actor: str | None = None, limit: int = 100
) -> list[AuditEntry]:
    """Newest first."""
    with db.session() as s:
        stmt = select(AuditRow).order_by(AuditRow.at.desc()).limit(max(1, min(limit, 1000)))
        if action:
            stmt = stmt.where(AuditRow.action == action)
        if actor:
            stmt = stmt.where(AuditRow.actor == actor)
        return [
            AuditEntry(r.id, r.at, r.actor, r.role, r.action, r.target, dict(r.detail or {}))
            for r in s.scalars(stmt).all()
        ]


def actor_of(principal: Any) -> tuple[str, str]:
    """(actor, role) for a principal from ``lookloop.server.auth`` (or None: anonymous)."""
    if principal is None:
        return "anonymous", "anonymous"
    role = str(getattr(principal, "role", "") or "")
    account = getattr(principal, "account_id", None)
    device = getattr(principal, "device_id", None)
    name = getattr(principal, "name", None)
    if account:
        return (f"account:{account}" + (f"({name})" if name else "")), role
    if device:
        return f"device:{device}", role
    return "unknown", role


def audit_operator_write(db: Database, principal: Any, method: str, path: str, status: int) -> str | None:
    """Records an operator's successful state-changing request; anything else is left alone."""
    if principal is None or getattr(principal, "role", None) != "operator":
        return None
    if method.upper() not in WRITE_METHODS or status >= 400:
        return None
    actor, role = actor_of(principal)
    return record(db, actor=actor, role=role, action=f"http.{method.upper()}", target=path, status=status)
