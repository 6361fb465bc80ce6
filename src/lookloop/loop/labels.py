"""Labels: a confirmed answer for an ask is stored, settles the episode, teaches the model and recalibrates it."""

from __future__ import annotations

from typing import Protocol

from lookloop.catalog import Catalogue
from lookloop.domain import AskRecord, Decision, Outcome, ai_label, clean_text, same_label, utcnow
from lookloop.errors import BadInput
from lookloop.loop.asking import AskService, Hooks
from lookloop.loop.serving import ServingModel
from lookloop.skills.identify import product_line
from lookloop.store import idempotency
from lookloop.store.db import Database
from lookloop.store.tables import AskRow, LabelRow


class TrainingUse(Protocol):
    """Whether a device's wearer lets their episodes teach the model (``ConsentService``)."""

    def training_use(self, device_id: str) -> bool: ...


class LabelService:
    """Stores labels and applies what follows from them (the final answer, instant learning, calibration)."""

    def __init__(
        self,
        db: Database,
        *,
        asks: AskService,
        catalogue: Catalogue,
        serving: ServingModel,
        consent: TrainingUse,
        hooks: Hooks,
    ) -> None:
        self.db = db
        self.asks = asks
        self.catalogue = catalogue
        self.serving = serving
        self.consent = consent
        self.hooks = hooks

    def canonical(self, record: AskRecord, value: str) -> str:
        """The stored form of a label: catalogue names for identify and price asks (both name a product), the text
        as given otherwise."""
        return self.catalogue.canonical_label(value) if record.answer.skill in ("identify", "price") else value

    def final_text(self, label: str) -> str:
        """What the wearer is told once a person has answered: the product line for catalogue items."""
        return product_line(self.catalogue.find(label), label)

    def add(
        self, ask_id: str, value: str, *, source: str, author: str = "",
        idempotency_key: idempotency.Key | None = None,
    ) -> AskRecord:
        """A confirmed answer for an ask: stored, sent on to subscribers, and learned at once.

        With ``idempotency_key`` (the caller's key) a retried call (e.g. a client resending after a crash) is
        applied once; the same key with another label is refused.
        """
        value = clean_text(value or "")
        if not value:
            raise BadInput("the label is empty")
        record = self.asks.get(ask_id)
        request = idempotency.Request("label", idempotency_key,
                                      idempotency.fingerprint(ask=ask_id, value=value, source=source))
        return idempotency.once(self.db, request, lambda: self._add(record, value, source, author, request),
                                self.asks.get)

    def _add(self, record: AskRecord, value: str, source: str, author: str,
             request: idempotency.Request) -> AskRecord:
        ask_id = record.id
        canonical = self.canonical(record, value)
        self._store(record, canonical, source, author, request)
        if record.answer.skill == "identify" and record.frame_sha and self.consent.training_use(record.device_id):
            self.serving.learn_frame(record.frame_sha, canonical, key=f"ask:{ask_id}")
        if record.audit:
            self.serving.record_audit_verdict(ask_id, canonical)
        for hook in self.hooks.labelled:
            hook(ask_id, canonical, source)
        return self.asks.get(ask_id)

    def _store(self, record: AskRecord, canonical: str, source: str, author: str,
               request: idempotency.Request) -> None:
        ask_id = record.id
        with self.db.session() as s:
            request.claim(s, ask_id)  # the label and its receipt commit together
            s.add(
                LabelRow(
                    ask_id=ask_id,
                    frame_sha=record.frame_sha,
                    device_id=record.device_id,
                    value=canonical,
                    source=source,
                    author=author,
                    skill=record.answer.skill,
                )
            )
            row = s.get(AskRow, ask_id)
            assert row is not None
            if row.audit and row.decision == Decision.ANSWER.value and source != "wearer":
                return  # a reviewer's spot check of an auto-answer: the wearer's answer stays as it was
            right = same_label(ai_label(row.result, row.answer_text), canonical)
            row.outcome = (
                Outcome.CONFIRMED if right and source == "wearer" else
                Outcome.HUMAN_ANSWERED if source != "wearer" else Outcome.CORRECTED
            ).value
            row.final_answer = self.final_text(canonical)
            row.answered_at = utcnow()

    def audit_cannot_tell(self, ask_id: str) -> None:
        """A spot check nobody could verify counts as wrong (the wearer's answer stays as it was)."""
        self.serving.record_audit_verdict(ask_id, None)

    def reject(self, ask_id: str, text: str) -> None:
        """No person could answer: the episode ends rejected and an audit counts it as wrong."""
        with self.db.session() as s:
            row = s.get(AskRow, ask_id)
            if row is None:
                return
            row.outcome = Outcome.REJECTED.value
            row.final_answer = text
            row.answered_at = utcnow()  # when it was settled: the human figures count the time to it
            audit = bool(row.audit)
        if audit:
            self.serving.record_audit_verdict(ask_id, None)

    def cancelled(self, ask_id: str) -> None:
        """The wearer stopped waiting for a person: the episode ends cancelled, without an answer."""
        with self.db.session() as s:
            row = s.get(AskRow, ask_id)
            if row is None or row.outcome != Outcome.ESCALATED.value:
                return
            row.outcome = Outcome.CANCELLED.value
            row.answered_at = utcnow()
