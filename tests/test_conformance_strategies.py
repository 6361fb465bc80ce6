"""Active-learning query strategies: every implementation through the same checks (see conformance_util.py)."""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import pytest
from conformance_util import cases

from lookloop.loop.strategies import (
    STRATEGIES,
    ClusterMarginStrategy,
    EntropyStrategy,
    KCenterStrategy,
    MarginStrategy,
    QueryStrategy,
    RandomStrategy,
    get_strategy,
)

IMPLEMENTATIONS: dict[str, Callable[[], QueryStrategy]] = {
    "random": RandomStrategy,
    "margin": MarginStrategy,
    "entropy": EntropyStrategy,
    "cluster-margin": ClusterMarginStrategy,
    "k-center": KCenterStrategy,
}

SKIP = {
    "random": {"torn_ask_first": "picks uniformly at random by design (the baseline)"},
    "k-center": {"torn_ask_first": "covers the embedding space; it ignores the model's probabilities"},
    "cluster-margin": {
        "torn_ask_first": "spreads a batch over clusters: the first pick heads the smallest cluster, not the "
                          "most torn ask",
    },
}

N = 60


def pool(n: int = N, c: int = 5, d: int = 8, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Class probabilities (n, c) and L2-normalised embeddings (n, d) of an unlabelled pool."""
    rng = np.random.default_rng(seed)
    logits = rng.normal(size=(n, c)) * 3
    probs = np.exp(logits) / np.exp(logits).sum(axis=1, keepdims=True)
    x = rng.normal(size=(n, d))
    return probs, x / np.linalg.norm(x, axis=1, keepdims=True)


def assert_picks(picks: np.ndarray, k: int, n: int) -> None:
    assert isinstance(picks, np.ndarray) and picks.dtype.kind == "i"
    assert len(picks) == min(k, n)
    assert len(set(picks.tolist())) == len(picks), "no ask twice"
    assert all(0 <= i < n for i in picks.tolist())


def check_picks_k_distinct_pool_indices(strategy: QueryStrategy) -> None:
    probs, x = pool()
    for k in (0, 1, 7, N, N + 40):
        assert_picks(strategy.select(probs, x, k, labelled=x[:3], rng=np.random.default_rng(0)), k, N)


def check_never_picks_a_labelled_ask(strategy: QueryStrategy) -> None:
    # as the training loop calls it: the pool is what is not labelled yet, picks map back through it
    probs, x = pool(90)
    labelled = np.zeros(90, dtype=bool)
    labelled[::3] = True
    rows = np.flatnonzero(~labelled)
    for k in (1, 10, 60, 90):
        picks = strategy.select(probs[rows], x[rows], k, labelled=x[labelled], rng=np.random.default_rng(1))
        assert_picks(picks, k, len(rows))
        assert not labelled[rows[picks]].any()


def check_works_before_anything_is_labelled(strategy: QueryStrategy) -> None:
    probs, x = pool()
    assert_picks(strategy.select(probs, x, 5, labelled=None, rng=np.random.default_rng(0)), 5, N)
    assert_picks(strategy.select(probs, x, 5, labelled=x[:0], rng=np.random.default_rng(0)), 5, N)


def check_single_class_model(strategy: QueryStrategy) -> None:
    # before the first label the loop scores the pool with one column of ones
    _, x = pool()
    assert_picks(strategy.select(np.ones((N, 1)), x, 8, rng=np.random.default_rng(0)), 8, N)


def check_empty_pool(strategy: QueryStrategy) -> None:
    assert_picks(strategy.select(np.zeros((0, 5)), np.zeros((0, 8)), 4, rng=np.random.default_rng(0)), 4, 0)


def check_deterministic_with_a_seed(strategy: QueryStrategy) -> None:
    probs, x = pool()
    first = strategy.select(probs, x, 7, labelled=x[:3], rng=np.random.default_rng(5))
    again = strategy.select(probs, x, 7, labelled=x[:3], rng=np.random.default_rng(5))
    assert first.tolist() == again.tolist()


def check_inputs_are_not_modified(strategy: QueryStrategy) -> None:
    probs, x = pool()
    p0, x0, lab = probs.copy(), x.copy(), x[:3].copy()
    strategy.select(probs, x, 7, labelled=lab, rng=np.random.default_rng(0))
    assert np.array_equal(probs, p0) and np.array_equal(x, x0) and np.array_equal(lab, x0[:3])


def check_rejects_rows_that_do_not_line_up(strategy: QueryStrategy) -> None:
    probs, x = pool()
    with pytest.raises(ValueError):
        strategy.select(probs, x[:-1], 3)
    with pytest.raises(ValueError):
        strategy.select(probs, x, -1)


def check_torn_ask_first(strategy: QueryStrategy) -> None:
    probs = np.tile([0.97, 0.01, 0.01, 0.01], (12, 1))
    probs[7] = 0.25  # the model cannot tell these four apart
    x = np.eye(12)
    assert strategy.select(probs, x, 1, rng=np.random.default_rng(0)).tolist() == [7]


def check_named_as_registered(strategy: QueryStrategy) -> None:
    assert isinstance(strategy.name, str) and strategy.name
    assert type(get_strategy(strategy.name)) is type(strategy)


CHECKS = [
    check_picks_k_distinct_pool_indices,
    check_never_picks_a_labelled_ask,
    check_works_before_anything_is_labelled,
    check_single_class_model,
    check_empty_pool,
    check_deterministic_with_a_seed,
    check_inputs_are_not_modified,
    check_rejects_rows_that_do_not_line_up,
    check_torn_ask_first,
    check_named_as_registered,
]


@pytest.mark.parametrize(("impl", "check"), cases(list(IMPLEMENTATIONS), CHECKS, SKIP))
def test_strategy(impl: str, check: Callable[[QueryStrategy], None]) -> None:
    check(IMPLEMENTATIONS[impl]())


def test_every_registered_strategy_is_checked() -> None:
    assert set(IMPLEMENTATIONS) == set(STRATEGIES)
    assert {n: type(b()) for n, b in IMPLEMENTATIONS.items()} == dict(STRATEGIES)
