"""Model-registry tables: every trained version with its lineage, and the promote/rollback history."""

from __future__ import annotations

import datetime as dt
from typing import Any

from sqlalchemy import DateTime, ForeignKey, Integer, String, Text
from sqlalchemy.orm import Mapped, mapped_column

from lookloop.domain import utcnow
from lookloop.store.tables import Base, new_id


class ModelVersionRow(Base):
    """One trained identify model: artifacts, held-out metrics and the exact labels it saw."""

    __tablename__ = "model_versions"

    id: Mapped[str] = mapped_column(String(64), primary_key=True)
    created_at: Mapped[dt.datetime] = mapped_column(default=utcnow, index=True)
    parent_id: Mapped[str | None] = mapped_column(String(64), nullable=True)
    kind: Mapped[str] = mapped_column(String(16), default="head")  # head | finetune
    embedder_version: Mapped[str] = mapped_column(String(128), default="")
    artifact_dir: Mapped[str] = mapped_column(Text)
    metrics: Mapped[dict[str, Any]] = mapped_column(default=dict)
    label_count: Mapped[int] = mapped_column(Integer, default=0)
    label_hash: Mapped[str] = mapped_column(String(64), default="")
    # The keys of every training label (label ids, catalogue images), so lineage survives file loss.
    label_keys: Mapped[list[Any]] = mapped_column(default=list)
    status: Mapped[str] = mapped_column(String(16), default="candidate")  # candidate | rejected
    notes: Mapped[str] = mapped_column(Text, default="")


class ModelEventRow(Base):
    """Promotions and rollbacks; the newest event names the serving version."""

    __tablename__ = "model_events"

    id: Mapped[str] = mapped_column(String(32), primary_key=True, default=new_id)
    created_at: Mapped[dt.datetime] = mapped_column(default=utcnow, index=True)
    seq: Mapped[int] = mapped_column(Integer, index=True)
    version_id: Mapped[str] = mapped_column(ForeignKey("model_versions.id", ondelete="CASCADE"))
    action: Mapped[str] = mapped_column(String(16))  # promote | rollback
    previous_id: Mapped[str | None] = mapped_column(String(64), nullable=True)
    reason: Mapped[str] = mapped_column(Text, default="")


class ModelMarkRow(Base):
    """A model version trained on data that has since been deleted: do not promote it again."""

    __tablename__ = "model_marks"

    id: Mapped[str] = mapped_column(String(32), primary_key=True, default=new_id)
    model_version: Mapped[str] = mapped_column(String(256), index=True)
    reason: Mapped[str] = mapped_column(Text, default="")
    wearer_id: Mapped[str] = mapped_column(String(64), default="")
    n_items: Mapped[int] = mapped_column(Integer, default=0)
    created_at: Mapped[dt.datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
