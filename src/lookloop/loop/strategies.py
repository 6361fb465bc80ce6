"""Active-learning query strategies: which unlabelled asks a reviewer with spare time should see first."""

from __future__ import annotations

from typing import Protocol, runtime_checkable

import numpy as np

from lookloop.domain import AskRecord


@runtime_checkable
class QueryStrategy(Protocol):
    name: str

    def select(
        self,
        probs: np.ndarray,
        embeddings: np.ndarray,
        k: int,
        *,
        labelled: np.ndarray | None = None,
        rng: np.random.Generator | None = None,
    ) -> np.ndarray:
        """Indices (into the ``probs``/``embeddings`` rows of the unlabelled pool) of up to ``k`` asks, best first.

        ``probs``: the current model's class probabilities (n, c); ``embeddings``: L2-normalised (n, d);
        ``labelled``: embeddings of what is labelled already (for diversity-aware strategies).
        """
        ...


def _check(probs: np.ndarray, embeddings: np.ndarray, k: int) -> int:
    if probs.ndim != 2 or embeddings.ndim != 2 or probs.shape[0] != embeddings.shape[0]:
        raise ValueError("probs and embeddings must be (n, c) and (n, d) with the same n")
    if k < 0:
        raise ValueError("k must not be negative")
    return min(k, int(probs.shape[0]))


def margin_scores(probs: np.ndarray) -> np.ndarray:
    """Top-1 minus top-2 probability (small: the model is torn between two answers)."""
    if probs.shape[1] < 2:
        return probs[:, 0].copy() if probs.shape[1] else np.zeros(probs.shape[0])
    top2 = np.partition(probs, -2, axis=1)[:, -2:]
    return np.asarray(top2[:, 1] - top2[:, 0])


def entropy_scores(probs: np.ndarray) -> np.ndarray:
    p = np.clip(probs, 1e-12, 1.0)
    return np.asarray(-(p * np.log(p)).sum(axis=1))


class RandomStrategy:
    name = "random"

    def select(self, probs: np.ndarray, embeddings: np.ndarray, k: int, *, labelled: np.ndarray | None = None,
               rng: np.random.Generator | None = None) -> np.ndarray:
        k = _check(probs, embeddings, k)
        gen = rng or np.random.default_rng(0)
        return np.asarray(gen.permutation(probs.shape[0])[:k], dtype=np.int64)


class MarginStrategy:
    """Breaking ties: the smallest margin between the two best answers first."""

    name = "margin"

    def select(self, probs: np.ndarray, embeddings: np.ndarray, k: int, *, labelled: np.ndarray | None = None,
               rng: np.random.Generator | None = None) -> np.ndarray:
        k = _check(probs, embeddings, k)
        return np.asarray(np.argsort(margin_scores(probs), kind="stable")[:k], dtype=np.int64)


class EntropyStrategy:
    name = "entropy"

    def select(self, probs: np.ndarray, embeddings: np.ndarray, k: int, *, labelled: np.ndarray | None = None,
               rng: np.random.Generator | None = None) -> np.ndarray:
        k = _check(probs, embeddings, k)
        return np.asarray(np.argsort(-entropy_scores(probs), kind="stable")[:k], dtype=np.int64)


class ClusterMarginStrategy:
    """Cluster-margin (Citovsky et al., 2021), simplified: uncertain first, but spread over clusters.

    The ``pool_factor * k`` smallest-margin asks are clustered (k-means on embeddings); the batch takes
    them round-robin over clusters, smallest clusters first, so one confusing product does not eat the
    whole budget.
    """

    name = "cluster-margin"

    def __init__(self, pool_factor: int = 4, n_clusters: int | None = None) -> None:
        self.pool_factor = pool_factor
        self.n_clusters = n_clusters

    def select(self, probs: np.ndarray, embeddings: np.ndarray, k: int, *, labelled: np.ndarray | None = None,
               rng: np.random.Generator | None = None) -> np.ndarray:
        k = _check(probs, embeddings, k)
        if k == 0:
            return np.zeros(0, dtype=np.int64)
        candidates = np.argsort(margin_scores(probs), kind="stable")[: min(len(probs), self.pool_factor * k)]
        n_clusters = min(len(candidates), self.n_clusters or max(2, k // 2))
        if n_clusters < 2:
            return np.asarray(candidates[:k], dtype=np.int64)
        from sklearn.cluster import KMeans  # slow to import: loaded on first use

        km = KMeans(n_clusters=n_clusters, n_init=1, random_state=0, max_iter=50)
        assign = km.fit_predict(embeddings[candidates])
        queues = [list(candidates[assign == c]) for c in range(n_clusters)]  # each already margin-ordered
        queues.sort(key=len)
        out: list[int] = []
        while len(out) < k and any(queues):
            for q in queues:
                if q and len(out) < k:
                    out.append(int(q.pop(0)))
        return np.asarray(out, dtype=np.int64)


class KCenterStrategy:
    """k-center greedy (Sener & Savarese, 2018): each pick is the ask farthest from everything labelled."""

    name = "k-center"

    def select(self, probs: np.ndarray, embeddings: np.ndarray, k: int, *, labelled: np.ndarray | None = None,
               rng: np.random.Generator | None = None) -> np.ndarray:
        k = _check(probs, embeddings, k)
        n = embeddings.shape[0]
        if k == 0:
            return np.zeros(0, dtype=np.int64)
        if labelled is not None and len(labelled):
            dist = 1.0 - (embeddings @ labelled.T).max(axis=1)
        else:
            dist = np.full(n, np.inf)
        out: list[int] = []
        for _ in range(k):
            i = int(np.argmax(dist))
            out.append(i)
            dist = np.minimum(dist, 1.0 - embeddings @ embeddings[i])
            dist[i] = -np.inf
        return np.asarray(out, dtype=np.int64)


STRATEGIES: dict[str, type[QueryStrategy]] = {
    s.name: s
    for s in (RandomStrategy, MarginStrategy, EntropyStrategy, ClusterMarginStrategy, KCenterStrategy)
}


def get_strategy(name: str) -> QueryStrategy:
    try:
        return STRATEGIES[name]()
    except KeyError as exc:
        raise ValueError(f"unknown strategy {name!r}; choose one of {', '.join(sorted(STRATEGIES))}") from exc


def ask_priority(record: AskRecord) -> float:
    """The review queue's priority of a live ask: the less sure the model, the more a label teaches it."""
    return round(1.0 - float(record.answer.confidence), 6)
