"""Asks: the answer a wearer gets, labels and routing corrections."""

from __future__ import annotations

import datetime as dt
from typing import Any

from pydantic import BaseModel, Field

from lookloop.domain import AskRecord
from lookloop.humans.runtime import Waiting


class CandidateOut(BaseModel):
    label: str
    score: float


class AnswerOut(BaseModel):
    text: str
    hud: list[str] = Field(description="At most five short lines for the glasses' display.")
    skill: str
    confidence: float
    decision: str = Field(description="'answer' (the AI answered) or 'escalate' (a human was asked).")
    policy: str
    model_version: str
    result: dict[str, Any]
    candidates: list[CandidateOut]


class AskOut(BaseModel):
    id: str
    device_id: str
    question: str
    created_at: dt.datetime
    outcome: str
    answer: AnswerOut
    final_answer: str | None = None
    frame_url: str | None = None
    latency_ms: float

    @classmethod
    def of(cls, r: AskRecord) -> AskOut:
        a = r.answer
        return cls(
            id=r.id,
            device_id=r.device_id,
            question=r.question,
            created_at=r.created_at,
            outcome=r.outcome,
            answer=AnswerOut(
                text=a.text,
                hud=r.hud,
                skill=a.skill,
                confidence=a.confidence,
                decision=a.decision.value,
                policy=a.policy,
                model_version=a.model_version,
                result=a.result,
                candidates=[CandidateOut(label=c.label, score=c.score) for c in a.candidates],
            ),
            final_answer=r.final_answer,
            frame_url=f"/v1/asks/{r.id}/frame" if r.frame_sha else None,
            latency_ms=round(r.latency_ms, 2),
        )


class LabelIn(BaseModel):
    value: str = Field(min_length=1, max_length=500)
    source: str | None = Field(
        default=None, pattern="^(human|wearer|reviewer|operator|gold)$",
        description="Leave out: the label counts as the caller's (a device: the wearer's own; a reviewer's; an "
        "operator's). An operator may ask for 'gold' or 'wearer'; 'human' is the caller's too.")


class LabelOut(BaseModel):
    """A label with its provenance: where it came from, who gave it, how far it is trusted and what it does."""

    id: str
    ask_id: str | None
    value: str
    display: str = Field(description="The value as people read it ('Regular-Tomato' → 'Regular Tomato').")
    source: str = Field(description="anonymous, wearer, reviewer, consensus, operator, gold, human (given through "
                        "the library) or import.")
    author: str = Field(description="Who gave it (empty where the caller may not see it).")
    trust: float | None = Field(description="How far the author is trusted, 0..1: a reviewer's gold accuracy; 1 "
                                "for operators, gold, consensus; 0 for a wearer's own label.")
    status: str = Field(description="'applied' (teaches every wearer's answers), 'personal' (the wearer's own "
                        "answers only, until reviewed), 'pending' (waits for a second reviewer), 'proposal' (names "
                        "no catalogue item: waits for an operator) or 'rejected'.")
    created_at: dt.datetime


class RouteIn(BaseModel):
    skill: str | None = Field(
        default=None, max_length=32, description="The right skill, or null for 'out of scope: a human answers'."
    )


class RouteOut(BaseModel):
    question: str
    skill: str | None


class WaitOut(BaseModel):
    """Where an ask waiting for a person stands (the same as the status events of the device stream)."""

    ask_id: str
    question: str
    state: str = Field(description="'asking' (offered to helpers now), 'timed_out' (nobody answered in time; still "
                       "queued), 'cancelled' or 'answered'.")
    status: str = Field(description="The state in words, as the device stream says it.")
    position: int | None = Field(description="Place in the review queue (1: the next a helper gets); null when "
                                 "it waits no more.")
    waited_s: int = Field(description="Seconds since the ask.")
    with_helper: bool = Field(description="Whether a helper has it on screen now.")

    @classmethod
    def of(cls, w: Waiting) -> WaitOut:
        return cls(ask_id=w.ask_id, question=w.question, state=w.state, status=w.status, position=w.position,
                   waited_s=w.waited_s, with_helper=w.with_helper)
