"""The loop's value objects: asks, answers, catalogue items, episodes, labels."""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any

import numpy as np

HUD_MAX_LINES = 5
HUD_LINE_CHARS = 32


class Decision(StrEnum):
    """What the escalation policy decided for an answer."""

    ANSWER = "answer"
    ESCALATE = "escalate"


class Outcome(StrEnum):
    """Where an episode ended up."""

    ANSWERED = "answered"  # the AI answered on its own
    ESCALATED = "escalated"  # waiting for a human
    HUMAN_ANSWERED = "human_answered"
    CONFIRMED = "confirmed"  # the wearer said "right"
    CORRECTED = "corrected"  # the wearer or a human said "wrong" and gave the right answer
    REJECTED = "rejected"


def utcnow() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


@dataclass(frozen=True)
class Frame:
    """A decoded camera frame: RGB pixels plus the original bytes."""

    rgb: np.ndarray
    data: bytes
    media_type: str

    @property
    def width(self) -> int:
        return int(self.rgb.shape[1])

    @property
    def height(self) -> int:
        return int(self.rgb.shape[0])


@dataclass(frozen=True)
class Ask:
    """A wearer's question about what they see."""

    question: str
    frame: Frame | None = None
    device_id: str = "anonymous"
    created_at: dt.datetime = field(default_factory=utcnow)
    language: str | None = None


@dataclass(frozen=True)
class Candidate:
    label: str
    score: float


@dataclass(frozen=True)
class Answer:
    """What goes back to the wearer: HUD text plus everything needed to audit it."""

    text: str
    skill: str
    confidence: float
    decision: Decision = Decision.ANSWER
    model_version: str = ""
    result: dict[str, Any] = field(default_factory=dict)
    candidates: tuple[Candidate, ...] = ()
    policy: str = ""

    @property
    def hud_lines(self) -> list[str]:
        return hud_lines(self.text)


@dataclass(frozen=True)
class CatalogItem:
    """A product the wearer may look at."""

    id: str
    name: str
    coarse_class: str = ""
    description: str = ""
    price: float | None = None
    currency: str = "SEK"
    barcode: str | None = None
    images: tuple[str, ...] = ()

    @property
    def display_name(self) -> str:
        return self.name.replace("-", " ").replace("_", " ")


@dataclass(frozen=True)
class Label:
    """A confirmed answer for an ask: the thing the loop learns from."""

    ask_id: str
    value: str
    source: str  # "human", "wearer", "import", "gold"
    created_at: dt.datetime = field(default_factory=utcnow)


def hud_lines(text: str, width: int = HUD_LINE_CHARS, max_lines: int = HUD_MAX_LINES) -> list[str]:
    """Wraps text into at most ``max_lines`` short lines, ending with an ellipsis when cut."""
    import textwrap

    lines: list[str] = []
    for para in text.splitlines() or [""]:
        lines.extend(textwrap.wrap(para, width=width) or [""])
    if len(lines) > max_lines:
        lines = lines[:max_lines]
        lines[-1] = (lines[-1][: width - 1]).rstrip() + "…"
    return lines
