"""labels: the frame's embedding as the worker that took the label had it, so other workers learn it without
redacting and embedding the frame again

Revision ID: 0008_label_embedding
Revises: 0007_label_trust
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0008_label_embedding"
down_revision = "0007_label_trust"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("labels") as batch:
        batch.add_column(sa.Column("embedding", sa.LargeBinary(), nullable=True))
        batch.add_column(sa.Column("embedder_version", sa.String(length=64), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("labels") as batch:
        batch.drop_column("embedder_version")
        batch.drop_column("embedding")
