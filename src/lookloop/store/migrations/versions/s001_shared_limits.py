"""shared limits: rate-limit token buckets every worker sees

Revision ID: s001_shared_limits
Revises: 0001_core
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "s001_shared_limits"
down_revision = "0001_core"
branch_labels = ("limits",)
depends_on = None


def upgrade() -> None:
    # UNLOGGED on Postgres: a bucket is worth no WAL write per request, and losing them in a crash only
    # refills everyone's budget.
    op.create_table(
        "rate_buckets",
        sa.Column("key", sa.String(length=200), nullable=False),
        sa.Column("tokens", sa.Float(), nullable=False),
        sa.Column("stamp", sa.Float(), nullable=False),
        sa.Column("allowed", sa.Boolean(), nullable=False),
        sa.PrimaryKeyConstraint("key"),
        prefixes=["UNLOGGED"] if op.get_bind().dialect.name == "postgresql" else [],
    )
    op.create_index("ix_rate_buckets_stamp", "rate_buckets", ["stamp"])


def downgrade() -> None:
    op.drop_index("ix_rate_buckets_stamp", table_name="rate_buckets")
    op.drop_table("rate_buckets")
