"""Frames at rest: only redacted pixels are stored in the clear; consented originals are sealed and expire.

The ask path calls ``FramePrivacy.store``. By default it seals the upload (AES-GCM, well under a millisecond)
under the frame id (the sha256 of the uploaded bytes, also the embedding-cache key). Escalated frames get a
redaction job at once (``lookloop.jobs``: a thread of the server on SQLite, a ``lookloop worker`` on Postgres)
that blurs faces and masks personal text (OCR, ~0.5-2 s); the others are redacted when first read, so the
answer is never held up and OCR does not compete with answering.
No person sees a frame before that: every read goes through ``Lookloop.frame_bytes`` → ``ensure_full``, which
runs the passes inline if the worker has not got to them yet. ``redact_text="sync"`` redacts on the ask path.
"""

from __future__ import annotations

import datetime as dt
import logging
import threading
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from sqlalchemy import select

from lookloop.config import Settings
from lookloop.domain import Consent, Frame, Outcome, as_utc, utcnow
from lookloop.errors import NotFound
from lookloop.jobs import InProcessJobs, JobContext, JobQueue
from lookloop.privacy.crypto import decrypt_bytes, encrypt_bytes, key_dir_for, load_or_create_key, parse_key
from lookloop.privacy.redact import default_redactor
from lookloop.privacy.tables import RedactionRow, RevealGrantRow
from lookloop.store.db import Database
from lookloop.store.frames import FrameStore, write_atomic
from lookloop.store.tables import AskRow

log = logging.getLogger("lookloop.privacy")

ORIGINAL_SUFFIX = ".orig"
REDACT_JOB = "privacy.redact"
SEALED_SUFFIX = ".sealed"


def _sealed_aad(sha: str) -> bytes:
    return b"sealed:" + sha.encode()


def frame_key(settings: Settings) -> bytes:
    """The AES key for sealed originals: the configured one, else ``key_dir/frame.key`` (made once, 0600 in a
    0700 directory kept apart from the frames and the database file; ``crypto.key_dir_for``)."""

    if settings.frame_key:
        return parse_key(settings.frame_key)
    return load_or_create_key(key_dir_for(settings))




@dataclass(frozen=True)
class RedactionInfo:
    frame_sha: str
    stage: str
    regions: list[dict[str, Any]]
    model_version: str
    original_kept: bool
    original_expires_at: dt.datetime | None


@dataclass(frozen=True)
class PurgeReport:
    originals: int
    transient_frames: int


class FramePrivacy:
    """Redacted storage, sealed originals, the text-redaction worker, reveal and purge for one system."""

    def __init__(
        self,
        settings: Settings,
        db: Database,
        frames: FrameStore,
        *,
        redactor: Callable[[], Any] | None = None,
        jobs: JobQueue | None = None,
    ) -> None:
        self.settings = settings
        self.db = db
        self.frames = frames
        self.root = frames.root
        self._redactor_factory = redactor
        self._key: bytes | None = None
        self._locks: dict[str, threading.Lock] = {}
        self._locks_guard = threading.Lock()
        if jobs is None:  # on its own (no system around it): its redactions run in a thread of this process
            jobs = InProcessJobs(db)
            jobs.register(REDACT_JOB, self.redact_job)
        self._jobs = jobs

    # -- helpers ------------------------------------------------------------------------------------------

    @property
    def redactor(self) -> Any:
        if self._redactor_factory is not None:
            return self._redactor_factory()

        return default_redactor()

    @property
    def key(self) -> bytes:
        if self._key is None:
            self._key = frame_key(self.settings)
        return self._key

    def path(self, sha: str) -> Path:
        return self.frames.path(sha)

    def sealed_path(self, sha: str) -> Path:
        return self.frames.path(sha, SEALED_SUFFIX)

    def original_path(self, sha: str) -> Path:
        return self.frames.path(sha, ORIGINAL_SUFFIX)

    def redacted_file(self, sha: str) -> Path:
        """The redacted frame's file, the redaction passes run first if the worker has not got to them."""
        self.ensure_full(sha)
        return self.path(sha)

    def redacted_bytes(self, sha: str) -> bytes:
        """The stored (redacted) frame; NotFound for an unknown or malformed id."""
        try:
            self.ensure_full(sha)
            return self.frames.get(sha)
        except (FileNotFoundError, ValueError) as exc:
            raise NotFound("no such frame") from exc

    def redacted_if_ready(self, sha: str) -> bytes | None:
        """The stored frame if every redaction pass has run on it already, else None; never runs them (for
        what may go without the picture rather than wait for it)."""
        with self.db.session() as s:
            row = s.get(RedactionRow, sha)
            if row is not None and row.stage != "full":
                return None
        try:
            return self.frames.get(sha)
        except (FileNotFoundError, ValueError):
            return None

    def _lock_for(self, sha: str) -> threading.Lock:
        with self._locks_guard:
            return self._locks.setdefault(sha, threading.Lock())

    # -- the ask path -------------------------------------------------------------------------------------

    def store(
        self, frame: Frame, *, frame_id: str, wearer_id: str, consent: Consent, needs_human: bool
    ) -> str | None:
        """Stores the redacted frame under ``frame_id`` (``lookloop.store.frames.frame_id``) and returns it; None
        when consent keeps no frame at all."""
        if not consent.store_frames and not needs_human:
            return None
        sha = frame_id
        with self._lock_for(sha):
            with self.db.session() as s:
                existing = s.get(RedactionRow, sha)
            if existing is not None and (self.path(sha).exists() or self.sealed_path(sha).exists()):
                return sha  # the same upload again (a retry): already stored

            sync_text = self.settings.redact_text == "sync"
            regions: list[dict[str, Any]] = []
            version = ""
            if sync_text:
                bgr = np.ascontiguousarray(frame.rgb[:, :, ::-1])
                result = self.redactor.redact(bgr, faces=True, text=True)
                write_atomic(self.path(sha), result.jpeg())
                regions, version = [r.as_dict() for r in result.regions], str(result.model_version)
            else:
                # The answer does not wait for redaction: the upload is sealed (AES-GCM) until the worker has
                # blurred faces and masked personal text. Nothing unredacted is ever on disk in the clear.
                write_atomic(self.sealed_path(sha), encrypt_bytes(frame.data, self.key, aad=_sealed_aad(sha)))
            expires: dt.datetime | None = None
            if consent.keep_originals:
                write_atomic(self.original_path(sha), encrypt_bytes(frame.data, self.key, aad=sha.encode()))
                expires = utcnow() + dt.timedelta(days=self.settings.original_retention_days)
            with self.db.session() as s:
                row = s.get(RedactionRow, sha) or RedactionRow(frame_sha=sha)
                row.stage = "full" if sync_text else "sealed"
                row.regions = regions
                row.model_version = version
                row.wearer_id = wearer_id[:64]
                row.original_kept = consent.keep_originals
                row.original_expires_at = expires
                row.transient = not consent.store_frames
                s.merge(row)
        if not sync_text and needs_human:
            # A person will look at it soon: redact now. Other frames are redacted when first read
            # (training, export, review), so OCR does not compete with answering asks.
            self._enqueue(sha)
        return sha

    def redact_soon(self, sha: str) -> None:
        """Queues a frame's redaction now (a person will look at it) unless it is done."""
        info = self.info(sha)
        if info is not None and info.stage != "full":
            self._enqueue(sha)

    # -- the text pass ------------------------------------------------------------------------------------

    def _enqueue(self, sha: str) -> None:
        try:
            self._jobs.defer(REDACT_JOB, key=f"redact:{sha}", sha=sha)
        except Exception:  # noqa: BLE001 - the frame stays sealed and is redacted when first read
            log.exception("could not queue the redaction of frame %s", sha[:12])

    def redact_job(self, ctx: JobContext, sha: str) -> dict[str, Any]:
        """The redaction job: idempotent (a frame redacted already is left as it is)."""
        ctx.progress(0.0, "redacting faces and personal text", force=True)
        self.ensure_full(sha)
        info = self.info(sha)
        return {"frame": sha[:12], "stage": info.stage if info else "gone"}

    def resume(self) -> int:
        """Queues the redaction of frames people are waiting to see that a restart left unredacted."""

        with self.db.session() as s:
            waiting = select(AskRow.frame_sha).where(AskRow.outcome == Outcome.ESCALATED.value)
            pending = [
                str(x)
                for x in s.scalars(
                    select(RedactionRow.frame_sha).where(
                        RedactionRow.stage != "full", RedactionRow.frame_sha.in_(waiting)
                    )
                )
            ]
        for sha in pending:
            self._enqueue(sha)
        return len(pending)

    def flush(self, timeout: float = 120.0) -> bool:
        """Waits until the jobs this process runs are done (tests, shutdown; job workers run them on Postgres)."""
        return self._jobs.flush(timeout=timeout)

    def ensure_full(self, sha: str) -> None:
        """Runs the redaction passes still due for a frame. Call before any person or model sees it."""
        with self.db.session() as s:
            row = s.get(RedactionRow, sha)
            if row is None or row.stage == "full":
                return
        with self._lock_for(sha):
            with self.db.session() as s:
                row = s.get(RedactionRow, sha)
                if row is None or row.stage == "full":
                    return
                stage = row.stage
            if stage == "sealed":

                sealed = self.sealed_path(sha)
                if not sealed.exists():
                    return
                data = decrypt_bytes(sealed.read_bytes(), self.key, aad=_sealed_aad(sha))
                result = self.redactor.redact(data, faces=True, text=True)
                write_atomic(self.path(sha), result.jpeg())
                regions = [r.as_dict() for r in result.regions]
                version = str(result.model_version)
            else:  # "faces": written by an older version that blurred faces on the ask path
                if not self.path(sha).exists():
                    return
                result = self.redactor.redact(self.path(sha).read_bytes(), faces=False, text=True)
                write_atomic(self.path(sha), result.jpeg())
                regions = list(row.regions or []) + [r.as_dict() for r in result.regions]
                version = f"{row.model_version}; {result.model_version}"
            with self.db.session() as s:
                row = s.get(RedactionRow, sha)
                if row is None:
                    return
                row.regions = regions
                row.model_version = version
                row.stage = "full"
            if stage == "sealed":
                self.sealed_path(sha).unlink(missing_ok=True)

    # -- reading ------------------------------------------------------------------------------------------

    def info(self, sha: str) -> RedactionInfo | None:
        with self.db.session() as s:
            row = s.get(RedactionRow, sha)
            if row is None:
                return None
            return RedactionInfo(
                row.frame_sha, row.stage, list(row.regions or []), row.model_version, row.original_kept,
                as_utc(row.original_expires_at) if row.original_expires_at else None,
            )

    def reveal_granted(self, account_id: str) -> bool:
        """Whether an operator gave ``account_id`` the reveal permission (``lookloop privacy grant-reveal``)."""
        with self.db.session() as s:
            return s.get(RevealGrantRow, account_id) is not None

    def reveal(self, sha: str) -> bytes:
        """The unredacted original (decrypted). The caller checks the permission and writes the audit entry."""

        path = self.original_path(sha)
        info = self.info(sha)
        if info is None or not info.original_kept or not path.exists():
            raise NotFound("no unredacted original is kept for this frame (no consent, or it expired)")
        return decrypt_bytes(path.read_bytes(), self.key, aad=sha.encode())

    # -- deleting -----------------------------------------------------------------------------------------

    def delete(self, sha: str) -> int:
        """Removes the redacted frame, the sealed original and the record; returns files removed."""
        removed = 0
        with self._lock_for(sha):
            for path in (self.path(sha), self.sealed_path(sha), self.original_path(sha)):
                if path.exists():
                    path.unlink()
                    removed += 1
            with self.db.session() as s:
                row = s.get(RedactionRow, sha)
                if row is not None:
                    s.delete(row)
        return removed

    def drop_original(self, sha: str) -> bool:
        with self._lock_for(sha):
            path = self.original_path(sha)
            existed = path.exists()
            if existed:
                path.unlink()
            with self.db.session() as s:
                row = s.get(RedactionRow, sha)
                if row is not None:
                    row.original_kept = False
                    row.original_expires_at = None
        return existed

    def purge(self, now: dt.datetime | None = None) -> PurgeReport:
        """Deletes expired originals, and transient frames no human is waiting for any more."""

        now = now or utcnow()
        with self.db.session() as s:
            kept = s.execute(
                select(RedactionRow.frame_sha, RedactionRow.original_expires_at).where(
                    RedactionRow.original_kept.is_(True)
                )
            ).all()
            expired = [sha for sha, exp in kept if exp is None or as_utc(exp) <= now]
            transient = [str(x) for x in s.scalars(select(RedactionRow.frame_sha).where(RedactionRow.transient))]
            waiting = set()
            if transient:
                waiting = {
                    str(x)
                    for x in s.scalars(
                        select(AskRow.frame_sha).where(
                            AskRow.frame_sha.in_(transient), AskRow.outcome == Outcome.ESCALATED.value
                        )
                    )
                }
        originals = sum(1 for sha in expired if self.drop_original(sha))
        done = [sha for sha in transient if sha not in waiting]
        for sha in done:
            self.delete(sha)
        return PurgeReport(originals=originals, transient_frames=len(done))

    def release_if_transient(self, sha: str) -> bool:
        """After a human answered: a frame kept only for that answer goes now."""
        with self.db.session() as s:
            row = s.get(RedactionRow, sha)
            if row is None or not row.transient:
                return False
        self.delete(sha)
        return True

    def release_for_ask(self, ask_id: str) -> bool:
        """The ``labelled`` hook: frees a transient frame once its ask has a human answer."""

        with self.db.session() as s:
            sha = s.scalar(select(AskRow.frame_sha).where(AskRow.id == ask_id))
        return bool(sha) and self.release_if_transient(str(sha))
