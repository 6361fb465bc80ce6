"""The human loop over HTTP: sign-in and who am I, the review queue, and the wearer's feedback on answers."""

from __future__ import annotations

import datetime as dt

from pydantic import BaseModel, Field

from lookloop.humans.accounts import Principal
from lookloop.humans.feedback import FeedbackInfo
from lookloop.humans.queue import QueueItem, ReviewerStats
from lookloop.humans.runtime import item_event


class LoginIn(BaseModel):
    username: str = Field(min_length=1, max_length=64)
    password: str = Field(min_length=1, max_length=256)


class LoginOut(BaseModel):
    token: str = Field(description="Send as 'Authorization: Bearer <token>'; sockets take ?token=<token>.")
    role: str
    username: str
    expires_in_s: int


class MeOut(BaseModel):
    kind: str
    role: str
    name: str
    account_id: str | None = None
    device_id: str | None = None
    wearer_id: str | None = None

    @classmethod
    def of(cls, p: Principal) -> MeOut:
        return cls(kind=p.kind, role=p.role, name=p.name, account_id=p.account_id, device_id=p.device_id,
                   wearer_id=p.wearer_id)


class CandidateView(BaseModel):
    label: str
    score: float


class ReviewItemOut(BaseModel):
    """A review item as reviewers see it: gold items (known answers that score reviewers) look the same."""

    id: str
    question: str
    skill: str
    frame_url: str | None = None
    ai_answer: str
    ai_label: str
    confidence: float
    candidates: list[CandidateView]
    live: bool
    status: str
    lock_expires_at: str | None = None
    created_at: str

    @classmethod
    def of(cls, item: QueueItem) -> ReviewItemOut:
        """The item as reviewers see it: the same shape the live hub pushes over the socket."""
        return cls.model_validate(item_event(item))


class ReviewAnswerIn(BaseModel):
    action: str = Field(default="answer", pattern="^(answer|reject)$",
                        description="'answer' with a value, or 'reject' when the frame cannot be answered.")
    value: str | None = Field(default=None, max_length=500)


class ReviewAnswerOut(BaseModel):
    item_id: str
    resolved: bool
    status: str
    value: str | None = None
    label: str | None = Field(
        default=None, pattern="^(applied|pending|proposal)$",
        description="What became of the answer: 'applied' (it teaches every wearer's model now), 'pending' (it "
        "waits for a second reviewer who agrees), 'proposal' (it names something the catalogue lacks: an operator "
        "decides); null: no label (\"cannot tell\").")


class QueueCountsOut(BaseModel):
    open: int
    live: int
    operator: int
    resolved: int
    gold: int
    locked: int


class ReviewerStatsOut(BaseModel):
    account_id: str
    username: str
    items: int
    skips: int
    seconds_per_item: float | None
    agreement: float | None = Field(description="Agreement with the consensus over the items at least two people "
                                    "answered (null when there were none).")
    gold_answered: int
    gold_accuracy: float | None
    agreement_items: int = Field(default=0, description="How many items the agreement rests on.")
    trusted: bool = Field(default=False, description="Whether the reviewer's answers teach every wearer's model at "
                          "once; until then each waits for a second reviewer who agrees.")
    gold_to_go: int | None = Field(default=None, description="Right answers to known (gold) items still needed to "
                                   "be trusted (0 when trusted; null when the accuracy bar is out of reach).")
    min_gold_accuracy: float = Field(default=0.0, description="The gold accuracy a reviewer needs to be trusted.")

    @classmethod
    def of(cls, r: ReviewerStats, min_gold_accuracy: float) -> ReviewerStatsOut:
        return cls(**r.__dict__, min_gold_accuracy=min_gold_accuracy)


class GoldIn(BaseModel):
    ask_id: str = Field(min_length=1, max_length=64)
    answer: str | None = Field(default=None, max_length=500)


class FeedbackIn(BaseModel):
    verdict: str = Field(pattern="^(right|wrong)$")
    correction: str | None = Field(default=None, max_length=500)


class FeedbackOut(BaseModel):
    id: str
    ask_id: str
    device_id: str
    verdict: str
    correction: str | None
    implicit: bool
    created_at: dt.datetime

    @classmethod
    def of(cls, f: FeedbackInfo) -> FeedbackOut:
        return cls(**f.__dict__)
