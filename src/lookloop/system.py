"""The composition root: every service is built here, once, with its dependencies passed in.

``build_system(settings)`` is the only place that knows how the parts fit together; ``Lookloop`` is the facade the
HTTP API, the CLI, the benchmarks and library users hold. Nothing else constructs services or looks them up.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from lookloop import telemetry
from lookloop.catalog import Catalogue, LabelledImage
from lookloop.config import Settings
from lookloop.domain import AskRecord, CatalogItem, Decision, PolicyDecision
from lookloop.exports.service import EXPORT_JOB, Exports
from lookloop.humans.accounts import Accounts
from lookloop.humans.feedback import FeedbackService
from lookloop.humans.gold import GoldPhotos
from lookloop.humans.live import LiveHub
from lookloop.humans.login_throttle import BackoffPolicy, LoginThrottle
from lookloop.humans.queue import QueueItem, ReviewQueue
from lookloop.humans.runtime import Humans
from lookloop.humans.trust import ReviewerTrust
from lookloop.jobs import JobQueue, job_queue
from lookloop.loop.asking import After, AskService, Hooks
from lookloop.loop.calibration import AuditVerdict
from lookloop.loop.labels import LabelService
from lookloop.loop.learner import IdentifyModel
from lookloop.loop.personal import PersonalMemory
from lookloop.loop.policies import EscalationPolicy
from lookloop.loop.registry import GateLimits, ModelRegistry
from lookloop.loop.serving import ServingModel
from lookloop.loop.training import TRAIN_JOB, TrainJob
from lookloop.memory.store import MemoryStore, NoteStore
from lookloop.models.backends import ChatBackend, chat_backend, vision_backend
from lookloop.models.embcache import EmbeddingCache, ProgressFn
from lookloop.models.embedder import ImageEmbedder, OnnxImageEmbedder
from lookloop.models.ocr import TextReader, shared_reader
from lookloop.models.text import TextEmbedder, default_text_embedder
from lookloop.privacy.consent import ConsentService
from lookloop.privacy.deletion import Deletion
from lookloop.privacy.retention import PURGE_JOB, PurgeJob
from lookloop.privacy.storage import REDACT_JOB, FramePrivacy
from lookloop.skills.base import Classifier, Skill
from lookloop.skills.identify import IdentifySkill
from lookloop.skills.notes import ExtractiveSummariser, NoteService
from lookloop.skills.registry import default_skills
from lookloop.skills.routing import SkillRouting
from lookloop.speech import SpeechService
from lookloop.store import idempotency
from lookloop.store.bus import EventBus, event_bus
from lookloop.store.db import Database
from lookloop.store.files import private_dir
from lookloop.store.frames import FrameStore


class _SkillDeps:
    """``lookloop.skills.base.SkillDeps`` over the running system's services."""

    def __init__(self, settings: Settings, serving: ServingModel, catalogue: Catalogue, consent: ConsentService,
                 memory: MemoryStore) -> None:
        self._settings = settings
        self._serving = serving
        self._catalogue = catalogue
        self._consent = consent
        self._memory = memory

    def image_embedder(self) -> ImageEmbedder:
        return self._serving.embedder

    def classifier(self) -> Classifier:
        return self._serving.model

    def model_version(self) -> str:
        return self._serving.model_version

    def decide(self, probs: np.ndarray) -> PolicyDecision:
        return self._serving.decide(probs)

    def find_item(self, name: str) -> CatalogItem | None:
        return self._catalogue.find(name)

    def list_items(self) -> list[CatalogItem]:
        return self._catalogue.items()

    def reader(self) -> TextReader:
        return shared_reader()

    def text_embedder(self) -> TextEmbedder:
        return default_text_embedder(self._settings.model_cache_dir)

    def chat(self) -> ChatBackend:
        return chat_backend(self._settings)

    def vision(self) -> ChatBackend:
        return vision_backend(self._settings)

    def memory_allowed(self, device_id: str) -> bool:
        return self._consent.memory_allowed(device_id)

    @property
    def memory(self) -> MemoryStore:
        return self._memory


class _ExportSource:
    """``lookloop.exports.episodes.ExportSource`` over the running system's services."""

    def __init__(self, db: Database, catalogue: Catalogue, privacy: FramePrivacy) -> None:
        self._db = db
        self._catalogue = catalogue
        self._privacy = privacy

    @property
    def db(self) -> Database:
        return self._db

    def find_item(self, name: str) -> CatalogItem | None:
        return self._catalogue.find(name)

    def frame_bytes(self, sha: str) -> bytes:
        return self._privacy.redacted_bytes(sha)


@dataclass(frozen=True)
class System:
    """Every service of one running lookloop, wired."""

    settings: Settings
    db: Database
    jobs: JobQueue
    hooks: Hooks
    frames: FrameStore
    privacy: FramePrivacy
    consent: ConsentService
    catalogue: Catalogue
    registry: ModelRegistry
    serving: ServingModel
    routing: SkillRouting
    memory: MemoryStore
    notes: NoteService
    asks: AskService
    labels: LabelService
    humans: Humans
    gold: GoldPhotos
    deletion: Deletion
    speech: SpeechService
    exports: Exports
    skill_set: _SkillSet
    bus: EventBus


class _SkillSet:
    """The skills, built on first use (the OCR and barcode readers take a moment to load)."""

    def __init__(self, deps: _SkillDeps, notes: NoteService) -> None:
        self._deps = deps
        self._notes = notes
        self._lock = threading.Lock()
        self._skills: dict[str, Skill] = {}

    def __call__(self) -> dict[str, Skill]:
        with self._lock:
            if not self._skills:
                self._skills = {sk.name: sk for sk in default_skills(self._deps, self._notes)}
            return self._skills

    def names(self) -> list[str]:
        return sorted(self())


def _observe(record: AskRecord) -> None:
    telemetry.observe_ask(record.answer.skill, (record.latency_ms or 0.0) / 1000.0,
                          escalated=record.answer.decision == Decision.ESCALATE)


LEARN_CHANNEL = "lookloop_learn"  # labels, audit verdicts, promotions and rollbacks: other workers reload them


def share_learning(bus: EventBus, *, hooks: Hooks, queue: ReviewQueue, registry: ModelRegistry,
                   serving: ServingModel, catalogue: Catalogue) -> None:
    """What one worker learns reaches the others within a second: after each change commits, its id goes on the
    bus and every other worker re-reads it from the database or the registry (never from another's memory).
    The registry poll on identify asks stays as the fallback."""

    def label_applied(ask_id: str) -> None:
        bus.publish(LEARN_CHANNEL, {"k": "label", "ask": ask_id})

    def settled_without_label(item: QueueItem, value: str | None, _authors: list[str]) -> None:
        if item.ask_id is not None and value is None:  # "cannot tell": an audit verdict, no label
            bus.publish(LEARN_CHANNEL, {"k": "label", "ask": item.ask_id})

    def version_changed(_version_id: str) -> None:
        bus.publish(LEARN_CHANNEL, {"k": "model"})

    def catalogue_changed() -> None:
        bus.publish(LEARN_CHANNEL, {"k": "catalogue"})

    def received(payload: dict[str, Any]) -> None:
        if payload.get("k") == "catalogue":
            catalogue.reload()
        elif payload.get("k") == "model":
            serving.sync(force=True)
        elif payload.get("k") == "label" and isinstance(payload.get("ask"), str):
            serving.apply_stored_label(payload["ask"])

    # Only what teaches everyone travels: a wearer's personal or a pending label stays on no worker's shared model.
    hooks.taught.append(label_applied)
    catalogue.changed.append(catalogue_changed)
    queue.on_resolved.append(settled_without_label)
    registry.changed.append(version_changed)
    bus.subscribe(LEARN_CHANNEL, received)
    bus.on_reconnect(serving.catch_up)


def build_system(settings: Settings, *, db: Database | None = None, bus: EventBus | None = None) -> System:
    """Constructs every service of lookloop with its dependencies; nothing is loaded or migrated yet.

    ``bus``: how the workers sharing the database tell each other what changed (default: ``NOTIFY`` on Postgres,
    in-process otherwise).
    """
    private_dir(settings.resolved_var_dir)  # 0700: the database, frames, keys and caches are the service's alone
    db = db or Database(settings.resolved_database_url)
    jobs = job_queue(db, max_attempts=settings.job_max_attempts, retry_wait_s=settings.job_retry_wait_s,
                     stalled_after_s=settings.job_stalled_after_s)
    bus = bus or event_bus(db.engine)
    hooks = Hooks()
    hooks.asked.append(_observe)  # /metrics: latency by skill and escalations
    frames = FrameStore(settings.frames_dir)
    privacy = FramePrivacy(settings, db, frames, jobs=jobs)
    consent = ConsentService(db)
    catalogue = Catalogue(db)
    registry = ModelRegistry(db, settings.model_cache_dir / "versions", limits=GateLimits(
        max_error=settings.alpha, max_unknown_auto_answer=settings.promotion_max_unknown_auto_answer))
    serving = ServingModel(settings, db, catalogue, privacy, consent, registry)
    memory = MemoryStore(db)
    notes = NoteService(
        NoteStore(db),
        ExtractiveSummariser(lambda: default_text_embedder(settings.model_cache_dir)),
        chat=lambda: chat_backend(settings),
    )
    skill_deps = _SkillDeps(settings, serving, catalogue, consent, memory)
    skill_set = _SkillSet(skill_deps, notes)
    routing = SkillRouting(settings, skill_set.names)
    personal = PersonalMemory(db, serving, consent)
    asks = AskService(settings, db, skills=skill_set, route=routing.route, serving=serving, consent=consent,
                      frames=privacy, hooks=hooks, dictating=notes.is_dictating, personal=personal.adjust)
    trust = ReviewerTrust(settings, db)
    labels = LabelService(db, asks=asks, catalogue=catalogue, serving=serving, consent=consent, hooks=hooks,
                          personal=personal, trust=trust)
    queue = ReviewQueue(settings, db, asks=asks, names=catalogue, frames=privacy, trust=trust)
    feedback = FeedbackService(settings, db, asks=asks, labels=labels, embeddings=serving.cached_embedding)
    throttle = LoginThrottle(db, BackoffPolicy(
        per_account=settings.login_failures_per_account, per_address=settings.login_failures_per_address,
        base_s=settings.login_backoff_base_s, max_s=settings.login_backoff_max_s))
    accounts = Accounts(db, session_ttl_hours=settings.session_ttl_hours, throttle=throttle)
    humans = Humans(settings, asks=asks, labels=labels, accounts=accounts, queue=queue, hub=LiveHub(),
                    feedback=feedback, trust=trust, frames=privacy, bus=bus)
    humans.subscribe(hooks)
    # Gold items from labelled photos carry the identify model's guess, as an escalated ask would.
    gold = GoldPhotos(settings, queue, privacy,
                      IdentifySkill(skill_deps.image_embedder, skill_deps.classifier, skill_deps.find_item).run)
    share_learning(bus, hooks=hooks, queue=queue, registry=registry, serving=serving, catalogue=catalogue)
    # Once a human answered, a frame kept only for review may go (consent without frame storage).
    def release_frame(ask_id: str, _value: str, _source: str) -> None:
        privacy.release_for_ask(ask_id)

    hooks.labelled.append(release_frame)
    deletion = Deletion(db, privacy=privacy, frames=frames, serving=serving, registry=registry, routing=routing)
    speech = SpeechService(settings)  # voice asks; spoken answers live as long as the system
    # Background work, run where jobs run (a thread of the server on SQLite, `lookloop worker` on Postgres).
    jobs.register(REDACT_JOB, privacy.redact_job)
    jobs.register(PURGE_JOB, PurgeJob(privacy, db, jobs=jobs, keep_jobs_days=settings.job_retention_days),
                  every_s=settings.purge_interval_s)
    jobs.register(TRAIN_JOB, TrainJob(serving), max_attempts=2)
    exports = Exports(_ExportSource(db, catalogue, privacy), jobs, settings.exports_dir)
    jobs.register(EXPORT_JOB, exports.job)
    return System(settings=settings, db=db, jobs=jobs, hooks=hooks, frames=frames, privacy=privacy, consent=consent,
                  catalogue=catalogue, registry=registry, serving=serving, routing=routing, memory=memory,
                  notes=notes, asks=asks, labels=labels, humans=humans, gold=gold, deletion=deletion, speech=speech,
                  exports=exports, skill_set=skill_set, bus=bus)


class Lookloop:
    """The assembled system as one object: the public API's entry point (``from lookloop import Lookloop``).

    Each method is one line handing over to the service that owns the work; the services are attributes too.
    """

    def __init__(self, settings: Settings, *, db: Database | None = None, bus: EventBus | None = None) -> None:
        parts = build_system(settings, db=db, bus=bus)
        self.parts = parts
        self.settings = settings
        self.db = parts.db
        self.jobs = parts.jobs
        self.hooks = parts.hooks
        self.frames = parts.frames
        self.privacy = parts.privacy
        self.consent = parts.consent
        self.catalogue = parts.catalogue
        self.registry = parts.registry
        self.serving = parts.serving
        self.routing = parts.routing
        self.memory = parts.memory
        self.notes = parts.notes
        self.asks = parts.asks
        self.labels = parts.labels
        self.humans = parts.humans
        self.gold = parts.gold
        self.deletion = parts.deletion
        self.speech = parts.speech
        self.bus = parts.bus
        self.exports = parts.exports

    # -- set-up -------------------------------------------------------------------------------------------

    def migrate(self) -> None:
        self.db.migrate()
        self.catalogue.reload()

    def warm(self) -> None:
        """Loads what the first ask needs (models, examples, head, router), so it is as fast as the rest."""
        self.serving.model  # noqa: B018 - loads embedder, examples and head
        self.routing.route("what is this?", True)  # the intent router (its ONNX export on a first run)
        self.speech.warm()  # Whisper, for the first voice ask

    def listen(self) -> None:
        """Starts hearing the other workers' events (the server does at start-up; a CLI command that only
        publishes need not)."""
        self.bus.start()

    def close(self) -> None:
        self.bus.close()
        self.serving.save_cache()
        self.jobs.close()

    # -- models -------------------------------------------------------------------------------------------

    @property
    def embedder(self) -> OnnxImageEmbedder:
        return self.serving.embedder

    @property
    def embedding_cache(self) -> EmbeddingCache:
        return self.serving.embedding_cache

    @property
    def identify_model(self) -> IdentifyModel:
        return self.serving.model

    @property
    def model_version(self) -> str:
        return self.serving.model_version

    @property
    def policy(self) -> EscalationPolicy:
        return self.serving.policy

    @policy.setter
    def policy(self, policy: EscalationPolicy) -> None:
        self.serving.policy = policy

    @property
    def reader(self) -> TextReader:
        return shared_reader()

    def build_identify(self, progress: ProgressFn | None = None) -> IdentifyModel:
        return self.serving.build(progress)

    def labelled_images(self) -> tuple[list[Path], list[str], list[str]]:
        data = self.serving.labelled_set()
        return data.paths, data.labels, data.keys

    def activate_version(self, version_id: str) -> None:
        self.serving.activate(version_id)

    def sync_serving_version(self, *, force: bool = False) -> None:
        self.serving.sync(force=force)

    def record_audit_verdict(self, ask_id: str, label: str | None) -> AuditVerdict | None:
        return self.serving.record_audit_verdict(ask_id, label)

    # -- skills -------------------------------------------------------------------------------------------

    def skills(self) -> dict[str, Skill]:
        return self.parts.skill_set()

    def register_skill(self, skill: Skill) -> None:
        self.skills()[skill.name] = skill

    def route(self, question: str, has_frame: bool) -> str | None:
        return self.routing.route(question, has_frame)

    def correct_route(self, question: str, skill: str | None) -> None:
        self.routing.correct(question, skill)

    # -- catalogue ----------------------------------------------------------------------------------------

    def find_item(self, name: str) -> CatalogItem | None:
        return self.catalogue.find(name)

    def canonical_label(self, value: str) -> str:
        return self.catalogue.canonical_label(value)

    def list_items(self) -> list[CatalogItem]:
        return self.catalogue.items()

    def get_item(self, item_id: str) -> CatalogItem:
        return self.catalogue.get(item_id)

    def upsert_items(self, items: list[CatalogItem]) -> int:
        return self.catalogue.upsert(items)

    def delete_item(self, item_id: str) -> None:
        self.catalogue.delete(item_id)

    def import_grocery(self, root: Path, *, splits: tuple[str, ...] = ("train",)) -> tuple[int, int]:
        return self.catalogue.import_grocery(root, splits=splits)

    def import_labelled_images(self, images: list[LabelledImage], *, source: str) -> int:
        return self.catalogue.import_labelled_images(images, source=source)

    # -- asks and labels ----------------------------------------------------------------------------------

    def ask(self, question: str, image: bytes | None, *, device_id: str = "anonymous",
            idempotency_key: idempotency.Key | None = None, skill: str | None = None,
            request: idempotency.Request | None = None, after: After | None = None) -> AskRecord:
        return self.asks.ask(question, image, device_id=device_id, idempotency_key=idempotency_key, skill=skill,
                             request=request, after=after)

    def replayed(self, request: idempotency.Request) -> AskRecord | None:
        """The ask already stored for a keyed request (a resent voice ask), else None."""
        return self.asks.replayed(request)

    def get_ask(self, ask_id: str) -> AskRecord:
        return self.asks.get(ask_id)

    def list_asks(self, *, device_id: str | None = None, outcome: str | None = None,
                  limit: int = 50) -> list[AskRecord]:
        return self.asks.recent(device_id=device_id, outcome=outcome, limit=limit)

    def add_label(self, ask_id: str, value: str, *, source: str, author: str = "",
                  idempotency_key: idempotency.Key | None = None) -> AskRecord:
        return self.labels.add(ask_id, value, source=source, author=author, idempotency_key=idempotency_key)

    def frame_bytes(self, sha: str) -> bytes:
        """The stored (redacted) frame; the redaction passes run first if the worker has not got to them."""
        return self.privacy.redacted_bytes(sha)

    def stats(self) -> dict[str, Any]:
        return self.asks.stats()
