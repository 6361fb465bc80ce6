"""Open-set identify: the novelty score, the conformal outlier gate and near-duplicate bursts."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest

from lookloop.loop.learner import IdentifyModel
from lookloop.loop.openset import OutlierGate, burst_groups, novelty_scores
from lookloop.loop.simulation import KNOWN, UNKNOWN, LiveCalibration, LoopData, judge_live


def unit(x: np.ndarray) -> np.ndarray:
    return np.asarray(x / np.linalg.norm(x, axis=-1, keepdims=True), dtype=np.float32)


def test_the_gate_flags_known_asks_at_most_at_its_rate() -> None:
    """Over many exchangeable draws, a fresh known-class ask is flagged with probability ≤ rate."""
    rng = np.random.default_rng(0)
    rate, trials, flagged = 0.05, 4000, 0
    for _ in range(trials):
        scores = rng.gamma(2.0, 1.0, size=60)
        gate = OutlierGate(rate)
        gate.calibrate(scores[:-1])
        flagged += gate.is_unknown(float(scores[-1]))
    # Conformal: P(flag) ≤ rate exactly; allow three standard errors of the simulation.
    assert flagged / trials <= rate + 3 * math.sqrt(rate * (1 - rate) / trials)
    # and it is not vacuous: the bound is nearly tight for continuous scores
    assert flagged / trials >= rate - 0.03


def test_the_gate_threshold_is_the_conformal_quantile() -> None:
    gate = OutlierGate(0.1)
    gate.calibrate(np.arange(1.0, 20.0))  # 19 scores: ceil(20 * 0.9) = 18th smallest
    assert gate.threshold == 18.0
    assert gate.is_unknown(18.5) and not gate.is_unknown(18.0)
    assert gate.flags(np.array([1.0, 19.0])).tolist() == [False, True]
    assert gate.n_calibration == 19
    assert gate.describe()["threshold"] == 18.0


def test_too_few_scores_flag_nothing_and_say_so() -> None:
    gate = OutlierGate(0.05)
    gate.calibrate(np.linspace(0, 1, 10))
    assert gate.threshold == math.inf
    assert not gate.is_unknown(1e9)
    described = gate.describe()
    assert described["threshold"] is None and described["active"] is False
    assert "9 more" in described["note"]  # 19 scores are the fewest that can flag at 5%
    json.dumps(described, allow_nan=False)
    gate.calibrate(np.linspace(0, 1, 19))
    assert math.isfinite(gate.threshold)


@pytest.mark.parametrize("rate", [0.0, 1.0, -0.1])
def test_the_gate_rejects_a_bad_rate(rate: float) -> None:
    with pytest.raises(ValueError):
        OutlierGate(rate)


def test_novelty_is_low_near_learnt_examples_and_high_far_away() -> None:
    rng = np.random.default_rng(3)
    centres = unit(rng.normal(size=(3, 32)))
    x = unit(np.repeat(centres, 10, axis=0) + 0.05 * rng.normal(size=(30, 32)))
    labels = [f"c{i // 10}" for i in range(30)]
    model = IdentifyModel(32)
    model.learn(x, labels, [f"k{i}" for i in range(30)])
    near = unit(centres + 0.05 * rng.normal(size=(3, 32)))
    far = unit(rng.normal(size=(3, 32)))
    scores = novelty_scores(model, np.vstack([near, far]))
    assert scores[:3].max() < scores[3:].min()
    # predict fills the same score
    preds = model.predict(np.vstack([near, far]))
    assert [p.novelty for p in preds] == pytest.approx(scores.tolist())
    # learning the far thing makes it known at the next ask
    model.learn(far[:1], ["new"], ["n0"])
    assert model.predict(far[:1])[0].novelty < scores[3]


def test_a_model_that_knows_nothing_finds_everything_novel() -> None:
    assert novelty_scores(IdentifyModel(4), unit(np.ones((2, 4)))).tolist() == [2.0, 2.0]


def test_bursts_stay_together() -> None:
    paths = ["a/Apple_001.jpg", "a/Apple_002.jpg", "a/Apple_003.jpg", "a/Apple_010.jpg", "b/Apple_004.jpg"]
    groups = burst_groups(paths)  # names alone: consecutive numbers in one folder chain
    assert groups[0] == groups[1] == groups[2]
    assert len({groups[0], groups[3], groups[4]}) == 3
    # A numbered sequence is one session even where two of its photos look unalike; near-duplicates chain
    # across names and folders.
    x = unit(np.array([[1, 0, 0], [1, 0.1, 0], [0, 0, 1], [0, 1, 0], [0.99, 0.1, 0]], dtype=np.float32))
    groups = burst_groups(paths, x)
    assert groups[0] == groups[1] == groups[2] == groups[4]
    assert groups[3] != groups[0]
    # With ``link``, consecutive names chain only when alike.
    groups = burst_groups(paths, x, link=0.8)
    assert groups[0] == groups[1] == groups[4]
    assert groups[2] != groups[0] and groups[3] != groups[0]
    with pytest.raises(ValueError):
        burst_groups(paths, x[:2])


def _live_world(n_known: int = 300, seed: int = 0) -> tuple[IdentifyModel, np.ndarray, LoopData]:
    """Two well-separated known classes in two families, and asks about an unknown third thing."""
    rng = np.random.default_rng(seed)
    centres = unit(rng.normal(size=(3, 16)))
    model = IdentifyModel(16)
    train = unit(np.repeat(centres[:2], 20, axis=0) + 0.1 * rng.normal(size=(40, 16)))
    model.learn(train, ["a"] * 20 + ["b"] * 20, [f"t{i}" for i in range(40)])
    labels = [("a", "b")[i % 2] for i in range(n_known)] + ["c"] * 30
    x = unit(centres[[{"a": 0, "b": 1, "c": 2}[y] for y in labels]] + 0.1 * rng.normal(size=(len(labels), 16)))
    data = LoopData([], [], [Path(f"e{i}.jpg") for i in range(len(labels))], labels,
                    eval_kinds=[KNOWN] * n_known + [UNKNOWN] * 30, families={"a": "Fruit", "b": "Packages"})
    return model, x, data


def test_live_asks_about_unknown_things_escalate_and_groups_hold() -> None:
    model, x, data = _live_world()
    res = judge_live(model, x, data, LiveCalibration(), seed=1)
    assert res.calibration_labels == len(data.eval_labels)
    assert res.coverage > 0.8 and res.auto_error == 0.0
    assert res.unknown_auto_answer_rate == 0.0 and res.unknown_flagged == 1.0
    assert set(res.groups) == {"Fruit", "Packages", "unknown"}
    assert res.groups["unknown"].answered == 0 and res.worst_group_auto_error == 0.0
    assert res.known_flagged <= 0.1


def test_no_calibration_labels_no_answers() -> None:
    model, x, data = _live_world()
    res = judge_live(model, x, data, LiveCalibration(budget=0), seed=1)
    assert res.calibration_labels == 0 and res.coverage == 0.0 and res.known_flagged == 0.0
    # a small budget is counted as what it is
    assert judge_live(model, x, data, LiveCalibration(budget=40), seed=1).calibration_labels == 40


def test_a_repeated_ask_calibrates_once() -> None:
    """A bootstrap asks some photos twice: their labels must not count twice (that would certify too much)."""
    model, x, data = _live_world(n_known=120)
    twice = LoopData([], [], data.eval_paths * 2, data.eval_labels * 2, eval_kinds=data.eval_kinds * 2,
                     families=data.families, eval_ids=list(range(len(data.eval_paths))) * 2)
    once = judge_live(model, x, data, LiveCalibration(), seed=2)
    doubled = judge_live(model, np.vstack([x, x]), twice, LiveCalibration(), seed=2)
    assert doubled.calibration_labels == once.calibration_labels == len(data.eval_paths)
    assert doubled.coverage == once.coverage and doubled.threshold == once.threshold
