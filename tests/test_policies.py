"""Escalation policies: what each one promises beyond the shared checks (test_conformance_policies.py)."""

from __future__ import annotations

import numpy as np
import pytest

from lookloop.domain import Decision
from lookloop.loop.policies import (
    ConformalPolicy,
    FixedThreshold,
    MondrianPolicy,
    clopper_pearson_upper,
    confidence_score,
    confidence_scores,
)


def synthetic(n: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """Top scores of an underconfident classifier: the answer is right with probability score**0.3."""
    scores = rng.beta(5.0, 1.0, size=n)
    correct = rng.random(n) < scores**0.3
    return scores, correct


def test_fixed_threshold_rejects_a_bad_threshold() -> None:
    with pytest.raises(ValueError):
        FixedThreshold(1.5)


def test_conformal_escalates_everything_until_calibrated() -> None:
    policy = ConformalPolicy(0.05)
    assert policy.decide(np.array([0.99, 0.01])).decision == Decision.ESCALATE
    # Too few labels to certify 5% even without a single error.
    policy.calibrate(np.full(30, 0.99), np.ones(30, dtype=bool))
    assert policy.decide(np.array([0.99, 0.01])).decision == Decision.ESCALATE
    policy.update(np.full(30, 0.99), np.ones(30, dtype=bool))
    assert policy.n_calibration == 60
    assert policy.decide(np.array([0.995, 0.005])).decision == Decision.ANSWER


def test_clopper_pearson_bound() -> None:
    assert clopper_pearson_upper(0, 45, 0.1) < 0.05 < clopper_pearson_upper(0, 44, 0.1)
    assert clopper_pearson_upper(10, 100, 0.05) > 0.1
    assert clopper_pearson_upper(5, 5, 0.1) == 1.0


def test_conformal_error_stays_within_alpha_on_held_out_data() -> None:
    """Across independent calibration draws, the auto-answer error on fresh asks exceeds alpha at most
    about delta of the time, while a useful share of asks is still answered."""
    alpha, delta, trials = 0.05, 0.1, 40
    rng = np.random.default_rng(42)
    test_scores, test_correct = synthetic(50_000, rng)
    failures, coverages = 0, []
    for _ in range(trials):
        policy = ConformalPolicy(alpha, delta)
        policy.calibrate(*synthetic(800, rng))
        answered = test_scores >= policy.threshold
        coverages.append(answered.mean())
        err = float((~test_correct[answered]).mean()) if answered.any() else 0.0
        failures += err > alpha
    assert failures <= delta * trials + 2
    assert np.mean(coverages) > 0.2


def test_conformal_confidence_is_monotone_and_calibrated() -> None:
    rng = np.random.default_rng(1)
    scores, correct = synthetic(5000, rng)
    policy = ConformalPolicy(0.05)
    policy.calibrate(scores, correct)
    conf = [policy.confidence(s) for s in np.linspace(0, 1, 50)]
    assert all(b >= a for a, b in zip(conf, conf[1:], strict=False))
    # Mean reported confidence matches the accuracy it claims.
    assert abs(np.mean([policy.confidence(s) for s in scores]) - correct.mean()) < 0.02
    described = policy.describe()
    assert described["calibration_labels"] == 5000
    assert float(described["error_upper_bound"]) <= 0.05


def test_confidence_score_margin_and_top() -> None:
    probs = np.array([0.5, 0.1, 0.4])
    assert confidence_score(probs, "top") == pytest.approx(0.5)
    assert confidence_score(probs) == pytest.approx(0.1)  # margin over the runner-up
    assert confidence_score(np.array([1.0])) == 1.0
    rows = np.array([[0.5, 0.1, 0.4], [0.9, 0.05, 0.05]])
    np.testing.assert_allclose(confidence_scores(rows), [0.1, 0.85])
    np.testing.assert_allclose(confidence_scores(rows, "top"), [0.5, 0.9])
    with pytest.raises(ValueError, match="unknown score"):
        confidence_score(probs, "entropy")


def test_conformal_policy_thresholds_its_own_score_kind() -> None:
    """Two close candidates escalate under the margin score even when the top probability is high."""
    rng = np.random.default_rng(3)
    scores, correct = synthetic(3000, rng)
    margin, top = ConformalPolicy(0.05), ConformalPolicy(0.05, score="top")
    margin.calibrate(scores, correct)
    top.calibrate(scores, correct)
    assert margin.threshold == top.threshold < 1.0
    assert margin.threshold < 0.6  # so the two candidates below fit in a probability vector
    p1 = margin.threshold + 0.01
    p2 = p1 - margin.threshold / 2
    close = np.array([p1, p2, 1.0 - p1 - p2])
    assert top.decide(close).decision is Decision.ANSWER
    assert margin.decide(close).decision is Decision.ESCALATE
    assert margin.describe()["score"] == "margin"
    with pytest.raises(ValueError, match="unknown score"):
        ConformalPolicy(0.05, score="entropy")


def _two_groups(n: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Scores of two kinds of item: "easy" is right with probability score, "hard" far less often at the
    same score (a model overconfident on hard items). Most asks are easy."""
    hard = rng.random(n) < 0.25
    scores = rng.beta(5.0, 1.0, size=n)
    p_right = np.where(hard, scores**6, scores**0.2)
    correct = rng.random(n) < p_right
    return scores, correct, np.where(hard, "hard", "easy")


def test_mondrian_holds_the_bound_in_every_group_where_pooling_does_not() -> None:
    alpha, delta, trials = 0.05, 0.1, 30
    rng = np.random.default_rng(11)
    ts, tc, tg = _two_groups(60_000, rng)
    pooled_fail = {"easy": 0, "hard": 0}
    mondrian_fail = {"easy": 0, "hard": 0}
    answered_easy = []
    for _ in range(trials):
        s, c, g = _two_groups(3000, rng)
        pooled = ConformalPolicy(alpha, delta)
        pooled.calibrate(s, c, g.tolist())
        mondrian = MondrianPolicy(alpha, delta)
        mondrian.calibrate(s, c, g.tolist())
        for group in ("easy", "hard"):
            mine = tg == group
            for policy, fails in ((pooled, pooled_fail), (mondrian, mondrian_fail)):
                thr = policy.threshold if isinstance(policy, ConformalPolicy) else policy.threshold_for(group)
                answered = mine & (ts >= thr)
                err = float((~tc[answered]).mean()) if answered.any() else 0.0
                fails[group] += err > alpha
        answered_easy.append(float((ts[tg == "easy"] >= mondrian.threshold_for("easy")).mean()))
    assert pooled_fail["hard"] > trials / 2  # the pooled guarantee breaks for the hard group
    for group in ("easy", "hard"):
        assert mondrian_fail[group] <= delta * trials + 2
    assert np.mean(answered_easy) > 0.3  # and still answers the group it can


def test_mondrian_escalates_thin_unseen_and_unknown_groups() -> None:
    rng = np.random.default_rng(5)
    scores = np.concatenate([rng.uniform(0.9, 1.0, 400), rng.uniform(0.9, 1.0, 20), rng.uniform(0.9, 1.0, 400)])
    correct = np.ones(scores.size, dtype=bool)
    groups = ["Fruit"] * 400 + ["Packages"] * 20 + ["unknown"] * 400
    policy = MondrianPolicy(0.05)
    policy.calibrate(scores, correct, groups)
    sure = np.array([0.999, 0.001])
    assert policy.decide(sure, "Fruit").decision == Decision.ANSWER
    assert policy.decide(sure, "Packages").decision == Decision.ESCALATE  # 20 labels certify nothing
    assert policy.decide(sure, "Vegetables").decision == Decision.ESCALATE  # never calibrated
    assert policy.decide(sure, "unknown").decision == Decision.ESCALATE  # the gate's group never answers
    assert policy.decide(sure).decision == Decision.ESCALATE  # calibrated per group: no pooled group
    assert policy.decide(sure, "Fruit").policy == "mondrian@0.05"
    described = policy.describe()
    assert described["groups"]["Fruit"]["calibration_labels"] == 400
    assert described["groups"]["Fruit"]["answers"] is True
    assert described["groups"]["Packages"]["answers"] is False
    assert described["groups"]["unknown"]["answers"] is False
    assert described["calibration_labels"] == 820
    policy.update(np.full(40, 0.95), np.ones(40, dtype=bool), ["Packages"] * 40)
    assert policy.decide(sure, "Packages").decision == Decision.ANSWER
    with pytest.raises(ValueError):
        policy.calibrate(scores, correct, groups[:-1])
