"""Tables of the memory branch: the wearer's remembered moments and note sessions."""

from __future__ import annotations

import datetime as dt
import secrets

from sqlalchemy import DateTime, Index, LargeBinary, String, Text
from sqlalchemy.orm import Mapped, mapped_column

from lookloop.domain import utcnow
from lookloop.store.tables import Base, new_id


def capability_id() -> str:
    """128 random bits: the id alone grants access to a note session, like an ask id."""
    return secrets.token_hex(16)


class MemoryRow(Base):
    """One remembered moment: what the wearer said, what was in view, and the frame's embedding."""

    __tablename__ = "memories"
    __table_args__ = (Index("ix_memories_device_created", "device_id", "created_at"),)

    id: Mapped[str] = mapped_column(String(32), primary_key=True, default=new_id)
    device_id: Mapped[str] = mapped_column(String(64), index=True)
    created_at: Mapped[dt.datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
    note: Mapped[str] = mapped_column(Text, default="")
    question: Mapped[str] = mapped_column(Text, default="")
    description: Mapped[str] = mapped_column(Text, default="")
    frame_sha: Mapped[str | None] = mapped_column(String(64), nullable=True)
    # float32 bytes: portable across SQLite and Postgres (bytea), and compact
    embedding: Mapped[bytes | None] = mapped_column(LargeBinary, nullable=True)
    embedder_version: Mapped[str] = mapped_column(String(128), default="")


class NoteRow(Base):
    """A note session: a conversation's running transcript and its latest summary."""

    __tablename__ = "note_sessions"

    id: Mapped[str] = mapped_column(String(32), primary_key=True, default=capability_id)
    device_id: Mapped[str] = mapped_column(String(64), index=True)
    title: Mapped[str] = mapped_column(String(200), default="")
    created_at: Mapped[dt.datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
    updated_at: Mapped[dt.datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
    closed_at: Mapped[dt.datetime | None] = mapped_column(DateTime(timezone=True), nullable=True)
    text: Mapped[str] = mapped_column(Text, default="")
    summary: Mapped[str | None] = mapped_column(Text, nullable=True)
    summary_method: Mapped[str] = mapped_column(String(64), default="")
