"""Escalation policies: every implementation through the same checks (see conformance_util.py)."""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Callable

import numpy as np
import pytest
from conformance_util import cases

from lookloop.domain import Decision, PolicyDecision
from lookloop.loop.policies import ConformalPolicy, EscalationPolicy, FixedThreshold, MondrianPolicy, all_policies


def synthetic(n: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Scores of an underconfident classifier: the answer is right with probability score**0.3."""
    rng = np.random.default_rng(seed)
    scores = rng.beta(5.0, 1.0, size=n)
    correct = rng.random(n) < scores**0.3
    return scores, correct


def calibrated(policy: EscalationPolicy) -> EscalationPolicy:
    policy.calibrate(*synthetic(2000))
    return policy


# Policies as they serve: calibrated on the same held-out labels (the fixed threshold ignores them).
IMPLEMENTATIONS: dict[str, Callable[[], EscalationPolicy]] = {
    "fixed@0.5": lambda: calibrated(FixedThreshold(0.5)),
    "conformal@0.05": lambda: calibrated(ConformalPolicy(0.05)),
    "conformal@0.05-top": lambda: calibrated(ConformalPolicy(0.05, score="top")),
    "conformal-uncalibrated": lambda: ConformalPolicy(0.05),
    # Calibrated without groups: one pooled group, which an ask without a group is decided in.
    "mondrian@0.05": lambda: calibrated(MondrianPolicy(0.05)),
}

SKIP = {
    "fixed@0.5": {
        "two_way_tie_is_escalated": "thresholds the top probability alone: a 50/50 tie reaches 0.5 and is answered",
    },
    "conformal-uncalibrated": {
        "sure_answer_is_answered": "escalates everything until enough held-out labels exist (by design)",
    },
}


def ladder(classes: int = 5, steps: int = 41) -> list[np.ndarray]:
    """Probability vectors whose top probability and margin both rise step by step."""
    out = []
    for p in np.linspace(1.0 / classes, 1.0, steps):
        rest = (1.0 - p) / (classes - 1)
        out.append(np.array([p] + [rest] * (classes - 1)))
    return out


def assorted() -> list[np.ndarray]:
    rng = np.random.default_rng(1)
    return [
        np.eye(5)[0],
        np.full(10, 0.1),
        np.array([1.0]),  # a model that knows one class
        np.zeros(0),  # no candidates at all
        np.array([0.5, 0.5]),
        *rng.dirichlet(np.full(6, 0.3), size=8),
    ]


def check_decision_is_well_formed(policy: EscalationPolicy) -> None:
    for probs in assorted():
        d = policy.decide(probs)
        assert isinstance(d, PolicyDecision)
        assert d.decision in (Decision.ANSWER, Decision.ESCALATE)
        assert 0.0 <= d.confidence <= 1.0, (probs, d)
        assert np.isfinite(d.threshold)
        assert d.policy == policy.name


def check_no_candidates_escalates(policy: EscalationPolicy) -> None:
    assert policy.decide(np.zeros(0)).decision == Decision.ESCALATE


def check_monotone_in_confidence(policy: EscalationPolicy) -> None:
    decisions = [policy.decide(p) for p in ladder()]
    answered = [d.decision == Decision.ANSWER for d in decisions]
    # once a score is answered, every higher score is answered too
    assert answered == sorted(answered), answered
    confidences = [d.confidence for d in decisions]
    assert all(b >= a - 1e-12 for a, b in zip(confidences, confidences[1:], strict=False)), confidences


def check_sure_answer_is_answered(policy: EscalationPolicy) -> None:
    assert policy.decide(np.eye(5)[0]).decision == Decision.ANSWER


def check_coin_flip_is_escalated(policy: EscalationPolicy) -> None:
    assert policy.decide(np.full(10, 0.1)).decision == Decision.ESCALATE


def check_two_way_tie_is_escalated(policy: EscalationPolicy) -> None:
    assert policy.decide(np.array([0.5, 0.5])).decision == Decision.ESCALATE


def check_deterministic(policy: EscalationPolicy, rebuild: Callable[[], EscalationPolicy]) -> None:
    other = rebuild()
    for probs in assorted() + ladder():
        assert policy.decide(probs) == policy.decide(probs)
        assert policy.decide(probs) == other.decide(probs), "the same labels give the same policy"


def check_decision_is_serialisable(policy: EscalationPolicy) -> None:
    assert isinstance(policy.name, str) and policy.name
    d = policy.decide(np.array([0.7, 0.2, 0.1]))
    row = json.loads(json.dumps(dataclasses.asdict(d)))
    assert row == {"decision": d.decision.value, "confidence": d.confidence, "threshold": d.threshold,
                   "policy": policy.name}
    assert Decision(row["decision"]) == d.decision


def check_name_survives_recalibration(policy: EscalationPolicy) -> None:
    name = policy.name
    policy.calibrate(*synthetic(500, seed=7))
    assert policy.name == name


def check_input_is_not_modified(policy: EscalationPolicy) -> None:
    probs = np.array([0.6, 0.3, 0.1])
    policy.decide(probs)
    assert probs.tolist() == [0.6, 0.3, 0.1]


def check_calibrate_rejects_misaligned_labels(policy: EscalationPolicy) -> None:
    with pytest.raises(ValueError):
        policy.calibrate(np.zeros(3), np.zeros(4, dtype=bool))


CHECKS: list[Callable[..., None]] = [
    check_decision_is_well_formed,
    check_no_candidates_escalates,
    check_monotone_in_confidence,
    check_sure_answer_is_answered,
    check_coin_flip_is_escalated,
    check_two_way_tie_is_escalated,
    check_deterministic,
    check_decision_is_serialisable,
    check_name_survives_recalibration,
    check_input_is_not_modified,
    check_calibrate_rejects_misaligned_labels,
]


@pytest.mark.parametrize(("impl", "check"), cases(list(IMPLEMENTATIONS), CHECKS, SKIP))
def test_policy(impl: str, check: Callable[..., None]) -> None:
    build = IMPLEMENTATIONS[impl]
    if check is check_deterministic:
        check(build(), build)
    else:
        check(build())


def test_every_shipped_policy_is_checked() -> None:
    listed = {type(build()) for build in IMPLEMENTATIONS.values()}
    assert {type(p) for p in all_policies()} <= listed
