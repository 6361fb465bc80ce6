"""The human loop: accounts, queue, live hub and feedback, subscribed to the loop's hooks by the composition root."""

from __future__ import annotations

import logging

from lookloop.config import Settings
from lookloop.domain import AskRecord, Decision, hud_lines
from lookloop.humans.accounts import Accounts, Revocation
from lookloop.humans.feedback import FeedbackService
from lookloop.humans.live import Event, LiveHub
from lookloop.humans.queue import MAX_LOCKS_PER_REVIEWER, QueueItem, ReviewQueue
from lookloop.loop.asking import AskService, Hooks
from lookloop.loop.calibration import AUDIT_PRIORITY
from lookloop.loop.labels import LabelService

log = logging.getLogger("lookloop.humans")

STATUS_ASKING = "asking a helper"
STATUS_TIMED_OUT = "no helper answered; still queued"
CANNOT_TELL = "A helper could not tell what this is."


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
    ) -> None:
        self.settings = settings
        self.asks = asks
        self.labels = labels
        self.accounts = accounts
        self.queue = queue
        self.hub = hub
        self.feedback = feedback
        self.max_pushed_locks = MAX_LOCKS_PER_REVIEWER  # a person handles the item on screen and the next
        self.queue.on_resolved.append(self.on_resolved)
        self.accounts.revoked.append(self.on_revoked)

    def subscribe(self, hooks: Hooks) -> None:
        """Escalations reach the queue and the live hub; every ask and label is seen by feedback and the queue."""
        hooks.escalated.append(self.on_escalated)
        hooks.asked.append(self.on_asked)
        hooks.labelled.append(self.on_labelled)

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

    def on_labelled(self, ask_id: str, value: str, source: str) -> None:
        """A label given outside the queue (labels API, wearer correction) settles the ask's open item."""
        if self.queue.close_for_ask(ask_id, value):
            record = self.asks.get(ask_id)
            if _spot_check(record):
                return  # the wearer has had the AI's answer; an audit is not news to them
            self.hub.send_device(record.device_id, {"type": "answer", "ask_id": ask_id,
                                                    "text": record.final_answer or value, "hud": record.hud,
                                                    "source": "wearer" if source == "wearer" else "human",
                                                    "final": True})

    def on_escalated(self, record: AskRecord) -> None:
        item = self.queue.enqueue_ask(record, live=True)
        self.hub.send_device(record.device_id, {"type": "status", "ask_id": record.id, "status": STATUS_ASKING})
        self.dispatch(item)
        self.hub.call_later(self.settings.live_answer_timeout_s, lambda: self.check_timeout(item.id))

    def dispatch(self, item: QueueItem) -> str | None:
        """Offers a live item to the least-busy on-duty reviewer, locked to them; others hear the queue grew."""
        for account_id in sorted(self.hub.reviewers_on_duty(), key=self.queue.locks_held):
            if self.queue.locks_held(account_id) >= self.max_pushed_locks:
                break
            if self.queue.try_lock(item.id, account_id):
                locked = self.queue.get(item.id)
                if self.hub.send_reviewer(account_id, {"type": "item", "item": item_event(locked)}):
                    return account_id
                # Their last socket closed meanwhile (off duty, or signed out): the lock goes back.
                self.queue.release_all(account_id)
        self.hub.broadcast_reviewers({"type": "queue", **self.queue.counts()})
        return None

    def on_revoked(self, revocation: Revocation) -> None:
        """Revoked credentials: their open streams close now, and a reviewer signed out everywhere gives back
        the items they held (the streams leave the hub first, so nothing is locked to them afterwards)."""
        self.hub.close(revocation.reason, account_id=revocation.account_id, credential=revocation.session,
                       device_id=revocation.device_id)
        if revocation.account_id is not None and revocation.release_locks:
            self.queue.release_all(revocation.account_id)

    def check_timeout(self, item_id: str) -> None:
        item = self.queue.get(item_id)
        if item.status == "resolved" or item.ask_id is None:
            return
        self.queue.set_live(item_id, False)
        record = self.asks.get(item.ask_id)
        self.hub.send_device(record.device_id, {"type": "status", "ask_id": record.id, "status": STATUS_TIMED_OUT})

    def on_resolved(self, item: QueueItem, value: str | None, authors: list[str]) -> None:
        """A settled item teaches the model at once and the answer goes to the wearer's stream."""
        if item.ask_id is None:
            return
        author = ",".join(authors)[:64]
        record = self.asks.get(item.ask_id)
        if _spot_check(record):
            # The wearer's answer stays as it was; the verdict only recalibrates the policy.
            if value is not None:
                self.labels.add(item.ask_id, value, source="human", author=author)
            else:
                self.labels.audit_cannot_tell(item.ask_id)
            return
        # The wearer hears first; storing the label and learning from it follow at once.
        text = self.labels.final_text(self.labels.canonical(record, value)) if value is not None else CANNOT_TELL
        self.hub.send_device(record.device_id, {"type": "answer", "ask_id": record.id, "text": text,
                                                "hud": hud_lines(text), "source": "human", "final": True})
        if value is not None:
            self.labels.add(item.ask_id, value, source="human", author=author)
        else:
            self.labels.reject(item.ask_id, CANNOT_TELL)


def _spot_check(record: AskRecord) -> bool:
    """An audit of an ask the AI answered on its own (the wearer was never told a person would look)."""
    return record.audit and record.answer.decision == Decision.ANSWER
