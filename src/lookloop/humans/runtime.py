"""The human loop: accounts, queue, live hub and feedback, subscribed to the loop's hooks by the composition root."""

from __future__ import annotations

import base64
import datetime as dt
import logging
import threading
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from lookloop.config import Settings
from lookloop.domain import AskRecord, Decision, Outcome, as_utc, hud_lines
from lookloop.errors import Conflict, NotFound
from lookloop.humans.accounts import Accounts, Principal, Revocation
from lookloop.humans.feedback import FeedbackService
from lookloop.humans.live import Event, LiveHub
from lookloop.humans.queue import MAX_LOCKS_PER_REVIEWER, WAITING, QueueItem, RedactedFrames, ReviewQueue, Submission
from lookloop.humans.trust import ReviewerTrust
from lookloop.imaging import thumbnail_jpeg
from lookloop.loop.asking import AskService, Hooks
from lookloop.loop.calibration import AUDIT_PRIORITY
from lookloop.loop.labels import LabelService
from lookloop.store.bus import EventBus, LocalBus
from lookloop.store.tables import LABEL_APPLIED, LABEL_PENDING, LABEL_PROPOSAL

log = logging.getLogger("lookloop.humans")

STATUS_ASKING = "asking a helper"
STATUS_TIMED_OUT = "no helper answered; still queued"
STATUS_CANCELLED = "cancelled; no helper will answer"
STATUS_ANSWERED = "a helper answered"
CANNOT_TELL = "A helper could not tell what this is."
THUMBNAIL_SIDE = 160  # pixels: the late answer's picture of what was asked about
LIVE_CHANNEL = "lookloop_live"  # what the other workers' streams must hear: ids of rows to re-read


def cannot_tell(record: AskRecord) -> str:
    """A person's "can't tell", in the terms of what was asked."""
    if record.answer.skill == "identify":
        return CANNOT_TELL
    question = " ".join(record.question.split())
    if len(question) > 80:
        question = question[:79].rstrip() + "…"
    return f"A helper could not answer “{question}”."


@dataclass(frozen=True)
class Waiting:
    """Where a wearer's ask stands while a person is found.

    ``state``: "asking" (offered to helpers now), "timed_out" (nobody answered in time; still queued, no longer
    first), "cancelled" (the wearer stopped waiting), "answered". ``position``: 1 is the next item a helper gets.
    """

    ask_id: str
    question: str
    state: str
    position: int | None
    waited_s: int
    with_helper: bool

    @property
    def status(self) -> str:
        return {"asking": STATUS_ASKING, "timed_out": STATUS_TIMED_OUT, "answered": STATUS_ANSWERED,
                "cancelled": STATUS_CANCELLED}[self.state]

    def event(self) -> Event:
        return {"type": "status", "ask_id": self.ask_id, "status": self.status, "state": self.state,
                "question": self.question, "position": self.position, "waited_s": self.waited_s,
                "with_helper": self.with_helper}


@dataclass(frozen=True)
class Reviewed:
    """A reviewer's answer and what became of it: ``label`` "applied" (it teaches every wearer's model now),
    "pending" (it waits for a second reviewer who agrees), "proposal" (it names something the catalogue lacks:
    an operator decides), or None (no label: "cannot tell")."""

    submission: Submission
    label: str | None


def item_event(item: QueueItem) -> Event:
    """The reviewer-facing view of a queue item. Gold items look like any other: nothing here depends on the
    kind (no ask id, no queue priority, no kind or status of its own); a gold item handed to a reviewer carries
    a lock like any item (``ReviewQueue`` gives it one) and the time of the ask it was made from."""
    return {
        "id": item.id,
        "question": item.question,
        "skill": item.skill,
        "frame_url": f"/v1/review/items/{item.id}/frame" if item.frame_sha else None,
        "ai_answer": item.ai_answer,
        "ai_label": item.ai_label,
        "confidence": item.confidence,
        "candidates": [{"label": c, "score": round(p, 4)} for c, p in item.candidates[:9]],
        "live": item.live,
        "status": "operator" if item.status == "operator" else "open",
        "lock_expires_at": item.locked_until.isoformat() if item.locked_until else None,
        "created_at": item.created_at.isoformat(),
        "escalated_at": item.created_at.timestamp(),  # epoch seconds: clients measure how long it waited
    }


class Humans:
    """Everything of the human loop: accounts, the review queue, live streams and feedback.

    The composition root (``lookloop.system``) builds it and subscribes it to the loop's hooks.
    """

    def __init__(
        self,
        settings: Settings,
        *,
        asks: AskService,
        labels: LabelService,
        accounts: Accounts,
        queue: ReviewQueue,
        hub: LiveHub,
        feedback: FeedbackService,
        trust: ReviewerTrust,
        frames: RedactedFrames | None = None,
        bus: EventBus | None = None,
    ) -> None:
        self.settings = settings
        self.trust = trust
        self.frames = frames  # late answers carry a thumbnail of the (redacted) frame
        self.asks = asks
        self.labels = labels
        self.accounts = accounts
        self.queue = queue
        self.hub = hub
        self.feedback = feedback
        self.max_pushed_locks = MAX_LOCKS_PER_REVIEWER  # a person handles the item on screen and the next
        self.queue.on_resolved.append(self.on_resolved)
        self.labels.unconfirmed.append(self.on_unconfirmed)
        self.accounts.revoked.append(self.on_revoked)
        self._waits: dict[str, int] = {}  # item id → the generation of its running wait updates
        self._waits_lock = threading.Lock()
        # Streams held by other workers hear through the bus; this worker's through its hub directly.
        self.bus = bus or LocalBus()
        self.bus.subscribe(LIVE_CHANNEL, self.on_live_event)
        self.bus.on_reconnect(self.catch_up)

    def subscribe(self, hooks: Hooks) -> None:
        """Escalations reach the queue and the live hub; every ask and label is seen by feedback and the queue."""
        hooks.escalated.append(self.on_escalated)
        hooks.asked.append(self.on_asked)
        hooks.labelled.append(self.on_labelled)

    # -- answering -----------------------------------------------------------------------------------------

    def answer(self, item_id: str, reviewer: Principal, action: str, value: str | None = None) -> Reviewed:
        """A reviewer's answer (``ReviewQueue.submit``), with what became of it."""
        trusted = reviewer.account_id is not None and self.trust.standing(reviewer.account_id).trusted
        sub = self.queue.submit(item_id, reviewer, action, value)
        done = Reviewed(sub, self._became(sub, reviewer, action, trusted))
        if reviewer.account_id is not None:
            self.freed(reviewer.account_id, None)
        return done

    def skip(self, item_id: str, reviewer: Principal) -> None:
        """A reviewer passes an item on: a live one is offered to the other reviewers on duty, and the reviewer
        gets the next live item they have not seen."""
        self.queue.skip(item_id, reviewer)
        if reviewer.account_id is not None:
            self.freed(reviewer.account_id, item_id)

    def freed(self, account_id: str, passed: str | None) -> None:
        """A reviewer has a hand free (answered or skipped ``passed``): every worker offers what waits live.

        Without it a live item that came while every on-duty reviewer held the most they may would wait for
        someone to ask for the next item, or for its time-out.
        """
        self.bus.publish(LIVE_CHANNEL, {"k": "freed", "account": account_id, "item": passed})
        self._refill(account_id, passed)

    def _became(self, sub: Submission, reviewer: Principal, action: str, trusted: bool) -> str | None:
        if action == "reject" or (sub.resolved and sub.value is None):
            return None  # "cannot tell", or the item settled as that: no label
        if not sub.resolved:
            return LABEL_PENDING  # other reviewers answer the item too (or an operator settles it)
        if sub.gold:
            # What the same answer to an escalated item would have become, measured as it was given (the
            # answer to a gold item changes the trust it reports): the reply gives no gold item away.
            if sub.value is not None and self.labels.is_proposal(sub.item.skill, sub.value):
                return LABEL_PROPOSAL
            return LABEL_APPLIED if trusted else LABEL_PENDING
        if sub.item.ask_id is None:
            return None
        mine = [x for x in self.labels.of_ask(sub.item.ask_id) if reviewer.name in x.author.split(",")]
        return mine[-1].status if mine else None

    # -- hooks (run in the thread that handled the ask) -----------------------------------------------------

    def on_asked(self, record: AskRecord) -> None:
        if record.audit and record.answer.decision == Decision.ANSWER:
            # A spot check of an auto-answer: reviewed after every escalation, first in first out (the same
            # priority for all, so the labelled ones stay a random sample); escalated audit asks queue as usual.
            self.queue.enqueue_ask(record, live=False, reason="audit", priority=AUDIT_PRIORITY)
        try:
            self.feedback.on_asked(record)
        except Exception:  # feedback is data about the ask, never a reason to fail it
            log.exception("implicit feedback failed for ask %s", record.id)

    def on_unconfirmed(self, ask_id: str) -> None:
        """A label that may not teach everyone yet (a wearer's correction, a reviewer not trusted alone): a
        reviewer is asked for a second opinion."""
        self.queue.enqueue_confirm(self.asks.get(ask_id))
        self.hub.broadcast_reviewers({"type": "queue", **self.queue.counts()})

    def on_labelled(self, ask_id: str, value: str, source: str) -> None:
        """A label given outside the queue (labels API, wearer correction) settles the ask's open item."""
        if self.queue.close_for_ask(ask_id, value):
            record = self.asks.get(ask_id)
            if _spot_check(record):
                return  # the wearer has had the AI's answer; an audit is not news to them
            self._stop_waiting(self.queue.for_ask(ask_id))
            self._send_answer(record, record.final_answer or value, "wearer" if source == "wearer" else "human")

    def _answer_event(self, record: AskRecord, text: str, source: str) -> Event:
        """A person's answer for the wearer, with the question it answers and a thumbnail of what was asked about."""
        return {"type": "answer", "ask_id": record.id, "text": text, "hud": hud_lines(text), "source": source,
                "final": True, "question": record.question, "thumbnail_url": self._thumbnail(record)}

    def _thumbnail(self, record: AskRecord) -> str | None:
        """A small JPEG of the redacted frame as a data URL: the device that gets the event can always show it
        (no token to send, and nothing kept for it once a frame kept only for review is released)."""
        if self.frames is None or record.frame_sha is None:
            return None
        # Only a frame redacted already: running the redaction passes here (faces and personal text, most of a
        # second on a busy machine) would hold the answer back while the job worker has not got to the frame.
        redacted = self.frames.redacted_if_ready(record.frame_sha)
        if redacted is None:
            return None
        try:
            small = thumbnail_jpeg(redacted, THUMBNAIL_SIDE)
        except Exception:  # a missing picture never holds back the answer
            log.warning("no thumbnail for ask %s", record.id, exc_info=True)
            return None
        return "data:image/jpeg;base64," + base64.b64encode(small).decode("ascii")

    # -- waiting for a person -------------------------------------------------------------------------------

    def on_escalated(self, record: AskRecord) -> None:
        item = self.queue.enqueue_ask(record, live=True)
        # A person may have answered between the reply and now (the labels API, another worker): their label
        # found no item to settle, so it settles this one, and the wearer hears it, once.
        labels = self.labels.of_ask(record.id)
        if labels and self.asks.get(record.id).outcome != Outcome.ESCALATED.value:
            self.on_labelled(record.id, labels[-1].value, labels[-1].source)
            if self.queue.get(item.id).status not in WAITING:
                return
        self.offer(item)
        self._send_status(item, record)
        self._start_waiting(item.id)

    def waiting(self, item: QueueItem, record: AskRecord) -> Waiting:
        """Where the ask of ``item`` stands now."""
        now = self.queue.clock()
        if item.status in ("cancelled", "resolved"):
            state = "cancelled" if item.status == "cancelled" else "answered"
        elif not item.live:
            state = "timed_out"
        else:
            state = "asking"
        waited = max(0.0, (now - as_utc(record.created_at)).total_seconds())
        held = item.locked_by is not None and item.locked_until is not None and item.locked_until > now
        return Waiting(record.id, record.question, state, self.queue.position(item.id), int(waited),
                       with_helper=held and item.status in WAITING)

    def _start_waiting(self, item_id: str) -> None:
        """Every ``wait_update_s`` the wearer hears where the ask stands; after ``live_answer_timeout_s``, that
        nobody answered. A new start (keep waiting) replaces the updates running before."""
        with self._waits_lock:
            generation = self._waits.get(item_id, 0) + 1
            self._waits[item_id] = generation
        self._later(self.settings.wait_update_s, lambda: self.wait_update(item_id, generation))
        self._later(self.settings.live_answer_timeout_s, lambda: self.check_timeout(item_id, generation))

    def _later(self, delay: float, fn: Callable[[], None]) -> None:
        """``fn`` after ``delay`` seconds; an item gone meanwhile (its wearer's data deleted) ends it quietly."""

        def run() -> None:
            try:
                fn()
            except NotFound:
                pass
            except Exception:  # a timer has nobody to report to: log it
                log.exception("waiting update failed")

        self.hub.call_later(delay, run)

    def _current(self, item_id: str, generation: int | None) -> bool:
        with self._waits_lock:
            return generation is None or self._waits.get(item_id) == generation

    def _stop_waiting(self, item: QueueItem | None) -> None:
        if item is not None:
            with self._waits_lock:
                self._waits.pop(item.id, None)

    def wait_update(self, item_id: str, generation: int | None = None) -> None:
        """Tells the wearer the ask's queue position and time waited, and comes back while it is offered live."""
        if not self._current(item_id, generation):
            return
        item = self.queue.get(item_id)
        if item.status not in WAITING or not item.live or item.ask_id is None:
            return  # answered, cancelled, or timed out (the wearer was told; keep waiting starts them again)
        record = self.asks.get(item.ask_id)
        self._send_status(item, record)
        self._later(self.settings.wait_update_s, lambda: self.wait_update(item_id, generation))

    def offer(self, item: QueueItem) -> str | None:
        """Offers a live item to this worker's on-duty reviewers and asks the other workers to offer it to theirs
        (the first lock wins: it is a compare-and-set in the database)."""
        # Told first, so the other workers look for a reviewer while this one does (a worker without one on duty
        # ignores it without reading the database).
        self.bus.publish(LIVE_CHANNEL, {"k": "offer", "item": item.id})
        return self.dispatch(item)

    def dispatch(self, item: QueueItem, *, passed_by: str | None = None) -> str | None:
        """Offers a live item to the least-busy on-duty reviewer of this worker (not the one who passed it on),
        locked to them; others hear the queue grew."""
        on_duty = [a for a in self.hub.reviewers_on_duty() if a != passed_by]
        for account_id in sorted(on_duty, key=self.queue.locks_held):
            if self.queue.locks_held(account_id) >= self.max_pushed_locks:
                break
            if self._push(item.id, account_id):
                return account_id
        if self.hub.reviewers_on_duty():
            self.hub.broadcast_reviewers({"type": "queue", **self.queue.counts()})
        return None

    def _push(self, item_id: str, account_id: str) -> bool:
        """Locks an item to a reviewer and sends it to their socket; False when someone holds it already or
        their socket closed meanwhile."""
        if not self.queue.try_lock(item_id, account_id):
            return False
        if self.hub.send_reviewer(account_id, {"type": "item", "item": item_event(self.queue.get(item_id))}):
            return True
        # Their last socket closed meanwhile (off duty, or signed out): the lock goes back.
        self.queue.release_all(account_id)
        return False

    def on_duty(self, account_id: str) -> None:
        """A reviewer's socket opened on this worker: the live items still locked to them go to it again, then
        their free hands fill with the live items waiting longest.

        A socket that died with its worker (killed, its machine lost) said nothing: the items pushed to it stay
        locked to the reviewer until the lock times out, and while they count as held nothing new is pushed."""
        for item in self.queue.held_by(account_id):
            self.hub.send_reviewer(account_id, {"type": "item", "item": item_event(item)})
        self._refill(account_id, None)

    def _refill(self, account_id: str, passed: str | None) -> None:
        """This worker's part of ``freed``: the item passed on goes to another of its reviewers, and the reviewer
        (when their socket is here) gets the live items waiting longest that are new to them."""
        on_duty = self.hub.reviewers_on_duty()
        if not on_duty:
            return
        if passed is not None:
            item = self.queue.get(passed)
            now = self.queue.clock()
            if (item.kind == "ask" and item.live and item.status in WAITING
                    and (item.locked_until is None or item.locked_until <= now)):
                self.dispatch(item, passed_by=account_id)
        if account_id not in on_duty:
            return
        room = self.max_pushed_locks - self.queue.locks_held(account_id)
        if room <= 0:
            return
        for item in self.queue.offerable(limit=room + 4, new_to=account_id):
            if room <= 0:
                return
            if self._push(item.id, account_id):
                room -= 1

    def on_revoked(self, revocation: Revocation) -> None:
        """Revoked credentials: their open streams close now, and a reviewer signed out everywhere gives back
        the items they held (the streams leave the hub first, so nothing is locked to them afterwards)."""
        self.hub.close(revocation.reason, account_id=revocation.account_id, credential=revocation.session,
                       device_id=revocation.device_id)
        if revocation.account_id is not None and revocation.release_locks:
            self.queue.release_all(revocation.account_id)

    def check_timeout(self, item_id: str, generation: int | None = None) -> None:
        """Nobody answered in time: the item stays queued behind the live ones and the wearer is told."""
        if not self._current(item_id, generation):
            return
        item = self.queue.get(item_id)
        if item.status not in WAITING or item.ask_id is None:
            return
        self.queue.set_live(item_id, False)
        record = self.asks.get(item.ask_id)
        self._send_status(self.queue.get(item_id), record)

    def keep_waiting(self, ask_id: str) -> Waiting:
        """The wearer waits on after a time-out: the item is offered live again, with updates and a new time-out."""
        record = self.asks.get(ask_id)
        item = self._waiting_item(record)
        self.queue.set_live(item.id, True)
        self.offer(self.queue.get(item.id))
        self._start_waiting(item.id)
        current = self.queue.get(item.id)
        self._send_status(current, record)
        return self.waiting(current, record)

    def cancel(self, ask_id: str) -> Waiting:
        """The wearer stops waiting: the open item leaves the queue and no helper's answer will come.

        Cancelling again is harmless; an ask a person answered already cannot be cancelled.
        """
        record = self.asks.get(ask_id)
        if _spot_check(record):  # the wearer had the AI's answer: the spot check is not theirs to cancel
            raise Conflict("this ask is not waiting for a helper")
        before = self.queue.cancel_for_ask(ask_id)
        if before is None:
            item = self._waiting_item(record, allow_cancelled=True)
            return self.waiting(item, record)  # cancelled before
        self._stop_waiting(before)
        self.labels.cancelled(ask_id)
        current = self.queue.get(before.id)
        self._send_status(current, record)
        if before.locked_by:  # the helper who has it on screen
            self.hub.send_reviewer(before.locked_by, _withdrawn(before.id))
        self.hub.broadcast_reviewers({"type": "queue", **self.queue.counts()})
        self.bus.publish(LIVE_CHANNEL, {"k": "withdrawn", "item": before.id, "account": before.locked_by})
        return self.waiting(current, record)

    def _waiting_item(self, record: AskRecord, *, allow_cancelled: bool = False) -> QueueItem:
        item = self.queue.for_ask(record.id)
        if item is None or item.kind != "ask" or _spot_check(record):
            raise Conflict("this ask is not waiting for a helper")
        if item.status == "cancelled" and allow_cancelled:
            return item
        if item.status == "cancelled":
            raise Conflict("this ask was cancelled: ask again to reach a helper")
        if item.status not in WAITING:
            raise Conflict("a helper has answered this ask already")
        return item

    def on_resolved(self, item: QueueItem, value: str | None, authors: list[str]) -> None:
        """A settled item teaches the model at once and the answer goes to the wearer's stream."""
        if item.ask_id is None:
            return
        author = ",".join(authors)[:64]
        # Two or more reviewers agreeing are a consensus; one reviewer's label counts by their trust.
        source = "consensus" if len(authors) >= 2 else "reviewer"
        if item.kind == "confirm":
            # A second opinion on a label given before: the episode stays as it ended.
            if value is not None:
                self.labels.add(item.ask_id, value, source=source, author=author, settle=False)
            return
        record = self.asks.get(item.ask_id)
        if _spot_check(record):
            # The wearer's answer stays as it was; the verdict only recalibrates the policy.
            if value is not None:
                self.labels.add(item.ask_id, value, source=source, author=author)
            else:
                self.labels.audit_cannot_tell(item.ask_id)
            return
        # The wearer hears first; storing the label and learning from it follow at once.
        self._stop_waiting(item)
        text = (self.labels.final_text(self.labels.canonical(record, value)) if value is not None
                else cannot_tell(record))
        self._send_answer(record, text, "human")
        if value is not None:
            self.labels.add(item.ask_id, value, source=source, author=author)
        else:
            self.labels.reject(item.ask_id, text)

    # -- across workers -------------------------------------------------------------------------------------

    def _send_status(self, item: QueueItem, record: AskRecord) -> None:
        """Where the ask stands, to the wearer's streams on this worker and (by id) on the others."""
        # The queue position is a count over the waiting items: only worked out for a wearer listening here.
        if self.hub.wearer_online(record.device_id):
            self.hub.send_device(record.device_id, self.waiting(item, record).event())
        self.bus.publish(LIVE_CHANNEL, {"k": "status", "item": item.id, "device": record.device_id})

    def _send_answer(self, record: AskRecord, text: str, source: str) -> None:
        """A person's answer, to the wearer's streams on this worker and (by id) on the others."""
        self.hub.send_device(record.device_id, self._answer_event(record, text, source))
        self.bus.publish(LIVE_CHANNEL, {"k": "answer", "ask": record.id, "device": record.device_id,
                                        "source": source})

    def on_live_event(self, payload: dict[str, Any]) -> None:
        """Another worker changed the live path: re-read the rows it names and tell this worker's streams.

        Nothing in the payload but ids (and which kind of answer) is used: texts, states and who holds an item
        come from the database, and each stream still sees only what its own credentials allow.
        """
        kind = payload.get("k")
        try:
            if kind == "offer":
                self._remote_offer(str(payload["item"]))
            elif kind == "status":
                self._remote_status(str(payload["item"]), str(payload["device"]))
            elif kind == "answer":
                source = "wearer" if payload.get("source") == "wearer" else "human"
                self._remote_answer(str(payload["ask"]), str(payload["device"]), source)
            elif kind == "withdrawn":
                self._remote_withdrawn(str(payload["item"]), payload.get("account"))
            elif kind == "freed" and isinstance(payload.get("account"), str):
                passed = payload.get("item")
                self._refill(payload["account"], passed if isinstance(passed, str) else None)
        except NotFound:
            pass  # deleted meanwhile (delete-my-data): nothing left to tell

    def _remote_offer(self, item_id: str) -> None:
        if not self.hub.reviewers_on_duty():
            return
        item = self.queue.get(item_id)
        now = self.queue.clock()
        free = item.locked_until is None or item.locked_until <= now
        if item.status in WAITING and item.live and free:
            self.dispatch(item)

    def _remote_status(self, item_id: str, device_id: str) -> None:
        if not self.hub.wearer_online(device_id):
            return
        item = self.queue.get(item_id)
        if item.ask_id is None:
            return
        record = self.asks.get(item.ask_id)
        if record.device_id == device_id:
            self.hub.send_device(device_id, self.waiting(item, record).event())

    def _remote_answer(self, ask_id: str, device_id: str, source: str) -> None:
        if not self.hub.wearer_online(device_id):
            return
        record = self.asks.get(ask_id)
        if record.device_id != device_id or _spot_check(record):
            return
        text = self._settled_text(record)
        if text is not None:
            self.hub.send_device(device_id, self._answer_event(record, text, source))

    def _settled_text(self, record: AskRecord) -> str | None:
        """What a person settled the ask's item with, as the wearer hears it; None while it is not settled."""
        item = self.queue.for_ask(record.id)
        if item is None or item.status != "resolved":
            return None
        if item.resolved_value:
            return self.labels.final_text(self.labels.canonical(record, item.resolved_value))
        return cannot_tell(record)

    def _remote_withdrawn(self, item_id: str, account_id: Any) -> None:
        if not self.hub.reviewers_on_duty():
            return
        item = self.queue.get(item_id)
        if item.status != "cancelled":
            return
        if isinstance(account_id, str):
            self.hub.send_reviewer(account_id, _withdrawn(item_id))  # a no-op unless their socket is here
        self.hub.broadcast_reviewers({"type": "queue", **self.queue.counts()})

    def catch_up(self, since: dt.datetime) -> None:
        """After this worker may have missed events (its listener reconnected): live items nobody holds are
        offered to its reviewers, and answers settled since ``since`` reach its wearers' streams."""
        if self.hub.reviewers_on_duty():
            for item in self.queue.offerable():
                self.dispatch(item)
        for item in self.queue.resolved_since(since):
            if item.ask_id is None:
                continue
            try:
                record = self.asks.get(item.ask_id)
            except NotFound:
                continue
            if self.hub.wearer_online(record.device_id) and not _spot_check(record):
                text = self._settled_text(record)
                if text is not None:
                    self.hub.send_device(record.device_id, self._answer_event(record, text, "human"))


def _withdrawn(item_id: str) -> Event:
    return {"type": "withdrawn", "item_id": item_id, "reason": "the wearer stopped waiting"}


def _spot_check(record: AskRecord) -> bool:
    """An audit of an ask the AI answered on its own (the wearer was never told a person would look)."""
    return record.audit and record.answer.decision == Decision.ANSWER
