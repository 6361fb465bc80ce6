"""privacy: consents, redactions, audit log, reveal grants, idempotency keys, model marks

Revision ID: p001_privacy
Revises: 0001_core
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "p001_privacy"
down_revision = "0001_core"
branch_labels = ("privacy",)
depends_on = None


def upgrade() -> None:
    op.create_table(
        "consents",
        sa.Column("wearer_id", sa.String(length=64), nullable=False),
        sa.Column("store_frames", sa.Boolean(), nullable=False),
        sa.Column("keep_originals", sa.Boolean(), nullable=False),
        sa.Column("human_review", sa.Boolean(), nullable=False),
        sa.Column("training_use", sa.Boolean(), nullable=False),
        sa.Column("memory", sa.Boolean(), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("wearer_id"),
    )
    op.create_table(
        "redactions",
        sa.Column("frame_sha", sa.String(length=64), nullable=False),
        sa.Column("stage", sa.String(length=16), nullable=False),
        sa.Column("regions", sa.JSON(), nullable=False),
        sa.Column("model_version", sa.String(length=256), nullable=False),
        sa.Column("wearer_id", sa.String(length=64), nullable=False),
        sa.Column("original_kept", sa.Boolean(), nullable=False),
        sa.Column("original_expires_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("transient", sa.Boolean(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("frame_sha"),
    )
    op.create_index("ix_redactions_wearer_id", "redactions", ["wearer_id"])
    op.create_index("ix_redactions_expiry", "redactions", ["original_kept", "original_expires_at"])
    op.create_table(
        "audit_log",
        sa.Column("id", sa.String(length=32), nullable=False),
        sa.Column("at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("actor", sa.String(length=128), nullable=False),
        sa.Column("role", sa.String(length=24), nullable=False),
        sa.Column("action", sa.String(length=64), nullable=False),
        sa.Column("target", sa.String(length=256), nullable=False),
        sa.Column("detail", sa.JSON(), nullable=False),
        sa.PrimaryKeyConstraint("id"),
    )
    op.create_index("ix_audit_log_at", "audit_log", ["at"])
    op.create_index("ix_audit_log_action", "audit_log", ["action"])
    op.create_table(
        "reveal_grants",
        sa.Column("account_id", sa.String(length=64), nullable=False),
        sa.Column("granted_by", sa.String(length=128), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("account_id"),
    )
    op.create_table(
        "idempotency_keys",
        sa.Column("key", sa.String(length=200), nullable=False),
        sa.Column("kind", sa.String(length=32), nullable=False),
        sa.Column("result_id", sa.String(length=64), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("key"),
    )
    op.create_table(
        "model_marks",
        sa.Column("id", sa.String(length=32), nullable=False),
        sa.Column("model_version", sa.String(length=256), nullable=False),
        sa.Column("reason", sa.Text(), nullable=False),
        sa.Column("wearer_id", sa.String(length=64), nullable=False),
        sa.Column("n_items", sa.Integer(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("id"),
    )
    op.create_index("ix_model_marks_model_version", "model_marks", ["model_version"])


def downgrade() -> None:
    op.drop_table("model_marks")
    op.drop_table("idempotency_keys")
    op.drop_table("reveal_grants")
    op.drop_index("ix_audit_log_action", table_name="audit_log")
    op.drop_index("ix_audit_log_at", table_name="audit_log")
    op.drop_table("audit_log")
    op.drop_index("ix_redactions_expiry", table_name="redactions")
    op.drop_index("ix_redactions_wearer_id", table_name="redactions")
    op.drop_table("redactions")
    op.drop_table("consents")
