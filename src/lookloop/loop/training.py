"""The retraining job: head on every label, optionally a fine-tuned backbone; each run a registry version."""

from __future__ import annotations

import hashlib
import tempfile
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from lookloop.errors import BadInput
from lookloop.jobs import JobContext
from lookloop.loop.crossfit import HeldOut, crossfit, fit_identify_model, fold_of, held_out_predictions
from lookloop.loop.finetune import FinetuneConfig, export_finetuned, finetune_backbone
from lookloop.loop.learner import IdentifyModel, train_identify_head
from lookloop.loop.openset import OutlierGate
from lookloop.loop.policies import UNKNOWN_GROUP, MondrianPolicy
from lookloop.loop.registry import GateRefused, ModelArtifacts, ModelVersion, serving_embedder
from lookloop.loop.serving import ServingModel
from lookloop.models.embcache import EmbeddingCache, ProgressFn, embed_paths
from lookloop.models.embedder import finetuned_embedder, pretrained_embedder

if TYPE_CHECKING:
    from lookloop.loop.finetune import FinetuneConfig


@dataclass
class TrainingSet:
    paths: list[Path]
    labels: list[str]
    keys: list[str]
    heldout: np.ndarray  # bool per row: the held-out slice (metrics, calibration), never trained on

    def rows(self, held: bool) -> list[int]:
        return [i for i in range(len(self.keys)) if bool(self.heldout[i]) == held]


@dataclass
class TrainReport:
    versions: list[ModelVersion] = field(default_factory=list)
    promoted: str | None = None
    gate_message: str = ""
    excluded: int = 0
    seconds: float = 0.0


def is_heldout(key: str, share: float) -> bool:
    """A stable hash split: a label is held out in every run or in none, so versions never train on it."""
    if key.startswith("catalog:"):
        return False  # catalogue images are the only examples of some products
    return int(hashlib.sha256(key.encode()).hexdigest()[:8], 16) % 10_000 < share * 10_000


def training_set(
    serving: ServingModel, *, holdout: float = 0.15, exclude_keys: set[str] | None = None
) -> tuple[TrainingSet, int]:
    """Every stored label the wearers allow for training, minus the keys ``exclude_keys`` names."""
    data = serving.labelled_set()
    paths, labels, keys = data.paths, data.labels, data.keys
    drop = set(exclude_keys or set())
    keep = [i for i, k in enumerate(keys) if k not in drop]
    ts = TrainingSet(
        [paths[i] for i in keep], [labels[i] for i in keep], [keys[i] for i in keep],
        np.array([is_heldout(keys[i], holdout) for i in keep], dtype=bool),
    )
    return ts, len(keys) - len(keep)


@dataclass(frozen=True)
class GateFigures:
    """How the per-group policy and the outlier gate are calibrated on held-out asks (for the figures)."""

    alpha: float
    delta: float
    outlier_rate: float
    group_of: Callable[[str], str]

    def calibrate(self, held: HeldOut) -> tuple[OutlierGate, MondrianPolicy]:
        """As serving calibrates: the gate on every ask's novelty, the policy on asks about learnt classes."""
        gate = OutlierGate(self.outlier_rate)
        gate.calibrate(held.novelty)
        known = held.known_only()
        policy = MondrianPolicy(self.alpha, self.delta, score=held.kind)
        policy.calibrate(known.scores, known.correct, self.groups(known, gate))
        return gate, policy

    def groups(self, held: HeldOut, gate: OutlierGate) -> list[str]:
        flagged = gate.flags(held.novelty)
        return [UNKNOWN_GROUP if f else self.group_of(p) for f, p in zip(flagged.tolist(), held.predicted,
                                                                          strict=True)]

    def answered(self, held: HeldOut, gate: OutlierGate, policy: MondrianPolicy) -> tuple[np.ndarray, list[str]]:
        groups = self.groups(held, gate)
        thresholds = np.array([policy.threshold_for(g) for g in groups], dtype=np.float64)
        ok = (held.scores >= thresholds) & np.array([g != UNKNOWN_GROUP for g in groups], dtype=bool)
        return ok, groups


def _ratio(num: int, den: int) -> float | None:
    return round(num / den, 4) if den else None


def _out_of_sample(held: HeldOut, fold: np.ndarray, figures: GateFigures) -> dict[str, Any]:
    """Two-fold cross-conformal: each half decided by the policy and gate calibrated on the other half.

    In-sample figures would flatter the candidate (its thresholds were chosen on those very asks).
    """
    asks: Counter[str] = Counter()
    answered: Counter[str] = Counter()
    wrong: Counter[str] = Counter()
    flagged = 0
    for f in (0, 1):
        cal, test = held.take(np.flatnonzero(fold != f)), held.take(np.flatnonzero((fold == f) & held.known))
        if not len(test):
            continue
        gate, policy = figures.calibrate(cal)
        ok, groups = figures.answered(test, gate, policy)
        flagged += int(gate.flags(test.novelty).sum())
        for g, a, right in zip(groups, ok.tolist(), test.correct.tolist(), strict=True):
            asks[g] += 1
            answered[g] += a
            wrong[g] += a and not right
    n, n_answered, n_wrong = sum(asks.values()), sum(answered.values()), sum(wrong.values())
    return {
        "coverage": _ratio(n_answered, n) or 0.0,
        "auto_error": _ratio(n_wrong, n_answered) or 0.0,
        "known_error": _ratio(n_wrong, n_answered),
        "known_answered": n_answered,
        "known_flagged": _ratio(flagged, n),  # the gate's false escalations
        "group_error": {g: {"asks": asks[g], "answered": answered[g], "error": _ratio(wrong[g], answered[g])}
                        for g in sorted(asks) if g != UNKNOWN_GROUP},
    }


def _unknown_detection(ts: TrainingSet, x: np.ndarray, figures: GateFigures, gate: OutlierGate,
                       policy: MondrianPolicy, share: float = 0.1) -> dict[str, Any]:
    """Leave classes out: a model that never learnt a seeded draw of the classes, and the candidate's own gate
    and thresholds; the share of the left-out classes' photos flagged as unknown, and the share answered."""
    classes = sorted(set(ts.labels))
    k = max(1, round(len(classes) * share))
    if len(classes) - k < 2:
        return {}
    out = {str(c) for c in np.random.default_rng(0).choice(classes, size=k, replace=False)}
    known = [i for i in range(len(ts.keys)) if ts.labels[i] not in out]
    novel = [i for i in range(len(ts.keys)) if ts.labels[i] in out and not ts.keys[i].startswith("catalog:")]
    if not novel:
        return {}
    model = fit_identify_model(x[known], [ts.labels[i] for i in known], [ts.keys[i] for i in known])
    asks = held_out_predictions(model, x[novel], [ts.labels[i] for i in novel])
    answered, _ = figures.answered(asks, gate, policy)
    return {
        "unknown_detection": round(float(gate.flags(asks.novelty).mean()), 4),
        "unknown_auto_answer_rate": round(float(answered.mean()), 4),
        "unknown_asks": len(novel),
        "unknown_classes": sorted(out),
        "unknown_gate_active": bool(np.isfinite(gate.threshold)),
    }


def _metrics(model: IdentifyModel, ts: TrainingSet, x: np.ndarray, figures: GateFigures,
             calibration: HeldOut) -> dict[str, Any]:
    """Held-out accuracy (comparable between versions) and, on the cross-fitted calibration set, the per-group
    policy and gate: their out-of-sample error and coverage, and how they treat classes never learnt."""
    held_rows = ts.rows(True)
    metrics: dict[str, Any] = {"heldout": len(held_rows), "calibration_labels": len(calibration)}
    if held_rows:
        held = held_out_predictions(model, x[held_rows], [ts.labels[i] for i in held_rows])
        metrics["accuracy"] = float(held.correct.mean())
    if not len(calibration):
        return metrics
    gate, policy = figures.calibrate(calibration)
    scored = [i for i, key in enumerate(ts.keys) if not key.startswith("catalog:")]  # the rows crossfit scores
    fold = fold_of([ts.paths[i] for i in scored], x[scored], folds=2)
    metrics.update({
        "policy": policy.describe(),
        "gate": gate.describe(),
        **_out_of_sample(calibration, fold, figures),
        **_unknown_detection(ts, x, figures, gate, policy),
    })
    return metrics


def _serving_accuracy(serving: ServingModel, ts: TrainingSet) -> float | None:
    """The serving version on the candidate's held-out slice (its memory of those labels removed)."""
    vid = serving.registry.current_id()
    held = ts.rows(True)
    if vid is None or not held:
        return None
    loaded = serving.registry.load(vid)
    emb = serving_embedder(loaded, serving.settings.model_cache_dir, serving.settings.embedder)
    cache = EmbeddingCache(serving.settings.model_cache_dir, emb.version, emb.dim)
    x = embed_paths(cache, emb, [ts.paths[i] for i in held])
    loaded.model.forget([ts.keys[i] for i in held])
    preds = loaded.model.predict(x)
    return float(np.mean([p.top[0] == ts.labels[i] for p, i in zip(preds, held, strict=True)]))


def _fit_and_register(
    serving: ServingModel, ts: TrainingSet, x: np.ndarray, embedder_version: str, *, variant: str, kind: str,
    parent: str | None, backbone: Path | None, serving_acc: float | None, figures: GateFigures,
    extra: dict[str, Any],
) -> ModelVersion:
    train = ts.rows(False)
    y = [ts.labels[i] for i in train]
    if len(set(y)) < 2:
        raise BadInput("training needs labels of at least two products outside the held-out slice")
    head = train_identify_head(x[train], y)
    model = IdentifyModel(x.shape[1], head=head)
    model.learn(x[train], y, [ts.keys[i] for i in train])
    # Calibrated like the start-up model: cross-fitted over every labelled photo, bursts kept whole (a hash
    # split would put near-duplicates on both sides and flatter the certificate). Cached: a head-only version
    # on the start-up model's labels reuses the start-up calibration.
    calibration = crossfit(x, ts.labels, ts.keys, ts.paths, embedder_version=embedder_version,
                           cache_dir=serving.settings.model_cache_dir)
    metrics = _metrics(model, ts, x, figures, calibration)
    if serving_acc is not None:
        metrics["serving_accuracy"] = serving_acc
    metrics.update(extra)
    artifacts = ModelArtifacts(
        head=head, embedder_version=embedder_version,
        # Serving recalls every label, held-out ones included (instant learning must not regress).
        memory_x=x, memory_labels=list(ts.labels), memory_keys=list(ts.keys),
        calibration_scores=calibration.scores, calibration_correct=calibration.correct,
        calibration_score=calibration.kind, calibration_predicted=calibration.predicted,
        calibration_novelty=calibration.novelty, calibration_known=calibration.known, backbone_onnx=backbone,
        variant=variant,
    )
    return serving.registry.register(
        artifacts, metrics=metrics, label_keys=[ts.keys[i] for i in train], label_values=y, parent_id=parent,
        kind=kind,
    )


def train_versions(
    serving: ServingModel,
    *,
    finetune: bool = False,
    finetune_config: FinetuneConfig | None = None,
    holdout: float = 0.15,
    promote: bool = True,
    exclude_keys: set[str] | None = None,
    progress: ProgressFn | None = None,
    tag: dict[str, Any] | None = None,
) -> TrainReport:
    """Stage 1: a head on the pretrained embeddings; stage 2 (``finetune``): a tuned backbone and its head.

    The better candidate is offered to the evaluation gate; a pass promotes it, and the in-process
    service switches to it at once (other processes pick it up on their next poll). ``tag`` goes into each
    version's metrics (the training job's id: a retried job finds the versions its first attempt made).
    """

    start = time.perf_counter()
    ts, excluded = training_set(serving, holdout=holdout, exclude_keys=exclude_keys)
    if len(set(ts.labels)) < 2:
        raise BadInput("nothing to train on: import a catalogue or label some asks first")
    report = TrainReport(excluded=excluded)
    settings = serving.settings
    figures = GateFigures(settings.alpha, settings.delta, settings.outlier_rate, serving.group_of)
    parent = serving.registry.current_id()
    serving_acc = _serving_accuracy(serving, ts)
    variant = serving.settings.embedder
    emb = pretrained_embedder(serving.settings.model_cache_dir, variant)
    cache = EmbeddingCache(serving.settings.model_cache_dir, emb.version, emb.dim)
    x = embed_paths(cache, emb, ts.paths, progress=progress, what="embedding labelled images")
    if progress:
        progress("training the head", 0, 1)
    v1 = _fit_and_register(serving, ts, x, emb.version, variant=variant, kind="head", parent=parent, backbone=None,
                           serving_acc=serving_acc, figures=figures, extra=dict(tag or {}))
    report.versions.append(v1)
    if finetune:

        cfg = finetune_config or FinetuneConfig(variant=variant)
        train = ts.rows(False)
        result = finetune_backbone([ts.paths[i] for i in train], [ts.labels[i] for i in train], cfg,
                                   progress=progress)
        with tempfile.TemporaryDirectory() as tmp:
            onnx = export_finetuned(result, Path(tmp), variant=cfg.variant)
            ft = finetuned_embedder(onnx, cfg.variant)
            ft_cache = EmbeddingCache(serving.settings.model_cache_dir, ft.version, ft.dim)
            x2 = embed_paths(ft_cache, ft, ts.paths, progress=progress, what="embedding with the tuned backbone")
            v2 = _fit_and_register(
                serving, ts, x2, ft.version, variant=cfg.variant, kind="finetune", parent=v1.id, backbone=onnx,
                serving_acc=serving_acc, figures=figures,
                extra={"finetune_seconds": round(result.train_seconds, 1), "finetune_epochs": result.epochs_run,
                       **(tag or {})},
            )
        report.versions.append(v2)
    if promote:
        best = max(report.versions, key=lambda v: v.accuracy if v.accuracy is not None else -1.0)
        report.gate_message = serving.registry.gate(best)[1]
        try:
            serving.promote(best.id, reason="lookloop train")
            report.promoted = best.id
        except GateRefused as exc:
            report.gate_message = exc.message
    report.seconds = time.perf_counter() - start
    return report


TRAIN_JOB = "models.train"


class TrainJob:
    """``lookloop train`` as a background job (``models.train``), run where jobs run.

    Idempotent: the versions an attempt registers carry the job's id, so an attempt after a crash that came
    after registering does not train again; it only finishes the promotion.
    """

    def __init__(self, serving: ServingModel) -> None:
        self._serving = serving

    def __call__(self, ctx: JobContext, *, finetune: bool = False, finetune_minutes: float = 25.0,
                 holdout: float = 0.15, promote: bool = True) -> dict[str, Any]:
        if not 0.0 < holdout < 0.9:
            raise BadInput("holdout must lie in (0, 0.9)")
        if finetune_minutes <= 0:
            raise BadInput("finetune_minutes must be positive")
        registry = self._serving.registry
        done = [v for v in registry.list(limit=100) if v.metrics.get("job") == ctx.job_id]
        if done:
            best = max(done, key=lambda v: v.accuracy if v.accuracy is not None else -1.0)
            promoted, gate = None, "serves already"
            if promote and registry.current_id() != best.id:
                gate = registry.gate(best)[1]
                try:
                    self._serving.promote(best.id, reason="lookloop train (job)")
                    promoted = best.id
                except GateRefused as exc:
                    gate = exc.message
            return {"versions": [v.id for v in done], "promoted": promoted, "gate": gate,
                    "resumed": True}
        report = train_versions(self._serving, finetune=finetune, holdout=holdout, promote=promote,
                                finetune_config=FinetuneConfig(time_budget_s=finetune_minutes * 60),
                                progress=ctx.reporter(), tag={"job": ctx.job_id})
        return {"versions": [v.id for v in report.versions], "promoted": report.promoted,
                "gate": report.gate_message, "excluded": report.excluded, "seconds": round(report.seconds, 1)}
