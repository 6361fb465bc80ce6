"""The look-and-ask service: the loop's domain logic, shared by the HTTP API, the CLI and the benchmarks."""

from __future__ import annotations

import datetime as dt
import hashlib
import logging
import random
import re
import threading
import time
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from sqlalchemy import select

from lookloop.catalog import GroceryDataset, LabelledImage, grocery_catalog
from lookloop.config import Settings
from lookloop.domain import Answer, Ask, Candidate, CatalogItem, Decision, Outcome, hud_lines, utcnow
from lookloop.errors import BadInput, LookloopError, NotFound
from lookloop.imaging import decode_image
from lookloop.loop.calibration import AuditVerdict, Calibration, audit_verdicts, draw_audit, replaceable, score_kind
from lookloop.loop.learner import IdentifyModel, LinearHead, fit_linear_head
from lookloop.loop.policies import EscalationPolicy, FixedThreshold, confidence_score
from lookloop.loop.registry import ModelRegistry
from lookloop.models.embcache import EmbeddingCache
from lookloop.models.embedder import OnnxImageEmbedder, pretrained_embedder
from lookloop.models.ocr import TextReader, shared_reader
from lookloop.privacy.consent import ConsentService, training_excluded_ask_ids, without_human_review
from lookloop.privacy.storage import FramePrivacy
from lookloop.skills.base import HandToHuman, Skill
from lookloop.skills.identify import IdentifySkill, display
from lookloop.skills.router import IntentRouter, KeywordRouter, Router, default_skill_router
from lookloop.store.db import Database
from lookloop.store.frames import FrameStore
from lookloop.store.tables import AskRow, CatalogItemRow, LabelRow

log = logging.getLogger("lookloop.service")
_STORE_POOL = ThreadPoolExecutor(max_workers=4, thread_name_prefix="lookloop-store")

ProgressFn = Callable[[str, int, int], None]


@dataclass(frozen=True)
class AskRecord:
    """An ask as the outside world sees it: the question, the answer, and where the episode stands."""

    id: str
    device_id: str
    question: str
    created_at: dt.datetime
    answer: Answer
    outcome: str
    frame_sha: str | None
    latency_ms: float
    final_answer: str | None = None
    audit: bool = False  # drawn at random as a spot check of the policy (lookloop.loop.calibration)

    @property
    def hud(self) -> list[str]:
        return hud_lines(self.final_answer or self.answer.text)


@dataclass
class Hooks:
    """Extension points: the human loop subscribes to escalations and labels."""

    escalated: list[Callable[[AskRecord], None]] = field(default_factory=list)
    labelled: list[Callable[[str, str, str], None]] = field(default_factory=list)  # ask_id, value, source
    # Training-set filters: given label keys ("ask:<id>", "label:<sha>", "catalog:…"), return the keys that
    # must never enter a training set (e.g. episodes without training consent).
    training_exclude: list[Callable[[list[str]], set[str]]] = field(default_factory=list)
    asked: list[Callable[[AskRecord], None]] = field(default_factory=list)  # every stored ask (feedback)


_QUESTION_RULES: tuple[tuple[str, re.Pattern[str]], ...] = (
    ("read", re.compile(r"\b(read|text|say|written|sign|label says)\b|读|念|写", re.I)),
    ("identify", re.compile(r"\b(what|which|identify|name|product|price|cost|how much)\b|什么|多少钱|这是", re.I)),
)


def simple_route(question: str) -> str:
    """Keyword routing for the foundation; the learned intent router replaces it when it is available."""
    for skill, pattern in _QUESTION_RULES:
        if pattern.search(question):
            return skill
    return "identify"


def normalise_name(name: str) -> str:
    return re.sub(r"[\s_\-]+", " ", name.strip().lower())


def _row_to_item(row: CatalogItemRow) -> CatalogItem:
    return CatalogItem(
        id=row.id,
        name=row.name,
        coarse_class=row.coarse_class,
        description=row.description,
        price=row.price,
        currency=row.currency,
        barcode=row.barcode,
        images=tuple(row.images or ()),
    )


def _row_to_record(row: AskRow) -> AskRecord:
    answer = Answer(
        text=row.answer_text,
        skill=row.skill,
        confidence=row.confidence,
        decision=Decision(row.decision),
        model_version=row.model_version,
        result=dict(row.result or {}),
        candidates=tuple(Candidate(str(c[0]), float(c[1])) for c in (row.candidates or [])),
        policy=row.policy,
    )
    return AskRecord(
        id=row.id,
        device_id=row.device_id,
        question=row.question,
        created_at=row.created_at,
        answer=answer,
        outcome=row.outcome,
        frame_sha=row.frame_sha,
        latency_ms=row.latency_ms,
        final_answer=row.final_answer,
        audit=bool(row.audit),
    )


@dataclass(frozen=True)
class _Scored:
    """What the policy saw for an identify ask: kept on the ask so a later label can recalibrate."""

    score: float
    kind: str
    label: str


class Lookloop:
    """The assembled system: storage, models, skills and the escalation policy."""

    def __init__(self, settings: Settings, *, db: Database | None = None) -> None:
        self.settings = settings
        settings.resolved_var_dir.mkdir(parents=True, exist_ok=True)
        self.db = db or Database(settings.resolved_database_url)
        self.frames = FrameStore(settings.frames_dir)
        self.hooks = Hooks()
        # Privacy: consent checks, redacted storage, sealed originals (lookloop.privacy).
        self.consent = ConsentService(self.db)
        self.privacy = FramePrivacy(settings, self.db, self.frames.root)
        self.hooks.labelled.append(self._release_frame)
        self.policy: EscalationPolicy = FixedThreshold(settings.confidence_threshold)
        self._lock = threading.RLock()
        self._embedder: OnnxImageEmbedder | None = None
        self._emb_cache: EmbeddingCache | None = None
        self._identify: IdentifyModel | None = None
        self._catalog: dict[str, CatalogItem] = {}
        self._reader: TextReader | None = None
        self._skills: dict[str, Skill] = {}
        self.model_version = "untrained"
        self._router: Router | None = None
        self._routes: dict[str, str] = {}
        self._serving_id: str | None = None  # the registry version loaded, if any
        self._serving_checked = 0.0
        self.registry_poll_s = 2.0
        # Live calibration: swapped whole under ``_lock`` together with ``policy`` (never mutated in place).
        self._calibration = Calibration()
        self._audit_rng = random.Random()

    # -- set-up -------------------------------------------------------------------------------------------

    def migrate(self) -> None:
        self.db.migrate()
        self.reload_catalog()

    @property
    def embedder(self) -> OnnxImageEmbedder:
        with self._lock:
            if self._embedder is None:
                self._embedder = pretrained_embedder(self.settings.model_cache_dir, self.settings.embedder)
            return self._embedder

    @property
    def embedding_cache(self) -> EmbeddingCache:
        with self._lock:
            if self._emb_cache is None:
                emb = self.embedder
                self._emb_cache = EmbeddingCache(self.settings.model_cache_dir, emb.version, emb.dim)
            return self._emb_cache

    @property
    def reader(self) -> TextReader:
        if self._reader is None:
            self._reader = shared_reader()
        return self._reader

    @property
    def identify_model(self) -> IdentifyModel:
        with self._lock:
            if self._identify is None and not self._load_serving_version():
                self.build_identify()
            assert self._identify is not None
            return self._identify

    def skills(self) -> dict[str, Skill]:
        with self._lock:
            if not self._skills:
                from lookloop.skills.registry import default_skills

                self._skills = {sk.name: sk for sk in [*default_skills(self), HandToHuman()]}
            return self._skills

    def register_skill(self, skill: Skill) -> None:
        self.skills()[skill.name] = skill

    def labelled_images(self) -> tuple[list[Path], list[str], list[str]]:
        """Every image the identify model learns from: catalogue images, imported and human labels."""
        paths: list[Path] = []
        labels: list[str] = []
        keys: list[str] = []
        for item in self._catalog.values():
            for img in item.images:
                p = Path(img)
                if p.is_file():
                    paths.append(p)
                    labels.append(item.name)
                    keys.append(f"catalog:{item.id}:{p.name}")
        with self.db.session() as s:
            rows = s.execute(
                select(LabelRow.id, LabelRow.value, LabelRow.image_path, LabelRow.frame_sha, LabelRow.ask_id)
                .where(LabelRow.skill == "identify")
                .order_by(LabelRow.created_at)
            ).all()
            no_training = training_excluded_ask_ids(s)  # wearers who said no to training use
        rows = [r for r in rows if r[4] not in no_training]
        latest: dict[str, tuple[Path, str]] = {}
        for _id, value, image_path, frame_sha, ask_id in rows:
            path: Path | None = None
            if image_path:
                path = Path(image_path)
            elif frame_sha:
                self.privacy.ensure_full(frame_sha)  # learn from the redacted frame, never a sealed upload
                path = self.frame_path(frame_sha)
            if path is None or not path.is_file():
                continue
            key = f"ask:{ask_id}" if ask_id else f"label:{frame_sha or image_path}"
            latest[key] = (path, self.canonical_label(value))
        for key, (path, value) in latest.items():
            paths.append(path)
            labels.append(value)
            keys.append(key)
        return paths, labels, keys

    def build_identify(self, progress: ProgressFn | None = None) -> IdentifyModel:
        """Embeds every labelled image (cached) and fits the head (cached by label set)."""
        emb = self.embedder
        paths, labels, keys = self.labelled_images()
        cache = self.embedding_cache

        done = 0

        def tick(n: int) -> None:
            nonlocal done
            done += n
            if progress:
                progress("embedding labelled images", done, len(paths))

        x = cache.embed_files(paths, emb.embed, progress=tick) if paths else np.zeros((0, emb.dim), np.float32)
        cache.save()
        model = IdentifyModel(emb.dim)
        if paths:
            model.learn(x, labels, keys)
        if len(set(labels)) >= 2:
            digest = hashlib.sha256(
                (emb.version + "|" + "|".join(sorted(f"{k}={v}" for k, v in zip(keys, labels, strict=True)))).encode()
            ).hexdigest()[:12]
            head_path = self.settings.model_cache_dir / f"head-{digest}.npz"
            if head_path.exists():
                model.head = LinearHead.load(head_path)
            else:
                if progress:
                    progress("training the identify head", 0, 1)
                model.head = fit_linear_head(x, labels)
                model.head.save(head_path)
            model.head_version = f"head-{digest}"
        with self._lock:
            self._identify = model
            self.model_version = f"{emb.version}+{model.head_version}"
            if self._serving_id is None:
                # No held-out set here: audit labels of this very model may still replace the fixed threshold.
                self._recalibrate(self.model_version, "margin", np.zeros(0), np.zeros(0, dtype=bool))
        return model

    @property
    def registry(self) -> ModelRegistry:
        with self._lock:
            if getattr(self, "_registry", None) is None:
                self._registry = ModelRegistry(self.db, self.settings.model_cache_dir / "versions")
            return self._registry

    def _load_serving_version(self) -> bool:
        """Loads the registry's promoted version when there is one (start-up and after a promotion)."""
        from sqlalchemy.exc import SQLAlchemyError

        try:
            vid = self.registry.current_id()
        except SQLAlchemyError:
            return False
        if vid is None:
            return False
        self.activate_version(vid)
        return True

    def sync_serving_version(self, *, force: bool = False) -> None:
        """Picks up a version promoted by another process (cheap: one indexed query every few seconds)."""
        now = time.monotonic()
        if not force and now - self._serving_checked < self.registry_poll_s:
            return
        self._serving_checked = now
        from sqlalchemy.exc import SQLAlchemyError

        try:
            vid = self.registry.current_id()
        except SQLAlchemyError:
            return
        if vid is not None and vid != self._serving_id and vid != getattr(self, "_unservable", None):
            try:
                self.activate_version(vid)
            except LookloopError as exc:
                # Keep answering with what serves now rather than failing every ask.
                self._unservable = vid
                log.error("model version %s cannot serve (%s); keeping %s", vid, exc.message, self.model_version)

    def activate_version(self, version_id: str) -> None:
        """Serves a registry version: its backbone, head, example memory and calibrated policy.

        The policy calibrates on the version's held-out set plus its audit labels stored so far.
        """
        from lookloop.loop.registry import serving_embedder

        loaded = self.registry.load(version_id)
        emb = serving_embedder(loaded, self.settings.model_cache_dir, self.settings.embedder)
        cache = EmbeddingCache(self.settings.model_cache_dir, emb.version, emb.dim)
        model = loaded.model
        # Labels confirmed after the version was trained must not be forgotten by the swap.
        known = set(model.memory.keys)
        paths, labels, keys = self.labelled_images()
        new = [i for i, k in enumerate(keys) if k not in known]
        if new:
            x = cache.embed_files([paths[i] for i in new], emb.embed)
            cache.save()
            model.learn(x, [labels[i] for i in new], [keys[i] for i in new])
        with self._lock:
            self._embedder = emb
            self._emb_cache = cache
            identify = self._skills.get("identify")
            if isinstance(identify, IdentifySkill):
                identify.embedder = emb
            self._identify = model
            self.model_version = version_id
            self._serving_id = version_id
            self._recalibrate(version_id, loaded.calibration_score, loaded.calibration_scores,
                              loaded.calibration_correct)

    def _recalibrate(self, version: str, kind: str, heldout_scores: np.ndarray, heldout_correct: np.ndarray) -> None:
        """Rebuilds the serving policy of ``version`` from its held-out set and stored audit labels.

        Call holding ``_lock`` (with the model swap): a label stored meanwhile is either read here or, once this
        state serves, applied on top of it, never lost or counted twice.
        """
        from sqlalchemy.exc import SQLAlchemyError

        try:
            found = audit_verdicts(self.db, version, kind)
        except SQLAlchemyError as exc:  # a database not migrated yet: no audit labels to read
            log.warning("audit labels unavailable (%s); calibrating on the held-out set only", exc)
            found = []
        state = Calibration(version, kind, np.asarray(heldout_scores, dtype=np.float64).ravel(),
                            np.asarray(heldout_correct, dtype=bool).ravel(),
                            {v.ask_id: (v.score, v.correct) for v in found})
        policy = state.fit(self.settings.alpha, self.settings.calibration_min_labels)
        previous = self._calibration
        self._calibration = Calibration(state.version, state.kind, state.heldout_scores, state.heldout_correct,
                                        state.verdicts, policy)
        if policy is not None and (state.heldout_scores.size or replaceable(self.policy, previous)):
            self.policy = policy
        elif policy is None and previous.policy is not None and self.policy is previous.policy:
            # Calibrated for another model version: its threshold says nothing about this one.
            self.policy = FixedThreshold(self.settings.confidence_threshold)

    def set_identify_model(self, model: IdentifyModel, version: str) -> None:
        """Swaps the serving model (promotion, rollback) without a restart."""
        with self._lock:
            self._identify = model
            self.model_version = version

    # -- catalogue ----------------------------------------------------------------------------------------

    def reload_catalog(self) -> None:
        with self.db.session() as s:
            rows = s.scalars(select(CatalogItemRow)).all()
            items = {r.name: _row_to_item(r) for r in rows}
        with self._lock:
            self._catalog = items
            self._by_norm = {normalise_name(i.name): i for i in items.values()}
            self._by_norm.update({normalise_name(i.id): i for i in items.values()})

    def find_item(self, name: str) -> CatalogItem | None:
        return self._catalog.get(name) or getattr(self, "_by_norm", {}).get(normalise_name(name))

    def canonical_label(self, value: str) -> str:
        """A human's free-text answer mapped onto the catalogue name when it names a product."""
        item = self.find_item(value)
        return item.name if item else value.strip()

    def list_items(self) -> list[CatalogItem]:
        return sorted(self._catalog.values(), key=lambda i: i.name)

    def get_item(self, item_id: str) -> CatalogItem:
        with self.db.session() as s:
            row = s.get(CatalogItemRow, item_id)
            if row is None:
                raise NotFound(f"no catalogue item {item_id!r}")
            return _row_to_item(row)

    def upsert_items(self, items: list[CatalogItem]) -> int:
        with self.db.session() as s:
            for item in items:
                row = s.get(CatalogItemRow, item.id)
                if row is None:
                    row = CatalogItemRow(id=item.id)
                    s.add(row)
                row.name = item.name
                row.coarse_class = item.coarse_class
                row.description = item.description
                row.price = item.price
                row.currency = item.currency
                row.barcode = item.barcode
                row.images = list(item.images)
        self.reload_catalog()
        return len(items)

    def delete_item(self, item_id: str) -> None:
        with self.db.session() as s:
            row = s.get(CatalogItemRow, item_id)
            if row is None:
                raise NotFound(f"no catalogue item {item_id!r}")
            s.delete(row)
        self.reload_catalog()

    def import_grocery(self, root: Path, *, splits: tuple[str, ...] = ("train",)) -> tuple[int, int]:
        """The demo catalogue (81 products, iconic images, descriptions, demo prices) plus split labels."""
        items = grocery_catalog(root)
        self.upsert_items(items)
        ds = GroceryDataset(root)
        images: list[LabelledImage] = []
        for split in splits:
            images.extend(ds.split(split))
        return len(items), self.import_labelled_images(images, source="import")

    def import_labelled_images(self, images: list[LabelledImage], *, source: str) -> int:
        with self.db.session() as s:
            existing = set(
                s.scalars(select(LabelRow.image_path).where(LabelRow.image_path.is_not(None))).all()
            )
            added = 0
            for img in images:
                p = str(Path(img.path).resolve())
                if p in existing:
                    continue
                s.add(LabelRow(image_path=p, value=img.label, source=source, skill="identify"))
                existing.add(p)
                added += 1
        return added

    # -- frames -------------------------------------------------------------------------------------------

    def frame_path(self, sha: str) -> Path:
        return self.frames.root / sha[:2] / sha

    def frame_bytes(self, sha: str) -> bytes:
        """The stored (redacted) frame; the redaction passes run first if the worker has not got to them."""
        try:
            self.privacy.ensure_full(sha)
            return self.frames.get(sha)
        except (FileNotFoundError, ValueError) as exc:
            raise NotFound("no such frame") from exc

    # -- asking -------------------------------------------------------------------------------------------

    def _release_frame(self, ask_id: str, _value: str, _source: str) -> None:
        """Once a human answered, a frame kept only for review may go (consent without frame storage)."""
        self.privacy.release_for_ask(ask_id)

    @property
    def router(self) -> Router:
        """The learned intent router (MiniLM + linear model with out-of-scope detection), built once."""
        with self._lock:
            if self._router is None:
                try:
                    corrected = self.settings.resolved_var_dir / "router-corrections.npz"
                    self._router = default_skill_router(self.settings)
                    if corrected.exists():
                        # Routes corrected by people survive restarts.
                        from lookloop.models.text import default_text_embedder

                        emb = default_text_embedder(self.settings.model_cache_dir)
                        self._router = IntentRouter.load(corrected, emb)
                except Exception as exc:  # noqa: BLE001 - the keyword router still routes the common asks
                    log.warning("learned router unavailable (%s); routing by keywords", exc)
                    self._router = KeywordRouter()
            return self._router

    def route(self, question: str, has_frame: bool) -> str | None:
        """The skill for a question, or None when it is out of scope (a human answers it)."""
        key = normalise_name(question)
        cached = self._routes.get(key)
        if cached is not None:
            return cached or None
        decision = self.router.route(question)
        intent = decision.intent
        if intent is None:
            # The learned model is unsure: the explicit keyword rules may still know the command.
            intent = KeywordRouter().route(question).intent
        if len(self._routes) > 4096:
            self._routes.clear()
        self._routes[key] = intent or ""
        return intent

    def correct_route(self, question: str, skill: str | None) -> None:
        """A corrected route: learned at once, persisted with the router."""
        if skill is not None and skill not in self.skills():
            raise BadInput(f"unknown skill {skill!r}; available: {', '.join(sorted(self.skills()))}")
        router = self.router
        if isinstance(router, IntentRouter):
            router.learn(question, skill)
            path = self.settings.resolved_var_dir / "router-corrections.npz"
            try:
                router.save(path)
            except OSError as exc:
                log.warning("could not save the corrected router: %s", exc)
        self._routes.pop(normalise_name(question), None)

    def validate_question(self, question: str) -> str:
        q = (question or "").strip()
        if not q:
            raise BadInput("the question is empty")
        if len(q) > self.settings.max_question_chars:
            raise BadInput(f"the question is longer than {self.settings.max_question_chars} characters")
        return q

    def ask(
        self,
        question: str,
        image: bytes | None,
        *,
        device_id: str = "anonymous",
        idempotency_key: str | None = None,
        skill: str | None = None,
    ) -> AskRecord:
        """Answers an ask, stores the episode, and escalates it when the policy is not sure."""
        start = time.perf_counter()
        q = self.validate_question(question)
        if idempotency_key:
            existing = self.find_by_idempotency_key(idempotency_key)
            if existing is not None:
                return existing
        frame = (
            decode_image(image, max_bytes=self.settings.max_image_bytes, max_pixels=self.settings.max_image_pixels)
            if image is not None
            else None
        )
        skills = self.skills()
        name = skill or self.route(q, frame is not None)
        if name is None:
            name = HandToHuman.name  # out of scope: a person answers rather than a wrong skill
        if name not in skills:
            raise BadInput(f"unknown skill {name!r}; available: {', '.join(sorted(skills))}")
        if name == "identify":
            self.sync_serving_version()
        chosen = skills[name]
        if chosen.needs_frame and frame is None:
            raise BadInput(f"the {name} skill needs an image: send one with the question")
        ask = Ask(question=q, frame=frame, device_id=device_id)
        wearer_id, consent = self.consent.lookup(device_id)
        stored: Future[str | None] | None = None
        if frame is not None and consent.store_frames and self.settings.redact_text != "sync":
            # Sealing the upload is disk-bound (fsync): let it overlap the model's forward pass.
            stored = _STORE_POOL.submit(
                self.privacy.store, frame, wearer_id=wearer_id, consent=consent, needs_human=False
            )
        answer, scored = self._answer(chosen, ask)
        if not consent.human_review:
            answer = without_human_review(answer)
        escalated = answer.decision == Decision.ESCALATE
        # Drawn whatever the decision: independence is what makes audit labels an unbiased calibration sample.
        # Only where a person may see the frame and it is kept anyway (no frame is kept just for an audit).
        audit = (
            scored is not None and frame is not None and consent.human_review and consent.store_frames
            and draw_audit(self._audit_rng, self.settings.audit_rate)
        )
        if stored is not None:
            frame_sha = stored.result()
            if frame_sha is not None and (escalated or audit):
                self.privacy.redact_soon(frame_sha)  # a person will look at it
        elif frame is not None:
            frame_sha = self.privacy.store(frame, wearer_id=wearer_id, consent=consent,
                                           needs_human=escalated or audit)
        else:
            frame_sha = None
        latency = (time.perf_counter() - start) * 1000
        row = AskRow(
            device_id=device_id,
            question=q,
            idempotency_key=idempotency_key,
            frame_sha=frame_sha,
            frame_media_type=frame.media_type if frame else None,
            frame_width=frame.width if frame else None,
            frame_height=frame.height if frame else None,
            skill=answer.skill,
            answer_text=answer.text,
            confidence=answer.confidence,
            decision=answer.decision.value,
            policy=answer.policy,
            model_version=answer.model_version,
            result=answer.result,
            candidates=[[c.label, c.score] for c in answer.candidates],
            outcome=(Outcome.ESCALATED if answer.decision == Decision.ESCALATE else Outcome.ANSWERED).value,
            latency_ms=latency,
            answered_at=utcnow() if answer.decision == Decision.ANSWER else None,
            audit=audit if scored is not None else None,
            policy_score=scored.score if scored else None,
            score_kind=scored.kind if scored else None,
            predicted_label=scored.label if scored else None,
        )
        with self.db.session() as s:
            s.add(row)
        record = _row_to_record(row)
        for asked in self.hooks.asked:
            asked(record)
        if answer.decision == Decision.ESCALATE:
            for hook in self.hooks.escalated:
                hook(record)
        return record

    def _answer(self, skill: Skill, ask: Ask) -> tuple[Answer, _Scored | None]:
        """The answer, and for identify asks the score the policy decided on."""
        if isinstance(skill, IdentifySkill):
            q = skill.embed(ask)
            pred = skill.predict(ask, q)
            base = skill.answer_for(pred, self.model_version)
            policy = self.policy  # one policy decides and names the score kind, even if a recalibration swaps it
            decision = policy.decide(pred.probs)
            kind = score_kind(policy)
            scored = _Scored(confidence_score(pred.probs, kind), kind, str(base.result.get("label", "")))
            if ask.frame is not None:
                # Keep the query embedding: a human label for this frame then needs no second forward pass.
                self.embedding_cache.put(hashlib.sha256(ask.frame.data).hexdigest(), q[0])
            if decision.decision == Decision.ESCALATE:
                guess = display(str(base.result.get("label", "")))
                text = f"Not sure — maybe {guess}; asking a helper."
            else:
                text = base.text
            return Answer(
                text=text,
                skill=base.skill,
                confidence=round(decision.confidence, 4),
                decision=decision.decision,
                model_version=base.model_version,
                result={**base.result, "raw_confidence": round(base.confidence, 4), "threshold": decision.threshold},
                candidates=base.candidates,
                policy=decision.policy,
            ), scored
        return skill.run(ask), None

    def find_by_idempotency_key(self, key: str) -> AskRecord | None:
        with self.db.session() as s:
            row = s.scalars(select(AskRow).where(AskRow.idempotency_key == key)).first()
            return _row_to_record(row) if row else None

    def get_ask(self, ask_id: str) -> AskRecord:
        with self.db.session() as s:
            row = s.get(AskRow, ask_id)
            if row is None:
                raise NotFound(f"no ask with id {ask_id!r}")
            return _row_to_record(row)

    def list_asks(
        self, *, device_id: str | None = None, outcome: str | None = None, limit: int = 50
    ) -> list[AskRecord]:
        with self.db.session() as s:
            stmt = select(AskRow).order_by(AskRow.created_at.desc()).limit(max(1, min(limit, 500)))
            if device_id:
                stmt = stmt.where(AskRow.device_id == device_id)
            if outcome:
                stmt = stmt.where(AskRow.outcome == outcome)
            return [_row_to_record(r) for r in s.scalars(stmt).all()]

    # -- learning -----------------------------------------------------------------------------------------

    def add_label(
        self, ask_id: str, value: str, *, source: str, author: str = "", idempotency_key: str | None = None
    ) -> AskRecord:
        """A confirmed answer for an ask: stored, sent on to subscribers, and learned at once.

        With ``idempotency_key`` a retried call (e.g. a client resending after a crash) is applied once.
        """
        from sqlalchemy.exc import IntegrityError

        from lookloop.privacy import idempotency

        value = (value or "").strip()
        if not value:
            raise BadInput("the label is empty")
        record = self.get_ask(ask_id)
        if idempotency_key and idempotency.seen(self.db, "label", idempotency_key):
            return record
        canonical = self.canonical_label(value) if record.answer.skill == "identify" else value
        try:
            self._store_label(record, canonical, source, author, idempotency_key)
        except IntegrityError:
            if idempotency_key and idempotency.seen(self.db, "label", idempotency_key):
                return self.get_ask(ask_id)  # a concurrent retry got there first
            raise
        if (
            record.answer.skill == "identify"
            and record.frame_sha
            and self.consent.for_device(record.device_id).training_use
        ):
            self.learn_frame(record.frame_sha, canonical, key=f"ask:{ask_id}")
        if record.audit:
            self.record_audit_verdict(ask_id, canonical)
        for hook in self.hooks.labelled:
            hook(ask_id, canonical, source)
        return self.get_ask(ask_id)

    def _store_label(
        self, record: AskRecord, canonical: str, source: str, author: str, idempotency_key: str | None
    ) -> None:
        from lookloop.privacy import idempotency

        ask_id = record.id
        with self.db.session() as s:
            if idempotency_key:
                idempotency.claim(s, "label", idempotency_key, ask_id)
            s.add(
                LabelRow(
                    ask_id=ask_id,
                    frame_sha=record.frame_sha,
                    device_id=record.device_id,
                    value=canonical,
                    source=source,
                    author=author,
                    skill=record.answer.skill,
                )
            )
            row = s.get(AskRow, ask_id)
            assert row is not None
            if row.audit and row.decision == Decision.ANSWER.value and source != "wearer":
                return  # a reviewer's spot check of an auto-answer: the wearer's answer stays as it was
            ai_label = str((row.result or {}).get("label", row.answer_text))
            right = normalise_name(ai_label) == normalise_name(canonical)
            row.outcome = (
                Outcome.CONFIRMED if right and source == "wearer" else
                Outcome.HUMAN_ANSWERED if source != "wearer" else Outcome.CORRECTED
            ).value
            item = self.find_item(canonical)
            row.final_answer = self._final_text(canonical, item)
            row.answered_at = utcnow()

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
                correct = label is not None and normalise_name(row.predicted_label) == normalise_name(label)
                row.audit_correct = correct
                verdict = AuditVerdict(row.id, row.model_version, float(row.policy_score), row.score_kind, correct)
            self._apply_verdict(verdict)
            return verdict
        except Exception:  # noqa: BLE001 - the label is stored already; the next rebuild reads the verdict
            log.exception("live calibration failed for audit ask %s", ask_id)
            return None

    def _apply_verdict(self, verdict: AuditVerdict) -> None:
        """Refits off the lock (asks keep being answered), then swaps in if nothing changed meanwhile."""
        alpha, min_labels = self.settings.alpha, self.settings.calibration_min_labels
        for _ in range(3):
            with self._lock:
                state, current = self._calibration, self.policy
            new = state.with_verdict(verdict, alpha, min_labels)
            if new is None:
                return
            with self._lock:
                if self._calibration is state and self.policy is current:
                    self._install(state, current, new)
                    return
        with self._lock:  # contended: refit under the lock so the verdict is never dropped
            state, current = self._calibration, self.policy
            new = state.with_verdict(verdict, alpha, min_labels)
            if new is not None:
                self._install(state, current, new)

    def _install(self, state: Calibration, current: EscalationPolicy, new: Calibration) -> None:
        """Call holding ``_lock``: the new state, and its policy where live calibration owns the serving one."""
        self._calibration = new
        if new.policy is not None and replaceable(current, state):
            self.policy = new.policy

    def _final_text(self, label: str, item: CatalogItem | None) -> str:
        from lookloop.skills.identify import product_line

        return product_line(item, label)

    def learn_frame(self, frame_sha: str, label: str, *, key: str) -> None:
        """Instant learning: the frame's embedding joins the example memory now."""
        cache = self.embedding_cache
        row = cache.get(frame_sha)
        if row is None:
            data = self.frame_bytes(frame_sha)
            frame = decode_image(data, max_bytes=1 << 62, max_pixels=1 << 62)
            row = self.embedder.embed([frame.rgb])[0]
            cache.put(frame_sha, row)
        self.identify_model.learn(row[None, :], [label], [key])

    def stats(self) -> dict[str, Any]:
        from sqlalchemy import func

        with self.db.session() as s:
            total = s.scalar(select(func.count()).select_from(AskRow)) or 0
            by_outcome = dict(s.execute(select(AskRow.outcome, func.count()).group_by(AskRow.outcome)).all())
            labels = s.scalar(select(func.count()).select_from(LabelRow)) or 0
        return {"asks": total, "outcomes": by_outcome, "labels": labels, "model_version": self.model_version}
