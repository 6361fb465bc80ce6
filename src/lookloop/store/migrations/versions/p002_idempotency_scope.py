"""privacy: idempotency receipts scoped by caller and kind of write, with the request's fingerprint

Revision ID: p002_idempotency_scope
Revises: p001_privacy
Depends on: 0002_humans (feedback receipts are moved to the device that gave the feedback)

Asks kept their key in ``asks.idempotency_key`` (unique across everyone); labels and feedback kept receipts
keyed by ``<kind>:<key>``. Both move to one table keyed by (caller, kind, key):

* ask keys become receipts of the device that asked (anonymous asks' keys are dropped: a key without a caller
  is not honoured any more); their fingerprint is unknown (NULL), so a resend of such an ask replays it;
* feedback receipts become receipts of the device that gave the feedback;
* label receipts are dropped: who sent them was not recorded (a label resent after the upgrade is stored again).

``asks.idempotency_key`` is emptied. On Postgres the column is dropped; on SQLite it stays (always NULL):
SQLite drops a UNIQUE column only by rebuilding the table, and rebuilding ``asks`` with foreign keys on would
cascade-delete every label, review item and feedback row that points at it.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "p002_idempotency_scope"
down_revision = "p001_privacy"
branch_labels = None
depends_on = "0002_humans"


def _receipts() -> sa.TableClause:
    return sa.table(
        "idempotency_keys", sa.column("caller", sa.String), sa.column("kind", sa.String), sa.column("key", sa.String),
        sa.column("fingerprint", sa.String), sa.column("result_id", sa.String),
        sa.column("created_at", sa.DateTime(timezone=True)),
    )


def upgrade() -> None:
    bind = op.get_bind()
    old = sa.table("idempotency_keys", sa.column("key", sa.String), sa.column("kind", sa.String),
                   sa.column("result_id", sa.String), sa.column("created_at", sa.DateTime(timezone=True)))
    feedback = sa.table("feedback", sa.column("id", sa.String), sa.column("device_id", sa.String))
    moved = [
        {"caller": f"device:{device}", "kind": "feedback", "key": str(key).removeprefix("feedback:")[:160],
         "fingerprint": None, "result_id": result_id, "created_at": at}
        for key, result_id, at, device in bind.execute(
            sa.select(old.c.key, old.c.result_id, old.c.created_at, feedback.c.device_id)
            .join(feedback, feedback.c.id == old.c.result_id)
            .where(old.c.kind == "feedback")
        ).all()
        if device and device != "anonymous"
    ]
    op.drop_table("idempotency_keys")
    op.create_table(
        "idempotency_keys",
        sa.Column("caller", sa.String(length=80), nullable=False),
        sa.Column("kind", sa.String(length=16), nullable=False),
        sa.Column("key", sa.String(length=160), nullable=False),
        sa.Column("fingerprint", sa.String(length=64), nullable=True),
        sa.Column("result_id", sa.String(length=64), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("caller", "kind", "key"),
    )
    op.create_index("ix_idempotency_keys_result_id", "idempotency_keys", ["result_id"])
    receipts = _receipts()
    if moved:
        op.bulk_insert(receipts, moved)
    asks = sa.table("asks", sa.column("id", sa.String), sa.column("device_id", sa.String),
                    sa.column("idempotency_key", sa.String), sa.column("created_at", sa.DateTime(timezone=True)))
    keyed = (asks.c.idempotency_key.is_not(None)) & (asks.c.device_id != "anonymous")
    bind.execute(receipts.insert().from_select(
        ["caller", "kind", "key", "fingerprint", "result_id", "created_at"],
        sa.select(sa.literal("device:", sa.String) + asks.c.device_id, sa.literal("ask", sa.String),
                  asks.c.idempotency_key, sa.null(), asks.c.id, asks.c.created_at).where(keyed),
    ))
    if bind.dialect.name == "sqlite":
        bind.execute(sa.update(asks).where(asks.c.idempotency_key.is_not(None)).values(idempotency_key=None))
    else:
        op.drop_column("asks", "idempotency_key")


def downgrade() -> None:
    # The receipts cannot go back to global keys without clashes: retries after a downgrade are applied again.
    bind = op.get_bind()
    if bind.dialect.name != "sqlite":
        op.add_column("asks", sa.Column("idempotency_key", sa.String(length=128), nullable=True))
        op.create_unique_constraint("asks_idempotency_key_key", "asks", ["idempotency_key"])
    op.drop_index("ix_idempotency_keys_result_id", table_name="idempotency_keys")
    op.drop_table("idempotency_keys")
    op.create_table(
        "idempotency_keys",
        sa.Column("key", sa.String(length=200), nullable=False),
        sa.Column("kind", sa.String(length=32), nullable=False),
        sa.Column("result_id", sa.String(length=64), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("key"),
    )
