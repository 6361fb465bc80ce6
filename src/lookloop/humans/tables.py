"""Tables of the human loop: wearers, devices, accounts, sessions, review queue, answers and feedback."""

from __future__ import annotations

import datetime as dt
from typing import Any

from sqlalchemy import Boolean, Float, ForeignKey, Index, Integer, String, Text, text
from sqlalchemy.orm import Mapped, mapped_column

from lookloop.domain import utcnow
from lookloop.store.tables import Base, new_id


class WearerRow(Base):
    __tablename__ = "wearers"

    id: Mapped[str] = mapped_column(String(32), primary_key=True, default=new_id)
    name: Mapped[str] = mapped_column(String(128), unique=True)
    created_at: Mapped[dt.datetime] = mapped_column(default=utcnow)


class DeviceRow(Base):
    """A pair of glasses: its token belongs to a wearer; only the token's sha256 is kept."""

    __tablename__ = "devices"

    id: Mapped[str] = mapped_column(String(64), primary_key=True, default=new_id)
    wearer_id: Mapped[str] = mapped_column(ForeignKey("wearers.id", ondelete="CASCADE"), index=True)
    name: Mapped[str] = mapped_column(String(128), default="")
    token_hash: Mapped[str] = mapped_column(String(64), unique=True)
    created_at: Mapped[dt.datetime] = mapped_column(default=utcnow)
    revoked_at: Mapped[dt.datetime | None] = mapped_column(nullable=True)


class AccountRow(Base):
    """A reviewer or operator who signs in with a password."""

    __tablename__ = "accounts"

    id: Mapped[str] = mapped_column(String(32), primary_key=True, default=new_id)
    username: Mapped[str] = mapped_column(String(64), unique=True)
    password_hash: Mapped[str] = mapped_column(String(256))
    role: Mapped[str] = mapped_column(String(16))
    created_at: Mapped[dt.datetime] = mapped_column(default=utcnow)
    disabled: Mapped[bool] = mapped_column(Boolean, default=False)


class SessionRow(Base):
    __tablename__ = "sessions"

    token_hash: Mapped[str] = mapped_column(String(64), primary_key=True)
    account_id: Mapped[str] = mapped_column(ForeignKey("accounts.id", ondelete="CASCADE"), index=True)
    created_at: Mapped[dt.datetime] = mapped_column(default=utcnow)
    expires_at: Mapped[dt.datetime] = mapped_column()


class LoginFailureRow(Base):
    """Failed sign-ins per username and per client address, shared by every worker: the back-off's memory.

    Keyed by the sha256 of ``kind:value`` so neither mistyped usernames (sometimes passwords) nor addresses
    are kept readable."""

    __tablename__ = "login_failures"

    key: Mapped[str] = mapped_column(String(64), primary_key=True)
    kind: Mapped[str] = mapped_column(String(8))  # "account" | "address"
    failures: Mapped[int] = mapped_column(Integer, default=0)
    last_failure_at: Mapped[dt.datetime] = mapped_column(default=utcnow, index=True)


class ReviewItemRow(Base):
    """One thing for humans to answer: an escalated ask, or a gold item with a known answer."""

    __tablename__ = "review_items"

    id: Mapped[str] = mapped_column(String(32), primary_key=True, default=new_id)
    ask_id: Mapped[str | None] = mapped_column(ForeignKey("asks.id", ondelete="CASCADE"), nullable=True, index=True)
    # "ask" | "gold" | "confirm" (a second opinion on an ask's label before it teaches the shared model)
    kind: Mapped[str] = mapped_column(String(8), default="ask")
    question: Mapped[str] = mapped_column(Text, default="")
    frame_sha: Mapped[str | None] = mapped_column(String(64), nullable=True)
    skill: Mapped[str] = mapped_column(String(32), default="identify")
    ai_answer: Mapped[str] = mapped_column(Text, default="")
    ai_label: Mapped[str] = mapped_column(Text, default="")
    confidence: Mapped[float] = mapped_column(Float, default=0.0)
    candidates: Mapped[list[Any]] = mapped_column(default=list)
    live: Mapped[bool] = mapped_column(Boolean, default=False)
    priority: Mapped[float] = mapped_column(Float, default=0.0)
    # open: waiting for answers; operator: reviewers disagreed, an operator decides; resolved; gold (never closes)
    status: Mapped[str] = mapped_column(String(12), default="open", index=True)
    needed: Mapped[int] = mapped_column(Integer, default=1)
    gold_answer: Mapped[str | None] = mapped_column(Text, nullable=True)
    locked_by: Mapped[str | None] = mapped_column(String(32), nullable=True)
    locked_at: Mapped[dt.datetime | None] = mapped_column(nullable=True)
    locked_until: Mapped[dt.datetime | None] = mapped_column(nullable=True)
    resolved_value: Mapped[str | None] = mapped_column(Text, nullable=True)
    resolved_at: Mapped[dt.datetime | None] = mapped_column(nullable=True)
    created_at: Mapped[dt.datetime] = mapped_column(default=utcnow)
    # "escalated" | "audit" | "confirm"; None: older rows
    reason: Mapped[str | None] = mapped_column(String(16), nullable=True)


class ReviewAnswerRow(Base):
    """A reviewer's action on an item: an answer, a reject (cannot tell) or a skip."""

    __tablename__ = "review_answers"

    id: Mapped[str] = mapped_column(String(32), primary_key=True, default=new_id)
    item_id: Mapped[str] = mapped_column(ForeignKey("review_items.id", ondelete="CASCADE"), index=True)
    account_id: Mapped[str] = mapped_column(String(32), index=True)
    action: Mapped[str] = mapped_column(String(8))  # answer | reject | skip
    value: Mapped[str | None] = mapped_column(Text, nullable=True)
    duration_ms: Mapped[float] = mapped_column(Float, default=0.0)
    gold: Mapped[bool] = mapped_column(Boolean, default=False)
    correct: Mapped[bool | None] = mapped_column(Boolean, nullable=True)  # gold items: matched the known answer
    agreed: Mapped[bool | None] = mapped_column(Boolean, nullable=True)  # consensus items: matched the resolution
    created_at: Mapped[dt.datetime] = mapped_column(default=utcnow, index=True)


class ReviewOfferRow(Base):
    """A gold item handed to a reviewer. Gold items are answered by every reviewer, so no lock records who
    holds one: the offer does, until it expires, the reviewer answers, skips or releases it."""

    __tablename__ = "review_offers"

    item_id: Mapped[str] = mapped_column(ForeignKey("review_items.id", ondelete="CASCADE"), primary_key=True)
    account_id: Mapped[str] = mapped_column(String(32), primary_key=True)
    offered_at: Mapped[dt.datetime] = mapped_column(default=utcnow)
    expires_at: Mapped[dt.datetime] = mapped_column()


class FeedbackRow(Base):
    """The wearer's word on an answer: explicit right/wrong (with a correction) or an implicit re-ask."""

    __tablename__ = "feedback"

    id: Mapped[str] = mapped_column(String(32), primary_key=True, default=new_id)
    ask_id: Mapped[str] = mapped_column(ForeignKey("asks.id", ondelete="CASCADE"), index=True)
    device_id: Mapped[str] = mapped_column(String(64), index=True)
    verdict: Mapped[str] = mapped_column(String(8))
    correction: Mapped[str | None] = mapped_column(Text, nullable=True)
    implicit: Mapped[bool] = mapped_column(Boolean, default=False)
    created_at: Mapped[dt.datetime] = mapped_column(default=utcnow, index=True)


Index("ix_review_items_queue", ReviewItemRow.status, ReviewItemRow.live, ReviewItemRow.priority)
# Every reviewer's answer counts once: one answer (or "cannot tell") per reviewer per item; skips repeat freely.
_ANSWERED = text("action <> 'skip'")
Index("uq_review_answers_once", ReviewAnswerRow.item_id, ReviewAnswerRow.account_id, unique=True,
      sqlite_where=_ANSWERED, postgresql_where=_ANSWERED)
