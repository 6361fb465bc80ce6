"""loop: audit asks (random spot checks) and the policy score each ask was decided on

Revision ID: 0102_loop_audit
Revises: 0101_loop_registry
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0102_loop_audit"
down_revision = "0101_loop_registry"
branch_labels = None
depends_on = None


def upgrade() -> None:
    # Nullable: asks stored before this revision are simply not audit asks.
    with op.batch_alter_table("asks", schema=None) as batch_op:
        batch_op.add_column(sa.Column("audit", sa.Boolean(), nullable=True))
        batch_op.add_column(sa.Column("policy_score", sa.Float(), nullable=True))
        batch_op.add_column(sa.Column("score_kind", sa.String(length=16), nullable=True))
        batch_op.add_column(sa.Column("predicted_label", sa.Text(), nullable=True))
        batch_op.add_column(sa.Column("audit_correct", sa.Boolean(), nullable=True))
        batch_op.create_index("ix_asks_audit_version", ["audit", "model_version"], unique=False)


def downgrade() -> None:
    with op.batch_alter_table("asks", schema=None) as batch_op:
        batch_op.drop_index("ix_asks_audit_version")
        batch_op.drop_column("audit_correct")
        batch_op.drop_column("predicted_label")
        batch_op.drop_column("score_kind")
        batch_op.drop_column("policy_score")
        batch_op.drop_column("audit")
