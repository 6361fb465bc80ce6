"""Retention: sealed originals expire after ``Settings.original_retention_days``; frames kept only for a
human answer go once it came. ``lookloop privacy purge`` runs it once; the ``privacy.purge`` job runs it every
``Settings.purge_interval_s`` seconds (in the server on SQLite, in a ``lookloop worker`` on Postgres)."""

from __future__ import annotations

from dataclasses import asdict
from typing import Any

from lookloop.jobs import JobContext
from lookloop.privacy import audit
from lookloop.privacy.storage import FramePrivacy, PurgeReport
from lookloop.store.db import Database

PURGE_JOB = "privacy.purge"


def purge_frames(privacy: FramePrivacy, db: Database, *, actor: str = "system", role: str = "") -> PurgeReport:
    """One purge pass, audited when it removed anything."""
    report = privacy.purge()
    if report.originals or report.transient_frames:
        audit.record(db, actor=actor, role=role, action="privacy.purge", target="frames",
                     originals=report.originals, transient_frames=report.transient_frames)
    return report


def purge(system: Any, *, actor: str = "system", role: str = "") -> PurgeReport:
    """One purge pass over a system's frames (``system.privacy``, ``system.db``)."""
    return purge_frames(system.privacy, system.db, actor=actor, role=role)


class PurgeJob:
    """The periodic purge as a job (idempotent: a second pass finds nothing left to remove)."""

    def __init__(self, privacy: FramePrivacy, db: Database) -> None:
        self._privacy = privacy
        self._db = db

    def __call__(self, ctx: JobContext) -> dict[str, Any]:
        return asdict(purge_frames(self._privacy, self._db))
