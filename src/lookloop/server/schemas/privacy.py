"""The wearer's consent and delete-my-data, the audit log, redactions and purges."""

from __future__ import annotations

import datetime as dt
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from lookloop.domain import Consent
from lookloop.privacy.audit import AuditEntry
from lookloop.privacy.deletion import DeletionReport
from lookloop.privacy.storage import PurgeReport, RedactionInfo


class ConsentOut(BaseModel):
    store_frames: bool = Field(description="Keep the redacted frame with the episode.")
    keep_originals: bool = Field(description="Keep the unredacted frame, encrypted, for the retention period.")
    human_review: bool = Field(description="Unsure answers may go to human helpers.")
    training_use: bool = Field(description="Labelled episodes may teach the model and appear in exports.")
    memory: bool = Field(description="The assistant may remember things for the wearer.")

    @classmethod
    def of(cls, consent: Consent) -> ConsentOut:
        return cls(**consent.as_dict())


class ConsentIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    store_frames: bool | None = None
    keep_originals: bool | None = None
    human_review: bool | None = None
    training_use: bool | None = None
    memory: bool | None = None


class DeletionOut(BaseModel):
    wearer_id: str
    asks: int
    labels: int
    frames: int
    embeddings: int
    memory_entries: int
    models_marked: list[str]

    @classmethod
    def of(cls, report: DeletionReport) -> DeletionOut:
        return cls(**{k: v for k, v in report.as_dict().items() if k in cls.model_fields})


class AuditOut(BaseModel):
    id: str
    at: dt.datetime
    actor: str
    role: str
    action: str
    target: str
    detail: dict[str, Any]

    @classmethod
    def of(cls, entry: AuditEntry) -> AuditOut:
        return cls(**entry.__dict__)


class RedactionOut(BaseModel):
    ask_id: str
    stage: str = Field(description="'sealed' (redaction pending; the upload is kept encrypted) or 'full'.")
    regions: list[dict[str, Any]]
    model_version: str
    original_kept: bool
    original_expires_at: dt.datetime | None

    @classmethod
    def of(cls, ask_id: str, info: RedactionInfo) -> RedactionOut:
        return cls(ask_id=ask_id, stage=info.stage, regions=info.regions, model_version=info.model_version,
                   original_kept=info.original_kept, original_expires_at=info.original_expires_at)


class PurgeOut(BaseModel):
    originals: int
    transient_frames: int

    @classmethod
    def of(cls, report: PurgeReport) -> PurgeOut:
        return cls(originals=report.originals, transient_frames=report.transient_frames)
