"""The identify model: frozen image embeddings, a linear head, and an example memory that learns at once."""

from __future__ import annotations

import hashlib
import logging
import os
import threading
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from lookloop.domain import Prediction
from lookloop.errors import NotConfigured
from lookloop.loop.openset import novelty_scores
from lookloop.store.files import open_private

log = logging.getLogger("lookloop.learner")

@dataclass(frozen=True)
class LinearHead:
    """Multinomial logistic-regression weights over L2-normalised embeddings."""

    classes: tuple[str, ...]
    weight: np.ndarray  # (n_classes, dim)
    bias: np.ndarray  # (n_classes,)

    def logits(self, x: np.ndarray) -> np.ndarray:
        return np.asarray(x @ self.weight.T + self.bias, dtype=np.float64)

    def save(self, path: Path) -> None:
        tmp = path.with_name(path.name + ".tmp")
        with open_private(tmp) as fh:  # 0600 in a 0700 directory
            np.savez(fh, classes=np.array(self.classes), weight=self.weight, bias=self.bias)
        os.replace(tmp, path)  # another process reading the cache never sees half a head

    @classmethod
    def load(cls, path: Path) -> LinearHead:
        with np.load(path, allow_pickle=False) as data:
            return cls(tuple(str(c) for c in data["classes"]), data["weight"], data["bias"])


def softmax(z: np.ndarray) -> np.ndarray:
    z = z - z.max(axis=-1, keepdims=True)
    e = np.exp(z)
    return np.asarray(e / e.sum(axis=-1, keepdims=True))


# Example memory search: an exact scan below EXACT_BELOW live examples; above, candidates from an HNSW graph in
# a GRAPH_DIM-dimensional PCA space, re-ranked exactly. New examples are scanned exactly until MERGE_EVERY of
# them are merged into the graph. GRAPH_* are faiss's HNSW parameters; recall@1 against the exact scan is
# checked in tests/test_example_memory.py.
EXACT_BELOW = 4096
MERGE_EVERY = 1024
GRAPH_DIM = 128
GRAPH_M = 16
GRAPH_EF_CONSTRUCTION = 40
GRAPH_EF_SEARCH = 64
GRAPH_CANDIDATES = 32
PCA_SAMPLE = 20_000
# A removed example's graph point is overwritten with this value in every coordinate, far from the projection
# of any unit vector (whose norm is at most 2). Not zero: zero is the projection's mean, nearer to every query
# than its true neighbours, so zeroed points fill the search's candidate list and, in a later merge, become
# the only neighbours the new points keep (HNSW's neighbour selection prunes the rest as "behind" them).
TOMBSTONE = 1e4


def _faiss() -> Any:
    """faiss, imported on first use: only a memory that outgrows the exact scan needs the native library."""
    import faiss

    return faiss


class _Graph:
    """An HNSW graph over the memory's rows below ``upto`` (those alive when it was built), in a PCA space.

    Immutable once published, except that a removed row's point is overwritten in place by ``TOMBSTONE``:
    searches running on it meanwhile see either the old point or the tombstone, and the memory filters both.
    """

    def __init__(self, index: Any, mean: np.ndarray, components: np.ndarray, rows: np.ndarray, upto: int,
                 fitted_on: int) -> None:
        self.index = index
        self.mean = mean
        self.components = components  # (graph dim, dim)
        self.rows = rows  # the memory row of each graph point, increasing
        self.upto = upto
        self.fitted_on = fitted_on  # live rows when the projection was fitted: refitted once they double

    def project(self, x: np.ndarray) -> np.ndarray:
        return np.ascontiguousarray((x - self.mean) @ self.components.T, dtype=np.float32)

    def search(self, q: np.ndarray, k: int) -> np.ndarray:
        """Memory rows of up to ``k`` approximate neighbours per query row (-1 where fewer)."""
        faiss = _faiss()
        params = faiss.SearchParametersHNSW()
        params.efSearch = max(GRAPH_EF_SEARCH, k)
        _, ids = self.index.search(self.project(q), min(k, len(self.rows)), params=params)
        return np.where(ids >= 0, self.rows[np.maximum(ids, 0)], -1)

    def erase(self, rows: np.ndarray) -> None:
        """Moves the points of removed rows far from every query: their projected data leaves the graph at
        once, and the graph's searches and later merges pass them by."""
        faiss = _faiss()
        at = np.searchsorted(self.rows, rows)
        at = at[(at < len(self.rows)) & (self.rows[np.minimum(at, len(self.rows) - 1)] == rows)]
        if at.size:
            storage = faiss.downcast_index(self.index.storage)
            points = faiss.rev_swig_ptr(storage.get_xb(), self.index.ntotal * self.index.d)
            points.reshape(self.index.ntotal, self.index.d)[at] = TOMBSTONE


def _fit_projection(x: np.ndarray, rows: np.ndarray, dim: int, rng: np.random.Generator
                    ) -> tuple[np.ndarray, np.ndarray]:
    """Mean and top ``dim`` principal axes of (a sample of) ``x[rows]``: neighbours are searched in this space."""
    sample = x[rows[rng.choice(len(rows), PCA_SAMPLE, replace=False)] if len(rows) > PCA_SAMPLE else rows]
    mean = sample.mean(axis=0)
    centred = (sample - mean).astype(np.float64)
    values, vectors = np.linalg.eigh(centred.T @ centred)  # the covariance's eigenvectors, ascending
    top = np.argsort(values)[::-1][:dim]
    return mean.astype(np.float32), np.ascontiguousarray(vectors[:, top].T, dtype=np.float32)


class ExampleMemory:
    """Labelled embeddings, keyed by a source id so that they can be removed again (delete-my-data).

    Nearest-neighbour search costs the same whatever the number of examples: below ``exact_below`` live
    examples it is an exact scan; above, an HNSW graph (faiss) in a ``GRAPH_DIM``-dimensional PCA space
    proposes candidates that are re-ranked exactly, so the similarity returned is always the exact cosine.
    Examples added since the graph was built are scanned exactly until a background thread merges them
    into a copy of the graph, which then replaces the old one: reads never wait for a build.

    Removal is a tombstone: the row's embedding is zeroed at once (in the memory and in the graph) and never
    returned again; the graph is rebuilt without removed rows in the background once they are many.
    Row numbers (``nearest``'s indices, ``label_at``) stay valid for the memory's lifetime.
    """

    def __init__(self, dim: int, *, exact_below: int = EXACT_BELOW, merge_every: int = MERGE_EVERY,
                 background: bool = True) -> None:
        self.dim = dim
        self.exact_below = exact_below
        self.merge_every = merge_every
        self.background = background  # False: graphs are built in the calling thread (tests, benchmarks)
        self._x = np.zeros((0, dim), dtype=np.float32)  # capacity grows by doubling; rows below _n are used
        self._alive = np.zeros(0, dtype=bool)
        self._n = 0
        self._labels: list[str] = []
        self._keys: list[str | None] = []
        self._row: dict[str, int] = {}
        self._counts: Counter[str] = Counter()
        self._dead = 0
        self._graph: _Graph | None = None
        self._removed: list[int] = []  # rows removed, in order (a build in flight erases them before publishing)
        self._lock = threading.RLock()
        self._builder: threading.Thread | None = None
        self._rng = np.random.default_rng(0)

    def __len__(self) -> int:
        return len(self._row)

    @property
    def labels(self) -> list[str]:
        with self._lock:
            return [self._labels[i] for i in self._live_rows()]

    @property
    def keys(self) -> list[str]:
        with self._lock:
            return [str(self._keys[i]) for i in self._live_rows()]

    def label_set(self) -> set[str]:
        """The distinct labels of the live examples (cheap: kept as counts)."""
        with self._lock:
            return set(self._counts)

    @property
    def matrix(self) -> np.ndarray:
        """The live examples' embeddings, in the order of ``labels`` and ``keys``."""
        with self._lock:
            x = self._x[: self._n]
            return x if self._dead == 0 else x[self._alive[: self._n]]

    def _live_rows(self) -> np.ndarray:
        return np.flatnonzero(self._alive[: self._n])

    def add(self, x: np.ndarray, labels: list[str], keys: list[str]) -> None:
        if x.ndim != 2 or x.shape[1] != self.dim or len(labels) != x.shape[0] or len(keys) != x.shape[0]:
            raise ValueError("embeddings, labels and keys must line up")
        if len(set(keys)) != len(keys):
            # The last of a repeated key wins, as when the same key is labelled twice in a row.
            last = {k: i for i, k in enumerate(keys)}
            pick = sorted(last.values())
            x, labels, keys = x[pick], [labels[i] for i in pick], [keys[i] for i in pick]
        with self._lock:
            # A key labelled again replaces its old label: the newest human answer wins.
            self.remove([k for k in keys if k in self._row])
            n, m = self._n, x.shape[0]
            if n + m > self._x.shape[0]:
                cap = max(n + m, 2 * self._x.shape[0], 1024)
                grown = np.zeros((cap, self.dim), dtype=np.float32)
                grown[:n] = self._x[:n]
                alive = np.zeros(cap, dtype=bool)
                alive[:n] = self._alive[:n]
                self._x, self._alive = grown, alive  # readers holding the old arrays keep a consistent view
            self._x[n : n + m] = x
            self._alive[n : n + m] = True
            self._labels.extend(labels)
            self._keys.extend(keys)
            self._row.update((k, n + i) for i, k in enumerate(keys))
            self._counts.update(labels)
            self._n = n + m
        self._maybe_build()

    def remove(self, keys: list[str]) -> int:
        with self._lock:
            rows = np.array(sorted({self._row.pop(k) for k in keys if k in self._row}), dtype=np.int64)
            if rows.size == 0:
                return 0
            self._alive[rows] = False
            self._x[rows] = 0.0  # the embedding itself is gone, not just hidden
            for r in rows:
                label = self._labels[r]
                self._counts[label] -= 1
                if self._counts[label] <= 0:
                    del self._counts[label]
                self._keys[r] = None
            self._dead += int(rows.size)
            self._removed.extend(int(r) for r in rows)
            if self._graph is not None:
                self._graph.erase(rows)
        self._maybe_build()
        return int(rows.size)

    def nearest(self, q: np.ndarray, k: int = 1) -> tuple[np.ndarray, np.ndarray]:
        """Row and cosine similarity of the nearest example(s) for each query row.

        ``k`` = 1: two arrays of shape (n,); otherwise (n, k), best first. Row -1 (similarity 0) where the
        memory holds fewer examples.
        """
        if k < 1:
            raise ValueError("k must be at least 1")
        q = np.ascontiguousarray(q, dtype=np.float32)
        with self._lock:  # one consistent view; the search itself runs unlocked
            x, alive, n, graph, live = self._x, self._alive, self._n, self._graph, len(self._row)
        rows = np.full((q.shape[0], k), -1, dtype=np.int64)
        sims = np.zeros((q.shape[0], k), dtype=np.float32)
        if live > 0:
            if graph is None:
                self._exact(q, x[:n], alive[:n], 0, rows, sims)
            else:
                self._approximate(q, x, alive, n, graph, rows, sims)
        return (rows[:, 0], sims[:, 0]) if k == 1 else (rows, sims)

    @staticmethod
    def _exact(q: np.ndarray, x: np.ndarray, alive: np.ndarray, offset: int, rows: np.ndarray,
               sims: np.ndarray) -> None:
        k = rows.shape[1]
        s = q @ x.T
        if not alive.all():
            s[:, ~alive] = -np.inf
        kk = min(k, int(alive.sum()))
        if kk == 0:
            return
        if kk == 1:
            top = np.argmax(s, axis=1)[:, None]
        elif kk < s.shape[1]:
            top = np.argpartition(-s, kk - 1, axis=1)[:, :kk]
        else:
            top = np.broadcast_to(np.arange(s.shape[1]), s.shape)
        ts = np.take_along_axis(s, top, axis=1)
        order = np.argsort(-ts, axis=1)[:, :kk]
        rows[:, :kk] = np.take_along_axis(top, order, axis=1) + offset
        sims[:, :kk] = np.take_along_axis(ts, order, axis=1)

    def _approximate(self, q: np.ndarray, x: np.ndarray, alive: np.ndarray, n: int, graph: _Graph,
                     rows: np.ndarray, sims: np.ndarray) -> None:
        k = rows.shape[1]
        proposed = graph.search(q, max(GRAPH_CANDIDATES, 2 * k))
        tail = np.arange(graph.upto, n)
        for r in range(q.shape[0]):
            cand = np.concatenate([proposed[r][proposed[r] >= 0], tail])
            cand = cand[alive[cand]]
            if cand.size == 0:
                continue
            s = x[cand] @ q[r]
            order = np.argsort(-s)[:k]
            rows[r, : order.size] = cand[order]
            sims[r, : order.size] = s[order]

    def label_at(self, i: int) -> str:
        return self._labels[i]

    # -- the graph ------------------------------------------------------------------------------------------

    @property
    def searched_by_graph(self) -> bool:
        return self._graph is not None

    def graph_rows(self) -> np.ndarray:
        """The rows the current graph holds (empty when the memory is scanned exactly)."""
        graph = self._graph
        return graph.rows.copy() if graph is not None else np.zeros(0, dtype=np.int64)

    def settle(self) -> None:
        """Waits for a graph build in flight and does any that is due: then the graph covers every row."""
        while True:
            with self._lock:
                builder = self._builder
            if builder is not None:
                builder.join()
                continue
            if not self._due():
                return
            self._build()

    def _due(self) -> bool:
        with self._lock:
            live, graph = len(self._row), self._graph
            if graph is None:
                return live >= self.exact_below
            if live < self.exact_below // 2:
                return True  # shrunk back: exact search again
            return self._n - graph.upto >= self.merge_every or self._dead_in(graph) * 5 > len(graph.rows)

    def _dead_in(self, graph: _Graph) -> int:
        return int((~self._alive[graph.rows]).sum())

    def _maybe_build(self) -> None:
        if not self._due():
            return
        if not self.background:
            self._build()
            return
        with self._lock:
            if self._builder is not None:
                return  # the running build looks again when it ends
            self._builder = threading.Thread(target=self._build_loop, name="lookloop-memory-graph", daemon=True)
            self._builder.start()

    def _build_loop(self) -> None:
        try:
            while self._due():
                self._build()
        except Exception:  # noqa: BLE001 - searches fall back to the exact scan of rows the graph lacks
            log.exception("building the example memory's search graph failed")
        finally:
            with self._lock:
                self._builder = None
            if self._due():
                self._maybe_build()

    def _build(self) -> None:
        """Builds the next graph off the lock, then publishes it: a merge of new rows into a copy of the graph,
        or a fresh graph when there is none, many rows were removed, or the memory doubled since the fit."""
        faiss = _faiss()
        with self._lock:
            x, alive, n, old = self._x, self._alive.copy(), self._n, self._graph
            live, removed_seen = len(self._row), len(self._removed)
        if live < self.exact_below // 2:
            with self._lock:
                if self._graph is old:
                    self._graph = None
            return
        fresh = old is None or self._dead_in(old) * 5 > len(old.rows) or live >= 2 * old.fitted_on
        if fresh:
            rows = np.flatnonzero(alive[:n])
            mean, comps = _fit_projection(x, rows, min(GRAPH_DIM, self.dim), self._rng)
            index = faiss.IndexHNSWFlat(comps.shape[0], GRAPH_M)
            index.hnsw.efConstruction = GRAPH_EF_CONSTRUCTION
            graph_rows = np.zeros(0, dtype=np.int64)
            fitted_on = int(rows.size)
        else:
            assert old is not None
            rows = np.arange(old.upto, n)[alive[old.upto : n]]
            mean, comps, index = old.mean, old.components, faiss.clone_index(old.index)
            graph_rows, fitted_on = old.rows, old.fitted_on
        added = [graph_rows]
        for start in range(0, rows.size, 8192):  # bounded temporary memory for the projection
            chunk = rows[start : start + 8192]
            points = x[chunk]  # a copy, read off the lock
            with self._lock:
                # A row removed since the snapshot may have been read as zeros, which would put a point at the
                # projection's mean, next to every other, into the graph's links: only rows still alive after
                # the read go in (a row never comes back, so those were read whole).
                kept = self._alive[chunk]
            index.add((points[kept] - mean) @ comps.T)
            added.append(chunk[kept])
        graph = _Graph(index, mean, comps, np.concatenate(added), n, fitted_on)
        with self._lock:
            if self._graph is not old:
                return  # another build published meanwhile; the loop looks again
            late = np.array(self._removed[removed_seen:], dtype=np.int64)
            if late.size:
                graph.erase(late)  # removed while this graph was being built
            self._graph = graph


class IdentifyModel:
    """Head probabilities, pulled towards the nearest labelled example when it is a near-duplicate.

    The pull is what makes a human answer change the very next answer, before any retraining.
    """

    def __init__(self, dim: int, *, head: LinearHead | None = None, dup_low: float = 0.86, dup_high: float = 0.96):
        self.memory = ExampleMemory(dim)
        self.head = head
        self.dup_low = dup_low
        self.dup_high = dup_high
        self.head_version = "untrained"

    def labels(self) -> list[str]:
        known = self.memory.label_set()
        if self.head is not None:
            known.update(self.head.classes)
        return sorted(known)

    def _prototype_probs(self, q: np.ndarray, labels: list[str]) -> np.ndarray:
        # No head yet: cosine to each class's mean example, sharpened.
        x, ys = self.memory.matrix, self.memory.labels
        protos = np.stack([x[[i for i, y in enumerate(ys) if y == lab]].mean(axis=0) for lab in labels])
        protos /= np.maximum(np.linalg.norm(protos, axis=1, keepdims=True), 1e-12)
        return softmax((q @ protos.T) * 20.0)

    def predict(self, q: np.ndarray) -> list[Prediction]:
        """Predictions for L2-normalised query embeddings (n, dim)."""
        labels = self.labels()
        if not labels:

            raise NotConfigured(
                "the identify model knows no products yet: import a catalogue first (lookloop catalog import)"
            )
        col = {lab: i for i, lab in enumerate(labels)}
        if self.head is not None:
            head_p = softmax(self.head.logits(q))
            probs = np.zeros((q.shape[0], len(labels)))
            probs[:, [col[c] for c in self.head.classes]] = head_p
        else:
            probs = self._prototype_probs(q, labels)
        idx, sims = self.memory.nearest(q)
        novelty = novelty_scores(self, q, nearest=sims)
        out: list[Prediction] = []
        for r in range(q.shape[0]):
            p = probs[r].copy()
            nearest = self.memory.label_at(int(idx[r])) if idx[r] >= 0 else None
            s = float(sims[r])
            if nearest is not None:
                w = float(np.clip((s - self.dup_low) / (self.dup_high - self.dup_low), 0.0, 1.0))
                if w > 0:
                    onehot = np.zeros_like(p)
                    onehot[col[nearest]] = 1.0
                    p = (1 - w) * p + w * onehot
            out.append(Prediction(labels=labels, probs=p, nearest_label=nearest, nearest_similarity=s,
                                  novelty=float(novelty[r])))
        return out

    def learn(self, x: np.ndarray, labels: list[str], keys: list[str]) -> None:
        """Instant learning: the example is searchable from the next call on."""
        self.memory.add(x, labels, keys)

    def forget(self, keys: list[str]) -> int:
        return self.memory.remove(keys)


HEAD_C = 32.0  # inverse L2 strength, as scikit-learn's C
HEAD_MAX_ITER = 200
# Named in the head cache key, so a changed recipe never serves a head cached by the old one.
HEAD_RECIPE = f"softmax-c{HEAD_C:g}-lbfgs{HEAD_MAX_ITER}"


def train_identify_head(x: np.ndarray, labels: Sequence[str]) -> LinearHead:
    """The identify head: L2-regularised multinomial logistic regression on L2-normalised embeddings.

    The one recipe that start-up, ``lookloop train`` and ``bench loop`` all use. It is solved by torch
    L-BFGS from zero on the rows in a canonical order, so a labelled set gives the same head whatever order
    its labels came in.
    """
    import torch  # PyTorch takes seconds to import: only training and model export need it

    if x.ndim != 2 or x.shape[0] != len(labels):
        raise ValueError("embeddings and labels must line up")
    names = tuple(sorted(set(labels)))
    if len(names) < 2:
        raise ValueError("a head needs labels of at least two classes")
    x = np.ascontiguousarray(x, dtype=np.float32)
    order = sorted(range(len(labels)), key=lambda i: (labels[i], x[i].tobytes()))
    col = {k: i for i, k in enumerate(names)}
    xt = torch.from_numpy(x[order])
    yt = torch.tensor([col[labels[i]] for i in order], dtype=torch.long)
    n, d = xt.shape
    w = torch.zeros(len(names), d, dtype=torch.float32, requires_grad=True)
    b = torch.zeros(len(names), dtype=torch.float32, requires_grad=True)
    opt = torch.optim.LBFGS([w, b], lr=1.0, max_iter=HEAD_MAX_ITER, tolerance_grad=1e-5, tolerance_change=1e-7,
                            history_size=20, line_search_fn="strong_wolfe")
    # scikit-learn's objective C * sum(loss) + ||w||^2 / 2, divided by C * n.
    reg = 1.0 / (2.0 * HEAD_C * n)

    def closure() -> torch.Tensor:
        opt.zero_grad()
        loss = torch.nn.functional.cross_entropy(xt @ w.T + b, yt) + reg * (w * w).sum()
        loss.backward()  # type: ignore[no-untyped-call]
        return loss

    opt.step(closure)  # type: ignore[no-untyped-call]
    return LinearHead(names, w.detach().numpy().astype(np.float32), b.detach().numpy().astype(np.float32))


def head_digest(embedder_version: str, keys: Sequence[str], labels: Sequence[str]) -> str:
    """Names a head by what it was trained from: the embedder, the labelled set and the recipe."""
    pairs = "|".join(sorted(f"{k}={v}" for k, v in zip(keys, labels, strict=True)))
    return hashlib.sha256(f"{HEAD_RECIPE}|{embedder_version}|{pairs}".encode()).hexdigest()[:12]


def cached_identify_head(
    x: np.ndarray, labels: Sequence[str], keys: Sequence[str], *, embedder_version: str, cache_dir: Path
) -> tuple[LinearHead, str]:
    """``train_identify_head``, cached in ``cache_dir`` by ``head_digest``; returns the head and its version."""
    digest = head_digest(embedder_version, keys, labels)
    path = cache_dir / f"head-{digest}.npz"
    if path.exists():
        try:
            return LinearHead.load(path), f"head-{digest}"
        except (OSError, ValueError, KeyError):
            pass  # a torn cache file is retrained, never trusted
    head = train_identify_head(x, labels)
    head.save(path)
    return head, f"head-{digest}"
