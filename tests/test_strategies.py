"""Active-learning query strategies: what each one prefers (shared checks: test_conformance_strategies.py)."""

from __future__ import annotations

import numpy as np
import pytest

from lookloop.loop.strategies import get_strategy


def test_unknown_strategy_is_a_clear_error() -> None:
    with pytest.raises(ValueError, match="choose one of"):
        get_strategy("oracle")


def test_margin_and_entropy_pick_the_torn_asks_first() -> None:
    probs = np.array([[0.98, 0.01, 0.01], [0.5, 0.49, 0.01], [0.34, 0.33, 0.33], [0.9, 0.05, 0.05]])
    x = np.eye(4)
    assert get_strategy("margin").select(probs, x, 1)[0] == 2 or get_strategy("margin").select(probs, x, 1)[0] == 1
    assert get_strategy("margin").select(probs, x, 2).tolist() == [2, 1] or \
        get_strategy("margin").select(probs, x, 2).tolist() == [1, 2]
    assert get_strategy("entropy").select(probs, x, 1)[0] == 2
    assert get_strategy("entropy").select(probs, x, 4)[-1] == 0


def test_k_center_covers_the_space() -> None:
    # Two tight clusters and one lone point far from what is labelled.
    x = np.array([[1, 0, 0], [0.99, 0.14, 0], [0, 1, 0], [0.1, 0.99, 0], [0, 0, 1.0]])
    x = x / np.linalg.norm(x, axis=1, keepdims=True)
    probs = np.full((5, 2), 0.5)
    picks = get_strategy("k-center").select(probs, x, 2, labelled=np.array([[1.0, 0, 0]]))
    assert 4 in picks.tolist()
    assert {2, 3} & set(picks.tolist())


def test_cluster_margin_spreads_its_batch() -> None:
    rng = np.random.default_rng(3)
    # 30 equally uncertain asks, all near one direction, and 10 slightly less uncertain elsewhere.
    a = np.array([1.0, 0, 0]) + rng.normal(scale=0.01, size=(30, 3))
    b = np.array([0, 1.0, 0]) + rng.normal(scale=0.01, size=(10, 3))
    x = np.vstack([a, b])
    x /= np.linalg.norm(x, axis=1, keepdims=True)
    probs = np.vstack([np.tile([0.5, 0.5], (30, 1)), np.tile([0.55, 0.45], (10, 1))])
    margin_picks = get_strategy("margin").select(probs, x, 10)
    cluster_picks = get_strategy("cluster-margin").select(probs, x, 10)
    assert all(i < 30 for i in margin_picks)
    assert any(i >= 30 for i in cluster_picks)
