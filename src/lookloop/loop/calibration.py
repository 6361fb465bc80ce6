"""Live calibration from audit asks: random spot checks whose labels keep the serving policy honest.

Labels of escalated asks alone are a biased sample (only low scores reach a person), yet the policy's promise
is about the error among auto-answers. So a share ``audit_rate`` of identify asks, drawn at random and
independently of the decision, is labelled whatever happened. Their (policy score, right or wrong) pairs are
an i.i.d. sample of live traffic for the model that scored them, so they may join that version's held-out set
in the Learn-then-Test calibration. Pairs of other model versions never count: their scores mean something
else. An audit ask a reviewer "cannot tell" counts as wrong: unverifiable answers must not make the bound
look better than it is.

Calibration is per group (Mondrian): an ask's group is the family of its predicted item (fruit, vegetables,
packages), or "unknown" when the outlier gate flags it. Each audit verdict joins its own group only, and each
group's bound holds within that group. A group without enough labels for a certificate escalates every ask and
says how many audit labels it still needs (``labels_to_go``).
"""

from __future__ import annotations

import math
import random
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np
from sqlalchemy import func, select

from lookloop.loop.policies import (
    NEVER,
    SCORES,
    UNKNOWN_GROUP,
    ConformalPolicy,
    EscalationPolicy,
    FixedThreshold,
    MondrianPolicy,
)
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
    """A labelled audit ask: the score its policy saw, whether the model's top answer was right, its group."""

    ask_id: str
    model_version: str
    score: float
    score_kind: str
    correct: bool
    group: str = ""  # "" for asks stored before groups: the predicted item's family stands in


def ask_group(result: dict[str, Any] | None, predicted: str | None, group_of: Callable[[str], str]) -> str:
    """The group an ask was decided in: as stored with it, else its predicted item's family."""
    stored = (result or {}).get("group")
    return str(stored) if stored else group_of(predicted or "")


def audit_verdicts(db: Database, model_versions: Sequence[str], kind: str,
                   group_of: Callable[[str], str] = lambda label: "") -> list[AuditVerdict]:
    """Every labelled audit ask of these model versions scored with ``kind``, oldest first.

    Several versions: a registered copy of the start-up model also counts the verdicts given while it served
    under its start-up name.
    """

    with db.session() as s:
        rows = s.execute(
            select(AskRow.id, AskRow.model_version, AskRow.policy_score, AskRow.audit_correct, AskRow.result,
                   AskRow.predicted_label)
            .where(AskRow.audit.is_(True), AskRow.model_version.in_(list(model_versions)),
                   AskRow.score_kind == kind, AskRow.audit_correct.is_not(None), AskRow.policy_score.is_not(None))
            .order_by(AskRow.created_at, AskRow.id)
        ).all()
    return [AuditVerdict(str(i), str(v), float(sc or 0.0), kind, bool(ok), ask_group(res, pred, group_of))
            for i, v, sc, ok, res, pred in rows]


def audit_counts(db: Database, model_version: str) -> tuple[int, int, int]:
    """(audit asks, labelled audit asks, labelled audit asks of ``model_version``)."""

    labelled = AskRow.audit_correct.is_not(None)
    with db.session() as s:
        asks = s.scalar(select(func.count()).select_from(AskRow).where(AskRow.audit.is_(True))) or 0
        done = s.scalar(select(func.count()).select_from(AskRow).where(AskRow.audit.is_(True), labelled)) or 0
        mine = s.scalar(select(func.count()).select_from(AskRow).where(
            AskRow.audit.is_(True), labelled, AskRow.model_version == model_version)) or 0
    return int(asks), int(done), int(mine)


def labels_to_go(scores: np.ndarray, correct: np.ndarray, *, alpha: float, delta: float, min_answered: int,
                 cap: int = 1 << 16) -> int:
    """The fewest further labels after which this group could hold a certificate: 0 when it holds one.

    Counted as if every further label were a right answer with the highest score — the best case — so the
    true number is at least this. Learn-then-Test tests no threshold with fewer than
    max(``min_answered``, log delta / log(1 - alpha)) answers, hence never fewer than that minus the labels so far.
    """
    s = np.asarray(scores, dtype=np.float64).ravel()
    c = np.asarray(correct, dtype=bool).ravel()

    def certified(k: int) -> bool:
        policy = ConformalPolicy(alpha, delta, min_answered=min_answered, max_calibration=s.size + k + 1)
        policy.calibrate(np.concatenate([s, np.ones(k)]), np.concatenate([c, np.ones(k, dtype=bool)]))
        return policy.threshold < NEVER

    n_min = max(min_answered, int(math.ceil(math.log(delta) / math.log(1.0 - alpha))))
    lo = max(0, n_min - int(s.size))
    if certified(lo):
        return lo
    hi = max(1, lo)
    while not certified(lo + hi):
        if hi >= cap:
            return lo + cap
        hi *= 2
    low, high = lo + hi // 2, lo + hi  # certified(high); search the smallest (more right answers never hurt)
    while high - low > 1:
        mid = (low + high) // 2
        if certified(mid):
            high = mid
        else:
            low = mid
    return high


@dataclass(frozen=True)
class Guarantee:
    """What the serving policy promises within one group, in figures and in words."""

    group: str
    labels: int  # calibration labels of the group (held-out and audit)
    audit_labels: int
    threshold: float | None  # None: the group escalates every ask
    bound: float | None  # the certified error bound of its auto-answers; None: no guarantee yet
    to_go: int  # audit labels still needed before a certificate can exist (0: it has one)
    alpha: float = 0.05
    delta: float = 0.1

    @property
    def text(self) -> str:
        if self.group == UNKNOWN_GROUP:
            return "never answered without a person"
        if self.bound is None:
            return no_guarantee_text(self.to_go)
        return f"auto-answer error ≤ {self.bound:.1%} with {1 - self.delta:.0%} confidence"

    def as_dict(self) -> dict[str, Any]:
        return {"group": self.group, "labels": self.labels, "audit_labels": self.audit_labels,
                "threshold": self.threshold, "bound": self.bound, "labels_to_go": self.to_go, "text": self.text}


def no_guarantee_text(to_go: int) -> str:
    """The words the answer and the dashboard use for a group without a certificate."""
    return f"no guarantee yet: {to_go} audit label{'' if to_go == 1 else 's'} to go"


@dataclass(frozen=True)
class CalibrationParams:
    alpha: float = 0.05
    delta: float = 0.1
    min_labels: int = 200  # audit labels that replace the fixed threshold where no held-out set exists
    min_answered: int = 50
    groups: tuple[str, ...] = ()  # every group to report, calibrated or not (the catalogue's families)


@dataclass(frozen=True)
class Calibration:
    """What the serving policy is calibrated on: a version's held-out set plus its audit verdicts.

    Immutable: the service swaps a whole new state (and policy) in, so an ask never sees a half-fitted policy.
    ``policy`` is the policy this state produced (None: none yet, the fixed threshold serves). With
    ``heldout_groups`` (per held-out ask, its group) the policy is Mondrian: per group; without (versions stored
    before groups), one pooled conformal policy.
    """

    version: str | None = None
    kind: str = "margin"
    heldout_scores: np.ndarray = field(default_factory=lambda: np.zeros(0))
    heldout_correct: np.ndarray = field(default_factory=lambda: np.zeros(0, dtype=bool))
    heldout_groups: tuple[str, ...] | None = None
    verdicts: dict[str, tuple[float, bool, str]] = field(default_factory=dict)  # ask id → (score, correct, group)
    policy: EscalationPolicy | None = None
    guarantees: dict[str, Guarantee] = field(default_factory=dict)

    @property
    def n_audit(self) -> int:
        return len(self.verdicts)

    @property
    def grouped(self) -> bool:
        return self.heldout_groups is not None

    def _data(self) -> tuple[np.ndarray, np.ndarray, list[str]]:
        audit = [v for v in self.verdicts.values() if not self.grouped or v[2] != UNKNOWN_GROUP]
        scores = np.concatenate([self.heldout_scores, np.array([a[0] for a in audit], dtype=np.float64)])
        correct = np.concatenate([self.heldout_correct, np.array([a[1] for a in audit], dtype=bool)])
        held = list(self.heldout_groups or ("",) * self.heldout_scores.size)
        groups = held + [a[2] for a in audit]
        keep = [i for i, g in enumerate(groups) if not self.grouped or g != UNKNOWN_GROUP]
        return scores[keep], correct[keep], [groups[i] for i in keep]

    def fit(self, params: CalibrationParams) -> Calibration:
        """This state with its policy and per-group guarantees.

        Pooled: no policy without a held-out set and with fewer than ``min_labels`` verdicts (the fixed threshold
        keeps serving). Grouped: always a policy — a group without a certificate escalates every ask.
        """
        scores, correct, groups = self._data()
        policy: EscalationPolicy | None
        guarantees: dict[str, Guarantee] = {}
        if self.grouped:
            mondrian = MondrianPolicy(params.alpha, params.delta, score=self.kind, min_answered=params.min_answered)
            mondrian.calibrate(scores, correct, groups)
            policy = mondrian
            audit_groups = [v[2] for v in self.verdicts.values()]
            for name in sorted(set(params.groups) | set(groups)):
                mine = np.array([g == name for g in groups], dtype=bool)
                group_policy = mondrian.policies.get(name)
                certified = group_policy is not None and group_policy.threshold < NEVER
                guarantees[name] = Guarantee(
                    name, int(mine.sum()), audit_groups.count(name),
                    group_policy.threshold if certified and group_policy is not None else None,
                    group_policy.upper_bound if certified and group_policy is not None else None,
                    0 if certified else labels_to_go(scores[mine], correct[mine], alpha=params.alpha,
                                                     delta=params.delta, min_answered=params.min_answered),
                    params.alpha, params.delta)
            guarantees[UNKNOWN_GROUP] = Guarantee(UNKNOWN_GROUP, 0, audit_groups.count(UNKNOWN_GROUP), None, None,
                                                  0, params.alpha, params.delta)
        elif not self.heldout_scores.size and len(self.verdicts) < params.min_labels:
            policy = None
        else:
            pooled = ConformalPolicy(params.alpha, params.delta, score=self.kind)
            pooled.calibrate(scores, correct)
            policy = pooled
        return Calibration(self.version, self.kind, self.heldout_scores, self.heldout_correct, self.heldout_groups,
                           self.verdicts, policy, guarantees)

    def with_verdict(self, verdict: AuditVerdict, params: CalibrationParams) -> Calibration | None:
        """The state after one more verdict; None when it changes nothing (another version, or seen already)."""
        if verdict.model_version != self.version or verdict.score_kind != self.kind:
            return None  # another model's scores are not comparable
        before = self.verdicts.get(verdict.ask_id)
        if before is not None and before[1] == verdict.correct:
            return None  # the same verdict again (a second label that agrees, or one the rebuild read already)
        verdicts = {**self.verdicts, verdict.ask_id: (verdict.score, verdict.correct, verdict.group)}
        return Calibration(self.version, self.kind, self.heldout_scores, self.heldout_correct, self.heldout_groups,
                           verdicts).fit(params)


def replaceable(current: EscalationPolicy, state: Calibration) -> bool:
    """Whether live calibration may replace the serving policy: its own, or the fixed threshold.

    A policy someone set by hand (a benchmark's, a test's) is left alone.
    """
    return current is state.policy or isinstance(current, FixedThreshold)
