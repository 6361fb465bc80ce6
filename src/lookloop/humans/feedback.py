"""Wearer feedback: explicit right/wrong (with an optional correction) and implicit 'wrong' from quick re-asks."""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
from sqlalchemy import select

from lookloop.config import Settings
from lookloop.domain import ANONYMOUS, AskRecord, Outcome, as_utc, clean_text, utcnow
from lookloop.errors import BadInput, Forbidden, NotFound, Unauthorized
from lookloop.humans.tables import FeedbackRow
from lookloop.loop.asking import AskService
from lookloop.loop.labels import LabelService
from lookloop.store import idempotency
from lookloop.store.db import Database
from lookloop.store.tables import AskRow, new_id

VERDICTS = ("right", "wrong")
SAME_FRAME_COSINE = 0.95  # embeddings this close are the same thing seen again
# Skills whose re-ask says nothing against the answer before: dictation and memory go on, and a translation is
# asked for again to hear it again.
NO_IMPLICIT_FEEDBACK = frozenset({"notes", "remember", "recall", "translate"})


@dataclass(frozen=True)
class FeedbackInfo:
    id: str
    ask_id: str
    device_id: str
    verdict: str
    correction: str | None
    implicit: bool
    created_at: dt.datetime


def _info(row: FeedbackRow) -> FeedbackInfo:
    return FeedbackInfo(row.id, row.ask_id, row.device_id, row.verdict, row.correction, bool(row.implicit),
                        as_utc(row.created_at))


class FeedbackService:
    """The wearer's "right"/"wrong" on an answer, given or implied by a re-ask of the same thing."""

    def __init__(
        self,
        settings: Settings,
        db: Database,
        *,
        asks: AskService,
        labels: LabelService,
        embeddings: Callable[[str], np.ndarray | None],
    ) -> None:
        self.settings = settings
        self.db = db
        self.asks = asks
        self.labels = labels
        self._embedding = embeddings  # a frame's cached embedding, never computed for this

    def give(self, ask_id: str, verdict: str, *, device_id: str, correction: str | None = None,
             implicit: bool = False, idempotency_key: idempotency.Key | None = None) -> FeedbackInfo:
        """Stores the wearer's verdict; a correction (or a 'right' on a product) becomes a label at once.

        With an idempotency key (the caller's) a resent verdict (an offline queue retrying) is stored once;
        the same key with another verdict or correction is refused.
        """
        if verdict not in VERDICTS:
            raise BadInput("verdict must be 'right' or 'wrong'")
        correction = clean_text(correction or "") or None
        request = idempotency.Request("feedback", idempotency_key, idempotency.fingerprint(
            ask=ask_id, verdict=verdict, correction=correction, implicit=implicit))
        return idempotency.once(
            self.db, request,
            lambda: self._give(ask_id, verdict, device_id=device_id, correction=correction, implicit=implicit,
                               request=request),
            self._get,
        )

    def _get(self, feedback_id: str) -> FeedbackInfo:
        with self.db.session() as s:
            row = s.get(FeedbackRow, feedback_id)
            if row is None:
                raise NotFound("no such feedback")
            return _info(row)

    def _give(self, ask_id: str, verdict: str, *, device_id: str, correction: str | None,
              implicit: bool, request: idempotency.Request) -> FeedbackInfo:
        if correction is not None and len(correction) > 500:
            raise BadInput("the correction is longer than 500 characters")
        if correction is not None and verdict == "right":
            raise BadInput("a correction goes with the verdict 'wrong'")
        record = self.asks.get(ask_id)
        if correction is not None and record.device_id == ANONYMOUS:
            if device_id == ANONYMOUS:
                raise Unauthorized("a correction is a label: send the device token of the glasses that asked "
                                   "(anonymous callers cannot give labels)")
            raise Forbidden("an anonymous ask has no wearer to correct it: label it as an operator instead")
        with self.db.session() as s:
            row = FeedbackRow(id=new_id(), ask_id=ask_id, device_id=device_id, verdict=verdict,
                              correction=correction, implicit=implicit, created_at=utcnow())
            s.add(row)
            request.claim(s, row.id)  # the verdict and its receipt commit together
            s.flush()
            info = _info(row)
        label_key = request.key.derived("feedback") if request.key else None
        if correction is not None:
            self.labels.add(ask_id, correction, source="wearer", author=device_id, idempotency_key=label_key)
        elif verdict == "right" and record.answer.skill == "identify" and device_id != ANONYMOUS:
            label = str(record.answer.result.get("label") or "")
            if label and record.answer.decision.value == "answer":
                self.labels.add(ask_id, label, source="wearer", author=device_id, idempotency_key=label_key)
        elif verdict == "wrong" and not implicit:
            with self.db.session() as s:
                ask = s.get(AskRow, ask_id)
                if ask is not None and ask.outcome == Outcome.ANSWERED.value:
                    ask.outcome = Outcome.REJECTED.value
        return info

    def list(self, *, ask_id: str | None = None, limit: int = 100) -> list[FeedbackInfo]:
        with self.db.session() as s:
            stmt = select(FeedbackRow).order_by(FeedbackRow.created_at.desc()).limit(max(1, min(limit, 1000)))
            if ask_id:
                stmt = stmt.where(FeedbackRow.ask_id == ask_id)
            return [_info(r) for r in s.scalars(stmt).all()]

    def on_asked(self, record: AskRecord) -> FeedbackInfo | None:
        """A re-ask of the same thing soon after an AI answer means that answer did not help: implicit 'wrong'.

        Only the same skill about the same frame, asked next (no other framed ask between), within the window;
        never for the skills whose asks follow one another by nature (``NO_IMPLICIT_FEEDBACK``).
        """
        skill = record.answer.skill
        if record.device_id == ANONYMOUS or record.frame_sha is None or skill in NO_IMPLICIT_FEEDBACK:
            return None
        window = dt.timedelta(seconds=self.settings.reask_window_s)
        since = as_utc(record.created_at) - window
        with self.db.session() as s:
            prev = s.scalars(
                select(AskRow).where(AskRow.device_id == record.device_id, AskRow.id != record.id,
                                     AskRow.created_at >= since, AskRow.created_at <= record.created_at,
                                     AskRow.frame_sha.is_not(None))
                .order_by(AskRow.created_at.desc()).limit(1)
            ).first()
            if (prev is None or prev.outcome != Outcome.ANSWERED.value or prev.frame_sha is None
                    or prev.skill != skill):
                return None
            if s.scalars(select(FeedbackRow.id).where(FeedbackRow.ask_id == prev.id)).first() is not None:
                return None
            prev_id, prev_sha = prev.id, prev.frame_sha
        if not self._same_thing(prev_sha, record.frame_sha):
            return None
        return self.give(prev_id, "wrong", device_id=record.device_id, implicit=True)

    def _same_thing(self, a: str, b: str) -> bool:
        if a == b:
            return True
        ea, eb = self._embedding(a), self._embedding(b)
        if ea is None or eb is None:
            return False
        cos = float(np.dot(ea, eb) / (np.linalg.norm(ea) * np.linalg.norm(eb) + 1e-12))
        return cos >= SAME_FRAME_COSINE
