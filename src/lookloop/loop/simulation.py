"""A simulated deployment of the learning loop on a labelled image set (reviewers = ground truth).

The train images are the backlog of asks; each round the reviewer labels ``budget`` of them, in the
order the query strategy gives, and the head is retrained. The eval split stands for live asks and is
measured after every round: accuracy, coverage (answered without a human) and the error of those answers.

Calibration needs labels exchangeable with the asks it is applied to. Backlog labels are not (in the
Grocery data the train photos come in near-duplicate bursts from other sessions than val, so a model is
far surer of held-out train photos than of live ones), and strategy-picked labels are not either. So the
policy is calibrated on reviewer spot checks of *live* asks, cross-fitted: the eval asks are split in five
folds, each fold is answered by a policy calibrated on the other folds' labels only; no ask's own label ever
sets the threshold it is judged by, and no eval label ever trains the model.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from lookloop.catalog import GroceryDataset
from lookloop.errors import BadInput
from lookloop.loop.learner import IdentifyModel, train_identify_head
from lookloop.loop.policies import ConformalPolicy, confidence_scores
from lookloop.loop.strategies import QueryStrategy

IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".webp", ".bmp"}


@dataclass
class LoopData:
    """Paths and labels: the backlog (train), the live asks (eval), and catalogue images (seed, free)."""

    train_paths: list[Path]
    train_labels: list[str]
    eval_paths: list[Path]
    eval_labels: list[str]
    seed_paths: list[Path] = field(default_factory=list)
    seed_labels: list[str] = field(default_factory=list)
    train_keys: list[str] = field(default_factory=list)

    def __post_init__(self) -> None:
        if not self.train_keys:
            self.train_keys = [str(p) for p in self.train_paths]

    def subset(self, classes: int, per_class: int, eval_per_class: int) -> LoopData:
        """A small slice (tests): the first ``classes`` classes, a few images each."""
        keep = sorted(set(self.train_labels))[:classes]

        def take(paths: list[Path], labels: list[str], n: int) -> tuple[list[Path], list[str]]:
            counts: dict[str, int] = {}
            out_p, out_l = [], []
            for p, lab in zip(paths, labels, strict=True):
                if lab in keep and counts.get(lab, 0) < n:
                    counts[lab] = counts.get(lab, 0) + 1
                    out_p.append(p)
                    out_l.append(lab)
            return out_p, out_l

        tp, tl = take(self.train_paths, self.train_labels, per_class)
        ep, el = take(self.eval_paths, self.eval_labels, eval_per_class)
        sp, sl = take(self.seed_paths, self.seed_labels, 1)
        return LoopData(tp, tl, ep, el, sp, sl)


def _folder_images(root: Path) -> list[tuple[Path, str]]:
    return sorted(
        (p, p.parent.name) for p in root.rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES and p.is_file()
    )


def load_loop_data(dataset: Path, eval_split: str, *, exclude_keys: set[str] | None = None) -> LoopData:
    """Grocery Store layout (``classes.csv`` + split files) or an image-folder tree (``<class>/<image>``).

    For a folder tree, ``eval_split`` is a sub-folder (``val``) or a file of relative image paths;
    the train images are ``train/`` when it exists, else every image not in the eval split.
    ``exclude_keys``: image paths that must never enter a training set (no training consent).
    """
    root = Path(dataset)
    if not root.is_dir():
        raise BadInput(f"dataset folder {root} not found")
    excluded = {str(Path(k).resolve()) for k in (exclude_keys or set())}
    if (root / "classes.csv").is_file():

        ds = GroceryDataset(root)
        train = ds.split("train")
        ev = ds.split(eval_split)
        seed = ds.iconic()
        data = LoopData(
            [i.path for i in train], [i.label for i in train], [i.path for i in ev], [i.label for i in ev],
            [i.path for i in seed], [i.label for i in seed],
        )
    else:
        target = root / eval_split
        if target.is_dir():
            ev_items = _folder_images(target)
            train_root = root / "train"
            pool = _folder_images(train_root) if train_root.is_dir() else [
                (p, lab) for p, lab in _folder_images(root) if target not in p.parents
            ]
        elif target.is_file():
            names = [ln.split(",")[0].strip() for ln in target.read_text(encoding="utf-8").splitlines() if ln.strip()]
            ev_items = [(root / n, (root / n).parent.name) for n in names]
            missing = [str(p) for p, _ in ev_items if not p.is_file()]
            if missing:
                raise BadInput(f"{target}: {len(missing)} listed images do not exist, e.g. {missing[0]}")
            listed = {p.resolve() for p, _ in ev_items}
            pool = [(p, lab) for p, lab in _folder_images(root) if p.resolve() not in listed]
        else:
            raise BadInput(f"eval split {target} is neither a folder nor a split file")
        if not ev_items or not pool:
            raise BadInput(f"no images found for the train or eval part of {root}")
        data = LoopData([p for p, _ in pool], [lab for _, lab in pool], [p for p, _ in ev_items],
                        [lab for _, lab in ev_items])
    if excluded:
        keep = [i for i, p in enumerate(data.train_paths) if str(Path(p).resolve()) not in excluded]
        data = LoopData([data.train_paths[i] for i in keep], [data.train_labels[i] for i in keep],
                        data.eval_paths, data.eval_labels, data.seed_paths, data.seed_labels)
    if len(set(data.train_labels) | set(data.seed_labels)) < 2:
        raise BadInput("the dataset needs images of at least two classes")
    return data


@dataclass
class RoundResult:
    round: int
    labels_used: int
    calibration_labels: int
    accuracy: float
    coverage: float
    auto_error: float
    threshold: float
    error_bound: float
    seconds: float
    stage: str = "head"
    # The most any threshold could answer at error <= alpha, chosen by looking at the eval labels themselves:
    # not achievable, a ceiling that tells a weak model from a conservative policy.
    oracle_coverage: float = math.nan


@dataclass
class LoopRun:
    strategy: str
    rounds: list[RoundResult]
    final: RoundResult
    n_train: int
    labelled_idx: list[int]

    def as_rows(self) -> list[dict[str, float | int | str]]:
        return [asdict(r) for r in [*self.rounds, self.final]]


def oracle_coverage(scores: np.ndarray, right: np.ndarray, alpha: float) -> float:
    """Largest share of asks whose top-scored answers have an error rate <= alpha (hindsight, no guarantee)."""
    if not scores.size:
        return math.nan
    order = np.argsort(-scores, kind="stable")
    err = np.cumsum(~right[order]) / np.arange(1, scores.size + 1)
    ok = np.flatnonzero(err <= alpha)
    return float((ok.max() + 1) / scores.size) if ok.size else 0.0


def cross_calibrated(
    model: IdentifyModel, x: np.ndarray, labels: list[str], *, alpha: float, delta: float, seed: int = 0,
    folds: int = 5,
) -> tuple[float, float, float, float, float, float]:
    """(accuracy, coverage, auto error, mean threshold, worst bound, oracle coverage), k-fold cross-calibrated."""
    if not len(labels):
        return math.nan, math.nan, math.nan, math.nan, math.nan, math.nan
    preds = model.predict(x)
    right = np.array([p.top[0] == y for p, y in zip(preds, labels, strict=True)])
    top = confidence_scores(np.stack([p.probs for p in preds])) if preds else np.zeros(0)
    fold = np.random.default_rng(seed + 7).permutation(len(labels)) % folds
    answered = np.zeros(len(labels), dtype=bool)
    thresholds, bounds = [], []
    for f in range(folds):
        policy = ConformalPolicy(alpha, delta)
        policy.calibrate(top[fold != f], right[fold != f])
        answered[fold == f] = top[fold == f] >= policy.threshold
        thresholds.append(policy.threshold)
        bounds.append(policy.upper_bound)
    cov = float(answered.mean())
    err = float((~right[answered]).mean()) if answered.any() else 0.0
    return (float(right.mean()), cov, err, float(np.mean(thresholds)), float(max(bounds)),
            oracle_coverage(top, right, alpha))


Features = tuple[np.ndarray, np.ndarray, np.ndarray]  # train, eval, seed embeddings (L2-normalised)


def simulate(
    data: LoopData,
    features: Features,
    strategy: QueryStrategy,
    *,
    rounds: int = 10,
    budget: int | None = None,
    alpha: float = 0.05,
    delta: float = 0.1,
    seed: int = 0,
    final_refit: Callable[[list[int]], Features] | None = None,
    on_round: Callable[[RoundResult], None] | None = None,
) -> LoopRun:
    """Runs the rounds; ``final_refit(train_indices)`` may return new features (a fine-tuned backbone).

    Every round trains the head the way the server does (``train_identify_head``), so a round with every
    label spent measures the model that start-up serves on the same labels.
    """
    if rounds < 1:
        raise BadInput("--rounds must be at least 1")
    x_train, x_eval, x_seed = features
    n = len(data.train_labels)
    k = budget if budget is not None else math.ceil(n / rounds)
    if k < 1:
        raise BadInput("--budget must be at least 1")
    rng = np.random.default_rng(seed)
    labelled: list[int] = []
    unlabelled = np.ones(n, dtype=bool)
    results: list[RoundResult] = []

    def build(xt: np.ndarray, xs: np.ndarray) -> IdentifyModel:
        x = np.vstack([xs, xt[labelled]]) if labelled else xs
        y = list(data.seed_labels) + [data.train_labels[i] for i in labelled]
        model = IdentifyModel(xt.shape[1])
        if y:
            model.learn(x, y, [f"s{i}" for i in range(len(data.seed_labels))] + [f"t{i}" for i in labelled])
        if len(set(y)) >= 2:
            model.head = train_identify_head(x, y)
        return model

    def measure(r: int, model: IdentifyModel, xt: np.ndarray, xe: np.ndarray, t0: float, stage: str) -> RoundResult:
        acc, cov, err, thr, bound, oracle = cross_calibrated(model, xe, data.eval_labels, alpha=alpha, delta=delta,
                                                             seed=seed)
        res = RoundResult(r, len(labelled), len(data.eval_labels), acc, cov, err, thr, bound,
                          time.perf_counter() - t0, stage, oracle)
        if on_round:
            on_round(res)
        return res

    t0 = time.perf_counter()
    model = build(x_train, x_seed) if data.seed_labels else IdentifyModel(x_train.shape[1])
    if model.labels():
        results.append(measure(0, model, x_train, x_eval, t0, "seed"))
    for r in range(1, rounds + 1):
        t0 = time.perf_counter()
        remaining = int(unlabelled.sum())
        if remaining == 0:
            break
        n_train = min(k, remaining)
        pool = np.flatnonzero(unlabelled)
        if n_train > 0 and len(pool):
            if model.labels():
                probs = np.stack([p.probs for p in model.predict(x_train[pool])])
            else:
                probs = np.full((len(pool), 1), 1.0)
            labelled_x = x_train[labelled] if labelled else None
            chosen = strategy.select(probs, x_train[pool], n_train, labelled=labelled_x, rng=rng)
            new = [int(pool[j]) for j in chosen]
            labelled.extend(new)
            unlabelled[new] = False
        model = build(x_train, x_seed)
        results.append(measure(r, model, x_train, x_eval, t0, "head"))
    final = results[-1]
    if final_refit is not None:
        t0 = time.perf_counter()
        xt, xe, xs = final_refit(list(labelled))
        model = build(xt, xs)
        final = measure(len(results), model, xt, xe, t0, "finetune")
    return LoopRun(strategy.name, results, final, n, labelled)


def labels_to_reach(run: LoopRun, target: float) -> int | None:
    """Labels the run needed to reach ``target`` accuracy (linear between rounds); None if never."""
    prev: RoundResult | None = None
    for r in run.rounds:
        if r.accuracy >= target:
            if prev is None or r.accuracy == prev.accuracy:
                return r.labels_used
            frac = (target - prev.accuracy) / (r.accuracy - prev.accuracy)
            return int(math.ceil(prev.labels_used + frac * (r.labels_used - prev.labels_used)))
        prev = r
    return None


def coverage_at(run: LoopRun, share: float, *, oracle: bool = False) -> float:
    """Coverage (or the oracle's) at the first round where ``share`` of the backlog is labelled."""
    need = share * run.n_train
    for r in run.rounds:
        if r.labels_used >= need - 1e-9:
            return r.oracle_coverage if oracle else r.coverage
    if not run.rounds:
        return math.nan
    return run.rounds[-1].oracle_coverage if oracle else run.rounds[-1].coverage
