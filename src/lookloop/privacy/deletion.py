"""Delete my data: one call removes everything a wearer's devices left behind.

Removed: episodes (asks), their labels, review items, answers and feedback (any table with an ``ask_id`` or
``device_id`` column, so tables added later are covered too), memory entries and notes, frames (redacted and
sealed originals) and their redaction records, the examples in the identify model's memory (keys
``ask:<id>``), the embedding cache, the router's corrections of their questions and the idempotency receipts
of their writes. Pseudonymised, not dropped: audit-log entries that named their asks, and the redaction record
of a frame someone else also sent. Kept: the wearer, their devices and consent (so the glasses keep working).
Model versions trained while the data existed are marked in the registry, which then never serves them again.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import Table, delete, or_, select
from sqlalchemy.orm import Session

from lookloop.domain import ANONYMOUS
from lookloop.humans.tables import FeedbackRow  # also puts the human-loop tables in Base.metadata
from lookloop.loop.registry import ModelRegistry
from lookloop.loop.serving import ServingModel
from lookloop.memory.store import delete_for_device
from lookloop.privacy import audit
from lookloop.privacy.consent import devices_of
from lookloop.privacy.storage import FramePrivacy
from lookloop.privacy.tables import AuditRow, RedactionRow
from lookloop.skills.routing import SkillRouting
from lookloop.store import idempotency
from lookloop.store.db import Database
from lookloop.store.frames import FrameStore
from lookloop.store.tables import AskRow, Base, IdempotencyRow, LabelRow

# Who a wearer is (and the record of what happened) survives the deletion of what they did; the stores here
# with wearer data in them are handled one by one below.
_KEEP_TABLES = frozenset(
    {"asks", "wearers", "devices", "accounts", "sessions", "consents", "audit_log", "model_marks",
     "reveal_grants", "idempotency_keys", "redactions", "alembic_version"}
)


def pseudonym(value: str) -> str:
    """A stable stand-in for an id that must no longer point at anyone: the same id, the same stand-in."""
    return "deleted-" + hashlib.sha256(value.encode()).hexdigest()[:12]


def _replace_ids(value: Any, ids: dict[str, str]) -> Any:
    if isinstance(value, str):
        for old, new in ids.items():
            if old in value:
                value = value.replace(old, new)
        return value
    if isinstance(value, dict):
        return {k: _replace_ids(v, ids) for k, v in value.items()}
    if isinstance(value, list):
        return [_replace_ids(v, ids) for v in value]
    return value


@dataclass
class DeletionReport:
    wearer_id: str
    devices: list[str]
    asks: int = 0
    labels: int = 0
    frames: int = 0
    embeddings: int = 0
    memory_entries: int = 0
    rows: dict[str, int] = field(default_factory=dict)
    models_marked: list[str] = field(default_factory=list)
    router_corrections: int = 0

    def as_dict(self) -> dict[str, Any]:
        return {
            "wearer_id": self.wearer_id, "devices": self.devices, "asks": self.asks, "labels": self.labels,
            "frames": self.frames, "embeddings": self.embeddings, "memory_entries": self.memory_entries,
            "rows": self.rows, "models_marked": self.models_marked, "router_corrections": self.router_corrections,
        }


def _chunks(ids: list[str], n: int = 400) -> Iterator[list[str]]:
    for i in range(0, len(ids), n):
        yield ids[i : i + n]


def _delete_where(s: Session, table: Table, ask_ids: list[str], device_ids: list[str]) -> int:
    cols = table.c
    removed = 0
    if "ask_id" in cols:
        for chunk in _chunks(ask_ids):
            res: Any = s.execute(delete(table).where(cols.ask_id.in_(chunk)))
            removed += int(res.rowcount or 0)
    if "device_id" in cols:
        res = s.execute(delete(table).where(cols.device_id.in_(device_ids)))
        removed += int(res.rowcount or 0)
    return removed


def _frames_referenced(s: Session, ask_ids: list[str], device_ids: list[str]) -> set[str]:
    """Frames named by the wearer's rows in any table (memory entries, review items …)."""
    out: set[str] = set()
    for table in Base.metadata.sorted_tables:
        cols = table.c
        if "frame_sha" not in cols or table.name in _KEEP_TABLES:
            continue
        if "device_id" in cols:
            out.update(str(x) for x in s.scalars(select(cols.frame_sha).where(cols.device_id.in_(device_ids))) if x)
        if "ask_id" in cols:
            for chunk in _chunks(ask_ids):
                out.update(str(x) for x in s.scalars(select(cols.frame_sha).where(cols.ask_id.in_(chunk))) if x)
    return out


class Deletion:
    """Delete-my-data over every store that holds a wearer's data; each dependency is passed in."""

    def __init__(
        self,
        db: Database,
        *,
        privacy: FramePrivacy,
        frames: FrameStore,
        serving: ServingModel,
        registry: ModelRegistry,
        routing: SkillRouting,
    ) -> None:
        self.db = db
        self.privacy = privacy
        self.frames = frames
        self.serving = serving
        self.registry = registry
        self.routing = routing

    def delete_wearer_data(self, wearer_id: str, *, actor: str = "system", role: str = "") -> DeletionReport:
        """Removes a wearer's data everywhere (see the module docstring); audited."""
        if not wearer_id or wearer_id == ANONYMOUS:
            raise ValueError("anonymous asks belong to nobody; delete them by id")
        db = self.db
        with db.session() as s:
            devices = devices_of(s, wearer_id)
            asks = s.execute(
                select(AskRow.id, AskRow.frame_sha, AskRow.question).where(AskRow.device_id.in_(devices))
            ).all()
            ask_ids = [str(a) for a, _, _ in asks]
            questions = sorted({str(q) for _, _, q in asks})
            shas = sorted({str(f) for _, f, _ in asks if f})
            shas += [
                str(x) for x in s.scalars(select(RedactionRow.frame_sha).where(RedactionRow.wearer_id == wearer_id))
                if str(x) not in shas
            ]
            shas += sorted(_frames_referenced(s, ask_ids, devices) - set(shas))
            label_filter = [LabelRow.device_id.in_(devices)]
            for chunk in _chunks(ask_ids):
                label_filter.append(LabelRow.ask_id.in_(chunk))
            n_labels = len(s.scalars(select(LabelRow.id).where(or_(*label_filter))).all())
            receipts = set(ask_ids) | _feedback_ids(s, ask_ids)
        versions = set(self.registry.versions_trained_on({f"ask:{a}" for a in ask_ids}))
        serving = self.serving.model_version
        if n_labels and serving:
            versions.add(serving)  # the serving model may hold their examples
        report = DeletionReport(wearer_id=wearer_id, devices=devices, asks=len(ask_ids), labels=n_labels)
        report.memory_entries = delete_for_device(db, devices)
        with db.session() as s:
            for table in reversed(Base.metadata.sorted_tables):
                if table.name in _KEEP_TABLES:
                    continue
                n = _delete_where(s, table, ask_ids, devices)
                if n:
                    report.rows[table.name] = n
            for chunk in _chunks(ask_ids):
                s.execute(delete(AskRow).where(AskRow.id.in_(chunk)))
            report.rows["asks"] = len(ask_ids)
            for chunk in _chunks(sorted(receipts)):
                s.execute(delete(IdempotencyRow).where(IdempotencyRow.result_id.in_(chunk)))
            callers = [c for c in (idempotency.device_caller(d) for d in devices) if c]
            for chunk in _chunks(callers):
                s.execute(delete(IdempotencyRow).where(IdempotencyRow.caller.in_(chunk)))
            _pseudonymise_audit(s, ask_ids)
        with db.session() as s:
            # A frame shared with someone else's episode (the same bytes) stays for them.
            still_used = {str(x) for x in s.scalars(select(AskRow.frame_sha).where(AskRow.frame_sha.in_(shas)))}
        gone = [sha for sha in shas if sha not in still_used]
        for sha in gone:
            report.frames += 1 if self.privacy.delete(sha) else 0
            self.frames.delete(sha)
        with db.session() as s:
            # A frame another wearer also sent stays for them, but no longer says who else sent it.
            for row in s.scalars(select(RedactionRow).where(RedactionRow.wearer_id == wearer_id)):
                row.wearer_id = pseudonym(wearer_id)
        report.router_corrections = self.routing.forget(questions)
        report.embeddings = self.serving.forget([f"ask:{a}" for a in ask_ids], gone)
        self.serving.save_cache()
        report.models_marked = sorted(versions)
        self.registry.mark(report.models_marked, reason="trained on data its wearer deleted",
                           wearer_ref=pseudonym(wearer_id), n_items=n_labels)
        audit.record(db, actor=actor, role=role, action="privacy.delete_wearer_data", target=f"wearer:{wearer_id}",
                     asks=report.asks, labels=report.labels, frames=report.frames, models=report.models_marked)
        return report

    def marked_model_versions(self) -> set[str]:
        """Model versions that must not be promoted again (trained on deleted data)."""
        return self.registry.marked()


def _feedback_ids(s: Session, ask_ids: list[str]) -> set[str]:
    out: set[str] = set()
    for chunk in _chunks(ask_ids):
        out.update(str(x) for x in s.scalars(select(FeedbackRow.id).where(FeedbackRow.ask_id.in_(chunk))))
    return out


def _pseudonymise_audit(s: Session, ask_ids: list[str]) -> None:
    """Audit entries stay (what happened, and who did it), but the asks they name no longer point anywhere."""
    if not ask_ids:
        return
    ids = {a: pseudonym(a) for a in ask_ids}
    for row in s.scalars(select(AuditRow)):
        target, detail = _replace_ids(row.target, ids), _replace_ids(row.detail, ids)
        if target != row.target or detail != row.detail:
            row.target, row.detail = target, detail
