"""Idempotency receipts for writes other than asks (labels, feedback): a retried write is applied once."""

from __future__ import annotations

from sqlalchemy.orm import Session

from lookloop.store.db import Database
from lookloop.store.tables import IdempotencyRow


def receipt_key(kind: str, key: str) -> str:
    return f"{kind}:{key}"[:200]


def seen(db: Database, kind: str, key: str) -> str | None:
    """The result id of a write already applied under this key, or None."""
    with db.session() as s:
        row = s.get(IdempotencyRow, receipt_key(kind, key))
        return row.result_id if row else None


def claim(session: Session, kind: str, key: str, result_id: str) -> None:
    """Adds the receipt in the caller's transaction, so the write and its receipt commit together.

    Two concurrent requests with one key: the second commit fails on the primary key (IntegrityError);
    the caller then answers with the first result.
    """
    session.add(IdempotencyRow(key=receipt_key(kind, key), kind=kind, result_id=result_id))
