"""humans: why a review item is in the queue (an escalation, or an audit spot check)

Revision ID: 0003_review_reason
Revises: 0002_humans
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0003_review_reason"
down_revision = "0002_humans"
branch_labels = None
depends_on = None


def upgrade() -> None:
    # Nullable: items queued before this revision were all escalations.
    with op.batch_alter_table("review_items", schema=None) as batch_op:
        batch_op.add_column(sa.Column("reason", sa.String(length=16), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("review_items", schema=None) as batch_op:
        batch_op.drop_column("reason")
