"""humans: gold items offered to reviewers (who holds one, until when)

Revision ID: 0005_review_offers
Revises: 0004_review_answers_once
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0005_review_offers"
down_revision = "0004_review_answers_once"
branch_labels = None
depends_on = None


def upgrade() -> None:
    # Gold items are answered by every reviewer and locked by none: an offer records who holds one.
    op.create_table(
        "review_offers",
        sa.Column("item_id", sa.String(length=32), nullable=False),
        sa.Column("account_id", sa.String(length=32), nullable=False),
        sa.Column("offered_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("expires_at", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(["item_id"], ["review_items.id"], ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("item_id", "account_id"),
    )


def downgrade() -> None:
    op.drop_table("review_offers")
