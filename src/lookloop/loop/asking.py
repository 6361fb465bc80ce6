"""Asking: route the question, let the skill answer, let the policy decide, store the episode, tell subscribers."""

from __future__ import annotations

import logging
import random
import time
from collections.abc import Callable, Mapping
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Protocol

import numpy as np
from sqlalchemy import func, select

from lookloop.config import Settings
from lookloop.domain import (
    Answer,
    Ask,
    AskRecord,
    Candidate,
    Consent,
    Decision,
    Frame,
    Outcome,
    PolicyDecision,
    Prediction,
    clean_text,
    display,
    utcnow,
    without_human_review,
)
from lookloop.errors import BadInput, NotFound
from lookloop.imaging import MAX_FRAME_SIDE, decode_image
from lookloop.loop.calibration import draw_audit, score_kind
from lookloop.loop.policies import UNKNOWN_GROUP, confidence_score
from lookloop.loop.serving import ServingModel
from lookloop.skills.base import HandToHuman, Skill
from lookloop.skills.identify import IdentifySkill
from lookloop.store import idempotency
from lookloop.store.db import Database
from lookloop.store.frames import frame_id
from lookloop.store.tables import AskRow, LabelRow, new_id

# What the wearer hears about a frame unlike anything learnt: no product name, no price.
UNKNOWN_TEXT = "I don't know this one — asking a helper."

After = Callable[[Callable[[], None]], None]
"""Takes work that may run once the reply has gone (``AskService.ask``'s ``after``)."""


def _logged(fn: Callable[[], None], ask_id: str) -> Callable[[], None]:
    """``fn``, logging a failure instead of raising it: nobody is waiting for it any more."""

    def run() -> None:
        try:
            fn()
        except Exception:  # noqa: BLE001 - the ask is stored and answered; its follow-up is best effort
            log.exception("follow-up of ask %s failed", ask_id)

    return run


log = logging.getLogger("lookloop.asking")

# Sealing the upload is disk-bound (fsync): a small pool lets it overlap the model's forward pass.
_STORE_POOL = ThreadPoolExecutor(max_workers=4, thread_name_prefix="lookloop-store")


@dataclass
class Hooks:
    """What happens after an ask or a label: the human loop subscribes here (in ``lookloop.system``)."""

    asked: list[Callable[[AskRecord], None]] = field(default_factory=list)  # every stored ask
    escalated: list[Callable[[AskRecord], None]] = field(default_factory=list)
    labelled: list[Callable[[str, str, str], None]] = field(default_factory=list)  # ask_id, value, source
    # The shared model learned from an ask's labels (a trusted label, a confirmation, an approved proposal):
    # every other worker must learn it too.
    taught: list[Callable[[str], None]] = field(default_factory=list)  # ask_id


class ConsentLookup(Protocol):
    """(wearer id, consent) of a device (``lookloop.privacy.consent.ConsentService``)."""

    def lookup(self, device_id: str) -> tuple[str, Consent]: ...


class FrameKeeper(Protocol):
    """Frame storage under the wearer's consent (``lookloop.privacy.storage.FramePrivacy``)."""

    def store(
        self, frame: Frame, *, frame_id: str, wearer_id: str, consent: Consent, needs_human: bool
    ) -> str | None: ...

    def redact_soon(self, sha: str) -> None: ...


def record_of(row: AskRow) -> AskRecord:
    answer = Answer(
        text=row.answer_text,
        skill=row.skill,
        confidence=row.confidence,
        decision=Decision(row.decision),
        model_version=row.model_version,
        result=dict(row.result or {}),
        candidates=tuple(Candidate(str(c[0]), float(c[1])) for c in (row.candidates or [])),
        policy=row.policy,
    )
    return AskRecord(
        id=row.id,
        device_id=row.device_id,
        question=row.question,
        created_at=row.created_at,
        answer=answer,
        outcome=row.outcome,
        frame_sha=row.frame_sha,
        latency_ms=row.latency_ms,
        final_answer=row.final_answer,
        audit=bool(row.audit),
    )


@dataclass(frozen=True)
class _Scored:
    """What the policy saw for an identify ask: kept on the ask so a later label can recalibrate."""

    score: float
    kind: str
    label: str


class AskService:
    """Answers asks and keeps the episodes."""

    def __init__(
        self,
        settings: Settings,
        db: Database,
        *,
        skills: Callable[[], Mapping[str, Skill]],
        route: Callable[[str, bool], str | None],
        serving: ServingModel,
        consent: ConsentLookup,
        frames: FrameKeeper,
        hooks: Hooks,
        dictating: Callable[[str], bool] = lambda device_id: False,
        audit_rng: random.Random | None = None,
        personal: Callable[[str, np.ndarray, Prediction], Prediction] | None = None,
    ) -> None:
        self.settings = settings
        self.db = db
        self._skills = skills  # built on first use: some skills load models
        self._route = route
        self.serving = serving
        self.consent = consent
        self.frames = frames
        self.hooks = hooks
        self._dictating = dictating
        self._audit_rng = audit_rng or random.Random()
        # The asking wearer's own corrections (``PersonalMemory.adjust``): (device id, embedding, prediction).
        self.personal = personal

    def validate_question(self, question: str) -> str:
        q = clean_text(question)  # NUL, escape codes and zero-width characters are never stored
        if not q:
            raise BadInput("the question is empty (after removing control and invisible characters)")
        if len(q) > self.settings.max_question_chars:
            raise BadInput(f"the question is longer than {self.settings.max_question_chars} characters")
        return q

    def ask(
        self,
        question: str,
        image: bytes | None,
        *,
        device_id: str = "anonymous",
        idempotency_key: idempotency.Key | None = None,
        skill: str | None = None,
        request: idempotency.Request | None = None,
        after: After | None = None,
    ) -> AskRecord:
        """Answers an ask, stores the episode, and escalates it when the policy is not sure.

        With ``idempotency_key`` (the caller's key) a resent ask is answered once: the same request gets the
        stored ask back, another request under the same key is refused. ``request`` replaces the keyed
        request made from the question, the frame and the skill (a voice ask keys the clip it heard).

        ``after``: what runs once the answer is stored but need not hold back the reply (the subscribers'
        hooks, queueing the frame's redaction) is handed to it, e.g. to run after the HTTP response is sent;
        without it, that work runs before this returns.
        """
        start = time.perf_counter()
        q = self.validate_question(question)
        if request is None:
            request = self.request(q, image, device_id=device_id, skill=skill, key=idempotency_key)
        return idempotency.once(
            self.db, request, lambda: self._ask(q, image, device_id, skill, request, start, after), self.get
        )

    @staticmethod
    def request(
        question: str, image: bytes | None, *, device_id: str, skill: str | None, key: idempotency.Key | None,
    ) -> idempotency.Request:
        """The keyed request of a typed ask: its fingerprint covers everything that shapes the answer."""
        fp = idempotency.fingerprint(question=question, image=idempotency.content_sha(image), skill=skill or "",
                                     device=device_id)
        return idempotency.Request("ask", key, fp)

    def replayed(self, request: idempotency.Request) -> AskRecord | None:
        """The ask stored for this keyed request, when it was answered already (else None)."""
        done = request.replayed(self.db)
        return self.get(done) if done is not None else None

    def _ask(
        self, q: str, image: bytes | None, device_id: str, skill: str | None, request: idempotency.Request,
        start: float, after: After | None,
    ) -> AskRecord:
        # Before the reply: decode, the skill (embed, head, policy for identify) and one durable write.
        skills = self._skills()
        name = skill or self._route(q, image is not None)
        if name is None and self._dictating(device_id):
            name = "notes"  # a sentence said while taking notes is dictation: it stays with the wearer
        if name is None:
            name = HandToHuman.name  # out of scope: a person answers rather than a wrong skill
        chosen = skills.get(name)
        if chosen is None:
            raise BadInput(f"unknown skill {name!r}; available: {', '.join(sorted(skills))}")
        # Decoded once, no larger than the skill reads (a JPEG at a reduced scale straight from its DCT).
        side = chosen.frame_side if isinstance(chosen, IdentifySkill) else MAX_FRAME_SIDE
        frame = (
            decode_image(image, max_bytes=self.settings.max_image_bytes, max_pixels=self.settings.max_image_pixels,
                         max_side=side)
            if image is not None
            else None
        )
        if name == "identify":
            self.serving.sync()
        if chosen.needs_frame and frame is None:
            raise BadInput(f"the {name} skill needs an image: send one with the question")
        ask = Ask(question=q, frame=frame, device_id=device_id)
        wearer_id, consent = self.consent.lookup(device_id)
        fid = frame_id(device_id, frame.data) if frame is not None else None
        stored: Future[str | None] | None = None
        if frame is not None and fid is not None and consent.store_frames and self.settings.redact_text != "sync":
            stored = _STORE_POOL.submit(
                self.frames.store, frame, frame_id=fid, wearer_id=wearer_id, consent=consent, needs_human=False
            )
        answer, scored = self._answer(chosen, ask)
        if not consent.human_review:
            answer = without_human_review(answer)
        escalated = answer.decision == Decision.ESCALATE
        # Drawn whatever the decision: independence is what makes audit labels an unbiased calibration sample.
        # Only where a person may see the frame and it is kept anyway (no frame is kept just for an audit).
        audit = (
            scored is not None and frame is not None and consent.human_review and consent.store_frames
            and draw_audit(self._audit_rng, self.settings.audit_rate)
        )
        if stored is not None:
            frame_sha = stored.result()  # sealed while the skill ran: the ask never points at a missing frame
        elif frame is not None and fid is not None:
            frame_sha = self.frames.store(frame, frame_id=fid, wearer_id=wearer_id, consent=consent,
                                          needs_human=escalated or audit)
        else:
            frame_sha = None
        latency = (time.perf_counter() - start) * 1000
        row = AskRow(
            id=new_id(),
            device_id=device_id,
            question=q,
            frame_sha=frame_sha,
            frame_media_type=frame.media_type if frame else None,
            frame_width=frame.width if frame else None,
            frame_height=frame.height if frame else None,
            skill=answer.skill,
            answer_text=answer.text,
            confidence=answer.confidence,
            decision=answer.decision.value,
            policy=answer.policy,
            model_version=answer.model_version,
            result=answer.result,
            candidates=[[c.label, c.score] for c in answer.candidates],
            outcome=(Outcome.ESCALATED if escalated else Outcome.ANSWERED).value,
            latency_ms=latency,
            answered_at=utcnow() if answer.decision == Decision.ANSWER else None,
            audit=audit if scored is not None else None,
            policy_score=scored.score if scored else None,
            score_kind=scored.kind if scored else None,
            predicted_label=scored.label if scored else None,
        )
        with self.db.session() as s:
            s.add(row)
            request.claim(s, row.id)  # the episode and its receipt commit together
        record = record_of(row)
        redact = stored is not None and frame_sha is not None and (escalated or audit)

        def follow_up() -> None:
            # After the reply: a person will look at the frame, so its redaction goes ahead of the others;
            # then the subscribers (the review queue, the live hub, feedback, figures).
            if redact and frame_sha is not None:
                self.frames.redact_soon(frame_sha)
            for asked in self.hooks.asked:
                asked(record)
            if escalated:
                for hook in self.hooks.escalated:
                    hook(record)

        if after is None:
            follow_up()
        else:
            after(_logged(follow_up, record.id))
        return record

    def _answer(self, skill: Skill, ask: Ask) -> tuple[Answer, _Scored | None]:
        """The answer, and for identify asks the score the policy decided on.

        An identify ask the outlier gate flags (unlike anything learnt) escalates in the "unknown" group with no
        product name or price; the rest are decided by the policy within the group of the predicted item's
        family — a group without a certificate yet escalates and says how many audit labels it still needs.
        """
        if not isinstance(skill, IdentifySkill):
            return skill.run(ask), None
        q = skill.embed(ask)
        pred = skill.predict(ask, q)
        if self.personal is not None:
            pred = self.personal(ask.device_id, q, pred)
        base = skill.answer_for(pred, self.serving.model_version)
        # One policy and gate decide and name the score kind, even if a recalibration swaps them meanwhile.
        policy, gate = self.serving.policy, self.serving.gate
        label = str(base.result.get("label", ""))
        unknown = gate is not None and gate.is_unknown(pred.novelty)
        group = UNKNOWN_GROUP if unknown else self.serving.group_of(label)
        decision = policy.decide(pred.probs, group)
        if unknown:  # whatever a hand-set policy says: a guess about an unknown thing is never answered
            decision = PolicyDecision(Decision.ESCALATE, decision.confidence, decision.threshold, decision.policy)
        kind = score_kind(policy)
        scored = _Scored(confidence_score(pred.probs, kind), kind, label)
        if ask.frame is not None:
            self.serving.remember_query(frame_id(ask.device_id, ask.frame.data), q[0])
        result: dict[str, object] = {**base.result, "raw_confidence": round(base.confidence, 4),
                                     "threshold": decision.threshold, "group": group,
                                     "novelty": round(float(pred.novelty), 4), "unknown": unknown}
        guarantee = self.serving.guarantee(group)
        if guarantee is not None:
            result["guarantee"] = guarantee.text
        if unknown:
            text = UNKNOWN_TEXT
            result.update(name=None, price=None, currency=None)
        elif decision.decision == Decision.ESCALATE:
            guess = display(label)
            if guarantee is not None and guarantee.bound is None:
                text = f"Maybe {guess} — {guarantee.text}; asking a helper."
            else:
                text = f"Not sure — maybe {guess}; asking a helper."
        else:
            text = base.text
        return Answer(
            text=text,
            skill=base.skill,
            confidence=round(decision.confidence, 4),
            decision=decision.decision,
            model_version=base.model_version,
            result=result,
            candidates=base.candidates,
            policy=decision.policy,
        ), scored

    def get(self, ask_id: str) -> AskRecord:
        with self.db.session() as s:
            row = s.get(AskRow, ask_id)
            if row is None:
                raise NotFound(f"no ask with id {ask_id!r}")
            return record_of(row)

    def recent(
        self, *, device_id: str | None = None, outcome: str | None = None, limit: int = 50
    ) -> list[AskRecord]:
        with self.db.session() as s:
            stmt = select(AskRow).order_by(AskRow.created_at.desc()).limit(max(1, min(limit, 500)))
            if device_id:
                stmt = stmt.where(AskRow.device_id == device_id)
            if outcome:
                stmt = stmt.where(AskRow.outcome == outcome)
            return [record_of(r) for r in s.scalars(stmt).all()]

    def stats(self) -> dict[str, object]:
        with self.db.session() as s:
            total = s.scalar(select(func.count()).select_from(AskRow)) or 0
            by_outcome = dict(s.execute(select(AskRow.outcome, func.count()).group_by(AskRow.outcome)).all())
            labels = s.scalar(select(func.count()).select_from(LabelRow)) or 0
        return {"asks": total, "outcomes": by_outcome, "labels": labels, "model_version": self.serving.model_version}
