"""The loop's value objects and the small rules every layer shares (time, label names, percentiles).

This is the floor of the package: it imports nothing of lookloop.
"""

from __future__ import annotations

import datetime as dt
import math
import re
import textwrap
import unicodedata
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field, fields, replace
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
    CANCELLED = "cancelled"  # the wearer stopped waiting for a helper


def utcnow() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


def as_utc(value: dt.datetime) -> dt.datetime:
    """Every stored time is UTC; SQLite hands back naive datetimes even for timezone-aware columns."""
    return value.replace(tzinfo=dt.UTC) if value.tzinfo is None else value.astimezone(dt.UTC)


_LABEL_SEPARATORS = re.compile(r"[\s_\-]+")


def normalise_label(value: str | None) -> str:
    """The one comparison form of a label: "Regular-Tomato", "regular tomato" and "Regular_Tomato" are equal."""
    text = unicodedata.normalize("NFKC", value or "").casefold()
    return _LABEL_SEPARATORS.sub(" ", text).strip()


def normalise_text(text: str) -> str:
    """A question's comparison form (case, width and spacing folded; punctuation kept)."""
    return " ".join(unicodedata.normalize("NFKC", text).casefold().split())


def clean_text(text: str) -> str:
    """Text as people typed it: control characters (but newlines and tabs) and invisible format characters
    (zero-width spaces, joiners, bidi overrides, BOM) removed, the ends trimmed."""
    kept = []
    for ch in text or "":
        cat = unicodedata.category(ch)
        if ch in "\n\t":
            kept.append(ch)
        elif cat in ("Cc", "Cf", "Cs", "Co", "Cn"):
            continue
        else:
            kept.append(ch)
    return "".join(kept).strip()


# Where a label comes from. "human" is a person's answer given through the library without an account (trusted
# like an operator's); "import" a labelled data set.
LABEL_SOURCES = ("anonymous", "wearer", "reviewer", "consensus", "operator", "gold", "human", "import")


def same_label(a: str | None, b: str | None) -> bool:
    return bool(a) and bool(b) and normalise_label(a) == normalise_label(b)


def ai_label(result: Mapping[str, Any] | None, answer_text: str) -> str:
    """What the AI said an ask shows: the predicted label where the skill gave one, else its answer text."""
    return str((result or {}).get("label") or answer_text)


def display(name: str) -> str:
    """A catalogue name as people read it ("Regular-Tomato" → "Regular Tomato")."""
    return name.replace("-", " ").replace("_", " ")


def class_name(text: str) -> str:
    """The one stored form of an identify class: the catalogue's ("Regular-Tomato"), words joined by hyphens,
    each started with a capital ("dragon fruit" → "Dragon-Fruit"). People read it through ``display``."""
    words = _LABEL_SEPARATORS.sub(" ", unicodedata.normalize("NFKC", text or "")).split()
    return "-".join(w[:1].upper() + w[1:] for w in words)


def percentile(values: Sequence[float], q: float) -> float | None:
    """Linear-interpolated percentile (q in 0..100); None when there is nothing to rank."""
    if not values:
        return None
    s = sorted(values)
    pos = (len(s) - 1) * q / 100.0
    lo, hi = math.floor(pos), math.ceil(pos)
    return float(s[lo] + (s[hi] - s[lo]) * (pos - lo))


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
    family: str = ""  # the broad kind of item (Fruit, Vegetables, Packages): the group its guarantees hold in

    @property
    def display_name(self) -> str:
        return display(self.name)


@dataclass(frozen=True)
class Label:
    """A confirmed answer for an ask: the thing the loop learns from."""

    ask_id: str
    value: str
    source: str  # one of LABEL_SOURCES
    created_at: dt.datetime = field(default_factory=utcnow)


def hud_lines(text: str, width: int = HUD_LINE_CHARS, max_lines: int = HUD_MAX_LINES) -> list[str]:
    """Wraps text into at most ``max_lines`` short lines, ending with an ellipsis when cut."""
    lines: list[str] = []
    for para in text.splitlines() or [""]:
        lines.extend(textwrap.wrap(para, width=width) or [""])
    if len(lines) > max_lines:
        lines = lines[:max_lines]
        lines[-1] = (lines[-1][: width - 1]).rstrip() + "…"
    return lines


@dataclass(frozen=True)
class Prediction:
    """A classifier's view of one frame: a distribution over the labels it knows."""

    labels: list[str]
    probs: np.ndarray  # (n_labels,), sums to 1
    nearest_label: str | None
    nearest_similarity: float
    novelty: float = 0.0  # higher = less like anything learnt (lookloop.loop.openset.novelty_scores)

    @property
    def top(self) -> tuple[str, float]:
        i = int(np.argmax(self.probs))
        return self.labels[i], float(self.probs[i])

    def top_k(self, k: int = 3) -> list[tuple[str, float]]:
        order = np.argsort(-self.probs)[:k]
        return [(self.labels[i], float(self.probs[i])) for i in order]

    @property
    def margin(self) -> float:
        if len(self.probs) < 2:
            return float(self.probs.max(initial=0.0))
        top2 = np.sort(self.probs)[-2:]
        return float(top2[1] - top2[0])


@dataclass(frozen=True)
class PolicyDecision:
    """An escalation policy's verdict on one prediction."""

    decision: Decision
    confidence: float  # the calibrated confidence reported to the wearer
    threshold: float
    policy: str


@dataclass(frozen=True)
class AskRecord:
    """An ask as the outside world sees it: the question, the answer, and where the episode stands."""

    id: str
    device_id: str
    question: str
    created_at: dt.datetime
    answer: Answer
    outcome: str
    frame_sha: str | None
    latency_ms: float
    final_answer: str | None = None
    audit: bool = False  # drawn at random as a spot check of the policy (lookloop.loop.calibration)

    @property
    def hud(self) -> list[str]:
        return hud_lines(self.final_answer or self.answer.text)


@dataclass(frozen=True)
class Consent:
    """A wearer's choices (``lookloop.privacy.consent`` says what each one means and its default)."""

    store_frames: bool = True
    keep_originals: bool = False
    human_review: bool = True
    training_use: bool = True
    memory: bool = True

    def as_dict(self) -> dict[str, bool]:
        return asdict(self)

    def updated(self, changes: dict[str, Any]) -> Consent:
        known = {f.name for f in fields(Consent)}
        unknown = set(changes) - known
        if unknown:
            raise ValueError(f"unknown consent field(s): {', '.join(sorted(unknown))}")
        return Consent(**{**self.as_dict(), **{k: bool(v) for k, v in changes.items() if v is not None}})


ANONYMOUS = "anonymous"


NO_REVIEW_NOTE = "No helper was asked: human review is off in your privacy settings."


def without_human_review(answer: Answer) -> Answer:
    """An escalation turned into a plain (unsure) answer that tells the wearer why nobody was asked."""
    if answer.decision != Decision.ESCALATE:
        return answer
    text = answer.text.replace("; asking a helper.", ".").replace("asking a helper", "").rstrip()
    return replace(
        answer,
        text=f"{text} {NO_REVIEW_NOTE}",
        decision=Decision.ANSWER,
        result={**answer.result, "human_review": "declined by the wearer's consent"},
    )
