"""The serving model: the identify backbone, head and example memory, and the escalation policy calibrated for it.

It owns what changes when a label arrives (instant learning), when an audit verdict arrives (live
recalibration) and when a version is promoted or rolled back (the swap). Everything it needs from outside —
the training set's sources, frames, consent — is passed in.
"""

from __future__ import annotations

import datetime as dt
import logging
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

import numpy as np
from sqlalchemy import select
from sqlalchemy.exc import SQLAlchemyError

from lookloop.catalog import Catalogue
from lookloop.config import Settings
from lookloop.domain import PolicyDecision, same_label
from lookloop.errors import LookloopError
from lookloop.imaging import decode_image
from lookloop.loop.calibration import (
    AuditVerdict,
    Calibration,
    CalibrationParams,
    Guarantee,
    ask_group,
    audit_verdicts,
    replaceable,
)
from lookloop.loop.crossfit import HeldOut, crossfit
from lookloop.loop.learner import IdentifyModel, cached_identify_head
from lookloop.loop.openset import OutlierGate
from lookloop.loop.policies import UNKNOWN_GROUP, EscalationPolicy, FixedThreshold
from lookloop.loop.registry import ModelArtifacts, ModelRegistry, ModelVersion, serving_embedder
from lookloop.models.embcache import EmbeddingCache, ProgressFn, RecentEmbeddings, embed_paths
from lookloop.models.embedder import OnnxImageEmbedder, pretrained_embedder, share_of_cores
from lookloop.store.db import Database
from lookloop.store.tables import AskRow, LabelRow, teaches_shared_model

log = logging.getLogger("lookloop.serving")

OTHER_GROUP = "other"  # the group of a predicted label that is no catalogue item with a family

class FrameSource(Protocol):
    """Redacted frames by id (``lookloop.privacy.storage.FramePrivacy`` in the running system)."""

    def redacted_file(self, sha: str) -> Path: ...

    def redacted_bytes(self, sha: str) -> bytes: ...


class TrainingConsent(Protocol):
    """Which asks may teach the model (``lookloop.privacy.consent.ConsentService``)."""

    def training_excluded_ask_ids(self) -> set[str]: ...


@dataclass(frozen=True)
class LabelledSet:
    """Every image the identify model learns from, with a stable key per example (for deletion and hashing)."""

    paths: list[Path]
    labels: list[str]
    keys: list[str]


class ServingModel:
    """What answers identify asks now, and how it changes: labels, audit verdicts, promotions."""

    def __init__(
        self,
        settings: Settings,
        db: Database,
        catalogue: Catalogue,
        frames: FrameSource,
        consent: TrainingConsent,
        registry: ModelRegistry,
    ) -> None:
        self.settings = settings
        self.db = db
        self.catalogue = catalogue
        self.frames = frames
        self.consent = consent
        self.registry = registry
        self.policy: EscalationPolicy = FixedThreshold(settings.confidence_threshold)
        self.model_version = "untrained"
        self.registry_poll_s = 2.0
        self._lock = threading.RLock()
        self._embedder: OnnxImageEmbedder | None = None
        self._cache: EmbeddingCache | None = None
        self._recent: RecentEmbeddings | None = None  # the latest asks' embeddings (memory only)
        self._model: IdentifyModel | None = None
        self._serving_id: str | None = None  # the registry version loaded, if any
        self._unservable: str | None = None  # a promoted version whose artifacts failed to load
        self._checked = 0.0
        self._sync_lock = threading.Lock()
        # Live calibration: swapped whole under ``_lock`` together with ``policy`` (never mutated in place).
        self._calibration = Calibration()
        # Flags asks unlike anything learnt (None: not calibrated, nothing is flagged); swapped with the policy.
        self.gate: OutlierGate | None = None
        self._startup_heldout: HeldOut | None = None  # the start-up model's cross-fitted calibration set
        self._families: dict[str, str] | None = None  # label → its item's family (the group of its asks)

    # -- models -------------------------------------------------------------------------------------------

    @property
    def forward_threads(self) -> int:
        """Threads one forward pass uses: this worker's share of the machine's cores."""
        return share_of_cores(self.settings.api_workers_per_machine)

    @property
    def embedder(self) -> OnnxImageEmbedder:
        with self._lock:
            if self._embedder is None:
                self._embedder = pretrained_embedder(self.settings.model_cache_dir, self.settings.embedder,
                                                     threads=self.forward_threads)
            return self._embedder

    @property
    def embedding_cache(self) -> EmbeddingCache:
        with self._lock:
            if self._cache is None:
                emb = self.embedder
                self._cache = EmbeddingCache(self.settings.model_cache_dir, emb.version, emb.dim)
            return self._cache

    @property
    def model(self) -> IdentifyModel:
        """The identify model, built (or loaded from the registry) on first use."""
        with self._lock:
            if self._model is None and not self._load_serving_version():
                self.build()
            assert self._model is not None
            return self._model

    @property
    def loaded(self) -> bool:
        """Whether a model is in memory (deletion must not build one just to delete from it)."""
        return self._model is not None

    def decide(self, probs: np.ndarray, group: str | None = None) -> PolicyDecision:
        """The serving policy's decision; without ``group``, that of the top label of the serving model."""
        if group is None and self._model is not None:
            labels = self._model.labels()
            if len(labels) == np.size(probs):
                group = self.group_of(labels[int(np.argmax(probs))])
        return self.policy.decide(probs, group)

    # -- groups and guarantees ------------------------------------------------------------------------------------

    def group_of(self, label: str) -> str:
        """The group an ask predicted as ``label`` is decided in: its catalogue item's family."""
        families = self._families
        if families is None:
            self._refresh_families()
            families = self._families or {}
        return families.get(label, OTHER_GROUP)

    def guarantees(self) -> dict[str, Guarantee]:
        """Per group, what the serving policy certifies (empty: the policy is not per group)."""
        return dict(self._calibration.guarantees)

    def guarantee(self, group: str) -> Guarantee | None:
        return self._calibration.guarantees.get(group)

    def _params(self) -> CalibrationParams:
        return CalibrationParams(self.settings.alpha, self.settings.delta, self.settings.calibration_min_labels,
                                 groups=tuple(sorted(set((self._families or {}).values()))))

    def _refresh_families(self) -> None:
        try:
            self._families = {item.name: item.family or OTHER_GROUP for item in self.catalogue.items()}
        except SQLAlchemyError as exc:  # a database not migrated yet
            log.warning("catalogue unavailable (%s); every ask is in group %r", exc, OTHER_GROUP)

    def save_cache(self) -> None:
        if self._cache is not None:
            self._cache.save()

    # -- the training set -----------------------------------------------------------------------------------

    def labelled_set(self) -> LabelledSet:
        """Catalogue images, imported photos and human labels (the latest per ask), minus no-training asks."""
        paths: list[Path] = []
        labels: list[str] = []
        keys: list[str] = []
        for item in self.catalogue.items():
            for img in item.images:
                p = Path(img)
                if p.is_file():
                    paths.append(p)
                    labels.append(item.name)
                    keys.append(f"catalog:{item.id}:{p.name}")
        with self.db.session() as s:
            rows = s.execute(
                select(LabelRow.id, LabelRow.value, LabelRow.image_path, LabelRow.frame_sha, LabelRow.ask_id)
                .where(LabelRow.skill == "identify", teaches_shared_model())
                .order_by(LabelRow.created_at)
            ).all()
        no_training = self.consent.training_excluded_ask_ids()
        latest: dict[str, tuple[Path, str]] = {}
        for _id, value, image_path, frame_sha, ask_id in rows:
            if ask_id in no_training:
                continue
            path: Path | None = None
            if image_path:
                path = Path(image_path)
            elif frame_sha:
                path = self.frames.redacted_file(frame_sha)  # learn from the redacted frame, never a sealed upload
            if path is None or not path.is_file():
                continue
            key = f"ask:{ask_id}" if ask_id else f"label:{frame_sha or image_path}"
            latest[key] = (path, self.catalogue.canonical_label(value))
        for key, (path, value) in latest.items():
            paths.append(path)
            labels.append(value)
            keys.append(key)
        return LabelledSet(paths, labels, keys)

    def build(self, progress: ProgressFn | None = None) -> IdentifyModel:
        """The start-up model: every labelled image embedded (cached), the head trained (cached by label set)."""
        emb = self.embedder
        data = self.labelled_set()
        cache = self.embedding_cache

        x = embed_paths(cache, emb, data.paths, progress=progress, what="embedding labelled images")
        model = IdentifyModel(emb.dim)
        if data.paths:
            model.learn(x, data.labels, data.keys)
        if len(set(data.labels)) >= 2:
            if progress:
                progress("training the identify head", 0, 1)
            model.head, model.head_version = cached_identify_head(
                x, data.labels, data.keys, embedder_version=emb.version, cache_dir=self.settings.model_cache_dir
            )
        held: HeldOut | None = None
        if self._serving_id is None and self.settings.startup_calibration:
            # Trained on every label, so no held-out slice: cross-fitting makes one (cached like the head).
            held = crossfit(x, data.labels, data.keys, data.paths, embedder_version=emb.version,
                            cache_dir=self.settings.model_cache_dir, progress=progress)
        with self._lock:
            self._model = model
            self.model_version = f"{emb.version}+{model.head_version}"
            if self._serving_id is None:
                self._startup_heldout = held
                # Without start-up calibration: audit labels of this very model may still replace the fixed
                # threshold.
                self._recalibrate(self.model_version, held)
        return model

    # -- versions ---------------------------------------------------------------------------------------------

    def _load_serving_version(self) -> bool:
        """Loads the registry's promoted version when there is one (start-up and after a promotion)."""
        try:
            vid = self.registry.current_id()
        except SQLAlchemyError:
            return False
        if vid is None:
            return False
        self.activate(vid)
        return True

    def sync(self, *, force: bool = False) -> None:
        """Picks up a version promoted or rolled back by another process: at once when told (``force``: the
        registry's event), else by polling (cheap: one indexed query every few seconds).

        One sync at a time: an ask that polls while another thread loads a version keeps the one serving.
        """
        now = time.monotonic()
        if not force and now - self._checked < self.registry_poll_s:
            return
        if not self._sync_lock.acquire(blocking=force):
            return
        try:
            self._checked = now
            try:
                vid = self.registry.current_id()
            except SQLAlchemyError:
                return
            if vid is not None and vid != self._serving_id and vid != self._unservable:
                try:
                    self.activate(vid)
                except LookloopError as exc:
                    # Keep answering with what serves now rather than failing every ask.
                    self._unservable = vid
                    log.error("model version %s cannot serve (%s); keeping %s", vid, exc.message,
                              self.model_version)
        finally:
            self._sync_lock.release()

    def apply_stored_label(self, ask_id: str) -> bool:
        """Applies a label another process stored for ``ask_id``, read back from the database (never from the
        other process): the ask's latest identify label is learned like ``learn_frame`` (its embedding from the
        cache, else recomputed from the redacted frame) unless its wearer keeps it out of training, and an
        audit ask's stored verdict recalibrates the policy. Nothing happens before a model is loaded: it is
        built from the database anyway. True when the label was learned."""
        if self._model is None:
            return False
        with self.db.session() as s:
            ask = s.get(AskRow, ask_id)
            # Only labels that teach everyone (applied): personal, pending or proposed ones stay where they are.
            label = s.execute(select(LabelRow.value, LabelRow.frame_sha, LabelRow.skill, LabelRow.embedding,
                                     LabelRow.embedder_version)
                              .where(LabelRow.ask_id == ask_id, teaches_shared_model())
                              .order_by(LabelRow.created_at.desc()).limit(1)).first()
            verdict = None
            if (ask is not None and ask.audit and ask.audit_correct is not None and ask.policy_score is not None
                    and ask.score_kind is not None):
                verdict = AuditVerdict(ask.id, ask.model_version, float(ask.policy_score), ask.score_kind,
                                       bool(ask.audit_correct), ask_group(ask.result, ask.predicted_label,
                                                                          self.group_of))
        if verdict is not None:
            self._apply_verdict(verdict)
        if label is None or label.skill != "identify" or not label.frame_sha:
            self._model.forget([f"ask:{ask_id}"])  # an example overruled meanwhile goes here too
            return False
        if ask_id in self.consent.training_excluded_ask_ids():
            return False
        self._take_stored_embedding(label.frame_sha, label.embedding, label.embedder_version)
        self.learn_frame(label.frame_sha, self.catalogue.canonical_label(label.value), key=f"ask:{ask_id}")
        return True

    def catch_up(self, since: dt.datetime) -> None:
        """After this process may have missed events: the serving version re-read, and the labels stored since
        ``since`` applied (applying one twice changes nothing)."""
        self.sync(force=True)
        with self.db.session() as s:
            asks = s.scalars(select(LabelRow.ask_id).where(LabelRow.created_at >= since, LabelRow.ask_id.is_not(None))
                             .distinct()).all()
        for ask_id in asks:
            if ask_id is not None:
                self.apply_stored_label(ask_id)

    def activate(self, version_id: str) -> None:
        """Serves a registry version: its backbone, head, example memory and calibrated policy.

        The policy calibrates on the version's held-out set plus its audit labels stored so far.
        """
        loaded = self.registry.load(version_id)
        emb = serving_embedder(loaded, self.settings.model_cache_dir, self.settings.embedder,
                               threads=self.forward_threads)
        cache = EmbeddingCache(self.settings.model_cache_dir, emb.version, emb.dim)
        model = loaded.model
        # Labels confirmed after the version was trained must not be forgotten by the swap.
        known = set(model.memory.keys)
        data = self.labelled_set()
        new = [i for i, k in enumerate(data.keys) if k not in known]
        if new:
            x = embed_paths(cache, emb, [data.paths[i] for i in new])
            model.learn(x, [data.labels[i] for i in new], [data.keys[i] for i in new])
        with self._lock:
            self._embedder = emb
            self._cache = cache
            self._model = model
            self.model_version = version_id
            self._serving_id = version_id
            held: HeldOut | None = None
            if loaded.calibration_predicted is not None and loaded.calibration_novelty is not None:
                scores = np.asarray(loaded.calibration_scores, dtype=np.float64)
                learnt = (loaded.calibration_known if loaded.calibration_known is not None
                          else np.ones(scores.size, dtype=bool))
                held = HeldOut(scores, np.asarray(loaded.calibration_correct, dtype=bool), loaded.calibration_predicted,
                               loaded.calibration_novelty, kind=loaded.calibration_score, known=learnt)
            served_as = loaded.version.metrics.get("served_as")
            self._recalibrate(version_id, held, kind=loaded.calibration_score,
                              pooled=(loaded.calibration_scores, loaded.calibration_correct),
                              also=(str(served_as),) if served_as else ())

    def promote(self, version_id: str, *, force: bool = False, reason: str = "") -> ModelVersion:
        """Promotes and serves at once; a version whose artifacts cannot serve is refused before the switch.

        Before the first promotion the model serving now joins the registry, so "roll back" returns to it.
        """
        self.registry.load(version_id)
        self._keep_startup_model()
        version = self.registry.promote(version_id, force=force, reason=reason)
        self.sync(force=True)
        return version

    def rollback(self, reason: str = "") -> ModelVersion:
        version = self.registry.rollback(reason)
        self.sync(force=True)
        return version

    def _keep_startup_model(self) -> None:
        if self.registry.current_id() is not None:
            return
        model = self.model  # the start-up model (built from the labels if this process has not yet)
        if model.head is None:
            return  # fewer than two products: nothing a rollback could serve
        memory = model.memory
        held = self._startup_heldout
        artifacts = ModelArtifacts(
            head=model.head, embedder_version=self.embedder.version, memory_x=memory.matrix,
            memory_labels=memory.labels, memory_keys=memory.keys, variant=self.settings.embedder,
            # Its calibration travels with it: served again after a rollback, it keeps its policy and gate.
            calibration_scores=held.scores if held is not None else np.zeros(0),
            calibration_correct=held.correct if held is not None else np.zeros(0, dtype=bool),
            calibration_score=held.kind if held is not None else "margin",
            calibration_predicted=held.predicted if held is not None else None,
            calibration_novelty=held.novelty if held is not None else None,
            calibration_known=held.known if held is not None else None,
        )
        # ``served_as``: its audit labels, given under the start-up name, keep counting after a rollback.
        kept = self.registry.register(artifacts, metrics={"served_as": self.model_version},
                                      label_keys=memory.keys, label_values=memory.labels,
                                      parent_id=None, kind="startup",
                                      notes="the model that served before the first promotion")
        self.registry.promote(kept.id, force=True, reason="kept so that a rollback can return to it")

    # -- calibration --------------------------------------------------------------------------------------

    def _recalibrate(
        self, version: str, held: HeldOut | None, *, kind: str = "margin",
        pooled: tuple[np.ndarray, np.ndarray] | None = None, also: tuple[str, ...] = (),
    ) -> None:
        """Rebuilds the serving policy (and outlier gate) of ``version`` from its held-out set and audit labels.

        ``held``: per held-out ask its score, verdict, predicted label and novelty — a per-group (Mondrian)
        policy and a calibrated gate. None: ``pooled`` (scores, verdicts) of a version stored before groups, or
        nothing — one pooled policy, no gate. ``also``: other names the version served under (audit labels given
        then count). Call holding ``_lock`` (with the model swap): a label stored meanwhile is either read here or,
        once this state serves, applied on top of it, never lost or counted twice.
        """
        self._refresh_families()
        kind = held.kind if held is not None else kind
        try:
            found = audit_verdicts(self.db, (version, *also), kind, self.group_of)
        except SQLAlchemyError as exc:  # a database not migrated yet: no audit labels to read
            log.warning("audit labels unavailable (%s); calibrating on the held-out set only", exc)
            found = []
        verdicts = {v.ask_id: (v.score, v.correct, v.group) for v in found}
        gate: OutlierGate | None = None
        if held is not None:
            gate = OutlierGate(self.settings.outlier_rate)
            # A new ask of a known class is flagged with probability ≤ the rate (asks about classes their model
            # never learnt only raise the threshold: conservative).
            gate.calibrate(held.novelty)
            known = held.known_only()  # the known-class error is calibrated on asks about learnt classes only
            flagged = gate.flags(known.novelty)
            groups = tuple(UNKNOWN_GROUP if f else self.group_of(p)
                           for f, p in zip(flagged.tolist(), known.predicted, strict=True))
            state = Calibration(version, kind, known.scores, known.correct, groups, verdicts)
        else:
            scores, correct = pooled if pooled is not None else (np.zeros(0), np.zeros(0, dtype=bool))
            state = Calibration(version, kind, np.asarray(scores, dtype=np.float64).ravel(),
                                np.asarray(correct, dtype=bool).ravel(), None, verdicts)
        fitted = state.fit(self._params())
        policy = fitted.policy
        previous = self._calibration
        self._calibration = fitted
        self.gate = gate
        if policy is not None and (state.heldout_scores.size or state.grouped or replaceable(self.policy, previous)):
            self.policy = policy
        elif policy is None and previous.policy is not None and self.policy is previous.policy:
            # Calibrated for another model version: its threshold says nothing about this one.
            self.policy = FixedThreshold(self.settings.confidence_threshold)

    def record_audit_verdict(self, ask_id: str, label: str | None) -> AuditVerdict | None:
        """Stores whether an audit ask's predicted label was right and recalibrates the serving policy.

        ``label`` None: a reviewer could not tell, counted as wrong (conservative: an answer nobody could
        verify must not improve the certified bound). The latest label of an ask wins. Returns the verdict,
        or None when the ask is not an audit ask. Never raises: calibration must not lose a label.
        """
        try:
            with self.db.session() as s:
                row = s.get(AskRow, ask_id)
                if (row is None or not row.audit or row.policy_score is None or row.score_kind is None
                        or row.predicted_label is None):
                    return None
                correct = label is not None and same_label(row.predicted_label, label)
                row.audit_correct = correct
                verdict = AuditVerdict(row.id, row.model_version, float(row.policy_score), row.score_kind, correct,
                                       ask_group(row.result, row.predicted_label, self.group_of))
            self._apply_verdict(verdict)
            return verdict
        except Exception:  # noqa: BLE001 - the label is stored already; the next rebuild reads the verdict
            log.exception("live calibration failed for audit ask %s", ask_id)
            return None

    def _apply_verdict(self, verdict: AuditVerdict) -> None:
        """Refits off the lock (asks keep being answered), then swaps in if nothing changed meanwhile."""
        params = self._params()
        for _ in range(3):
            with self._lock:
                state, current = self._calibration, self.policy
            new = state.with_verdict(verdict, params)
            if new is None:
                return
            with self._lock:
                if self._calibration is state and self.policy is current:
                    self._install(state, current, new)
                    return
        with self._lock:  # contended: refit under the lock so the verdict is never dropped
            state, current = self._calibration, self.policy
            new = state.with_verdict(verdict, params)
            if new is not None:
                self._install(state, current, new)

    def _install(self, state: Calibration, current: EscalationPolicy, new: Calibration) -> None:
        """Call holding ``_lock``: the new state, and its policy where live calibration owns the serving one."""
        self._calibration = new
        if new.policy is not None and replaceable(current, state):
            self.policy = new.policy

    # -- learning and forgetting ------------------------------------------------------------------------------

    def _recent_for(self, cache: EmbeddingCache) -> RecentEmbeddings:
        """The latest asks' embeddings of the embedder ``cache`` is for (a new embedder starts them afresh)."""
        with self._lock:
            if self._recent is None or self._recent.version != cache.version:
                self._recent = RecentEmbeddings(cache.version, self.settings.recent_query_embeddings)
            return self._recent

    def remember_query(self, frame_sha: str, embedding: np.ndarray) -> None:
        """Keeps an ask's embedding for a while (in memory only): a human label for this frame then needs no second
        forward pass."""
        self._recent_for(self.embedding_cache).put(frame_sha, embedding)

    def cached_embedding(self, frame_sha: str) -> np.ndarray | None:
        """A frame's embedding if one is at hand (never computed here)."""
        cache = self._cache
        if cache is None:
            return None
        row = self._recent_for(cache).get(frame_sha)
        return row if row is not None else cache.get(frame_sha)

    def frame_embedding(self, frame_sha: str) -> np.ndarray:
        """A stored frame's embedding: at hand, or computed from the redacted frame (and cached: it is learnt)."""
        cache = self.embedding_cache
        row = self.cached_embedding(frame_sha)
        if row is None:
            data = self.frames.redacted_bytes(frame_sha)
            frame = decode_image(data, max_bytes=1 << 62, max_pixels=1 << 62)
            row = self.embedder.embed([frame.rgb])[0]
            cache.put(frame_sha, row)
        return row

    def embedding_to_store(self, frame_sha: str) -> tuple[bytes, str]:
        """A frame's embedding as a label stores it for the other workers: (float32 bytes, embedder version)."""
        row = self.frame_embedding(frame_sha)
        return np.asarray(row, dtype=np.float32).tobytes(), self.embedding_cache.version

    def _take_stored_embedding(self, frame_sha: str, data: bytes | None, version: str | None) -> None:
        """Caches the embedding another worker stored with a label, when it is of the embedder serving here."""
        if data is None or self.cached_embedding(frame_sha) is not None:
            return
        cache = self.embedding_cache
        if version != cache.version or len(data) != cache.dim * 4:
            return  # another embedder's vector: this worker embeds the frame itself
        cache.put(frame_sha, np.frombuffer(data, dtype=np.float32))

    def learn_frame(self, frame_sha: str, label: str, *, key: str) -> None:
        """Instant learning: the frame's embedding joins the example memory now."""
        self.model.learn(self.frame_embedding(frame_sha)[None, :], [label], [key])

    def forget(self, keys: list[str], frame_shas: list[str]) -> int:
        """Removes examples and cached embeddings (delete-my-data); returns how many went.

        A model not loaded yet is not built just to delete from it: it will be built without them.
        """
        removed = self._model.forget(keys) if self._model is not None else 0
        if self._cache is not None:
            removed += sum(self._cache.discard(sha) for sha in frame_shas)
        if self._recent is not None:
            removed += sum(self._recent.discard(sha) for sha in frame_shas)
        return removed
