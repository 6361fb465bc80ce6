"""The review queue: live items first, then by active-learning priority; locks that time out; skips;
consensus among reviewers with an operator as tie-breaker; gold items that score reviewers."""

from __future__ import annotations

import datetime as dt
import threading
from collections import Counter
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, replace
from typing import Any, Protocol

from sqlalchemy import and_, case, delete, false, func, or_, select, update
from sqlalchemy.exc import IntegrityError

from lookloop.config import Settings
from lookloop.domain import AskRecord, ai_label, as_utc, clean_text, normalise_label, utcnow
from lookloop.errors import BadInput, Conflict, Forbidden, NotFound
from lookloop.humans.accounts import Principal
from lookloop.humans.tables import AccountRow, ReviewAnswerRow, ReviewItemRow, ReviewOfferRow
from lookloop.humans.trust import ReviewerTrust, standing
from lookloop.loop.strategies import ask_priority
from lookloop.store.db import Database

REJECT = "\x00reject"  # the consensus key of "cannot tell"
ACTIONS = ("answer", "reject", "skip")
MAX_LOCKS_PER_REVIEWER = 2  # the item on screen and the one preloaded behind it
WAITING = ("open", "operator")  # the statuses of an item still waiting for its answer


@dataclass(frozen=True)
class QueueItem:
    id: str
    ask_id: str | None
    kind: str
    question: str
    frame_sha: str | None
    skill: str
    ai_answer: str
    ai_label: str
    confidence: float
    candidates: tuple[tuple[str, float], ...]
    live: bool
    priority: float
    status: str
    needed: int
    locked_by: str | None
    locked_until: dt.datetime | None
    resolved_value: str | None
    created_at: dt.datetime
    reason: str | None = None  # "escalated" or "audit" (a spot check of an auto-answer); None: older items


@dataclass(frozen=True)
class Submission:
    item: QueueItem
    resolved: bool
    value: str | None  # the resolved label; None for "cannot tell" or while unresolved
    status: str
    correct: bool | None = None  # gold items only
    gold: bool = False  # (a gold item's reply to the reviewer looks like any other: resolved/status/value)


@dataclass(frozen=True)
class ReviewerStats:
    account_id: str
    username: str
    items: int
    skips: int
    seconds_per_item: float | None
    agreement: float | None  # over the items another person answered too (agreeing with oneself proves nothing)
    gold_answered: int
    gold_accuracy: float | None
    agreement_items: int = 0  # how many items the agreement rests on
    trusted: bool = False  # their label teaches the shared model on its own (``lookloop.humans.trust``)
    gold_to_go: int | None = None  # right gold answers still needed for that; None: out of reach


def _item(row: ReviewItemRow) -> QueueItem:
    return QueueItem(
        id=row.id, ask_id=row.ask_id, kind=row.kind, question=row.question, frame_sha=row.frame_sha,
        skill=row.skill, ai_answer=row.ai_answer, ai_label=row.ai_label, confidence=row.confidence,
        candidates=tuple((str(c[0]), float(c[1])) for c in (row.candidates or [])), live=bool(row.live),
        priority=row.priority, status=row.status, needed=row.needed, locked_by=row.locked_by,
        locked_until=as_utc(row.locked_until) if row.locked_until else None, resolved_value=row.resolved_value,
        created_at=as_utc(row.created_at), reason=row.reason,
    )


class AskSource(Protocol):
    def get(self, ask_id: str) -> AskRecord: ...


class LabelNames(Protocol):
    def canonical_label(self, value: str) -> str: ...


class RedactedFrames(Protocol):
    def redacted_bytes(self, sha: str) -> bytes: ...

    def redacted_if_ready(self, sha: str) -> bytes | None: ...


class ReviewQueue:
    """Queue operations; every state change is a compare-and-set in the database so it holds across workers.

    Who holds what: an escalated item is held by the reviewer whose lock on it is live (it was offered to them
    over the live hub, handed out by ``next`` or claimed); a gold item, which every reviewer answers and nobody
    locks, by the reviewers it was offered to (``review_offers``), until the offer expires or they answer,
    skip or release it. A reviewer sees an item only while holding it (``held_item``), and a gold item is
    shown to them exactly like an escalated one (the same fields, a lock that expires).
    """

    def __init__(
        self,
        settings: Settings,
        db: Database,
        *,
        asks: AskSource,
        names: LabelNames,
        frames: RedactedFrames,
        priority: Callable[[AskRecord], float] = ask_priority,
        trust: ReviewerTrust | None = None,
    ) -> None:
        self.settings = settings
        self.trust = trust  # reviewers not trusted yet meet gold items first
        self.db = db
        self.asks = asks
        self.names = names
        self.frames = frames
        self.priority_fn = priority
        self.clock: Callable[[], dt.datetime] = utcnow
        self.on_resolved: list[Callable[[QueueItem, str | None, list[str]], None]] = []
        self._served: dict[tuple[str, str], dt.datetime] = {}
        self._served_lock = threading.Lock()

    def frame_bytes(self, item: QueueItem) -> bytes:
        """The frame a reviewer sees for ``item``: the one place that decides which bytes (always redacted)."""
        if item.frame_sha is None:
            raise NotFound("this item has no frame")
        return self.frames.redacted_bytes(item.frame_sha)

    @property
    def lock_timeout(self) -> dt.timedelta:
        return dt.timedelta(seconds=self.settings.review_lock_timeout_s)

    # -- filling ------------------------------------------------------------------------------------------

    def enqueue_ask(
        self, record: AskRecord, *, live: bool = True, reason: str = "escalated", priority: float | None = None
    ) -> QueueItem:
        """The queue item of an escalated or audit ask (created once; a second call returns the same item).

        ``priority`` None: the active-learning priority of the ask.
        """
        with self.db.session() as s:
            row = s.scalars(select(ReviewItemRow).where(ReviewItemRow.ask_id == record.id,
                                                        ReviewItemRow.kind == "ask")).first()
            if row is None:
                a = record.answer
                row = ReviewItemRow(
                    ask_id=record.id, kind="ask", question=record.question, frame_sha=record.frame_sha,
                    skill=a.skill, ai_answer=a.text, ai_label=ai_label(a.result, a.text),
                    confidence=a.confidence, candidates=[[c.label, c.score] for c in a.candidates][:10],
                    live=live, priority=float(self.priority_fn(record) if priority is None else priority),
                    status="open", needed=self.settings.review_consensus, created_at=self.clock(), reason=reason,
                )
                s.add(row)
                s.flush()
            return _item(row)

    def enqueue_confirm(self, record: AskRecord) -> QueueItem:
        """A second opinion on an ask's label (a wearer's correction, a reviewer not trusted alone yet): shown like
        any item, without the label it checks, so the reviewer answers on their own. One open at a time per ask."""
        with self.db.session() as s:
            row = s.scalars(select(ReviewItemRow).where(
                ReviewItemRow.ask_id == record.id, ReviewItemRow.kind == "confirm",
                ReviewItemRow.status.in_(WAITING))).first()
            if row is None:
                a = record.answer
                row = ReviewItemRow(
                    ask_id=record.id, kind="confirm", question=record.question, frame_sha=record.frame_sha,
                    skill=a.skill, ai_answer=a.text, ai_label=ai_label(a.result, a.text),
                    confidence=a.confidence, candidates=[[c.label, c.score] for c in a.candidates][:10],
                    live=False, priority=float(self.priority_fn(record)), status="open",
                    needed=self.settings.review_consensus, created_at=self.clock(), reason="confirm",
                )
                s.add(row)
                s.flush()
            return _item(row)

    def add_gold(
        self, *, question: str, frame_sha: str | None, answer: str, ai_answer: str = "", ai_label: str = "",
        confidence: float = 0.0, candidates: list[tuple[str, float]] | None = None, skill: str = "identify",
        created_at: dt.datetime | None = None,
    ) -> QueueItem:
        """A gold item: shown like any other, its known answer scores whoever answers it.

        ``created_at``: when the question was asked (a gold item made from an ask keeps the ask's time, so it
        waits in the queue like any item of that age).
        """
        answer = (answer or "").strip()
        if not answer:
            raise BadInput("a gold item needs its answer")
        with self.db.session() as s:
            row = ReviewItemRow(
                kind="gold", question=question, frame_sha=frame_sha, skill=skill, ai_answer=ai_answer,
                ai_label=ai_label, confidence=confidence, candidates=[[c, p] for c, p in (candidates or [])],
                live=False, priority=0.0, status="gold", needed=0, gold_answer=answer,
                created_at=created_at or self.clock(),
            )
            s.add(row)
            s.flush()
            return _item(row)

    def gold_from_ask(self, ask_id: str, answer: str | None = None) -> QueueItem:
        """Turns a settled ask into a gold item (answer: its final label unless given)."""
        record = self.asks.get(ask_id)
        value = answer or (self.resolved_label(ask_id) or "")
        a = record.answer
        return self.add_gold(
            question=record.question, frame_sha=record.frame_sha, answer=value, ai_answer=a.text,
            ai_label=ai_label(a.result, a.text), confidence=a.confidence,
            candidates=[(c.label, c.score) for c in a.candidates], skill=a.skill, created_at=record.created_at,
        )

    def is_gold_frame(self, frame_sha: str) -> bool:
        """Whether a gold item shows the frame ``frame_sha``."""
        with self.db.session() as s:
            return s.scalars(select(ReviewItemRow.id).where(ReviewItemRow.kind == "gold",
                                                            ReviewItemRow.frame_sha == frame_sha)).first() is not None

    def resolved_label(self, ask_id: str) -> str | None:
        with self.db.session() as s:
            return s.scalars(select(ReviewItemRow.resolved_value).where(
                ReviewItemRow.ask_id == ask_id, ReviewItemRow.kind == "ask",
                ReviewItemRow.status == "resolved")).first()

    # -- reading ------------------------------------------------------------------------------------------

    def get(self, item_id: str) -> QueueItem:
        with self.db.session() as s:
            row = s.get(ReviewItemRow, item_id)
            if row is None:
                raise NotFound(f"no review item {item_id!r}")
            return _item(row)

    def for_ask(self, ask_id: str) -> QueueItem | None:
        with self.db.session() as s:
            row = s.scalars(select(ReviewItemRow).where(ReviewItemRow.ask_id == ask_id,
                                                        ReviewItemRow.kind == "ask")).first()
            return _item(row) if row else None

    def is_open_for_ask(self, ask_id: str) -> bool:
        """Whether ``ask_id`` waits in the queue (open, or with an operator to decide)."""
        with self.db.session() as s:
            row = s.scalars(select(ReviewItemRow.id).where(
                ReviewItemRow.ask_id == ask_id, ReviewItemRow.kind == "ask",
                ReviewItemRow.status.in_(("open", "operator")))).first()
        return row is not None

    def held_item(self, item_id: str, account_id: str) -> QueueItem | None:
        """The item as ``account_id`` holds it now, or None: not theirs, expired, answered or no such item."""
        now = self.clock()
        with self.db.session() as s:
            row = s.get(ReviewItemRow, item_id)
            if row is None:
                return None
            if row.kind != "gold":
                held = (row.status in ("open", "operator") and row.locked_by == account_id
                        and row.locked_until is not None and as_utc(row.locked_until) > now)
                return _item(row) if held else None
            offer = s.get(ReviewOfferRow, (item_id, account_id))
            if offer is None or as_utc(offer.expires_at) <= now:
                return None
            return self._as_held(_item(row), account_id, as_utc(offer.expires_at))

    def holds_ask(self, account_id: str, ask_id: str) -> bool:
        """Whether ``account_id`` holds the review item of ``ask_id`` now (a live lock on it)."""
        with self.db.session() as s:
            row = s.scalars(select(ReviewItemRow.id).where(
                ReviewItemRow.ask_id == ask_id, ReviewItemRow.kind == "ask",
                ReviewItemRow.status.in_(("open", "operator")), ReviewItemRow.locked_by == account_id,
                ReviewItemRow.locked_until > self.clock())).first()
        return row is not None

    def position(self, item_id: str) -> int | None:
        """Where an open item stands in the order reviewers get items (1: next); None when it waits no more.

        The order of ``next``: live items first, then those for an operator, then by priority, then oldest.
        """
        item = self.get(item_id)
        if item.status not in WAITING:
            return None
        r = ReviewItemRow
        operator = item.status == "operator"
        # (ranks before it, ranks level with it) for each key of the order, most significant first.
        keys: list[tuple[Any, Any]] = [
            (false() if item.live else r.live.is_(True), r.live.is_(True) if item.live else r.live.is_not(True)),
            (false() if operator else r.status == "operator",
             r.status == "operator" if operator else r.status != "operator"),
            (r.priority > item.priority, r.priority == item.priority),
            (r.created_at < item.created_at, None),
        ]
        ahead: list[Any] = []
        level: list[Any] = []
        for before, even in keys:
            ahead.append(and_(*level, before))
            level.append(even)
        with self.db.session() as s:
            n = s.scalar(select(func.count()).select_from(r).where(
                r.status.in_(WAITING), r.id != item_id, or_(*ahead)))
        return 1 + int(n or 0)

    def counts(self) -> dict[str, int]:
        now = self.clock()
        with self.db.session() as s:
            by_status = dict(s.execute(select(ReviewItemRow.status, func.count())
                                       .group_by(ReviewItemRow.status)).all())
            live = s.scalar(select(func.count()).select_from(ReviewItemRow).where(
                ReviewItemRow.status == "open", ReviewItemRow.live.is_(True))) or 0
            locked = s.scalar(select(func.count()).select_from(ReviewItemRow).where(
                ReviewItemRow.locked_until > now)) or 0
        return {"open": int(by_status.get("open", 0)), "live": int(live), "operator": int(by_status.get("operator", 0)),
                "resolved": int(by_status.get("resolved", 0)), "gold": int(by_status.get("gold", 0)),
                "locked": int(locked)}

    def offerable(self, *, limit: int = 200, new_to: str | None = None) -> list[QueueItem]:
        """Live items waiting with nobody holding them: what a worker offers its on-duty reviewers after it
        may have missed an escalation (oldest first). ``new_to``: only those that account has not answered,
        turned down or skipped."""
        now = self.clock()
        r = ReviewItemRow
        where = [r.kind == "ask", r.status.in_(WAITING), r.live.is_(True),
                 or_(r.locked_until.is_(None), r.locked_until <= now)]
        if new_to is not None:
            where.append(r.id.not_in(select(ReviewAnswerRow.item_id).where(ReviewAnswerRow.account_id == new_to)))
        with self.db.session() as s:
            rows = s.scalars(select(r).where(*where).order_by(r.created_at).limit(limit)).all()
            return [_item(row) for row in rows]

    def resolved_since(self, since: dt.datetime) -> list[QueueItem]:
        """Asks' items settled at or after ``since`` (their answers may not have reached every stream)."""
        r = ReviewItemRow
        with self.db.session() as s:
            rows = s.scalars(select(r).where(r.kind == "ask", r.status == "resolved", r.resolved_at >= since)
                             .order_by(r.resolved_at).limit(500)).all()
            return [_item(row) for row in rows]

    def held_by(self, account_id: str) -> list[QueueItem]:
        """The live items waiting that ``account_id`` holds a lock on now (oldest first)."""
        r = ReviewItemRow
        with self.db.session() as s:
            rows = s.scalars(select(r).where(r.locked_by == account_id, r.locked_until > self.clock(),
                                             r.status.in_(WAITING), r.live.is_(True))
                             .order_by(r.created_at)).all()
            return [_item(row) for row in rows]

    def locks_held(self, account_id: str) -> int:
        with self.db.session() as s:
            return int(s.scalar(select(func.count()).select_from(ReviewItemRow).where(
                ReviewItemRow.locked_by == account_id, ReviewItemRow.locked_until > self.clock())) or 0)

    # -- claiming -----------------------------------------------------------------------------------------

    def try_lock(self, item_id: str, account_id: str) -> bool:
        """Locks an open item for ``account_id`` unless someone else holds a live lock (compare-and-set)."""
        return self._claim(account_id, [item_id]) is not None

    def _claim(self, account_id: str, ids: list[str], *, statuses: tuple[str, ...] = WAITING,
               later: frozenset[str] = frozenset()) -> str | None:
        """Locks the first claimable item of ``ids`` for ``account_id`` (in the order of ``next``, those in
        ``later`` last); returns its id, or None when none is free.

        On Postgres the pick is ``SELECT … FOR UPDATE SKIP LOCKED``: reviewers claiming at once on any worker
        never wait on each other's rows nor get the same one. The UPDATE is a compare-and-set as well, which is
        what keeps it single-owner on SQLite (no row locks there).
        """
        if not ids:
            return None
        r = ReviewItemRow
        now = self.clock()
        claimable = and_(r.id.in_(ids), r.status.in_(statuses),
                         or_(r.locked_until.is_(None), r.locked_until <= now, r.locked_by == account_id))
        order: list[Any] = [r.live.desc(), (r.status == "operator").desc(), r.priority.desc(), r.created_at]
        if later:
            order.insert(0, case((r.id.in_(sorted(later)), 1), else_=0))
        picked: str | None = None
        with self.db.session() as s:
            for _ in range(3):  # SQLite: another worker's claim won the row between our read and write
                candidate = s.scalars(select(r.id).where(claimable).order_by(*order).limit(1)
                                      .with_for_update(skip_locked=True)).first()
                if candidate is None:
                    break
                res = s.execute(update(r).where(r.id == candidate, claimable)
                                .values(locked_by=account_id, locked_at=now, locked_until=now + self.lock_timeout)
                                .execution_options(synchronize_session=False))
                if getattr(res, "rowcount", 0) == 1:
                    picked = candidate
                    break
        if picked is not None:
            self._mark_served(picked, account_id, now)
        return picked

    def claim(self, item_id: str, reviewer: Principal) -> QueueItem:
        """Locks a given item (e.g. one pushed over the socket) for the reviewer."""
        account_id = self._account_id(reviewer)
        item = self.get(item_id)
        if item.status == "operator" and not reviewer.allows("operator"):
            raise Forbidden("reviewers disagreed on this item: an operator decides it")
        if item.kind == "gold":
            return self._offer_gold(item, account_id)
        if item.status == "resolved":
            raise Conflict("this item is answered already")
        if not self.try_lock(item_id, account_id):
            raise Conflict("another reviewer is working on this item")
        return self.get(item_id)

    def next(self, reviewer: Principal) -> QueueItem | None:
        """Claims the next item for the reviewer: live first, then by priority; a gold item every N.

        A reviewer not trusted yet gets the gold items they have not answered before anything but live items,
        until their gold answers make them trusted (or none is left): their labels wait for a second reviewer
        until then, so that is where their first answers count most.
        """
        account_id = self._account_id(reviewer)
        now = self.clock()
        is_operator = reviewer.allows("operator")
        with self.db.session() as s:
            acted = dict(s.execute(select(ReviewAnswerRow.item_id, ReviewAnswerRow.action)
                                   .where(ReviewAnswerRow.account_id == account_id)).all())
            done_count = sum(1 for a in acted.values() if a != "skip")
            statuses = ("open", "operator") if is_operator else ("open",)
            rows = s.scalars(
                select(ReviewItemRow)
                .where(ReviewItemRow.status.in_(statuses),
                       or_(ReviewItemRow.locked_until.is_(None), ReviewItemRow.locked_until <= now))
                .order_by(ReviewItemRow.live.desc(), (ReviewItemRow.status == "operator").desc(),
                          ReviewItemRow.priority.desc(), ReviewItemRow.created_at)
                .limit(200)
            ).all()
            candidates = [_item(r) for r in rows if acted.get(r.id) not in ("answer", "reject")]
        fresh = [c for c in candidates if c.id not in acted]
        skipped = [c for c in candidates if c.id in acted]  # skipped ones come back after everything else
        ordered = fresh + skipped
        every = self.settings.review_gold_every
        gold_due = (every > 0 and (done_count + 1) % every == 0) or self._on_probation(account_id, is_operator)
        if gold_due and not (ordered and ordered[0].live):
            gold = self._gold_for(account_id, set(acted))
            if gold is not None:
                return self._offer_gold(gold, account_id)
        picked = self._claim(account_id, [c.id for c in ordered], statuses=statuses,
                             later=frozenset(c.id for c in skipped))
        return self.get(picked) if picked is not None else None

    def _on_probation(self, account_id: str, is_operator: bool) -> bool:
        """Whether right gold answers would still make the reviewer trusted."""
        if is_operator or self.trust is None:
            return False
        to_go = self.trust.standing(account_id).gold_to_go
        return to_go is not None and to_go > 0

    def _gold_for(self, account_id: str, acted: set[str]) -> QueueItem | None:
        """The oldest gold item the reviewer has neither answered nor holds now (the one on their screen, or
        preloaded behind it)."""
        held = select(ReviewOfferRow.item_id).where(ReviewOfferRow.account_id == account_id,
                                                    ReviewOfferRow.expires_at > self.clock())
        with self.db.session() as s:
            rows = s.scalars(select(ReviewItemRow).where(ReviewItemRow.status == "gold",
                                                         ReviewItemRow.id.not_in(held))
                             .order_by(ReviewItemRow.created_at)).all()
            for r in rows:
                if r.id not in acted:
                    return _item(r)
        return None

    def _offer_gold(self, item: QueueItem, account_id: str) -> QueueItem:
        """Hands a gold item to a reviewer: an offer that expires like a lock, shown as one."""
        now = self.clock()
        until = now + self.lock_timeout
        try:
            with self.db.session() as s:
                offer = s.get(ReviewOfferRow, (item.id, account_id))
                if offer is None:
                    s.add(ReviewOfferRow(item_id=item.id, account_id=account_id, offered_at=now, expires_at=until))
                else:
                    offer.expires_at = until
        except IntegrityError:  # the same reviewer's other request made the offer a moment ago
            with self.db.session() as s:
                s.execute(update(ReviewOfferRow)
                          .where(ReviewOfferRow.item_id == item.id, ReviewOfferRow.account_id == account_id)
                          .values(expires_at=until).execution_options(synchronize_session=False))
        self._mark_served(item.id, account_id, now)
        return self._as_held(item, account_id, until)

    @staticmethod
    def _as_held(item: QueueItem, account_id: str, until: dt.datetime) -> QueueItem:
        return replace(item, locked_by=account_id, locked_until=until)

    def release(self, item_id: str, reviewer: Principal) -> None:
        account_id = self._account_id(reviewer)
        with self.db.session() as s:
            s.execute(update(ReviewItemRow)
                      .where(ReviewItemRow.id == item_id, ReviewItemRow.locked_by == account_id)
                      .values(locked_by=None, locked_at=None, locked_until=None)
                      .execution_options(synchronize_session=False))
            s.execute(delete(ReviewOfferRow).where(ReviewOfferRow.item_id == item_id,
                                                   ReviewOfferRow.account_id == account_id))

    def release_all(self, account_id: str) -> None:
        with self.db.session() as s:
            s.execute(update(ReviewItemRow).where(ReviewItemRow.locked_by == account_id)
                      .values(locked_by=None, locked_at=None, locked_until=None)
                      .execution_options(synchronize_session=False))
            s.execute(delete(ReviewOfferRow).where(ReviewOfferRow.account_id == account_id))

    def set_live(self, item_id: str, live: bool) -> None:
        with self.db.session() as s:
            s.execute(update(ReviewItemRow).where(ReviewItemRow.id == item_id).values(live=live)
                      .execution_options(synchronize_session=False))

    def cancel_for_ask(self, ask_id: str) -> QueueItem | None:
        """The wearer stopped waiting: the ask's open item leaves the queue (its row stays, marked cancelled).

        Returns the item as it was (who held its lock), or None when none was open.
        """
        with self.db.session() as s:
            row = s.scalars(select(ReviewItemRow).where(
                ReviewItemRow.ask_id == ask_id, ReviewItemRow.kind == "ask",
                ReviewItemRow.status.in_(WAITING)).with_for_update()).first()
            if row is None:
                return None
            before = _item(row)
            row.status = "cancelled"
            row.live = False
            row.resolved_at = self.clock()
            row.locked_by = row.locked_at = row.locked_until = None
        return before

    def close_for_ask(self, ask_id: str, value: str) -> bool:
        """Settles the open item of an ask answered elsewhere; False when there was none open."""
        with self.db.session() as s:
            res = s.execute(update(ReviewItemRow)
                            .where(ReviewItemRow.ask_id == ask_id, ReviewItemRow.kind == "ask",
                                   ReviewItemRow.status.in_(("open", "operator")))
                            .values(status="resolved", resolved_value=value, resolved_at=self.clock(), live=False,
                                    locked_by=None, locked_at=None, locked_until=None)
                            .execution_options(synchronize_session=False))
            return bool(getattr(res, "rowcount", 0))

    # -- answering ----------------------------------------------------------------------------------------

    def skip(self, item_id: str, reviewer: Principal) -> None:
        account_id = self._account_id(reviewer)
        self.get(item_id)
        with self.db.session() as s:
            s.add(ReviewAnswerRow(item_id=item_id, account_id=account_id, action="skip",
                                  duration_ms=self._duration_ms(item_id, account_id), created_at=self.clock()))
        self.release(item_id, reviewer)

    def submit(self, item_id: str, reviewer: Principal, action: str, value: str | None = None) -> Submission:
        """An answer (or "cannot tell") from a reviewer; resolves the item when consensus is reached.

        The reviewer must hold the item, or it is claimed for them in the same transaction (a compare-and-set
        on its lock): of two reviewers answering one item at once, only one answer counts and the other gets
        ``Conflict``. The database keeps one answer per reviewer per item (a unique index).
        """
        if action not in ("answer", "reject"):
            raise BadInput("action must be 'answer' or 'reject' (skip has its own call)")
        if action == "answer":
            value = clean_text(value or "")
            if not value:
                raise BadInput("the answer is empty")
            if len(value) > 500:
                raise BadInput("the answer is longer than 500 characters")
            value = self.names.canonical_label(value)
        else:
            value = None
        account_id = self._account_id(reviewer)
        item = self.get(item_id)
        if item.kind == "gold":
            return self._submit_gold(item, account_id, action, value)
        return self._submit_ask(item, reviewer, account_id, action, value)

    def _submit_gold(self, item: QueueItem, account_id: str, action: str, value: str | None) -> Submission:
        with _answered_once(), self.db.session() as s:
            row = s.get(ReviewItemRow, item.id)
            assert row is not None
            known = normalise_label(self.names.canonical_label(row.gold_answer or ""))
            correct = value is not None and normalise_label(value) == known
            if s.scalars(select(ReviewAnswerRow.id).where(ReviewAnswerRow.item_id == item.id,
                                                          ReviewAnswerRow.account_id == account_id,
                                                          ReviewAnswerRow.action != "skip")).first():
                raise Conflict("you answered this item already")
            s.add(ReviewAnswerRow(item_id=item.id, account_id=account_id, action=action, value=value, gold=True,
                                  correct=correct, duration_ms=self._duration_ms(item.id, account_id),
                                  created_at=self.clock()))
            s.execute(delete(ReviewOfferRow).where(ReviewOfferRow.item_id == item.id,
                                                   ReviewOfferRow.account_id == account_id))
        # The reply looks like an escalated item's first answer would, so it does not give gold away either.
        if self.settings.review_consensus <= 1:
            return Submission(item, resolved=True, value=value, status="resolved", correct=correct, gold=True)
        return Submission(item, resolved=False, value=None, status="open", correct=correct, gold=True)

    def _claim_to_answer(self, s: Any, item_id: str, account_id: str, is_operator: bool, now: dt.datetime) -> None:
        """Takes (or renews) the item's lock for the answering reviewer in the answer's own transaction.

        The UPDATE is the compare-and-set: it matches only an item still waiting for answers whose lock is free,
        lapsed or theirs. On SQLite it also takes the write lock, on Postgres the row lock, so no other answer
        on the item interleaves with this one.
        """
        statuses = ("open", "operator") if is_operator else ("open",)
        res = s.execute(
            update(ReviewItemRow)
            .where(ReviewItemRow.id == item_id, ReviewItemRow.status.in_(statuses),
                   or_(ReviewItemRow.locked_until.is_(None), ReviewItemRow.locked_until <= now,
                       ReviewItemRow.locked_by == account_id))
            .values(locked_by=account_id, locked_at=now, locked_until=now + self.lock_timeout)
            .execution_options(synchronize_session=False)
        )
        if getattr(res, "rowcount", 0) == 1:
            return
        status = s.scalar(select(ReviewItemRow.status).where(ReviewItemRow.id == item_id))
        if status == "resolved":
            raise Conflict("this item is answered already")
        if status == "cancelled":
            raise Conflict("the wearer stopped waiting for this answer")
        if status == "operator" and not is_operator:
            raise Forbidden("reviewers disagreed on this item: an operator decides it")
        raise Conflict("another reviewer holds the lock on this item")

    def _submit_ask(
        self, item: QueueItem, reviewer: Principal, account_id: str, action: str, value: str | None
    ) -> Submission:
        now = self.clock()
        is_operator = reviewer.allows("operator")
        with _answered_once(), self.db.session() as s:
            self._claim_to_answer(s, item.id, account_id, is_operator, now)
            row = s.get(ReviewItemRow, item.id, populate_existing=True)
            assert row is not None
            earlier = s.scalars(select(ReviewAnswerRow).where(ReviewAnswerRow.item_id == item.id,
                                                              ReviewAnswerRow.action != "skip")).all()
            if any(a.account_id == account_id for a in earlier):
                raise Conflict("you answered this item already")
            mine = ReviewAnswerRow(item_id=item.id, account_id=account_id, action=action, value=value,
                                   duration_ms=self._duration_ms(item.id, account_id), created_at=now)
            s.add(mine)
            answers = [*earlier, mine]
            row.locked_by = row.locked_at = row.locked_until = None
            keys = [REJECT if a.action == "reject" else normalise_label(a.value or "") for a in answers]
            top, count = Counter(keys).most_common(1)[0]
            resolved_key: str | None = None
            if is_operator:
                resolved_key = keys[-1]  # the operator's word settles it
            elif len(answers) >= row.needed:
                if count * 2 > len(answers):
                    resolved_key = top
                elif len(answers) < self.settings.review_consensus + 1:
                    row.needed = len(answers) + 1  # one more reviewer breaks the tie
                else:
                    row.status = "operator"
            resolved_value: str | None = None
            authors: list[str] = []
            if resolved_key is not None:
                row.status = "resolved"
                row.resolved_at = now
                row.live = False
                for a, k in zip(answers, keys, strict=True):
                    a.agreed = k == resolved_key
                    if a.agreed:
                        authors.append(a.account_id)
                resolved_value = None if resolved_key == REJECT else next(
                    a.value for a, k in zip(answers, keys, strict=True) if k == resolved_key)
                row.resolved_value = resolved_value if resolved_value is not None else ""
            status = row.status
            s.flush()
            final = _item(row)
            names = dict(s.execute(select(AccountRow.id, AccountRow.username)
                                   .where(AccountRow.id.in_(authors))).all()) if authors else {}
        self._forget_served(item.id, account_id)
        if status == "resolved":
            for hook in self.on_resolved:
                hook(final, resolved_value, [names.get(a, a) for a in authors])
        return Submission(final, resolved=status == "resolved", value=resolved_value, status=status)

    # -- reviewers ------------------------------------------------------------------------------------------

    def stats(self, account_id: str | None = None) -> list[ReviewerStats]:
        """Per reviewer: items done, skips, seconds per item, agreement with consensus, gold accuracy, trust.

        Agreement counts only the items at least two people answered: on an item one person settled alone, the
        consensus is that person's answer. With ``account_id``, that reviewer's row even before their first answer.
        """
        a = ReviewAnswerRow
        done = a.action != "skip"
        shared = select(a.item_id).where(a.action != "skip").group_by(a.item_id).having(func.count() >= 2)
        counted = and_(a.agreed.is_not(None), a.item_id.in_(shared))
        stmt = (
            select(a.account_id, AccountRow.username, AccountRow.role,
                   func.sum(_case(done)), func.sum(_case(a.action == "skip")),
                   func.avg(func.nullif(a.duration_ms * _case(done), 0)),
                   func.sum(_case(and_(counted, a.agreed.is_(True)))), func.sum(_case(counted)),
                   func.sum(_case(and_(a.gold.is_(True), done))), func.sum(_case(a.correct.is_(True))))
            .join(AccountRow, AccountRow.id == a.account_id, isouter=True)
            .group_by(a.account_id, AccountRow.username, AccountRow.role)
        )
        if account_id:
            stmt = stmt.where(a.account_id == account_id)
        out = []
        with self.db.session() as s:
            for acc, name, role, items, skips, avg_ms, agreed, judged, gold_n, gold_ok in s.execute(stmt).all():
                now = standing(int(gold_n or 0), int(gold_ok or 0), self.settings, operator=role == "operator")
                out.append(ReviewerStats(
                    account_id=acc, username=name or acc, items=int(items or 0), skips=int(skips or 0),
                    seconds_per_item=round(float(avg_ms) / 1000, 3) if avg_ms else None,
                    agreement=round(int(agreed or 0) / int(judged), 4) if judged else None,
                    gold_answered=int(gold_n or 0),
                    gold_accuracy=round(int(gold_ok or 0) / int(gold_n), 4) if gold_n else None,
                    agreement_items=int(judged or 0), trusted=now.trusted, gold_to_go=now.gold_to_go,
                ))
            if account_id and not out:
                account = s.execute(select(AccountRow.username, AccountRow.role)
                                    .where(AccountRow.id == account_id)).first()
                if account is not None:
                    now = standing(0, 0, self.settings, operator=account.role == "operator")
                    out.append(ReviewerStats(account_id, account.username, 0, 0, None, None, 0, None,
                                             trusted=now.trusted, gold_to_go=now.gold_to_go))
        return sorted(out, key=lambda r: r.username)

    # -- helpers --------------------------------------------------------------------------------------------

    @staticmethod
    def _account_id(reviewer: Principal) -> str:
        if reviewer.kind != "account" or not reviewer.account_id or not reviewer.allows("reviewer"):
            raise Forbidden("only reviewers and operators work the queue")
        return reviewer.account_id

    def _mark_served(self, item_id: str, account_id: str, at: dt.datetime) -> None:
        with self._served_lock:
            self._served.setdefault((item_id, account_id), at)
            if len(self._served) > 10_000:  # bounded: forget the oldest half
                for key in list(self._served)[:5_000]:
                    del self._served[key]

    def _forget_served(self, item_id: str, account_id: str) -> None:
        with self._served_lock:
            self._served.pop((item_id, account_id), None)

    def _duration_ms(self, item_id: str, account_id: str) -> float:
        with self._served_lock:
            started = self._served.pop((item_id, account_id), None)
        if started is None:
            return 0.0
        return max(0.0, (self.clock() - started).total_seconds() * 1000)


@contextmanager
def _answered_once() -> Iterator[None]:
    """The unique index on answers (item, reviewer) refused a second answer: that reviewer's other request
    (a double click, a retry) got there first."""
    try:
        yield
    except IntegrityError as exc:
        raise Conflict("you answered this item already") from exc


def _case(cond: Any) -> Any:
    return case((cond, 1), else_=0)
