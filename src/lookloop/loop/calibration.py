"""Live calibration from audit asks: random spot checks whose labels keep the serving policy honest.

Labels of escalated asks alone are a biased sample (only low scores reach a person), yet the policy's promise
is about the error among auto-answers. So a share ``audit_rate`` of identify asks, drawn at random and
independently of the decision, is labelled whatever happened. Their (policy score, right or wrong) pairs are
an i.i.d. sample of live traffic for the model that scored them, so they may join that version's held-out set
in the Learn-then-Test calibration. Pairs of other model versions never count: their scores mean something
else. An audit ask a reviewer "cannot tell" counts as wrong: unverifiable answers must not make the bound
look better than it is.
"""

from __future__ import annotations

import copy
import random
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import numpy as np
from sqlalchemy import func, select

from lookloop.loop.policies import SCORES, ConformalPolicy, EscalationPolicy, FixedThreshold
from lookloop.store.tables import AskRow

if TYPE_CHECKING:
    from lookloop.store.db import Database

# Review priority of audit items: below every escalation (whose priorities lie in [0, 1]) and the same for
# all audits, so they are answered first in, first out and the labelled ones stay a random sample.
AUDIT_PRIORITY = -1.0


def draw_audit(rng: random.Random, rate: float) -> bool:
    """One Bernoulli(``rate``) draw. It must never look at the ask: that is what keeps the sample unbiased."""
    if rate <= 0.0:
        return False
    return rate >= 1.0 or rng.random() < rate


def score_kind(policy: object) -> str:
    """The ``confidence_score`` kind ``policy`` thresholds; "margin" for policies without one (fixed)."""
    kind = getattr(policy, "score", "margin")
    return kind if isinstance(kind, str) and kind in SCORES else "margin"


@dataclass(frozen=True)
class AuditVerdict:
    """A labelled audit ask: the score its policy saw and whether the model's top answer was right."""

    ask_id: str
    model_version: str
    score: float
    score_kind: str
    correct: bool


def audit_verdicts(db: Database, model_version: str, kind: str) -> list[AuditVerdict]:
    """Every labelled audit ask of ``model_version`` scored with ``kind``, oldest first."""

    with db.session() as s:
        rows = s.execute(
            select(AskRow.id, AskRow.policy_score, AskRow.audit_correct)
            .where(AskRow.audit.is_(True), AskRow.model_version == model_version, AskRow.score_kind == kind,
                   AskRow.audit_correct.is_not(None), AskRow.policy_score.is_not(None))
            .order_by(AskRow.created_at, AskRow.id)
        ).all()
    return [AuditVerdict(str(i), model_version, float(sc or 0.0), kind, bool(ok)) for i, sc, ok in rows]


def audit_counts(db: Database, model_version: str) -> tuple[int, int, int]:
    """(audit asks, labelled audit asks, labelled audit asks of ``model_version``)."""

    labelled = AskRow.audit_correct.is_not(None)
    with db.session() as s:
        asks = s.scalar(select(func.count()).select_from(AskRow).where(AskRow.audit.is_(True))) or 0
        done = s.scalar(select(func.count()).select_from(AskRow).where(AskRow.audit.is_(True), labelled)) or 0
        mine = s.scalar(select(func.count()).select_from(AskRow).where(
            AskRow.audit.is_(True), labelled, AskRow.model_version == model_version)) or 0
    return int(asks), int(done), int(mine)


@dataclass(frozen=True)
class Calibration:
    """What the serving policy is calibrated on: a version's held-out set plus its audit verdicts.

    Immutable: the service swaps a whole new state (and policy) in, so an ask never sees a half-fitted policy.
    ``policy`` is the policy this state produced (None: none yet, the fixed threshold serves).
    """

    version: str | None = None
    kind: str = "margin"
    heldout_scores: np.ndarray = field(default_factory=lambda: np.zeros(0))
    heldout_correct: np.ndarray = field(default_factory=lambda: np.zeros(0, dtype=bool))
    verdicts: dict[str, tuple[float, bool]] = field(default_factory=dict)  # ask id → (score, correct)
    policy: ConformalPolicy | None = None

    @property
    def n_audit(self) -> int:
        return len(self.verdicts)

    def fit(self, alpha: float, min_labels: int) -> ConformalPolicy | None:
        """The policy for this state; None without a held-out set and with fewer than ``min_labels`` verdicts."""
        if not self.heldout_scores.size and len(self.verdicts) < min_labels:
            return None
        audit = list(self.verdicts.values())
        scores = np.concatenate([self.heldout_scores, np.array([a[0] for a in audit], dtype=np.float64)])
        correct = np.concatenate([self.heldout_correct, np.array([a[1] for a in audit], dtype=bool)])
        policy = ConformalPolicy(alpha, score=self.kind)
        policy.calibrate(scores, correct)
        return policy

    def with_verdict(self, verdict: AuditVerdict, alpha: float, min_labels: int) -> Calibration | None:
        """The state after one more verdict; None when it changes nothing (another version, or seen already)."""
        if verdict.model_version != self.version or verdict.score_kind != self.kind:
            return None  # another model's scores are not comparable
        before = self.verdicts.get(verdict.ask_id)
        if before is not None and before[1] == verdict.correct:
            return None  # the same verdict again (a second label that agrees, or one the rebuild read already)
        verdicts = {**self.verdicts, verdict.ask_id: (verdict.score, verdict.correct)}
        policy: ConformalPolicy | None
        if self.policy is not None and before is None:
            policy = copy.deepcopy(self.policy)  # the serving one stays untouched while this one refits
            policy.update(np.array([verdict.score]), np.array([verdict.correct]))
        else:
            # A relabel changes a verdict already in the set, or the fixed threshold may give way: refit all.
            policy = Calibration(self.version, self.kind, self.heldout_scores, self.heldout_correct,
                                 verdicts).fit(alpha, min_labels)
        return Calibration(self.version, self.kind, self.heldout_scores, self.heldout_correct, verdicts, policy)


def replaceable(current: EscalationPolicy, state: Calibration) -> bool:
    """Whether live calibration may replace the serving policy: its own, or the fixed threshold.

    A policy someone set by hand (a benchmark's, a test's) is left alone.
    """
    return current is state.policy or isinstance(current, FixedThreshold)
