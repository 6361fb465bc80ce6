"""What this server can do, note sessions, and the wearer's memories."""

from __future__ import annotations

import datetime as dt

from pydantic import BaseModel, Field

from lookloop.memory.store import Memory, NoteSession
from lookloop.skills.notes import Summary


class BackendOut(BaseModel):
    role: str
    configured: bool
    kind: str
    model: str
    detail: str


class SkillOut(BaseModel):
    name: str
    available: bool
    fallback: str | None = Field(description="what answers when the skill's backend is missing: human, extractive…")
    detail: str


class CapabilitiesOut(BaseModel):
    backends: list[BackendOut]
    skills: list[SkillOut]


# -- notes ---------------------------------------------------------------------------------------------


class NoteStartIn(BaseModel):
    title: str = Field(default="", max_length=200)
    device_id: str | None = Field(default=None, max_length=64, description="operators only; devices note as themselves")


class NoteTextIn(BaseModel):
    text: str = Field(min_length=1, max_length=20_000, description="the next piece of the conversation")


class NoteOut(BaseModel):
    id: str
    device_id: str
    title: str
    created_at: dt.datetime
    updated_at: dt.datetime
    closed: bool
    chars: int
    text: str | None = None
    summary: str | None = None
    summary_method: str = ""

    @classmethod
    def of(cls, note: NoteSession, *, with_text: bool = False) -> NoteOut:
        return cls(
            id=note.id,
            device_id=note.device_id,
            title=note.title,
            created_at=note.created_at,
            updated_at=note.updated_at,
            closed=note.closed_at is not None,
            chars=len(note.text),
            text=note.text if with_text else None,
            summary=note.summary,
            summary_method=note.summary_method,
        )


class NoteSummaryOut(BaseModel):
    note_id: str
    summary: str
    method: str
    closed: bool

    @classmethod
    def of(cls, note: NoteSession, summary: Summary) -> NoteSummaryOut:
        return cls(note_id=note.id, summary=summary.text, method=summary.method, closed=note.closed_at is not None)


# -- memories ------------------------------------------------------------------------------------------


class MemoryOut(BaseModel):
    id: str
    created_at: dt.datetime
    note: str
    description: str
    frame_sha: str | None

    @classmethod
    def of(cls, m: Memory) -> MemoryOut:
        return cls(id=m.id, created_at=m.created_at, note=m.note, description=m.description, frame_sha=m.frame_sha)
