"""Active-learning query strategies: one conformance suite for all, and what each one prefers."""

from __future__ import annotations

import numpy as np
import pytest

from lookloop.loop.strategies import STRATEGIES, QueryStrategy, get_strategy


def pool(n: int = 60, c: int = 5, d: int = 8, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    logits = rng.normal(size=(n, c)) * 3
    probs = np.exp(logits) / np.exp(logits).sum(axis=1, keepdims=True)
    x = rng.normal(size=(n, d))
    return probs, x / np.linalg.norm(x, axis=1, keepdims=True)


@pytest.mark.parametrize("name", sorted(STRATEGIES))
def test_strategy_conformance(name: str) -> None:
    strategy = get_strategy(name)
    assert isinstance(strategy, QueryStrategy)
    assert strategy.name == name
    probs, x = pool()
    for k in (0, 1, 7, 60, 100):
        picks = strategy.select(probs, x, k, labelled=x[:3], rng=np.random.default_rng(0))
        assert picks.dtype.kind == "i"
        assert len(picks) == min(k, 60)
        assert len(set(picks.tolist())) == len(picks)
        assert all(0 <= i < 60 for i in picks)
    again = strategy.select(probs, x, 7, labelled=x[:3], rng=np.random.default_rng(0))
    assert np.array_equal(again, strategy.select(probs, x, 7, labelled=x[:3], rng=np.random.default_rng(0)))
    # Works without anything labelled yet, and rejects rows that do not line up.
    assert len(strategy.select(probs, x, 5, labelled=None, rng=np.random.default_rng(0))) == 5
    with pytest.raises(ValueError):
        strategy.select(probs, x[:-1], 3)


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
