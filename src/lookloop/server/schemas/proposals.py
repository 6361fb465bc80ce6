"""Proposals: answers naming something the catalogue lacks, for an operator to add as an item or reject."""

from __future__ import annotations

import datetime as dt

from pydantic import BaseModel, Field

from lookloop.loop.labels import Proposal
from lookloop.server.schemas.catalog import CatalogItemOut


class ProposalOut(BaseModel):
    name: str = Field(description="The name in the catalogue's form ('Dragon-Fruit'), as the new item would have.")
    display_name: str = Field(description="The name as people read it.")
    answers: int = Field(description="How many answers named it.")
    asks: int = Field(description="How many asks those answers are about.")
    authors: list[str]
    example_frames: list[str] = Field(description="Redacted frames of asks it answered (operators only).")
    first_at: dt.datetime
    last_at: dt.datetime

    @classmethod
    def of(cls, p: Proposal) -> ProposalOut:
        return cls(name=p.name, display_name=p.display_name, answers=p.answers, asks=p.asks,
                   authors=list(p.authors), first_at=p.first_at, last_at=p.last_at,
                   example_frames=[f"/v1/operators/proposals/frames/{i}" for i in p.example_label_ids])


class ApproveIn(BaseModel):
    name: str = Field(min_length=1, max_length=256, description="The proposed name (any spelling of it).")
    price: float | None = Field(default=None, ge=0, le=1e9)
    currency: str = Field(default="SEK", min_length=1, max_length=8)
    coarse_class: str = Field(default="", max_length=128)
    description: str = Field(default="", max_length=10_000)


class ApproveOut(BaseModel):
    item: CatalogItemOut
    labels: int = Field(description="Answers that became examples of the new item.")
    learnt: int = Field(description="Of them, frames the model learnt at once (the head learns on the next train).")


class RejectIn(BaseModel):
    name: str = Field(min_length=1, max_length=256)


class RejectOut(BaseModel):
    name: str
    rejected: int
