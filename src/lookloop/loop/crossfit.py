"""Honest calibration data for a model trained on every label: cross-fitting with bursts kept whole.

The start-up model learns from every labelled photo, so it has no held-out slice to calibrate on. Cross-fitting
gives one: the photos are split into folds, and each photo is scored by a model (head and example memory) trained
on the other folds only. Photos of one near-duplicate burst (``lookloop.loop.openset.burst_groups``) always share
a fold — otherwise a photo's twin in the training folds would make its score look surer than a live ask's. The
scores are then exchangeable with live asks of the kinds of things in the labelled set, which is what the
conformal certificates need. Catalogue (iconic) images are always trained on and never scored: a studio shot is
nothing like an ask. A photo whose class has no photo left in its fold's training (the class is one burst) was
scored as an unknown thing: it calibrates the outlier gate (conservatively: its novelty is higher than a known
class's) but not the known-class error. The result is cached by the embedder and the labelled set.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from lookloop.loop.learner import HEAD_RECIPE, IdentifyModel, head_digest, train_identify_head
from lookloop.loop.openset import BURST_SIMILARITY, burst_groups
from lookloop.loop.policies import confidence_scores
from lookloop.models.embcache import ProgressFn
from lookloop.store.files import open_private

FOLDS = 5
# Named in the cache key: a changed recipe never serves scores cached by the old one.
CROSSFIT_RECIPE = f"crossfit{FOLDS}-seed0-sessions-sim{BURST_SIMILARITY}-{HEAD_RECIPE}"


@dataclass(frozen=True)
class HeldOut:
    """Predictions on labelled photos by models that never saw them: what calibration needs of each."""

    scores: np.ndarray = field(default_factory=lambda: np.zeros(0))  # ``confidence_score`` of ``kind``
    correct: np.ndarray = field(default_factory=lambda: np.zeros(0, dtype=bool))
    predicted: tuple[str, ...] = ()  # the top label (its family is the ask's group)
    novelty: np.ndarray = field(default_factory=lambda: np.zeros(0))  # ``Prediction.novelty``
    truth: tuple[str, ...] = ()
    kind: str = "margin"
    # Whether the scoring model had learnt photos of the true class. One that had not (its only photos are one
    # burst) answered an ask about an unknown thing: no sample of how known classes are answered.
    known: np.ndarray = field(default_factory=lambda: np.zeros(0, dtype=bool))

    def __len__(self) -> int:
        return int(self.scores.size)

    def take(self, rows: Sequence[int] | np.ndarray) -> HeldOut:
        idx = np.asarray(rows, dtype=np.int64)
        # A registry version keeps no true labels (``truth`` empty): a subset keeps none either.
        truth = tuple(self.truth[i] for i in idx) if self.truth else ()
        return HeldOut(self.scores[idx], self.correct[idx], tuple(self.predicted[i] for i in idx),
                       self.novelty[idx], truth, self.kind, self.known[idx])

    def known_only(self) -> HeldOut:
        """The asks about classes their model had learnt: what known-class error is calibrated on."""
        return self.take(np.flatnonzero(self.known))


def held_out_predictions(model: IdentifyModel, x: np.ndarray, labels: Sequence[str], kind: str = "margin",
                         learnt: set[str] | None = None) -> HeldOut:
    """``model`` on rows it was not trained on: score, right or wrong, predicted label and novelty of each.

    ``learnt``: the classes the model had photos of (default: every class it knows).
    """
    if not len(labels):
        return HeldOut(kind=kind)
    learnt = set(model.labels()) if learnt is None else learnt
    preds = model.predict(x)
    probs = np.stack([p.probs for p in preds])
    predicted = tuple(p.top[0] for p in preds)
    return HeldOut(
        confidence_scores(probs, kind),
        np.array([p == y for p, y in zip(predicted, labels, strict=True)], dtype=bool),
        predicted,
        np.array([p.novelty for p in preds], dtype=np.float64),
        tuple(labels),
        kind,
        np.array([y in learnt for y in labels], dtype=bool),
    )


def fold_of(paths: Sequence[Path], x: np.ndarray, folds: int = FOLDS) -> np.ndarray:
    """A fold per photo such that a near-duplicate burst never spans two folds (a seeded draw of bursts)."""
    bursts = burst_groups([str(p) for p in paths], x)
    ids = np.unique(bursts)
    order = np.random.default_rng(0).permutation(ids)
    which = {int(b): j % folds for j, b in enumerate(order.tolist())}
    return np.array([which[int(b)] for b in bursts.tolist()], dtype=np.int64)


def fit_identify_model(x: np.ndarray, labels: list[str], keys: list[str]) -> IdentifyModel:
    """A head (when two classes exist) and an example memory on these rows: what a fold learns."""
    model = IdentifyModel(x.shape[1])
    if len(set(labels)) >= 2:
        model.head = train_identify_head(x, labels)
    model.learn(x, labels, keys)
    return model


def crossfit(
    x: np.ndarray, labels: Sequence[str], keys: Sequence[str], paths: Sequence[Path], *, embedder_version: str,
    cache_dir: Path, folds: int = FOLDS, kind: str = "margin", progress: ProgressFn | None = None,
) -> HeldOut:
    """Each labelled photo scored by a model trained on the folds without its burst (cached)."""
    scored = [i for i, k in enumerate(keys) if not k.startswith("catalog:")]
    if len(set(labels)) < 2 or not scored:
        return HeldOut(kind=kind)
    digest = hashlib.sha256(
        f"{CROSSFIT_RECIPE}|{folds}|{kind}|{head_digest(embedder_version, keys, labels)}".encode()
    ).hexdigest()[:16]
    path = cache_dir / f"crossfit-{digest}.npz"
    cached = _load(path, kind, [labels[i] for i in scored])
    if cached is not None:
        return cached
    fold = fold_of([paths[i] for i in scored], x[scored], folds)
    out: list[HeldOut | None] = [None] * len(scored)
    for f in range(folds):
        if progress:
            progress("calibrating: cross-fitting the start-up model", f, folds)
        test_pos = np.flatnonzero(fold == f)
        if not test_pos.size:
            continue
        test = {scored[j] for j in test_pos.tolist()}
        train = [i for i in range(len(keys)) if i not in test]
        if not train:
            continue
        model = fit_identify_model(x[train], [labels[i] for i in train], [keys[i] for i in train])
        rows = [scored[j] for j in test_pos.tolist()]
        photographed = {labels[i] for i in train if not keys[i].startswith("catalog:")}
        got = held_out_predictions(model, x[rows], [labels[i] for i in rows], kind, learnt=photographed)
        for n, j in enumerate(test_pos.tolist()):
            out[j] = got.take([n])
    if progress:
        progress("calibrating: cross-fitting the start-up model", folds, folds)
    parts = [h for h in out if h is not None]
    result = HeldOut(
        np.concatenate([h.scores for h in parts]) if parts else np.zeros(0),
        np.concatenate([h.correct for h in parts]) if parts else np.zeros(0, dtype=bool),
        tuple(p for h in parts for p in h.predicted),
        np.concatenate([h.novelty for h in parts]) if parts else np.zeros(0),
        tuple(t for h in parts for t in h.truth),
        kind,
        np.concatenate([h.known for h in parts]) if parts else np.zeros(0, dtype=bool),
    )
    _save(path, result)
    return result


def _save(path: Path, held: HeldOut) -> None:
    tmp = path.with_name(path.name + ".tmp")
    with open_private(tmp) as fh:
        np.savez(fh, scores=held.scores, correct=held.correct, predicted=np.array(held.predicted, dtype=str),
                 novelty=held.novelty, truth=np.array(held.truth, dtype=str), kind=np.array(held.kind),
                 known=held.known)
    os.replace(tmp, path)  # another process never reads half a file


def _load(path: Path, kind: str, truth: list[str]) -> HeldOut | None:
    if not path.is_file():
        return None
    try:
        with np.load(path, allow_pickle=False) as data:
            held = HeldOut(data["scores"].astype(np.float64), data["correct"].astype(bool),
                           tuple(str(v) for v in data["predicted"]), data["novelty"].astype(np.float64),
                           tuple(str(v) for v in data["truth"]), str(data["kind"]), data["known"].astype(bool))
    except (OSError, ValueError, KeyError):
        return None  # a torn cache file is recomputed, never trusted
    if held.kind != kind or sorted(held.truth) != sorted(truth):
        return None
    return held
