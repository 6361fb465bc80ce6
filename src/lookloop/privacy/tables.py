"""Privacy tables: consent, redaction records, the audit log, reveal grants."""

from __future__ import annotations

import datetime as dt
from typing import Any

from sqlalchemy import Boolean, DateTime, Index, String
from sqlalchemy.orm import Mapped, mapped_column

from lookloop.domain import utcnow
from lookloop.store.tables import Base, new_id


class ConsentRow(Base):
    """One wearer's choices. A wearer with no row has the documented defaults (``Consent()``)."""

    __tablename__ = "consents"

    wearer_id: Mapped[str] = mapped_column(String(64), primary_key=True)
    store_frames: Mapped[bool] = mapped_column(Boolean, default=True)
    keep_originals: Mapped[bool] = mapped_column(Boolean, default=False)
    human_review: Mapped[bool] = mapped_column(Boolean, default=True)
    training_use: Mapped[bool] = mapped_column(Boolean, default=True)
    memory: Mapped[bool] = mapped_column(Boolean, default=True)
    updated_at: Mapped[dt.datetime] = mapped_column(DateTime(timezone=True), default=utcnow, onupdate=utcnow)


class RedactionRow(Base):
    """What was redacted in a stored frame, by which model version, and where its sealed original is."""

    __tablename__ = "redactions"

    frame_sha: Mapped[str] = mapped_column(String(64), primary_key=True)
    # "faces": the fast pass only (text pending, no human may see it yet); "full": faces + personal text.
    stage: Mapped[str] = mapped_column(String(16), default="faces")
    regions: Mapped[list[Any]] = mapped_column(default=list)
    model_version: Mapped[str] = mapped_column(String(256), default="")
    wearer_id: Mapped[str] = mapped_column(String(64), default="", index=True)
    original_kept: Mapped[bool] = mapped_column(Boolean, default=False)
    original_expires_at: Mapped[dt.datetime | None] = mapped_column(DateTime(timezone=True), nullable=True)
    # Frames of wearers who do not let frames be stored live only until a human has answered.
    transient: Mapped[bool] = mapped_column(Boolean, default=False)
    created_at: Mapped[dt.datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
    updated_at: Mapped[dt.datetime] = mapped_column(DateTime(timezone=True), default=utcnow, onupdate=utcnow)


class AuditRow(Base):
    """An append-only record of sensitive actions: reveals, deletions, purges, operators' writes."""

    __tablename__ = "audit_log"

    id: Mapped[str] = mapped_column(String(32), primary_key=True, default=new_id)
    at: Mapped[dt.datetime] = mapped_column(DateTime(timezone=True), default=utcnow, index=True)
    actor: Mapped[str] = mapped_column(String(128), default="")
    role: Mapped[str] = mapped_column(String(24), default="")
    action: Mapped[str] = mapped_column(String(64), index=True)
    target: Mapped[str] = mapped_column(String(256), default="")
    detail: Mapped[dict[str, Any]] = mapped_column(default=dict)


class RevealGrantRow(Base):
    """Accounts allowed to see unredacted originals (operators always are)."""

    __tablename__ = "reveal_grants"

    account_id: Mapped[str] = mapped_column(String(64), primary_key=True)
    granted_by: Mapped[str] = mapped_column(String(128), default="")
    created_at: Mapped[dt.datetime] = mapped_column(DateTime(timezone=True), default=utcnow)


Index("ix_redactions_expiry", RedactionRow.original_kept, RedactionRow.original_expires_at)
