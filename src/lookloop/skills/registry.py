"""The default skill set, built from ``SkillDeps``. Skill names equal the intent router's intents."""

from __future__ import annotations

from typing import Any

from lookloop.config import Settings
from lookloop.domain import Ask, Decision, Prediction, display
from lookloop.models.backends import backend_status
from lookloop.skills.base import HandToHuman, Skill, SkillDeps
from lookloop.skills.colour import ColourSkill
from lookloop.skills.describe import DescribeSkill, FaceCounter
from lookloop.skills.identify import IdentifySkill
from lookloop.skills.memory import RecallSkill, RememberSkill
from lookloop.skills.notes import NoteService, NotesSkill
from lookloop.skills.price import BarcodeReader, PriceSkill
from lookloop.skills.read import ReadSkill
from lookloop.skills.router import SKILL_INTENTS
from lookloop.skills.translate import TranslateSkill

SKILL_NAMES = SKILL_INTENTS  # one list: a skill is named after the intent the router sends to it


def default_skills(deps: SkillDeps, notes: NoteService) -> list[Skill]:
    """Every built-in skill, plus the hand-over to a human; heavy models load on first use."""
    identify = IdentifySkill(deps.image_embedder, deps.classifier, deps.find_item)

    def predict(ask: Ask) -> tuple[Prediction, str]:
        return identify.predict(ask), deps.model_version()

    def embed_image(rgb: Any) -> tuple[Any, str]:
        emb = deps.image_embedder()
        return emb.embed([rgb])[0], emb.version

    def describe_for_memory(ask: Ask) -> str:
        parts = []
        pred, _ = predict(ask)
        if deps.decide(pred.probs).decision == Decision.ANSWER:
            parts.append(f"near {display(pred.top[0])}")
        assert ask.frame is not None
        lines = [ln.text for ln in deps.reader().read(ask.frame.rgb)][:2]
        if lines:
            parts.append("text: " + " / ".join(lines)[:60])
        return "; ".join(parts)

    try:
        barcodes: BarcodeReader | None = BarcodeReader()
    except RuntimeError:  # an OpenCV build without the barcode module: price by looks only
        barcodes = None
    return [
        identify,
        ReadSkill(deps.reader()),
        PriceSkill(predict=predict, decide=deps.decide, find_item=deps.find_item, items=deps.list_items,
                   barcodes=barcodes),
        ColourSkill(),
        RememberSkill(deps.memory, embed_image=embed_image, describe=describe_for_memory,
                      consent=deps.memory_allowed),
        RecallSkill(deps.memory, text_embedder=deps.text_embedder, embed_image=embed_image,
                    consent=deps.memory_allowed),
        NotesSkill(notes),
        TranslateSkill(deps.chat, reader=deps.reader),
        DescribeSkill(vision=deps.vision, predict=predict, decide=deps.decide, reader=deps.reader,
                      faces=FaceCounter()),
        HandToHuman(),
    ]


def capabilities(settings: Settings, skill_names: list[str]) -> dict[str, Any]:
    """Which backends are configured and what each skill does without them (for /v1/capabilities)."""
    status = {s.role: s for s in backend_status(settings)}
    chat, vis = status["chat"], status["vision"]
    skills: list[dict[str, Any]] = []
    for name in sorted(skill_names):
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
