"""Database tables (SQLAlchemy 2). API schemas live apart, in ``lookloop.server.schemas``."""

from __future__ import annotations

import datetime as dt
import uuid
from typing import Any

from sqlalchemy import (
    JSON,
    Boolean,
    ColumnElement,
    DateTime,
    Float,
    ForeignKey,
    Index,
    Integer,
    LargeBinary,
    String,
    Text,
    or_,
)
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

from lookloop.domain import utcnow


def new_id() -> str:
    return uuid.uuid4().hex


class Base(DeclarativeBase):
    type_annotation_map = {dict[str, Any]: JSON, list[Any]: JSON, dt.datetime: DateTime(timezone=True)}


class AskRow(Base):
    """One episode: the wearer's ask, the answer given, and how it ended."""

    __tablename__ = "asks"

    id: Mapped[str] = mapped_column(String(32), primary_key=True, default=new_id)
    device_id: Mapped[str] = mapped_column(String(64), index=True)
    question: Mapped[str] = mapped_column(Text)
    frame_sha: Mapped[str | None] = mapped_column(String(64), nullable=True, index=True)
    frame_media_type: Mapped[str | None] = mapped_column(String(32), nullable=True)
    frame_width: Mapped[int | None] = mapped_column(Integer, nullable=True)
    frame_height: Mapped[int | None] = mapped_column(Integer, nullable=True)
    created_at: Mapped[dt.datetime] = mapped_column(default=utcnow, index=True)
    skill: Mapped[str] = mapped_column(String(32), default="")
    answer_text: Mapped[str] = mapped_column(Text, default="")
    confidence: Mapped[float] = mapped_column(Float, default=0.0)
    decision: Mapped[str] = mapped_column(String(16), default="answer")
    policy: Mapped[str] = mapped_column(String(64), default="")
    model_version: Mapped[str] = mapped_column(String(128), default="")
    result: Mapped[dict[str, Any]] = mapped_column(default=dict)
    candidates: Mapped[list[Any]] = mapped_column(default=list)
    outcome: Mapped[str] = mapped_column(String(24), default="answered", index=True)
    final_answer: Mapped[str | None] = mapped_column(Text, nullable=True)
    latency_ms: Mapped[float] = mapped_column(Float, default=0.0)
    answered_at: Mapped[dt.datetime | None] = mapped_column(nullable=True)
    # Live calibration (lookloop.loop.calibration): a random share of identify asks are audit asks, labelled
    # whatever the decision; their (policy score, right or wrong) recalibrate the serving policy.
    audit: Mapped[bool | None] = mapped_column(Boolean, nullable=True)
    policy_score: Mapped[float | None] = mapped_column(Float, nullable=True)  # what the policy thresholded
    score_kind: Mapped[str | None] = mapped_column(String(16), nullable=True)  # "margin" | "top"
    predicted_label: Mapped[str | None] = mapped_column(Text, nullable=True)
    audit_correct: Mapped[bool | None] = mapped_column(Boolean, nullable=True)  # set once an audit ask is labelled


# What a label does (``LabelRow.status``). None (labels stored before trust was recorded): as "applied".
LABEL_APPLIED = "applied"  # teaches the shared model (the instant memory now, the head on the next train)
LABEL_PERSONAL = "personal"  # the wearer's own correction: their answers only, until a review confirms it
LABEL_PENDING = "pending"  # a reviewer not trusted on their own yet: waits for a second, agreeing reviewer
LABEL_PROPOSAL = "proposal"  # names no catalogue item: waits for an operator to add the item (or reject it)
LABEL_REJECTED = "rejected"  # overruled by a trusted review, or a proposal an operator rejected
LABEL_STATUSES = (LABEL_APPLIED, LABEL_PERSONAL, LABEL_PENDING, LABEL_PROPOSAL, LABEL_REJECTED)


class LabelRow(Base):
    """An answer for an ask or an imported photo, with where it came from and how far it is trusted."""

    __tablename__ = "labels"

    id: Mapped[str] = mapped_column(String(32), primary_key=True, default=new_id)
    ask_id: Mapped[str | None] = mapped_column(ForeignKey("asks.id", ondelete="CASCADE"), nullable=True, index=True)
    frame_sha: Mapped[str | None] = mapped_column(String(64), nullable=True, index=True)
    # Imported data sets stay where they are: the label points at the file instead of copying it.
    image_path: Mapped[str | None] = mapped_column(Text, nullable=True)
    device_id: Mapped[str | None] = mapped_column(String(64), nullable=True, index=True)
    skill: Mapped[str] = mapped_column(String(32), default="identify")
    value: Mapped[str] = mapped_column(Text)
    source: Mapped[str] = mapped_column(String(24))  # one of lookloop.domain.LABEL_SOURCES
    author: Mapped[str] = mapped_column(String(64), default="")
    created_at: Mapped[dt.datetime] = mapped_column(default=utcnow, index=True)
    # How far the author is trusted (0..1): operators, gold, imports and consensus 1; a reviewer their measured
    # gold accuracy; a wearer 0 (their label is theirs alone until reviewed). None: stored before trust was kept.
    trust: Mapped[float | None] = mapped_column(Float, nullable=True)
    status: Mapped[str | None] = mapped_column(String(12), nullable=True, index=True)  # LABEL_STATUSES
    wearer_id: Mapped[str | None] = mapped_column(String(64), nullable=True, index=True)  # a wearer's own label
    # The frame's embedding (float32) as the worker that took the label had it: the other workers learn the label
    # from it at once instead of redacting and embedding the frame again. Only valid for ``embedder_version``.
    embedding: Mapped[bytes | None] = mapped_column(LargeBinary, nullable=True, deferred=True)
    embedder_version: Mapped[str | None] = mapped_column(String(64), nullable=True)


class CatalogItemRow(Base):
    __tablename__ = "catalog_items"

    id: Mapped[str] = mapped_column(String(128), primary_key=True)
    name: Mapped[str] = mapped_column(String(256), index=True)
    coarse_class: Mapped[str] = mapped_column(String(128), default="")
    description: Mapped[str] = mapped_column(Text, default="")
    price: Mapped[float | None] = mapped_column(Float, nullable=True)
    currency: Mapped[str] = mapped_column(String(8), default="SEK")
    barcode: Mapped[str | None] = mapped_column(String(64), nullable=True, index=True)
    images: Mapped[list[Any]] = mapped_column(default=list)
    family: Mapped[str] = mapped_column(String(64), default="")
    created_at: Mapped[dt.datetime] = mapped_column(default=utcnow)
    updated_at: Mapped[dt.datetime] = mapped_column(default=utcnow, onupdate=utcnow)


Index("ix_asks_device_created", AskRow.device_id, AskRow.created_at)
Index("ix_asks_audit_version", AskRow.audit, AskRow.model_version)


class IdempotencyRow(Base):
    """A keyed write already applied (``lookloop.store.idempotency``): whose key, which kind of write, the
    fingerprint of the request and what it produced. A retry of the same request gets the first result back."""

    __tablename__ = "idempotency_keys"

    caller: Mapped[str] = mapped_column(String(80), primary_key=True)  # "device:<id>" | "account:<id>"
    kind: Mapped[str] = mapped_column(String(16), primary_key=True)  # ask | voice | label | feedback
    key: Mapped[str] = mapped_column(String(160), primary_key=True)
    fingerprint: Mapped[str | None] = mapped_column(String(64), nullable=True)  # None: stored before fingerprints
    result_id: Mapped[str] = mapped_column(String(64), default="", index=True)
    created_at: Mapped[dt.datetime] = mapped_column(DateTime(timezone=True), default=utcnow)


class RateBucketRow(Base):
    """A rate-limit token bucket every worker shares (``lookloop.store.limits``): tokens left, the database
    clock's epoch seconds when they were counted, and whether the last request was let through.
    On Postgres the table is UNLOGGED: buckets are throw-away state, not worth a disk write per request."""

    __tablename__ = "rate_buckets"

    key: Mapped[str] = mapped_column(String(200), primary_key=True)  # "<kind>:<who>"
    tokens: Mapped[float] = mapped_column(Float)
    stamp: Mapped[float] = mapped_column(Float, index=True)
    allowed: Mapped[bool] = mapped_column(Boolean, default=True)


def teaches_shared_model() -> ColumnElement[bool]:
    """The labels the shared model learns from: applied ones (and those stored before trust was kept)."""
    return or_(LabelRow.status.is_(None), LabelRow.status == LABEL_APPLIED)
