"""The default skill set, wired to one ``Lookloop`` system. Skill names equal the intent router's intents."""

from __future__ import annotations

import threading
import weakref
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

from lookloop.domain import Ask, Decision
from lookloop.loop.learner import Prediction
from lookloop.loop.policies import PolicyDecision
from lookloop.memory.store import MemoryStore, NoteStore
from lookloop.models.backends import ChatBackend, backend_status, chat_backend, vision_backend
from lookloop.models.text import TextEmbedder, default_text_embedder
from lookloop.skills.base import Skill
from lookloop.skills.colour import ColourSkill
from lookloop.skills.describe import DescribeSkill, FaceCounter
from lookloop.skills.identify import IdentifySkill, display
from lookloop.skills.memory import RecallSkill, RememberSkill
from lookloop.skills.notes import ExtractiveSummariser, NoteService, NotesSkill
from lookloop.skills.price import BarcodeReader, PriceSkill
from lookloop.skills.read import ReadSkill
from lookloop.skills.translate import TranslateSkill

if TYPE_CHECKING:
    from lookloop.service import Lookloop

SKILL_NAMES = ("identify", "price", "read", "translate", "remember", "recall", "notes", "colour", "describe")


@dataclass
class SkillServices:
    """The stores behind the skills, shared with the HTTP endpoints (notes, memory)."""

    memory: MemoryStore
    notes: NoteService


_services: weakref.WeakKeyDictionary[Any, SkillServices] = weakref.WeakKeyDictionary()
_services_lock = threading.Lock()


def services(system: Lookloop) -> SkillServices:
    with _services_lock:
        found = _services.get(system)
        if found is None:
            found = SkillServices(
                memory=MemoryStore(system.db),
                notes=NoteService(
                    NoteStore(system.db),
                    ExtractiveSummariser(lambda: _text_embedder(system)),
                    chat=lambda: chat_backend(system.settings),
                ),
            )
            _services[system] = found
        return found


def _text_embedder(system: Lookloop) -> TextEmbedder:
    return default_text_embedder(system.settings.model_cache_dir)


def memory_consent(system: Lookloop) -> Any:
    """A device → bool check of the wearer's memory consent (allowed when the privacy part is absent)."""

    def check(device_id: str) -> bool:
        try:
            from lookloop.privacy.consent import ConsentService
        except ImportError:
            return True
        return bool(ConsentService(system.db).for_device(device_id).memory)

    return check


def default_skills(system: Lookloop) -> list[Skill]:
    """Every built-in skill; heavy models load on first use, backends are read from the settings per ask."""
    identify = IdentifySkill(system.embedder, lambda: system.identify_model, system.find_item)

    def predict(ask: Ask) -> tuple[Prediction, str]:
        return identify.predict(ask), system.model_version

    def decide(probs: np.ndarray) -> PolicyDecision:
        return system.policy.decide(probs)

    def embed_image(rgb: np.ndarray) -> tuple[np.ndarray, str]:
        emb = system.embedder
        return emb.embed([rgb])[0], emb.version

    def describe_for_memory(ask: Ask) -> str:
        parts = []
        pred, _ = predict(ask)
        if decide(pred.probs).decision == Decision.ANSWER:
            parts.append(f"near {display(pred.top[0])}")
        assert ask.frame is not None
        lines = [ln.text for ln in system.reader.read(ask.frame.rgb)][:2]
        if lines:
            parts.append("text: " + " / ".join(lines)[:60])
        return "; ".join(parts)

    def chat() -> ChatBackend:
        return chat_backend(system.settings)

    def vision() -> ChatBackend:
        return vision_backend(system.settings)

    svc = services(system)
    consent = memory_consent(system)
    try:
        barcodes: BarcodeReader | None = BarcodeReader()
    except RuntimeError:  # an OpenCV build without the barcode module: price by looks only
        barcodes = None
    return [
        identify,
        ReadSkill(system.reader),
        PriceSkill(predict=predict, decide=decide, find_item=system.find_item, items=system.list_items,
                   barcodes=barcodes),
        ColourSkill(),
        RememberSkill(svc.memory, embed_image=embed_image, describe=describe_for_memory, consent=consent),
        RecallSkill(svc.memory, text_embedder=lambda: _text_embedder(system), embed_image=embed_image,
                    consent=consent),
        NotesSkill(svc.notes),
        TranslateSkill(chat, reader=lambda: system.reader),
        DescribeSkill(vision=vision, predict=predict, decide=decide, reader=lambda: system.reader,
                      faces=FaceCounter()),
    ]


def capabilities(system: Lookloop) -> dict[str, Any]:
    """Which backends are configured and what each skill does without them (for /v1/capabilities)."""
    status = {s.role: s for s in backend_status(system.settings)}
    chat, vis = status["chat"], status["vision"]
    skills: list[dict[str, Any]] = []
    for name in sorted(system.skills()):
        entry: dict[str, Any] = {"name": name, "available": True, "fallback": None, "detail": "offline model"}
        if name == "translate":
            entry.update(
                {"detail": f"chat backend ({chat.model})", "fallback": None}
                if chat.configured
                else {"detail": "translation: not configured — asks go to a human", "fallback": "human"}
            )
        elif name == "describe":
            entry.update(
                {"detail": f"vision backend ({vis.model})"}
                if vis.configured
                else {"detail": "describe: no vision backend — identify, read and a face count, then a human on "
                                "request", "fallback": "local+human"}
            )
        elif name == "notes":
            entry["detail"] = (f"LLM summary ({chat.model})" if chat.configured
                               else "extractive summary (no chat backend configured)")
            entry["fallback"] = None if chat.configured else "extractive"
        elif name in ("remember", "recall"):
            entry["detail"] = "offline; needs a device token and the wearer's memory consent"
        skills.append(entry)
    return {
        "backends": [
            {"role": s.role, "configured": s.configured, "kind": s.kind, "model": s.model, "detail": s.detail}
            for s in status.values()
        ],
        "skills": skills,
    }
