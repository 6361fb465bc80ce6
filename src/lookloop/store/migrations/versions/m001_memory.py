"""memory: remembered moments and note sessions

Revision ID: m001_memory
Revises: 0001_core
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "m001_memory"
down_revision = "0001_core"
branch_labels = ("memory",)
depends_on = None


def upgrade() -> None:
    op.create_table(
        "memories",
        sa.Column("id", sa.String(length=32), nullable=False),
        sa.Column("device_id", sa.String(length=64), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("note", sa.Text(), nullable=False),
        sa.Column("question", sa.Text(), nullable=False),
        sa.Column("description", sa.Text(), nullable=False),
        sa.Column("frame_sha", sa.String(length=64), nullable=True),
        sa.Column("embedding", sa.LargeBinary(), nullable=True),
        sa.Column("embedder_version", sa.String(length=128), nullable=False),
        sa.PrimaryKeyConstraint("id"),
    )
    op.create_index("ix_memories_device_id", "memories", ["device_id"])
    op.create_index("ix_memories_device_created", "memories", ["device_id", "created_at"])
    op.create_table(
        "note_sessions",
        sa.Column("id", sa.String(length=32), nullable=False),
        sa.Column("device_id", sa.String(length=64), nullable=False),
        sa.Column("title", sa.String(length=200), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("closed_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("text", sa.Text(), nullable=False),
        sa.Column("summary", sa.Text(), nullable=True),
        sa.Column("summary_method", sa.String(length=64), nullable=False),
        sa.PrimaryKeyConstraint("id"),
    )
    op.create_index("ix_note_sessions_device_id", "note_sessions", ["device_id"])


def downgrade() -> None:
    op.drop_index("ix_note_sessions_device_id", table_name="note_sessions")
    op.drop_table("note_sessions")
    op.drop_index("ix_memories_device_created", table_name="memories")
    op.drop_index("ix_memories_device_id", table_name="memories")
    op.drop_table("memories")
