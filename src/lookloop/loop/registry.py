"""The model registry: trained versions, their lineage and metrics, the evaluation gate, promote/rollback."""

from __future__ import annotations

import builtins
import datetime as dt
import hashlib
import json
import shutil
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from sqlalchemy import func, select

from lookloop.errors import Conflict, NotFound
from lookloop.loop.learner import IdentifyModel, LinearHead
from lookloop.loop.tables import ModelEventRow, ModelMarkRow, ModelVersionRow
from lookloop.models.embedder import OnnxImageEmbedder, finetuned_embedder, pretrained_embedder, variant_image_size
from lookloop.store.db import Database
from lookloop.store.files import open_private, private_dir, tighten_file


class GateRefused(Conflict):
    """The evaluation gate: a candidate that fails a check is not promoted."""


@dataclass(frozen=True)
class GateLimits:
    """What the evaluation gate asks of a candidate's held-out figures."""

    max_error: float = 0.05  # known-class auto-answer error, overall and within each group
    max_unknown_auto_answer: float = 0.05  # share of asks about held-out classes answered without a person


@dataclass
class ModelArtifacts:
    """What a training run produces; the registry stores it under the version's folder."""

    head: LinearHead
    embedder_version: str
    memory_x: np.ndarray  # the labelled examples' embeddings (instant-learning memory)
    memory_labels: list[str]
    memory_keys: list[str]
    calibration_scores: np.ndarray = field(default_factory=lambda: np.zeros(0))  # held-out top scores
    calibration_correct: np.ndarray = field(default_factory=lambda: np.zeros(0, dtype=bool))
    calibration_score: str = "margin"  # what the scores are (lookloop.loop.policies.confidence_score)
    # Per held-out ask: the predicted label (its family is the ask's group) and the novelty score (the outlier
    # gate's calibration). None: a version without them calibrates one pooled policy and no gate.
    calibration_predicted: tuple[str, ...] | None = None
    calibration_novelty: np.ndarray | None = None
    calibration_known: np.ndarray | None = None  # per held-out ask: its class was learnt (default: all were)
    backbone_onnx: Path | None = None  # a fine-tuned backbone; None means the pretrained one
    variant: str = "lite0"  # the EfficientNet-Lite variant of the backbone, tuned or not


@dataclass(frozen=True)
class ModelVersion:
    id: str
    created_at: dt.datetime
    parent_id: str | None
    kind: str
    embedder_version: str
    artifact_dir: Path
    metrics: dict[str, Any]
    label_count: int
    label_hash: str
    status: str
    notes: str
    serving: bool = False

    @property
    def accuracy(self) -> float | None:
        value = self.metrics.get("accuracy")
        return float(value) if isinstance(value, int | float) else None

    def as_dict(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "created_at": self.created_at.isoformat(),
            "parent_id": self.parent_id,
            "kind": self.kind,
            "embedder_version": self.embedder_version,
            "metrics": self.metrics,
            "label_count": self.label_count,
            "label_hash": self.label_hash,
            "status": self.status,
            "serving": self.serving,
            "notes": self.notes,
        }


@dataclass
class LoadedVersion:
    version: ModelVersion
    model: IdentifyModel
    backbone_onnx: Path | None
    variant: str | None  # None: stored before versions recorded it
    calibration_scores: np.ndarray
    calibration_correct: np.ndarray
    calibration_score: str = "top"
    calibration_predicted: tuple[str, ...] | None = None
    calibration_novelty: np.ndarray | None = None
    calibration_known: np.ndarray | None = None


def label_set_hash(keys: list[str], labels: list[str]) -> str:
    body = "\n".join(sorted(f"{k}={v}" for k, v in zip(keys, labels, strict=True)))
    return hashlib.sha256(body.encode()).hexdigest()


def _to_version(row: ModelVersionRow, serving_id: str | None) -> ModelVersion:
    return ModelVersion(
        id=row.id,
        created_at=row.created_at,
        parent_id=row.parent_id,
        kind=row.kind,
        embedder_version=row.embedder_version,
        artifact_dir=Path(row.artifact_dir),
        metrics=dict(row.metrics or {}),
        label_count=row.label_count,
        label_hash=row.label_hash,
        status=row.status,
        notes=row.notes,
        serving=row.id == serving_id,
    )


class ModelRegistry:
    """Versions in the database, artifacts on disk under ``root/<version id>/``."""

    def __init__(self, db: Database, root: Path, *, tolerance: float = 0.0, limits: GateLimits | None = None) -> None:
        self.db = db
        self.root = Path(root)
        self.tolerance = tolerance  # how much worse (accuracy) a candidate may be and still pass the gate
        self.limits = limits or GateLimits()
        # Called with the version id after a promotion or rollback committed (other processes are told).
        self.changed: list[Callable[[str], None]] = []

    # -- reading ------------------------------------------------------------------------------------------

    def _history(self) -> list[str]:
        """The promotion stack after replaying every event: promote pushes, rollback pops."""
        with self.db.session() as s:
            events = s.execute(select(ModelEventRow.action, ModelEventRow.version_id).order_by(ModelEventRow.seq)).all()
        stack: list[str] = []
        for action, version_id in events:
            if action == "promote":
                stack.append(version_id)
            elif action == "rollback":
                while stack and stack[-1] != version_id:
                    stack.pop()
                if not stack:
                    stack.append(version_id)
        return stack

    def current_id(self) -> str | None:
        """The serving version's id: one indexed query, cheap enough to poll on every ask."""
        with self.db.session() as s:
            return s.scalars(select(ModelEventRow.version_id).order_by(ModelEventRow.seq.desc()).limit(1)).first()

    def get(self, version_id: str) -> ModelVersion:
        serving = self.current_id()
        with self.db.session() as s:
            row = s.get(ModelVersionRow, version_id)
            if row is None:
                raise NotFound(f"no model version {version_id!r}")
            return _to_version(row, serving)

    def current(self) -> ModelVersion | None:
        vid = self.current_id()
        return self.get(vid) if vid else None

    def list(self, limit: int = 100) -> list[ModelVersion]:
        serving = self.current_id()
        with self.db.session() as s:
            rows = s.scalars(select(ModelVersionRow).order_by(ModelVersionRow.created_at.desc()).limit(limit)).all()
            return [_to_version(r, serving) for r in rows]

    def label_keys(self, version_id: str) -> builtins.list[str]:
        with self.db.session() as s:
            row = s.get(ModelVersionRow, version_id)
            if row is None:
                raise NotFound(f"no model version {version_id!r}")
            return [str(k) for k in row.label_keys or []]

    def versions_trained_on(self, keys: set[str]) -> builtins.list[str]:
        """Every version whose training set held one of these label keys (``ask:<id>``)."""
        if not keys:
            return []
        with self.db.session() as s:
            rows = s.execute(select(ModelVersionRow.id, ModelVersionRow.label_keys)).all()
        return sorted(str(vid) for vid, trained in rows if keys.intersection(trained or ()))

    # -- writing ------------------------------------------------------------------------------------------

    def register(
        self,
        artifacts: ModelArtifacts,
        *,
        metrics: dict[str, Any],
        label_keys: builtins.list[str],
        label_values: builtins.list[str],
        parent_id: str | None,
        kind: str,
        notes: str = "",
    ) -> ModelVersion:
        """Stores a trained version (as a candidate; promotion is a separate, gated step)."""
        digest = label_set_hash(label_keys, label_values)
        with self.db.session() as s:
            n = (s.scalar(select(func.count()).select_from(ModelVersionRow)) or 0) + 1
        vid = f"v{n:04d}-{kind}-{digest[:8]}"
        directory = self.root / vid
        private_dir(directory)  # trained on wearers' labelled frames: 0600 files in 0700 directories
        artifacts.head.save(directory / "head.npz")
        with open_private(directory / "memory.npz") as fh:
            np.savez(fh, x=artifacts.memory_x.astype(np.float32), labels=np.array(artifacts.memory_labels),
                     keys=np.array(artifacts.memory_keys))
        arrays = {"scores": artifacts.calibration_scores.astype(np.float64),
                  "correct": artifacts.calibration_correct.astype(bool), "score": np.array(artifacts.calibration_score)}
        if artifacts.calibration_predicted is not None and artifacts.calibration_novelty is not None:
            arrays["predicted"] = np.array(artifacts.calibration_predicted, dtype=str)
            arrays["novelty"] = np.asarray(artifacts.calibration_novelty, dtype=np.float64)
            if artifacts.calibration_known is not None:
                arrays["known"] = np.asarray(artifacts.calibration_known, dtype=bool)
        with open_private(directory / "calibration.npz") as fh:
            np.savez(fh, allow_pickle=False, **arrays)
        if artifacts.backbone_onnx is not None:
            target = directory / "backbone.onnx"
            if artifacts.backbone_onnx.resolve() != target.resolve():
                shutil.copyfile(artifacts.backbone_onnx, target)
                tighten_file(target)
        lineage = {"labels": dict(zip(label_keys, label_values, strict=True)), "parent": parent_id,
                   "embedder_version": artifacts.embedder_version, "variant": artifacts.variant,
                   "image_size": variant_image_size(artifacts.variant)}
        with open_private(directory / "lineage.json") as fh:
            fh.write(json.dumps(lineage, indent=1, sort_keys=True).encode("utf-8"))
        with self.db.session() as s:
            s.add(
                ModelVersionRow(
                    id=vid,
                    parent_id=parent_id,
                    kind=kind,
                    embedder_version=artifacts.embedder_version,
                    artifact_dir=str(directory),
                    metrics=metrics,
                    label_count=len(label_keys),
                    label_hash=digest,
                    label_keys=list(label_keys),
                    notes=notes,
                )
            )
        return self.get(vid)

    def _event(self, version_id: str, action: str, previous: str | None, reason: str) -> None:
        with self.db.session() as s:
            seq = (s.scalar(select(func.max(ModelEventRow.seq))) or 0) + 1
            s.add(ModelEventRow(seq=seq, version_id=version_id, action=action, previous_id=previous, reason=reason))
        for hook in self.changed:
            hook(version_id)

    def gate(self, candidate: ModelVersion) -> tuple[bool, str]:
        """Passes when every check passes; the message names each failed check and by how much.

        The checks (each on the candidate's held-out figures, skipped when the trainer did not measure it):
        known-class auto-answer error ≤ ``max_error``; the error within each group ≤ ``max_error``; the share of
        asks about classes held out of training answered without a person ≤ ``max_unknown_auto_answer``; and
        held-out accuracy not worse than the serving version's.
        """
        checks = [*self._error_checks(candidate.metrics), self._unknown_check(candidate.metrics),
                  self._accuracy_check(candidate)]
        failed = [why for ok, why in checks if not ok]
        if failed:
            return False, "; ".join(failed)
        return True, "; ".join(why for _, why in checks)

    def _error_checks(self, metrics: dict[str, Any]) -> builtins.list[tuple[bool, str]]:
        limit = self.limits.max_error
        out: builtins.list[tuple[bool, str]] = []
        known = metrics.get("known_error")
        if isinstance(known, int | float):
            n = metrics.get("known_answered", "?")
            if known <= limit:
                out.append((True, f"known-class error {known:.3f} ≤ {limit:.3f} ({n} answered)"))
            else:
                out.append((False, f"known-class error {known:.3f} > {limit:.3f} by {known - limit:.3f} "
                                   f"({n} answered)"))
        groups = metrics.get("group_error")
        if isinstance(groups, dict):
            for name, fig in sorted(groups.items()):
                err = fig.get("error") if isinstance(fig, dict) else None
                if not isinstance(err, int | float):
                    continue  # nothing answered in this group: no error to check
                n = fig.get("answered", "?")
                if err > limit:
                    out.append((False, f"group {name} error {err:.3f} > {limit:.3f} by {err - limit:.3f} "
                                       f"({n} answered)"))
            if all(ok for ok, _ in out):
                out.append((True, f"every group's error ≤ {limit:.3f}"))
        return out

    def _unknown_check(self, metrics: dict[str, Any]) -> tuple[bool, str]:
        """Asks about classes held out of training: how many would be answered without a person.

        What matters is that such asks are not answered, whether the outlier gate flags them or the policy
        escalates them; the share the gate flags is said beside it.
        """
        rate = metrics.get("unknown_auto_answer_rate")
        limit = self.limits.max_unknown_auto_answer
        if not isinstance(rate, int | float):
            return True, "unknown detection not measured"
        n = metrics.get("unknown_asks", "?")
        flagged = metrics.get("unknown_detection")
        said = f"; the outlier gate flags {flagged:.3f}" if isinstance(flagged, int | float) else ""
        if rate <= limit:
            return True, (f"asks about held-out classes answered without a person {rate:.3f} ≤ {limit:.3f} "
                          f"({n} asks{said})")
        return False, (f"asks about held-out classes answered without a person {rate:.3f} > {limit:.3f} by "
                       f"{rate - limit:.3f} ({n} asks{said})")

    def _accuracy_check(self, candidate: ModelVersion) -> tuple[bool, str]:
        """Not worse than the serving version on the held-out slice."""
        serving = self.current()
        if serving is None:
            return True, "nothing serves yet"
        cand = candidate.accuracy
        if cand is None:
            return False, "the candidate has no held-out accuracy"
        # Prefer the serving model measured by the trainer on the candidate's own slice; else its own figure.
        base_raw = candidate.metrics.get("serving_accuracy", serving.accuracy)
        if base_raw is None:
            return True, "the serving version has no held-out accuracy"
        base = float(base_raw)
        if cand + self.tolerance >= base:
            return True, f"accuracy {cand:.4f} ≥ serving {base:.4f}"
        return False, f"accuracy {cand:.4f} < serving {base:.4f} by {base - cand:.4f}"

    def mark(self, version_ids: builtins.list[str], *, reason: str, wearer_ref: str = "", n_items: int = 0) -> None:
        """Marks versions trained on data that has since been deleted: none of them may serve again."""
        with self.db.session() as s:
            for vid in sorted(set(version_ids)):
                s.add(ModelMarkRow(model_version=vid, reason=reason, wearer_id=wearer_ref, n_items=n_items))

    def marked(self) -> set[str]:
        with self.db.session() as s:
            return {str(v) for v in s.scalars(select(ModelMarkRow.model_version))}

    def _refuse_marked(self, version_id: str) -> None:
        if version_id in self.marked():
            raise GateRefused(f"{version_id} was trained on data its wearer deleted: train a new version instead")

    def promote(self, version_id: str, *, force: bool = False, reason: str = "") -> ModelVersion:
        version = self.get(version_id)
        current = self.current_id()
        if current == version_id:
            return version
        self._refuse_marked(version_id)  # no force overrides a deletion
        ok, why = self.gate(version)
        if not ok and not force:
            with self.db.session() as s:
                row = s.get(ModelVersionRow, version_id)
                if row is not None:
                    row.status = "rejected"
            raise GateRefused(f"the evaluation gate refused {version_id}: {why} (use --force to override)")
        if not ok:
            # Forced past a refusal: the event says so, and what the gate said.
            why = f"forced past the evaluation gate ({why})"
            reason = f"{reason}: {why}" if reason else why
        self._event(version_id, "promote", current, reason or why)
        return self.get(version_id)

    def rollback_target(self) -> str | None:
        """The version a rollback would serve again, or None when there is none it may serve."""
        stack = self._history()
        if len(stack) < 2 or stack[-2] in self.marked():
            return None
        return stack[-2]

    def rollback(self, reason: str = "") -> ModelVersion:
        """Back to the version that served before the current one."""
        stack = self._history()
        if len(stack) < 2:
            raise Conflict("nothing to roll back to: fewer than two versions have served")
        self._refuse_marked(stack[-2])
        self._event(stack[-2], "rollback", stack[-1], reason or "rollback")
        return self.get(stack[-2])

    # -- loading ------------------------------------------------------------------------------------------

    def load(self, version_id: str) -> LoadedVersion:
        version = self.get(version_id)
        d = version.artifact_dir
        try:
            head = LinearHead.load(d / "head.npz")
            with np.load(d / "memory.npz", allow_pickle=False) as mem:
                x, labels, keys = mem["x"], [str(v) for v in mem["labels"]], [str(v) for v in mem["keys"]]
            with np.load(d / "calibration.npz", allow_pickle=False) as cal:
                scores, correct = cal["scores"], cal["correct"]
                # Versions stored before the margin score calibrated the top probability.
                score_kind = str(cal["score"]) if "score" in cal.files else "top"
                predicted = tuple(str(v) for v in cal["predicted"]) if "predicted" in cal.files else None
                novelty = cal["novelty"].astype(np.float64) if "novelty" in cal.files else None
                known = cal["known"].astype(bool) if "known" in cal.files else None
            lineage = json.loads((d / "lineage.json").read_text(encoding="utf-8"))
        except (OSError, ValueError, KeyError) as exc:
            raise NotFound(f"the artifacts of {version_id} are missing or damaged in {d}") from exc
        model = IdentifyModel(int(head.weight.shape[1]), head=head)
        if len(labels):
            model.learn(x, labels, keys)
        model.head_version = version_id
        onnx = d / "backbone.onnx"
        return LoadedVersion(
            version=version,
            model=model,
            backbone_onnx=onnx if onnx.is_file() else None,
            variant=str(lineage["variant"]) if "variant" in lineage else None,
            calibration_scores=scores,
            calibration_correct=correct,
            calibration_score=score_kind,
            calibration_predicted=predicted,
            calibration_novelty=novelty,
            calibration_known=known,
        )


def serving_embedder(loaded: LoadedVersion, cache_dir: Path, variant: str = "lite0", *,
                     threads: int | None = None) -> OnnxImageEmbedder:
    """The embedder a version needs: its fine-tuned backbone, or the shared pretrained one.

    ``variant`` (the configured embedder) stands in for versions stored before they recorded theirs; ``threads``:
    a forward pass's threads (None: every core the process may use).
    """
    name = loaded.variant or variant
    if loaded.backbone_onnx is None:
        return pretrained_embedder(cache_dir, name, threads=threads)
    return finetuned_embedder(loaded.backbone_onnx, name, threads=threads)
