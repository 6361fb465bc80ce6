"""humans: failed sign-ins per username and per client address (the login back-off, shared by every worker)

Revision ID: 0006_login_failures
Revises: 0005_review_offers
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0006_login_failures"
down_revision = "0005_review_offers"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "login_failures",
        sa.Column("key", sa.String(length=64), nullable=False),
        sa.Column("kind", sa.String(length=8), nullable=False),
        sa.Column("failures", sa.Integer(), nullable=False),
        sa.Column("last_failure_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("key"),
    )
    op.create_index("ix_login_failures_last_failure_at", "login_failures", ["last_failure_at"])


def downgrade() -> None:
    op.drop_index("ix_login_failures_last_failure_at", table_name="login_failures")
    op.drop_table("login_failures")
