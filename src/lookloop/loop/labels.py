"""Labels: an answer for an ask is stored with where it came from and how far it is trusted, settles the episode,
and teaches the shared model only once it is trusted.

What a label does depends on its source (``lookloop.domain.LABEL_SOURCES``):

* an operator's, a gold answer, an import, a consensus of reviewers, a trusted reviewer's: it teaches the shared
  model at once (instant memory) and the head on the next train;
* a reviewer not trusted on their own yet (too few gold answers, or gold accuracy below the bar): it waits for a
  second reviewer who agrees (consensus), and a confirmation is asked for;
* the wearer's own correction: it changes that wearer's answers at once (``PersonalMemory``) and is sent to
  review; others' answers change only once a trusted reviewer or a consensus confirms it;
* nobody without a token gives labels;
* an identify answer naming no catalogue item is a *proposal*: it becomes a class only once an operator adds the
  item (``approve``).
"""

from __future__ import annotations

import datetime as dt
from collections import defaultdict
from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from lookloop.catalog import Catalogue
from lookloop.domain import (
    ANONYMOUS,
    LABEL_SOURCES,
    AskRecord,
    CatalogItem,
    Decision,
    Outcome,
    ai_label,
    as_utc,
    class_name,
    clean_text,
    display,
    normalise_label,
    same_label,
    utcnow,
)
from lookloop.errors import BadInput, Conflict, NotFound, Unauthorized
from lookloop.loop.asking import AskService, Hooks
from lookloop.loop.personal import PersonalMemory
from lookloop.loop.serving import ServingModel
from lookloop.skills.identify import product_line
from lookloop.store import idempotency
from lookloop.store.db import Database
from lookloop.store.tables import (
    LABEL_APPLIED,
    LABEL_PENDING,
    LABEL_PERSONAL,
    LABEL_PROPOSAL,
    LABEL_REJECTED,
    AskRow,
    LabelRow,
)

TRUSTED_SOURCES = frozenset({"operator", "gold", "human", "import", "consensus"})
PROPOSAL_EXAMPLES = 4  # example frames a proposal shows the operator


class TrainingUse(Protocol):
    """Whether a device's wearer lets their episodes teach the model (``ConsentService``)."""

    def training_use(self, device_id: str) -> bool: ...


@dataclass(frozen=True)
class Trust:
    """How far the author of a label is trusted: ``level`` 0..1 (a reviewer's gold accuracy), ``trusted`` when
    their label may teach the shared model on its own, ``operator`` when the author is an operator."""

    level: float
    trusted: bool
    operator: bool = False


UNTRUSTED = Trust(0.0, False)


class AuthorTrust(Protocol):
    """How far a reviewer is trusted, by their measured gold accuracy (``lookloop.humans.trust.ReviewerTrust``)."""

    def trust_of(self, author: str) -> Trust: ...


class _NobodyTrusted:
    def trust_of(self, author: str) -> Trust:
        return UNTRUSTED


@dataclass(frozen=True)
class LabelInfo:
    """A stored label with its provenance."""

    id: str
    ask_id: str | None
    value: str
    source: str
    author: str
    trust: float | None
    status: str
    skill: str
    created_at: dt.datetime


@dataclass(frozen=True)
class Proposal:
    """Answers naming something the catalogue does not have, gathered by name for an operator to decide."""

    name: str  # the class-name form ("Dragon-Fruit")
    display_name: str
    answers: int
    asks: int
    authors: tuple[str, ...]
    example_label_ids: tuple[str, ...]  # labels with a frame: the operator sees these (redacted)
    first_at: dt.datetime
    last_at: dt.datetime


@dataclass(frozen=True)
class Approval:
    item: CatalogItem
    labels: int  # labels that became examples of the new item
    learnt: int  # of them, frames the shared model learnt at once


def _info(row: LabelRow) -> LabelInfo:
    return LabelInfo(row.id, row.ask_id, row.value, row.source, row.author or "", row.trust,
                     row.status or LABEL_APPLIED, row.skill, as_utc(row.created_at))


class LabelService:
    """Stores labels and applies what follows from them (the final answer, learning, calibration, review)."""

    def __init__(
        self,
        db: Database,
        *,
        asks: AskService,
        catalogue: Catalogue,
        serving: ServingModel,
        consent: TrainingUse,
        hooks: Hooks,
        personal: PersonalMemory | None = None,
        trust: AuthorTrust | None = None,
    ) -> None:
        self.db = db
        self.asks = asks
        self.catalogue = catalogue
        self.serving = serving
        self.consent = consent
        self.hooks = hooks
        self.personal = personal
        self.trust: AuthorTrust = trust or _NobodyTrusted()
        # Labels that need a reviewer's confirmation (a wearer's correction, a reviewer not trusted alone yet):
        # the human loop subscribes and queues a confirmation.
        self.unconfirmed: list[Callable[[str], None]] = []

    def canonical(self, record: AskRecord, value: str) -> str:
        """The stored form of a label: for identify and price asks the catalogue's name of the product (or the
        class-name form of a name the catalogue lacks), the text as given otherwise."""
        if record.answer.skill not in ("identify", "price"):
            return value
        item = self.catalogue.find(value)
        return item.name if item is not None else class_name(value)

    def final_text(self, label: str) -> str:
        """What the wearer is told once a person has answered: the product line for catalogue items."""
        return product_line(self.catalogue.find(label), label)

    def add(
        self, ask_id: str, value: str, *, source: str, author: str = "",
        idempotency_key: idempotency.Key | None = None, settle: bool = True,
    ) -> AskRecord:
        """An answer for an ask: stored with its provenance, sent on to subscribers, learnt as far as trusted.

        ``settle`` False: a confirmation of a label given before (the episode stays as it ended). With
        ``idempotency_key`` (the caller's key) a retried call is applied once; the same key with another label is
        refused.
        """
        if source not in LABEL_SOURCES:
            raise BadInput(f"unknown label source {source!r}; one of {', '.join(LABEL_SOURCES)}")
        value = clean_text(value or "")
        if not value:
            raise BadInput("the label is empty")
        record = self.asks.get(ask_id)
        if source == "anonymous" or (source == "wearer" and record.device_id == ANONYMOUS):
            raise Unauthorized("labels need a device token or a reviewer's sign-in: anonymous callers cannot "
                               "teach the model")
        request = idempotency.Request("label", idempotency_key,
                                      idempotency.fingerprint(ask=ask_id, value=value, source=source))
        return idempotency.once(self.db, request, lambda: self._add(record, value, source, author, request, settle),
                                self.asks.get)

    # -- deciding what a label does -------------------------------------------------------------------------

    def _judge(self, record: AskRecord, canonical: str, source: str, author: str) -> tuple[str, float, str]:
        """(source, trust, status) of a new label."""
        if source == "wearer":
            return source, 0.0, LABEL_PERSONAL
        if source in TRUSTED_SOURCES:
            trust, status = 1.0, LABEL_APPLIED
        else:  # a reviewer: trusted alone, or waiting for a second reviewer who agrees
            t = self.trust.trust_of(author)
            if t.operator:
                source, trust, status = "operator", 1.0, LABEL_APPLIED
            elif t.trusted:
                trust, status = t.level, LABEL_APPLIED
            elif self._agreeing_reviewer(record.id, canonical, author):
                source, trust, status = "consensus", 1.0, LABEL_APPLIED
            else:
                trust, status = t.level, LABEL_PENDING
        if self.is_proposal(record.answer.skill, canonical) and source != "import":
            status = LABEL_PROPOSAL  # a new class needs an operator, whoever named it
        return source, trust, status

    def is_proposal(self, skill: str, value: str) -> bool:
        """Whether a label ``value`` for an ask of ``skill`` names a class the catalogue lacks (an operator decides
        whether it becomes one)."""
        return skill == "identify" and self.catalogue.find(value) is None

    def _agreeing_reviewer(self, ask_id: str, canonical: str, author: str) -> bool:
        with self.db.session() as s:
            rows = s.execute(select(LabelRow.value, LabelRow.author).where(
                LabelRow.ask_id == ask_id, LabelRow.source == "reviewer",
                LabelRow.status == LABEL_PENDING)).all()
        return any(same_label(v, canonical) and (a or "") != author for v, a in rows)

    def _add(self, record: AskRecord, value: str, source: str, author: str,
             request: idempotency.Request, settle: bool) -> AskRecord:
        ask_id = record.id
        canonical = self.canonical(record, value)
        source, trust, status = self._judge(record, canonical, source, author)
        wearer_id = self.personal.wearer_of(record.device_id) if self.personal and source == "wearer" else None
        identify = record.answer.skill == "identify" and record.frame_sha is not None
        learns = (status == LABEL_APPLIED and identify and bool(record.frame_sha)
                  and self.consent.training_use(record.device_id))
        # Stored with the label, so the other workers learn it without embedding the frame again.
        embedding = None
        if learns and record.frame_sha:
            try:
                embedding = self.serving.embedding_to_store(record.frame_sha)
            except NotFound:
                pass  # the frame is gone: the label is still kept
        self._store(record, canonical, source, author, request, trust=trust, status=status, wearer_id=wearer_id,
                    settle=settle, embedding=embedding)
        if status == LABEL_APPLIED:
            self._settle_others(ask_id, canonical)
            if learns and record.frame_sha:
                self.serving.learn_frame(record.frame_sha, canonical, key=f"ask:{ask_id}")
            if record.audit:
                self.serving.record_audit_verdict(ask_id, canonical)
            for taught in self.hooks.taught:
                taught(ask_id)
        if status == LABEL_PERSONAL and identify and self.personal is not None and wearer_id and record.frame_sha:
            self.personal.learn(wearer_id, record.frame_sha, canonical, key=f"ask:{ask_id}")
        corrects = not same_label(ai_label(record.answer.result, record.answer.text), canonical)
        if record.frame_sha and (status == LABEL_PENDING or (status == LABEL_PERSONAL and corrects)):
            for review in self.unconfirmed:
                review(ask_id)
        if settle:
            for labelled in self.hooks.labelled:
                labelled(ask_id, canonical, source)
        return self.asks.get(ask_id)

    def _settle_others(self, ask_id: str, canonical: str) -> None:
        """A trusted label settles the ask's labels waiting for review: agreeing ones apply (the wearer's stays
        theirs too), the others are overruled."""
        with self.db.session() as s:
            rows = s.scalars(select(LabelRow).where(
                LabelRow.ask_id == ask_id, LabelRow.status.in_((LABEL_PENDING, LABEL_PERSONAL)))).all()
            for row in rows:
                row.status = LABEL_APPLIED if same_label(row.value, canonical) else LABEL_REJECTED

    def _store(self, record: AskRecord, canonical: str, source: str, author: str,
               request: idempotency.Request, *, trust: float, status: str, wearer_id: str | None,
               settle: bool, embedding: tuple[bytes, str] | None = None) -> None:
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
                    author=author[:64],
                    skill=record.answer.skill,
                    trust=trust,
                    status=status,
                    wearer_id=wearer_id,
                    embedding=embedding[0] if embedding else None,
                    embedder_version=embedding[1] if embedding else None,
                )
            )
            if not settle:
                return
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

    # -- reading ----------------------------------------------------------------------------------------------

    def of_ask(self, ask_id: str) -> list[LabelInfo]:
        """An ask's labels, oldest first, with their provenance."""
        with self.db.session() as s:
            rows = s.scalars(select(LabelRow).where(LabelRow.ask_id == ask_id)
                             .order_by(LabelRow.created_at, LabelRow.id)).all()
            return [_info(r) for r in rows]

    def get(self, label_id: str) -> LabelInfo:
        with self.db.session() as s:
            row = s.get(LabelRow, label_id)
            if row is None:
                raise NotFound(f"no label {label_id!r}")
            return _info(row)

    def frame_sha(self, label_id: str) -> str:
        with self.db.session() as s:
            sha = s.scalar(select(LabelRow.frame_sha).where(LabelRow.id == label_id))
        if not sha:
            raise NotFound("this label has no frame")
        return str(sha)

    # -- proposals: answers naming something the catalogue lacks -----------------------------------------------

    def proposals(self) -> list[Proposal]:
        """Names people answered that the catalogue lacks, most answered first."""
        with self.db.session() as s:
            rows = s.scalars(select(LabelRow).where(LabelRow.status == LABEL_PROPOSAL)
                             .order_by(LabelRow.created_at, LabelRow.id)).all()
            by_name: dict[str, list[LabelRow]] = defaultdict(list)
            for r in rows:
                by_name[normalise_label(r.value)].append(r)
            out = []
            for group in by_name.values():
                name = class_name(group[0].value)
                examples = tuple(r.id for r in group if r.frame_sha)[:PROPOSAL_EXAMPLES]
                out.append(Proposal(
                    name=name, display_name=display(name), answers=len(group),
                    asks=len({r.ask_id for r in group}), authors=tuple(sorted({r.author for r in group if r.author})),
                    example_label_ids=examples, first_at=as_utc(group[0].created_at),
                    last_at=as_utc(group[-1].created_at)))
        return sorted(out, key=lambda p: (-p.answers, p.name))

    @staticmethod
    def _proposal_rows(s: Session, name: str) -> list[LabelRow]:
        key = normalise_label(name)
        rows = s.scalars(select(LabelRow).where(LabelRow.status == LABEL_PROPOSAL)).all()
        return [r for r in rows if normalise_label(r.value) == key]

    def approve(self, name: str, *, price: float | None = None, currency: str = "SEK",
                coarse_class: str = "", description: str = "") -> Approval:
        """An operator adds a proposed name to the catalogue: its answers become examples of the new item, which
        the shared model learns at once (its instant memory; the head on the next train)."""
        name = class_name(clean_text(name or ""))
        if not name:
            raise BadInput("the new item needs a name")
        if self.catalogue.find(name) is not None:
            raise Conflict(f"{display(name)} is in the catalogue already")
        with self.db.session() as s:
            if not self._proposal_rows(s, name):
                raise NotFound(f"no answers propose {display(name)!r}")
        item = self.catalogue.create(CatalogItem(id=name.lower(), name=name, coarse_class=coarse_class,
                                                 description=description, price=price, currency=currency))
        learn: list[tuple[str, str, str]] = []  # (ask id, frame, device)
        with self.db.session() as s:
            rows = self._proposal_rows(s, name)
            for r in rows:
                r.value = item.name
                r.status = LABEL_APPLIED
                if r.skill == "identify" and r.frame_sha and r.ask_id:
                    learn.append((r.ask_id, r.frame_sha, r.device_id or ""))
            # The wearers' own answers of that name now name the item too.
            for r in s.scalars(select(LabelRow).where(LabelRow.source == "wearer",
                                                      LabelRow.skill == "identify")).all():
                if normalise_label(r.value) == normalise_label(name):
                    r.value = item.name
            n = len(rows)
        learnt = 0
        for ask_id, sha, device in dict.fromkeys(learn):
            if self.consent.training_use(device):
                self.serving.learn_frame(sha, item.name, key=f"ask:{ask_id}")
                learnt += 1
            for taught in self.hooks.taught:
                taught(ask_id)
        return Approval(item, n, learnt)

    def reject_proposal(self, name: str) -> int:
        """An operator turns a proposed name down: its answers never become a class. Returns how many."""
        with self.db.session() as s:
            rows = self._proposal_rows(s, name)
            if not rows:
                raise NotFound(f"no answers propose {display(class_name(name))!r}")
            for r in rows:
                r.status = LABEL_REJECTED
            return len(rows)

    def counts(self) -> dict[str, int]:
        """Labels per status (older labels without one count as applied)."""
        with self.db.session() as s:
            rows = s.execute(select(LabelRow.status, func.count()).group_by(LabelRow.status)).all()
        out: dict[str, int] = defaultdict(int)
        for status, n in rows:
            out[status or LABEL_APPLIED] += int(n)
        return dict(out)

    # -- the end of an episode without a label ---------------------------------------------------------------

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

