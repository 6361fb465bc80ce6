"""The retraining job: head on every label, optionally a fine-tuned backbone; each run a registry version."""

from __future__ import annotations

import hashlib
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from lookloop.errors import BadInput
from lookloop.jobs import JobContext
from lookloop.loop.finetune import FinetuneConfig, export_finetuned, finetune_backbone
from lookloop.loop.learner import IdentifyModel, train_identify_head
from lookloop.loop.policies import ConformalPolicy, confidence_scores
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


def _metrics(model: IdentifyModel, x: np.ndarray, labels: list[str], alpha: float) -> tuple[dict[str, Any],
                                                                                             np.ndarray, np.ndarray]:
    if not labels:
        return {"heldout": 0}, np.zeros(0), np.zeros(0, dtype=bool)
    preds = model.predict(x)
    top = confidence_scores(np.stack([p.probs for p in preds]))
    right = np.array([p.top[0] == y for p, y in zip(preds, labels, strict=True)])
    policy = ConformalPolicy(alpha)
    policy.calibrate(top, right)
    answered = top >= policy.threshold
    return (
        {
            "accuracy": float(right.mean()),
            "heldout": len(labels),
            "threshold": policy.threshold,
            # In-sample on the calibration slice: indicative only, the bench measures it out of sample.
            "coverage": float(answered.mean()),
            "auto_error": float((~right[answered]).mean()) if answered.any() else 0.0,
        },
        top,
        right,
    )


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
    parent: str | None, backbone: Path | None, serving_acc: float | None, alpha: float, extra: dict[str, Any],
) -> ModelVersion:
    train, held = ts.rows(False), ts.rows(True)
    y = [ts.labels[i] for i in train]
    if len(set(y)) < 2:
        raise BadInput("training needs labels of at least two products outside the held-out slice")
    head = train_identify_head(x[train], y)
    model = IdentifyModel(x.shape[1], head=head)
    model.learn(x[train], y, [ts.keys[i] for i in train])
    metrics, top, right = _metrics(model, x[held], [ts.labels[i] for i in held], alpha)
    if serving_acc is not None:
        metrics["serving_accuracy"] = serving_acc
    metrics.update(extra)
    artifacts = ModelArtifacts(
        head=head, embedder_version=embedder_version,
        # Serving recalls every label, held-out ones included (instant learning must not regress).
        memory_x=x, memory_labels=list(ts.labels), memory_keys=list(ts.keys),
        calibration_scores=top, calibration_correct=right, backbone_onnx=backbone, variant=variant,
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
    alpha = serving.settings.alpha
    parent = serving.registry.current_id()
    serving_acc = _serving_accuracy(serving, ts)
    variant = serving.settings.embedder
    emb = pretrained_embedder(serving.settings.model_cache_dir, variant)
    cache = EmbeddingCache(serving.settings.model_cache_dir, emb.version, emb.dim)
    x = embed_paths(cache, emb, ts.paths, progress=progress, what="embedding labelled images")
    if progress:
        progress("training the head", 0, 1)
    v1 = _fit_and_register(serving, ts, x, emb.version, variant=variant, kind="head", parent=parent, backbone=None,
                           serving_acc=serving_acc, alpha=alpha, extra=dict(tag or {}))
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
                serving_acc=serving_acc, alpha=alpha,
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
