"""labels: provenance and trust (how far the author is trusted, what the label does, whose own label it is)

Revision ID: 0007_label_trust
Revises: 0006_login_failures
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0007_label_trust"
down_revision = "0006_login_failures"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("labels") as batch:
        batch.add_column(sa.Column("trust", sa.Float(), nullable=True))
        batch.add_column(sa.Column("status", sa.String(length=12), nullable=True))
        batch.add_column(sa.Column("wearer_id", sa.String(length=64), nullable=True))
    op.create_index("ix_labels_status", "labels", ["status"])
    op.create_index("ix_labels_wearer_id", "labels", ["wearer_id"])


def downgrade() -> None:
    op.drop_index("ix_labels_wearer_id", table_name="labels")
    op.drop_index("ix_labels_status", table_name="labels")
    with op.batch_alter_table("labels") as batch:
        batch.drop_column("wearer_id")
        batch.drop_column("status")
        batch.drop_column("trust")
