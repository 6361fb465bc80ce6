"""The identify model: frozen image embeddings, a linear head, and an example memory that learns at once."""

from __future__ import annotations

import hashlib
import os
import threading
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from lookloop.domain import Prediction
from lookloop.errors import NotConfigured
from lookloop.loop.openset import novelty_scores
from lookloop.store.files import open_private


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


class ExampleMemory:
    """Labelled embeddings, keyed by a source id so that they can be removed again (delete-my-data)."""

    def __init__(self, dim: int) -> None:
        self.dim = dim
        self._x = np.zeros((0, dim), dtype=np.float32)
        self._labels: list[str] = []
        self._keys: list[str] = []
        self._lock = threading.RLock()

    def __len__(self) -> int:
        return len(self._labels)

    @property
    def labels(self) -> list[str]:
        return list(self._labels)

    @property
    def keys(self) -> list[str]:
        return list(self._keys)

    @property
    def matrix(self) -> np.ndarray:
        return self._x

    def add(self, x: np.ndarray, labels: list[str], keys: list[str]) -> None:
        if x.ndim != 2 or x.shape[1] != self.dim or len(labels) != x.shape[0] or len(keys) != x.shape[0]:
            raise ValueError("embeddings, labels and keys must line up")
        with self._lock:
            # A key labelled again replaces its old label: the newest human answer wins.
            if set(keys) & set(self._keys):
                self.remove(keys)
            self._x = np.vstack([self._x, x.astype(np.float32)])
            self._labels.extend(labels)
            self._keys.extend(keys)

    def remove(self, keys: list[str]) -> int:
        drop = set(keys)
        with self._lock:
            keep = [i for i, k in enumerate(self._keys) if k not in drop]
            removed = len(self._keys) - len(keep)
            self._x = self._x[keep]
            self._labels = [self._labels[i] for i in keep]
            self._keys = [self._keys[i] for i in keep]
            return removed

    def nearest(self, q: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Index and cosine similarity of the nearest example for each query row."""
        with self._lock:
            if len(self._labels) == 0:
                n = q.shape[0]
                return np.full(n, -1), np.zeros(n, dtype=np.float32)
            sims = q @ self._x.T
            idx = np.argmax(sims, axis=1)
            return idx, sims[np.arange(q.shape[0]), idx]

    def label_at(self, i: int) -> str:
        return self._labels[i]


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
        known = set(self.memory.labels)
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
