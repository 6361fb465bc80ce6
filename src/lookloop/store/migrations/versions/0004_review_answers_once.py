"""humans: every reviewer's answer counts once (a unique index)

Revision ID: 0004_review_answers_once
Revises: 0003_review_reason
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0004_review_answers_once"
down_revision = "0003_review_reason"
branch_labels = None
depends_on = None

_ANSWERED = sa.text("action <> 'skip'")


def upgrade() -> None:
    # Before this revision two answers of one reviewer on one item could both be stored (a race): keep the
    # first of each, so the unique index can be built.
    answers = sa.table("review_answers", sa.column("id", sa.String), sa.column("item_id", sa.String),
                       sa.column("account_id", sa.String), sa.column("action", sa.String),
                       sa.column("created_at", sa.DateTime(timezone=True)))
    bind = op.get_bind()
    seen: set[tuple[str, str]] = set()
    extra: list[str] = []
    rows = bind.execute(sa.select(answers.c.id, answers.c.item_id, answers.c.account_id)
                        .where(answers.c.action != "skip")
                        .order_by(answers.c.created_at, answers.c.id)).all()
    for answer_id, item_id, account_id in rows:
        if (item_id, account_id) in seen:
            extra.append(answer_id)
        seen.add((item_id, account_id))
    for i in range(0, len(extra), 500):
        bind.execute(sa.delete(answers).where(answers.c.id.in_(extra[i:i + 500])))
    op.create_index("uq_review_answers_once", "review_answers", ["item_id", "account_id"], unique=True,
                    sqlite_where=_ANSWERED, postgresql_where=_ANSWERED)


def downgrade() -> None:
    op.drop_index("uq_review_answers_once", table_name="review_answers")
