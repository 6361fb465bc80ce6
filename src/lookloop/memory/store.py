"""Storage for memories and note sessions, and the wearer's right to have them deleted."""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

import numpy as np
from sqlalchemy import delete, select

from lookloop.domain import as_utc, utcnow
from lookloop.errors import BadInput, NotFound
from lookloop.memory.tables import MemoryRow, NoteRow
from lookloop.store.db import Database

MAX_NOTE_CHARS = 200_000
MAX_CHUNK_CHARS = 20_000


@dataclass(frozen=True)
class Memory:
    id: str
    device_id: str
    created_at: dt.datetime
    note: str
    question: str
    description: str
    frame_sha: str | None
    embedding: np.ndarray | None
    embedder_version: str


@dataclass(frozen=True)
class NoteSession:
    id: str
    device_id: str
    title: str
    created_at: dt.datetime
    updated_at: dt.datetime
    closed_at: dt.datetime | None
    text: str
    summary: str | None
    summary_method: str


def ago(then: dt.datetime, now: dt.datetime | None = None) -> str:
    """'just now', '42 minutes ago', '3 hours ago', '2 days ago'."""
    seconds = max(0.0, ((now or utcnow()) - as_utc(then)).total_seconds())
    if seconds < 60:
        return "just now"
    for size, unit in ((86400 * 30, "month"), (86400, "day"), (3600, "hour"), (60, "minute")):
        if seconds >= size:
            n = int(seconds // size)
            return f"{n} {unit}{'s' if n != 1 else ''} ago"
    return "just now"  # pragma: no cover - the loop always returns


def _memory(row: MemoryRow) -> Memory:
    emb = np.frombuffer(row.embedding, dtype=np.float32).copy() if row.embedding else None
    return Memory(
        id=row.id,
        device_id=row.device_id,
        created_at=as_utc(row.created_at),
        note=row.note,
        question=row.question,
        description=row.description,
        frame_sha=row.frame_sha,
        embedding=emb,
        embedder_version=row.embedder_version,
    )


def _note(row: NoteRow) -> NoteSession:
    return NoteSession(
        id=row.id,
        device_id=row.device_id,
        title=row.title,
        created_at=as_utc(row.created_at),
        updated_at=as_utc(row.updated_at),
        closed_at=as_utc(row.closed_at) if row.closed_at else None,
        text=row.text,
        summary=row.summary,
        summary_method=row.summary_method,
    )


class MemoryStore:
    """The wearer's remembered moments, one table, always read per device."""

    def __init__(self, db: Database) -> None:
        self.db = db

    def add(
        self,
        *,
        device_id: str,
        note: str,
        question: str = "",
        description: str = "",
        frame_sha: str | None = None,
        embedding: np.ndarray | None = None,
        embedder_version: str = "",
        created_at: dt.datetime | None = None,
    ) -> Memory:
        row = MemoryRow(
            device_id=device_id,
            note=note,
            question=question,
            description=description,
            frame_sha=frame_sha,
            embedding=np.asarray(embedding, dtype=np.float32).ravel().tobytes() if embedding is not None else None,
            embedder_version=embedder_version,
            created_at=created_at or utcnow(),
        )
        with self.db.session() as s:
            s.add(row)
        return _memory(row)

    def for_device(self, device_id: str, *, limit: int = 500) -> list[Memory]:
        """The newest first."""
        with self.db.session() as s:
            rows = s.scalars(
                select(MemoryRow)
                .where(MemoryRow.device_id == device_id)
                .order_by(MemoryRow.created_at.desc())
                .limit(limit)
            ).all()
            return [_memory(r) for r in rows]

    def get(self, memory_id: str, *, device_id: str) -> Memory:
        with self.db.session() as s:
            row = s.get(MemoryRow, memory_id)
            if row is None or row.device_id != device_id:
                raise NotFound(f"no memory {memory_id!r}")
            return _memory(row)

    def delete(self, memory_id: str, *, device_id: str) -> None:
        with self.db.session() as s:
            row = s.get(MemoryRow, memory_id)
            if row is None or row.device_id != device_id:
                raise NotFound(f"no memory {memory_id!r}")
            s.delete(row)


class NoteStore:
    """Note sessions: text appended as the conversation goes, summarised on request."""

    def __init__(self, db: Database) -> None:
        self.db = db

    def start(self, device_id: str, *, title: str = "") -> NoteSession:
        row = NoteRow(device_id=device_id, title=title[:200], text="")
        with self.db.session() as s:
            s.add(row)
        return _note(row)

    def get(self, note_id: str) -> NoteSession:
        with self.db.session() as s:
            row = s.get(NoteRow, note_id)
            if row is None:
                raise NotFound(f"no note session {note_id!r}")
            return _note(row)

    def append(self, note_id: str, text: str) -> NoteSession:
        text = " ".join((text or "").split())
        if not text:
            raise BadInput("the text to add is empty")
        if len(text) > MAX_CHUNK_CHARS:
            raise BadInput(f"a text chunk may hold at most {MAX_CHUNK_CHARS} characters")
        with self.db.session() as s:
            row = s.get(NoteRow, note_id, with_for_update=True)
            if row is None:
                raise NotFound(f"no note session {note_id!r}")
            if row.closed_at is not None:
                raise BadInput("this note session is closed; start a new one")
            if len(row.text) + len(text) + 1 > MAX_NOTE_CHARS:
                raise BadInput(f"a note session may hold at most {MAX_NOTE_CHARS} characters")
            # one chunk per line: the ASR's utterance boundaries are sentence boundaries for the summary
            row.text = f"{row.text}\n{text}" if row.text else text
            row.updated_at = utcnow()
            row.summary = None
            return _note(row)

    def latest_open(self, device_id: str) -> NoteSession | None:
        with self.db.session() as s:
            row = s.scalars(
                select(NoteRow)
                .where(NoteRow.device_id == device_id, NoteRow.closed_at.is_(None))
                .order_by(NoteRow.created_at.desc())
                .limit(1)
            ).first()
            return _note(row) if row else None

    def latest(self, device_id: str) -> NoteSession | None:
        with self.db.session() as s:
            row = s.scalars(
                select(NoteRow).where(NoteRow.device_id == device_id).order_by(NoteRow.updated_at.desc()).limit(1)
            ).first()
            return _note(row) if row else None

    def save_summary(self, note_id: str, summary: str, method: str, *, close: bool = False) -> NoteSession:
        with self.db.session() as s:
            row = s.get(NoteRow, note_id)
            if row is None:
                raise NotFound(f"no note session {note_id!r}")
            row.summary = summary
            row.summary_method = method[:64]
            if close and row.closed_at is None:
                row.closed_at = utcnow()
            return _note(row)

    def delete(self, note_id: str) -> None:
        with self.db.session() as s:
            row = s.get(NoteRow, note_id)
            if row is None:
                raise NotFound(f"no note session {note_id!r}")
            s.delete(row)


def delete_for_device(db: Database, device_ids: Iterable[str]) -> int:
    """Deletes every memory and note session of these devices (delete-my-data); returns the rows removed."""
    ids = sorted({d for d in device_ids if d})
    if not ids:
        return 0
    removed = 0
    with db.session() as s:
        for table in (MemoryRow, NoteRow):
            result: Any = s.execute(delete(table).where(table.device_id.in_(ids)))
            removed += int(result.rowcount or 0)
    return removed
