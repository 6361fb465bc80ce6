"""remember / recall: "remember this is where I parked" → later "where did I park?".

A memory keeps the wearer's words, when, the frame's reference and image embedding, and a short description
(what identify and read saw). Recall ranks the wearer's memories by text match and, when a frame comes with
the question, by visual similarity. Both need the wearer's memory consent and a device of their own.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from lookloop.domain import ANONYMOUS, Answer, Ask
from lookloop.memory.store import Memory, MemoryStore, ago
from lookloop.models.text import TextEmbedder
from lookloop.store.frames import frame_id

NO_DEVICE = "Memories need your own glasses: connect with your device token first."
NO_CONSENT = "Memory is off for you. Turn on 'memory' in your privacy settings and ask again."

_REMEMBER = re.compile(
    r"^\s*(?:please\s+|can you\s+|could you\s+)?(?:remember|note|keep in mind|save)\s*(?:that\s+)?[:,]?\s*"
    r"|^\s*(?:请)?(?:记住|记一下|帮我记住)[:：，,]?\s*",
    re.I,
)
_WORD = re.compile(r"[a-z0-9]+|[\u4e00-\u9fff]", re.I)
_STOP = frozenset(
    "a an the i me my mine you your it its this that these those is are was were be been am do did does "
    "where what when which who how to of in on at for with and or please remember recall did put left "
    "我 的 了 是 在 这 那 哪 里 吗 呢".split()
)


def note_of(question: str) -> str:
    """The part of "remember that X" worth keeping: X (the whole question when it has no such prefix)."""
    rest = _REMEMBER.sub("", question, count=1).strip(" .!?。！？")
    return rest or question.strip()


def _stem(word: str) -> str:
    for suffix in ("ing", "ed", "es", "s"):
        if len(word) > len(suffix) + 2 and word.endswith(suffix):
            return word[: -len(suffix)]
    return word


def keywords(text: str) -> set[str]:
    return {_stem(w.lower()) for w in _WORD.findall(text) if w.lower() not in _STOP}


def keyword_overlap(query: str, text: str) -> float:
    q, t = keywords(query), keywords(text)
    return len(q & t) / len(q) if q else 0.0


@dataclass(frozen=True)
class Scored:
    memory: Memory
    score: float
    text_score: float
    visual_score: float | None


class RememberSkill:
    name = "remember"
    needs_frame = False
    calibrated = False

    def __init__(
        self,
        store: MemoryStore,
        *,
        embed_image: Callable[[np.ndarray], tuple[np.ndarray, str]],
        describe: Callable[[Ask], str],
        consent: Callable[[str], bool],
    ) -> None:
        self.store = store
        self._embed = embed_image
        self._describe = describe
        self._consent = consent

    def run(self, ask: Ask) -> Answer:
        refusal = _refusal(ask, self._consent, self.name)
        if refusal is not None:
            return refusal
        note = note_of(ask.question)
        embedding: np.ndarray | None = None
        version = ""
        frame_sha: str | None = None
        description = ""
        if ask.frame is not None:
            # the service stores the frame under this id after the skill has run
            frame_sha = frame_id(ask.device_id, ask.frame.data)
            embedding, version = self._embed(ask.frame.rgb)
            description = self._describe(ask)
        memory = self.store.add(
            device_id=ask.device_id,
            note=note,
            question=ask.question,
            description=description,
            frame_sha=frame_sha,
            embedding=embedding,
            embedder_version=version,
            created_at=ask.created_at,
        )
        text = f"Remembered: {note}." + (" Photo saved." if frame_sha else "")
        return Answer(
            text=text,
            skill=self.name,
            confidence=1.0,
            model_version=version or "text-only",
            result={
                "memory_id": memory.id,
                "note": note,
                "description": description,
                "frame_sha": frame_sha,
                "created_at": memory.created_at.isoformat(),
            },
        )


class RecallSkill:
    name = "recall"
    needs_frame = False
    calibrated = False

    # text decides unless a frame comes along: then what the place looks like counts too
    VISUAL_WEIGHT = 0.5

    def __init__(
        self,
        store: MemoryStore,
        *,
        text_embedder: Callable[[], TextEmbedder],
        embed_image: Callable[[np.ndarray], tuple[np.ndarray, str]],
        consent: Callable[[str], bool],
    ) -> None:
        self.store = store
        self._text = text_embedder
        self._embed = embed_image
        self._consent = consent

    def rank(self, ask: Ask, memories: list[Memory]) -> list[Scored]:
        if not memories:
            return []
        docs = [f"{m.note}. {m.description}".strip() for m in memories]
        emb = self._text()
        vecs = emb.embed([ask.question, *docs])
        cos = np.clip(vecs[1:] @ vecs[0], 0.0, 1.0)
        text_scores = [max(float(c), keyword_overlap(ask.question, d)) for c, d in zip(cos, docs, strict=True)]
        visual: list[float | None] = [None] * len(memories)
        if ask.frame is not None:
            q, version = self._embed(ask.frame.rgb)
            for i, m in enumerate(memories):
                if m.embedding is not None and m.embedder_version == version and m.embedding.shape == q.shape:
                    visual[i] = float(np.clip(m.embedding @ q, 0.0, 1.0))
        out = []
        for m, t, v in zip(memories, text_scores, visual, strict=True):
            score = t if v is None else (1 - self.VISUAL_WEIGHT) * t + self.VISUAL_WEIGHT * v
            out.append(Scored(m, round(score, 4), round(t, 4), None if v is None else round(v, 4)))
        # ties go to the newer memory (the list comes newest first and sort is stable)
        return sorted(out, key=lambda s: -s.score)

    def run(self, ask: Ask) -> Answer:
        refusal = _refusal(ask, self._consent, self.name)
        if refusal is not None:
            return refusal
        ranked = self.rank(ask, self.store.for_device(ask.device_id))
        if not ranked:
            return Answer(
                text="I have no memories for you yet. Say 'remember …' to keep one.",
                skill=self.name,
                confidence=0.0,
                result={"matches": []},
            )
        best = ranked[0]
        m = best.memory
        when = ago(m.created_at, ask.created_at)
        text = f"{when.capitalize()}: {m.note}."
        if m.description:
            text += f" {m.description}."
        if best.score < 0.3:
            text = "Not sure this is it — " + text
        return Answer(
            text=text,
            skill=self.name,
            confidence=best.score,
            model_version=getattr(self._text(), "version", ""),
            result={
                "memory_id": m.id,
                "note": m.note,
                "description": m.description,
                "frame_sha": m.frame_sha,
                "created_at": m.created_at.isoformat(),
                "ago": when,
                "score": best.score,
                "matches": [
                    {
                        "memory_id": s.memory.id,
                        "note": s.memory.note,
                        "score": s.score,
                        "text_score": s.text_score,
                        "visual_score": s.visual_score,
                    }
                    for s in ranked[:3]
                ],
            },
        )


def _refusal(ask: Ask, consent: Callable[[str], bool], skill: str) -> Answer | None:
    if ask.device_id == ANONYMOUS:
        return Answer(text=NO_DEVICE, skill=skill, confidence=1.0, result={"refused": "anonymous"})
    if not consent(ask.device_id):
        return Answer(text=NO_CONSENT, skill=skill, confidence=1.0, result={"refused": "no-consent"})
    return None
