"""Escalation policies: given a skill's scores for an ask, answer or hand it to a human."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol, runtime_checkable

import numpy as np

from lookloop.domain import Decision


@dataclass(frozen=True)
class PolicyDecision:
    decision: Decision
    confidence: float  # the calibrated confidence reported to the wearer
    threshold: float
    policy: str


@runtime_checkable
class EscalationPolicy(Protocol):
    name: str

    def decide(self, probs: np.ndarray) -> PolicyDecision:
        """``probs``: the skill's class probabilities for one ask."""
        ...

    def calibrate(self, scores: np.ndarray, correct: np.ndarray) -> None:
        """Held-out labelled asks: the top score of each and whether the top answer was right."""
        ...


class FixedThreshold:
    """Answers when the top probability reaches a fixed threshold."""

    def __init__(self, threshold: float = 0.5) -> None:
        if not 0.0 <= threshold <= 1.0:
            raise ValueError("threshold must lie in [0, 1]")
        self.threshold = threshold
        self.name = f"fixed@{threshold:g}"

    def decide(self, probs: np.ndarray) -> PolicyDecision:
        top = float(np.max(probs)) if probs.size else 0.0
        decision = Decision.ANSWER if top >= self.threshold else Decision.ESCALATE
        return PolicyDecision(decision, top, self.threshold, self.name)

    def calibrate(self, scores: np.ndarray, correct: np.ndarray) -> None:
        return None
