"""API schemas (pydantic), kept apart from the database tables."""

from __future__ import annotations

import datetime as dt
from typing import Any

from pydantic import BaseModel, Field

from lookloop.domain import AskRecord, CatalogItem


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
    source: str = Field(default="human", pattern="^(human|wearer|gold|import)$")


class RouteIn(BaseModel):
    skill: str | None = Field(
        default=None, max_length=32, description="The right skill, or null for 'out of scope: a human answers'."
    )


class RouteOut(BaseModel):
    question: str
    skill: str | None


class CatalogItemIn(BaseModel):
    id: str | None = Field(default=None, min_length=1, max_length=128, pattern=r"^[A-Za-z0-9_.\-]+$")
    name: str = Field(min_length=1, max_length=256)
    coarse_class: str = Field(default="", max_length=128)
    description: str = Field(default="", max_length=10_000)
    price: float | None = Field(default=None, ge=0, le=1e9)
    currency: str = Field(default="SEK", min_length=1, max_length=8)
    barcode: str | None = Field(default=None, max_length=64)

    def to_item(self, item_id: str | None = None) -> CatalogItem:
        return CatalogItem(
            id=item_id or self.id or self.name.lower().replace(" ", "-"),
            name=self.name,
            coarse_class=self.coarse_class,
            description=self.description,
            price=self.price,
            currency=self.currency,
            barcode=self.barcode,
        )


class CatalogItemOut(BaseModel):
    id: str
    name: str
    coarse_class: str
    description: str
    price: float | None
    currency: str
    barcode: str | None
    images: int

    @classmethod
    def of(cls, i: CatalogItem) -> CatalogItemOut:
        return cls(
            id=i.id,
            name=i.name,
            coarse_class=i.coarse_class,
            description=i.description,
            price=i.price,
            currency=i.currency,
            barcode=i.barcode,
            images=len(i.images),
        )


class ErrorOut(BaseModel):
    detail: str
