"""A simulated deployment of the learning loop on a labelled image set (reviewers = ground truth).

The train images are the backlog of asks; each round the reviewer labels ``budget`` of them, in the
order the query strategy gives, and the head is retrained. The eval split stands for live asks and is
measured after every round: accuracy, coverage (answered without a human) and the error of those answers.

Calibration needs labels exchangeable with the asks it is applied to. Backlog labels are not (in the
Grocery data the train photos come in near-duplicate bursts from other sessions than val, so a model is
far surer of held-out train photos than of live ones), and strategy-picked labels are not either. So the
policy is calibrated on reviewer spot checks of *live* asks, cross-fitted: the eval asks are split in ten
folds, each fold is answered by a policy calibrated on the other folds' labels only; no ask's own label ever
sets the threshold it is judged by, and no eval label ever trains the model. ``calibration_budget`` caps how many
live asks get such a label (the rest are judged by thresholds set on the labelled ones); they are counted.

The world is open: classes held out of the catalogue and of all training (``hold_out_classes``) and far
out-of-distribution photos (``LoopData.with_outliers``) are asked too; an answer to them is always wrong. The
outlier gate (``OutlierGate``, calibrated on the labelled live asks of known classes) sends asks unlike anything
learnt to the "unknown" group, which never auto-answers; the others fall in the family of their top answer, and
a ``MondrianPolicy`` holds the error bound in each family.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path

import numpy as np

from lookloop.catalog import GroceryDataset
from lookloop.errors import BadInput
from lookloop.loop.learner import IdentifyModel, train_identify_head
from lookloop.loop.openset import OutlierGate
from lookloop.loop.policies import NEVER, POOLED, UNKNOWN_GROUP, ConformalPolicy, MondrianPolicy, confidence_scores
from lookloop.loop.strategies import QueryStrategy

IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".webp", ".bmp"}
KNOWN, UNKNOWN, OUTLIER = "known", "unknown", "outlier"  # what an eval ask is about
POLICIES = ("mondrian", "conformal")


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
    eval_kinds: list[str] = field(default_factory=list)  # KNOWN, UNKNOWN or OUTLIER per eval ask
    families: dict[str, str] = field(default_factory=dict)  # class → family (Fruit, Vegetables, Packages)
    held_out: tuple[str, ...] = ()  # classes kept out of the catalogue and of all training
    # The original ask each eval row is (a bootstrap repeats asks; cross-fitting keeps repeats in one fold).
    eval_ids: list[int] = field(default_factory=list)

    def __post_init__(self) -> None:
        if not self.train_keys:
            self.train_keys = [str(p) for p in self.train_paths]
        if not self.eval_kinds:
            self.eval_kinds = [KNOWN] * len(self.eval_paths)
        if not self.eval_ids:
            self.eval_ids = list(range(len(self.eval_paths)))
        if not len(self.eval_kinds) == len(self.eval_ids) == len(self.eval_paths):
            raise ValueError("eval kinds, ids and paths must line up")

    def family(self, label: str) -> str:
        """The group an answer ``label`` falls in: its family, or one pooled group where none is known."""
        return self.families.get(label) or POOLED

    def resample_eval(self, seed: int) -> tuple[LoopData, np.ndarray]:
        """A bootstrap of the eval asks (drawn with replacement, within each kind of ask): the luck of which
        photos happen to be asked.

        Returns the data and the eval rows drawn (to slice eval features).
        """
        rng = np.random.default_rng(seed + 202)
        kinds = np.array(self.eval_kinds, dtype=object)
        draws = []
        for kind in (KNOWN, UNKNOWN, OUTLIER):  # within each kind, so every sample asks as many of each
            rows = np.flatnonzero(kinds == kind)
            draws.append(rows[rng.integers(0, rows.size, size=rows.size)] if rows.size else rows)
        idx = np.sort(np.concatenate(draws)).astype(np.int64)
        out = replace(self, eval_paths=[self.eval_paths[i] for i in idx],
                      eval_labels=[self.eval_labels[i] for i in idx], eval_kinds=[self.eval_kinds[i] for i in idx],
                      eval_ids=[self.eval_ids[i] for i in idx])
        return out, idx

    def with_outliers(self, paths: list[Path]) -> LoopData:
        """The same data with far out-of-distribution photos asked as well (no answer to them is right)."""
        first = max(self.eval_ids, default=-1) + 1
        return replace(self, eval_paths=[*self.eval_paths, *paths], eval_labels=[*self.eval_labels, *[""] * len(paths)],
                       eval_kinds=[*self.eval_kinds, *[OUTLIER] * len(paths)],
                       eval_ids=[*self.eval_ids, *range(first, first + len(paths))])

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
        return LoopData(tp, tl, ep, el, sp, sl, families=dict(self.families))


def hold_out_classes(data: LoopData, k: int, seed: int) -> tuple[LoopData, np.ndarray, np.ndarray]:
    """``data`` with ``k`` classes (a seeded random draw) kept out of the catalogue and of all training.

    Their eval photos stay: asks about things the model cannot know. Returns the data and the indices of the
    train and catalogue images kept (to slice features computed for the whole set).
    """
    classes = sorted(set(data.train_labels) | set(data.seed_labels))
    if k < 0 or k > len(classes) - 2:
        raise BadInput(f"--unknown-classes must lie in 0..{max(len(classes) - 2, 0)} (the data has {len(classes)} "
                       "classes and at least two must stay known)")
    held = tuple(sorted(np.random.default_rng(seed + 101).choice(classes, size=k, replace=False).tolist())) if k else ()
    drop = set(held)
    train_idx = np.array([i for i, lab in enumerate(data.train_labels) if lab not in drop], dtype=np.int64)
    seed_idx = np.array([i for i, lab in enumerate(data.seed_labels) if lab not in drop], dtype=np.int64)
    kinds = [UNKNOWN if kind == KNOWN and lab in drop else kind
             for kind, lab in zip(data.eval_kinds, data.eval_labels, strict=True)]
    out = LoopData([data.train_paths[i] for i in train_idx], [data.train_labels[i] for i in train_idx],
                   list(data.eval_paths), list(data.eval_labels), [data.seed_paths[i] for i in seed_idx],
                   [data.seed_labels[i] for i in seed_idx], [data.train_keys[i] for i in train_idx], kinds,
                   dict(data.families), held, list(data.eval_ids))
    return out, train_idx, seed_idx


def outlier_images(root: Path) -> list[Path]:
    """Every image under ``root`` (recursively), in a fixed order."""
    if not Path(root).is_dir():
        raise BadInput(f"outlier folder {root} not found")
    paths = sorted(p for p in Path(root).rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES and p.is_file())
    if not paths:
        raise BadInput(f"no images ({', '.join(sorted(IMAGE_SUFFIXES))}) under {root}")
    return paths


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
            [i.path for i in seed], [i.label for i in seed], families={c.name: c.family for c in ds.classes},
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
                        data.eval_paths, data.eval_labels, data.seed_paths, data.seed_labels,
                        families=dict(data.families))
    if len(set(data.train_labels) | set(data.seed_labels)) < 2:
        raise BadInput("the dataset needs images of at least two classes")
    return data


@dataclass(frozen=True)
class GroupFigures:
    """One decision-time group: asks in it, auto-answered, and wrong among those."""

    asks: int
    answered: int
    wrong: int

    @property
    def error(self) -> float:
        return self.wrong / self.answered if self.answered else 0.0

    @property
    def coverage(self) -> float:
        return self.answered / self.asks if self.asks else 0.0


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
    unknown_auto_answer_rate: float = 0.0  # asks about held-out classes answered without a human
    outlier_auto_answer_rate: float = 0.0
    worst_group_auto_error: float = 0.0
    unknown_asks: int = 0
    outlier_asks: int = 0
    gate_threshold: float = math.nan  # mean over folds; nan where the gate flagged nothing
    known_flagged: float = 0.0  # share of known-class asks the gate sent to the unknown group
    unknown_flagged: float = 0.0  # share of asks about held-out classes the gate flagged
    outlier_flagged: float = 0.0
    groups: dict[str, GroupFigures] = field(default_factory=dict)


@dataclass
class LoopRun:
    strategy: str
    rounds: list[RoundResult]
    final: RoundResult
    n_train: int
    labelled_idx: list[int]

    def as_rows(self) -> list[dict[str, float | int | str]]:
        return [{k: v for k, v in asdict(r).items() if k != "groups"} for r in [*self.rounds, self.final]]


def oracle_coverage(scores: np.ndarray, right: np.ndarray, alpha: float) -> float:
    """Largest share of asks whose top-scored answers have an error rate <= alpha (hindsight, no guarantee)."""
    if not scores.size:
        return math.nan
    order = np.argsort(-scores, kind="stable")
    err = np.cumsum(~right[order]) / np.arange(1, scores.size + 1)
    ok = np.flatnonzero(err <= alpha)
    return float((ok.max() + 1) / scores.size) if ok.size else 0.0


@dataclass(frozen=True)
class LiveCalibration:
    """How live asks are judged: the policy, the outlier gate's rate and the labels it may calibrate on."""

    alpha: float = 0.05
    delta: float = 0.1
    policy: str = "mondrian"  # or "conformal": one pooled threshold
    gate_rate: float | None = 0.05  # None: no outlier gate
    budget: int | None = None  # labelled live asks; None: every one
    # Ten folds: each ask's policy calibrates on 90% of the labels, close to what a deployment has (all of them).
    folds: int = 10


def judge_live(
    model: IdentifyModel, x: np.ndarray, data: LoopData, how: LiveCalibration, *, seed: int = 0
) -> RoundResult:
    """The live asks judged the way the server would, cross-fitted: figures of a ``RoundResult`` (round 0).

    ``how.budget`` asks (a seeded random draw) get a reviewer's label; the asks are split in ``how.folds``
    folds, and each fold is decided by a gate and a policy calibrated on the labelled asks of the other folds
    only. A known-class ask's label says it is in the catalogue, so the gate calibrates on those; the policy
    calibrates on every labelled ask in its group (answers about unknown things are wrong ones).
    """
    labels, kinds = data.eval_labels, data.eval_kinds
    n = len(labels)
    if not n:
        return RoundResult(0, 0, 0, math.nan, math.nan, math.nan, math.nan, math.nan, 0.0)
    preds = model.predict(x)
    top = [p.top[0] for p in preds]
    right = np.array([t == y for t, y in zip(top, labels, strict=True)])
    score = confidence_scores(np.stack([p.probs for p in preds]), "margin")
    novelty = np.array([p.novelty for p in preds])
    family = np.array([data.family(t) for t in top], dtype=object)
    known = np.array([k == KNOWN for k in kinds])
    ids = np.asarray(data.eval_ids, dtype=np.int64)
    m = int(ids.max()) + 1  # the original asks: a repeated ask is one ask, labelled or not, in one fold
    fold = (np.random.default_rng(seed + 7).permutation(m) % how.folds)[ids]
    n_labelled = m if how.budget is None else min(how.budget, m)
    labelled = (np.random.default_rng(seed + 11).permutation(m) < n_labelled)[ids]
    # A repeated ask calibrates once: its label is one observation, however often the sample asks it.
    first = np.zeros(n, dtype=bool)
    first[np.unique(ids, return_index=True)[1]] = True
    labelled &= first
    n_labelled = int(labelled.sum())
    answered = np.zeros(n, dtype=bool)
    group = family.copy()
    thresholds, bounds, gates = [], [], []
    for f in range(how.folds):
        mine, cal = fold == f, (fold != f) & labelled
        flagged = np.zeros(n, dtype=bool)
        if how.gate_rate is not None:
            gate = OutlierGate(how.gate_rate)
            gate.calibrate(novelty[cal & known])
            flagged = gate.flags(novelty)
            gates.append(gate.threshold)
        groups = np.where(flagged, UNKNOWN_GROUP, family)
        policy = (MondrianPolicy(how.alpha, how.delta) if how.policy == "mondrian"
                  else ConformalPolicy(how.alpha, how.delta))
        policy.calibrate(score[cal], right[cal], groups[cal].tolist())
        for g in sorted(set(groups[mine].tolist())):
            at = mine & (groups == g)
            if isinstance(policy, MondrianPolicy):
                thr = NEVER if g == UNKNOWN_GROUP else policy.threshold_for(g)
                sub = policy.policies.get(g)
                bound = sub.upper_bound if sub is not None else 1.0
            else:
                thr = NEVER if g == UNKNOWN_GROUP else policy.threshold
                bound = policy.upper_bound
            answered[at] = score[at] >= thr
            if g != UNKNOWN_GROUP:
                thresholds.append(thr)
                if thr < NEVER:
                    bounds.append(bound)
        group[mine] = groups[mine]
    figures: dict[str, GroupFigures] = {}
    for g in sorted(set(group.tolist())):
        at = group == g
        figures[str(g)] = GroupFigures(int(at.sum()), int((at & answered).sum()), int((at & answered & ~right).sum()))
    k_ans = answered & known

    def rate(kind: str, what: np.ndarray) -> float:
        of = np.array([k == kind for k in kinds])
        return float(what[of].mean()) if of.any() else 0.0

    flagged_any = group == UNKNOWN_GROUP

    finite_gates = [g for g in gates if math.isfinite(g)]
    return RoundResult(
        0, 0, n_labelled,
        accuracy=float(right[known].mean()) if known.any() else math.nan,
        coverage=float(k_ans.sum() / known.sum()) if known.any() else math.nan,
        auto_error=float((~right[k_ans]).mean()) if k_ans.any() else 0.0,
        threshold=float(np.mean(thresholds)) if thresholds else NEVER,
        error_bound=float(max(bounds)) if bounds else 1.0,
        seconds=0.0,
        oracle_coverage=oracle_coverage(score[known], right[known], how.alpha),
        unknown_auto_answer_rate=rate(UNKNOWN, answered), outlier_auto_answer_rate=rate(OUTLIER, answered),
        worst_group_auto_error=max((g.error for g in figures.values()), default=0.0),
        unknown_asks=int(sum(k == UNKNOWN for k in kinds)), outlier_asks=int(sum(k == OUTLIER for k in kinds)),
        gate_threshold=float(np.mean(finite_gates)) if finite_gates else math.nan,
        known_flagged=rate(KNOWN, flagged_any), unknown_flagged=rate(UNKNOWN, flagged_any),
        outlier_flagged=rate(OUTLIER, flagged_any),
        groups=figures,
    )


Features = tuple[np.ndarray, np.ndarray, np.ndarray]  # train, eval, seed embeddings (L2-normalised)


def simulate(
    data: LoopData,
    features: Features,
    strategy: QueryStrategy,
    *,
    rounds: int = 10,
    budget: int | None = None,
    live: LiveCalibration | None = None,
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

    how = live or LiveCalibration()

    def measure(r: int, model: IdentifyModel, xt: np.ndarray, xe: np.ndarray, t0: float, stage: str) -> RoundResult:
        res = replace(judge_live(model, xe, data, how, seed=seed), round=r, labels_used=len(labelled),
                      seconds=time.perf_counter() - t0, stage=stage)
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
