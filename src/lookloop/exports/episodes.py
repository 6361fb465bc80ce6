"""Episodes with their labels, feedback and lineage: what every export is made from."""

from __future__ import annotations

import datetime as dt
import hashlib
from collections import defaultdict
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any, Protocol

from sqlalchemy import select
from sqlalchemy.orm import Session

from lookloop.domain import CatalogItem, ai_label, as_utc, same_label
from lookloop.errors import NotFound
from lookloop.exports.consent import exportable_ask_ids
from lookloop.humans.tables import FeedbackRow
from lookloop.loop.tables import ModelVersionRow
from lookloop.store.db import Database
from lookloop.store.tables import AskRow, LabelRow

# Sources that are not an answer to the ask itself (imported data sets label files, not asks).
_NOT_EPISODE_LABELS = frozenset({"import"})


class ExportSource(Protocol):
    """What the exports read from the running system (``lookloop.ExportSource`` provides it)."""

    @property
    def db(self) -> Database: ...

    def find_item(self, name: str) -> CatalogItem | None: ...

    def frame_bytes(self, sha: str) -> bytes: ...
_CHUNK = 500


@dataclass(frozen=True)
class LabelInfo:
    value: str
    source: str
    author: str
    created_at: dt.datetime
    trust: float | None = None  # how far the author was trusted (0..1); None: stored before trust was kept
    status: str = "applied"  # what the label did: applied, personal, pending, proposal or rejected


@dataclass(frozen=True)
class FeedbackInfo:
    verdict: str  # "right" | "wrong"
    correction: str | None
    implicit: bool
    created_at: dt.datetime


@dataclass
class Episode:
    """One ask and how it ended, with the lineage needed to audit a model trained on it."""

    ask_id: str
    wearer: str  # a pseudonym: the device id's hash, so exports can be split by wearer without naming them
    question: str
    created_at: dt.datetime
    skill: str
    answer_text: str
    ai_label: str
    confidence: float
    decision: str
    policy: str
    model_version: str
    candidates: list[tuple[str, float]]
    outcome: str
    final_answer: str | None
    answered_at: dt.datetime | None
    frame_sha: str | None
    frame_media_type: str | None
    labels: list[LabelInfo] = field(default_factory=list)
    feedback: list[FeedbackInfo] = field(default_factory=list)
    trained_in: list[str] = field(default_factory=list)

    @property
    def label(self) -> LabelInfo | None:
        """The answer that counts: the latest label."""
        return self.labels[-1] if self.labels else None

    @property
    def ai_correct(self) -> bool | None:
        lab = self.label
        if lab is None or not self.ai_label:
            return None
        return same_label(lab.value, self.ai_label)

    def to_json(self) -> dict[str, Any]:
        lab = self.label
        return {
            "ask_id": self.ask_id,
            "wearer": self.wearer,
            "created_at": self.created_at.isoformat(),
            "question": self.question,
            "skill": self.skill,
            "frame_sha": self.frame_sha,
            "frame_media_type": self.frame_media_type,
            "answer": {
                "text": self.answer_text,
                "label": self.ai_label,
                "confidence": self.confidence,
                "decision": self.decision,
                "policy": self.policy,
                "candidates": [{"label": c, "score": s} for c, s in self.candidates],
            },
            "outcome": self.outcome,
            "final_answer": self.final_answer,
            "answered_at": self.answered_at.isoformat() if self.answered_at else None,
            "label": lab.value if lab else None,
            "ai_correct": self.ai_correct,
            "labels": [
                {"value": x.value, "source": x.source, "author": x.author, "created_at": x.created_at.isoformat(),
                 "trust": x.trust, "status": x.status}
                for x in self.labels
            ],
            "feedback": [
                {"verdict": f.verdict, "correction": f.correction, "implicit": f.implicit,
                 "created_at": f.created_at.isoformat()}
                for f in self.feedback
            ],
            "lineage": {
                "answered_by_model": self.model_version,
                "label_source": lab.source if lab else None,
                "label_author": lab.author if lab else None,
                "label_trust": lab.trust if lab else None,
                "label_status": lab.status if lab else None,
                "trained_in": list(self.trained_in),
            },
        }


def pseudonym(device_id: str) -> str:
    return hashlib.sha256(f"lookloop-wearer:{device_id}".encode()).hexdigest()[:16]


def _chunks(ids: list[str]) -> Iterator[list[str]]:
    for i in range(0, len(ids), _CHUNK):
        yield ids[i : i + _CHUNK]


def _feedback(session: Session, ids: list[str]) -> dict[str, list[FeedbackInfo]]:
    out: dict[str, list[FeedbackInfo]] = defaultdict(list)
    for chunk in _chunks(ids):
        rows = session.execute(
            select(FeedbackRow.ask_id, FeedbackRow.verdict, FeedbackRow.correction, FeedbackRow.implicit,
                   FeedbackRow.created_at)
            .where(FeedbackRow.ask_id.in_(chunk))
            .order_by(FeedbackRow.created_at, FeedbackRow.id)
        ).all()
        for ask_id, verdict, correction, implicit, created in rows:
            out[ask_id].append(FeedbackInfo(verdict, correction, bool(implicit), as_utc(created)))
    return out


def trained_in(session: Session, ask_ids: list[str]) -> dict[str, list[str]]:
    """Model versions whose training data held each ask, from the registry's lineage (label keys ``ask:<id>``)."""
    wanted = set(ask_ids)
    out: dict[str, list[str]] = defaultdict(list)
    rows = session.execute(
        select(ModelVersionRow.id, ModelVersionRow.label_keys).order_by(ModelVersionRow.created_at)
    ).all()
    for version_id, keys in rows:
        for key in keys or []:
            ask_id = str(key)[4:] if str(key).startswith("ask:") else None
            if ask_id in wanted:
                out[ask_id].append(str(version_id))
    return dict(out)


def load_episodes(
    system: ExportSource,
    *,
    since: dt.datetime | None = None,
    until: dt.datetime | None = None,
    labelled_only: bool = False,
    skill: str | None = None,
) -> list[Episode]:
    """Episodes in [since, until) that their wearers allow for training, oldest first."""
    with system.db.session() as s:
        allowed = exportable_ask_ids(s)
        stmt = select(AskRow).order_by(AskRow.created_at, AskRow.id)
        if since is not None:
            stmt = stmt.where(AskRow.created_at >= since)
        if until is not None:
            stmt = stmt.where(AskRow.created_at < until)
        if skill:
            stmt = stmt.where(AskRow.skill == skill)
        rows = [r for r in s.scalars(stmt).all() if r.id in allowed]
        ids = [r.id for r in rows]
        labels: dict[str, list[LabelInfo]] = defaultdict(list)
        for chunk in _chunks(ids):
            for ask_id, value, source, author, created, trust, status in s.execute(
                select(LabelRow.ask_id, LabelRow.value, LabelRow.source, LabelRow.author, LabelRow.created_at,
                       LabelRow.trust, LabelRow.status)
                .where(LabelRow.ask_id.in_(chunk), LabelRow.source.not_in(_NOT_EPISODE_LABELS))
                .order_by(LabelRow.created_at, LabelRow.id)
            ).all():
                # A wearer's label names their device as author: export the pseudonym instead.
                who = pseudonym(author) if source == "wearer" and author else (author or "")
                labels[str(ask_id)].append(LabelInfo(value, source, who, as_utc(created), trust,
                                                     status or "applied"))
        feedback = _feedback(s, ids)
        lineage = trained_in(s, ids)
    episodes = [
        Episode(
            ask_id=r.id,
            wearer=pseudonym(r.device_id),
            question=r.question,
            created_at=as_utc(r.created_at),
            skill=r.skill,
            answer_text=r.answer_text,
            ai_label=ai_label(r.result, r.answer_text),
            confidence=float(r.confidence),
            decision=r.decision,
            policy=r.policy,
            model_version=r.model_version,
            candidates=[(str(c[0]), float(c[1])) for c in (r.candidates or [])],
            outcome=r.outcome,
            final_answer=r.final_answer,
            answered_at=as_utc(r.answered_at) if r.answered_at else None,
            frame_sha=r.frame_sha,
            frame_media_type=r.frame_media_type,
            labels=labels.get(r.id, []),
            feedback=feedback.get(r.id, []),
            trained_in=lineage.get(r.id, []),
        )
        for r in rows
    ]
    if labelled_only:
        episodes = [e for e in episodes if e.labels]
    return episodes


def frame_of(system: ExportSource, episode: Episode) -> bytes | None:
    """The stored frame, or None when there is none any more (deleted, or never kept by consent)."""
    if not episode.frame_sha:
        return None
    try:
        return system.frame_bytes(episode.frame_sha)
    except NotFound:
        return None


def extension(media_type: str | None) -> str:
    return {"image/jpeg": ".jpg", "image/png": ".png", "image/webp": ".webp", "image/gif": ".gif",
            "image/bmp": ".bmp"}.get(media_type or "", ".jpg")
