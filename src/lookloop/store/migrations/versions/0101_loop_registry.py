"""model registry: versions and promote/rollback events

Revision ID: 0101_loop_registry
Revises: 0001_core
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0101_loop_registry"
down_revision = "0001_core"
branch_labels = ("loop",)
depends_on = None


def upgrade() -> None:
    op.create_table(
        "model_versions",
        sa.Column("id", sa.String(length=64), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("parent_id", sa.String(length=64), nullable=True),
        sa.Column("kind", sa.String(length=16), nullable=False),
        sa.Column("embedder_version", sa.String(length=128), nullable=False),
        sa.Column("artifact_dir", sa.Text(), nullable=False),
        sa.Column("metrics", sa.JSON(), nullable=False),
        sa.Column("label_count", sa.Integer(), nullable=False),
        sa.Column("label_hash", sa.String(length=64), nullable=False),
        sa.Column("label_keys", sa.JSON(), nullable=False),
        sa.Column("status", sa.String(length=16), nullable=False),
        sa.Column("notes", sa.Text(), nullable=False),
        sa.PrimaryKeyConstraint("id"),
    )
    op.create_index("ix_model_versions_created_at", "model_versions", ["created_at"])
    op.create_table(
        "model_events",
        sa.Column("id", sa.String(length=32), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("seq", sa.Integer(), nullable=False),
        sa.Column("version_id", sa.String(length=64), nullable=False),
        sa.Column("action", sa.String(length=16), nullable=False),
        sa.Column("previous_id", sa.String(length=64), nullable=True),
        sa.Column("reason", sa.Text(), nullable=False),
        sa.ForeignKeyConstraint(["version_id"], ["model_versions.id"], ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("id"),
    )
    op.create_index("ix_model_events_created_at", "model_events", ["created_at"])
    op.create_index("ix_model_events_seq", "model_events", ["seq"])


def downgrade() -> None:
    op.drop_index("ix_model_events_seq", table_name="model_events")
    op.drop_index("ix_model_events_created_at", table_name="model_events")
    op.drop_table("model_events")
    op.drop_index("ix_model_versions_created_at", table_name="model_versions")
    op.drop_table("model_versions")
