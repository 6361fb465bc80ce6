"""The skill protocol, and what the built-in skills need from the running system (``SkillDeps``)."""

from __future__ import annotations

from typing import Protocol, runtime_checkable

import numpy as np

from lookloop.domain import Answer, Ask, CatalogItem, Decision, PolicyDecision, Prediction
from lookloop.memory.store import MemoryStore
from lookloop.models.backends import ChatBackend
from lookloop.models.embedder import ImageEmbedder
from lookloop.models.ocr import TextReader
from lookloop.models.text import TextEmbedder


@runtime_checkable
class Skill(Protocol):
    """One capability of the glasses.

    ``calibrated`` skills give confidences that an escalation policy may threshold; the others answer as they
    are (or escalate on their own by returning ``Decision.ESCALATE``).
    """

    name: str
    needs_frame: bool
    calibrated: bool

    def run(self, ask: Ask) -> Answer: ...


class Classifier(Protocol):
    """The identify model as the skills see it: embeddings in, predictions out."""

    head_version: str

    def predict(self, q: np.ndarray) -> list[Prediction]: ...


class SkillDeps(Protocol):
    """What the built-in skills need from the running system; the composition root (``lookloop.system``)
    provides it, and tests pass fakes. Models are returned by calls because a promotion swaps them."""

    def image_embedder(self) -> ImageEmbedder: ...

    def classifier(self) -> Classifier: ...

    def model_version(self) -> str: ...

    def decide(self, probs: np.ndarray) -> PolicyDecision: ...

    def find_item(self, name: str) -> CatalogItem | None: ...

    def list_items(self) -> list[CatalogItem]: ...

    def reader(self) -> TextReader: ...

    def text_embedder(self) -> TextEmbedder: ...

    def chat(self) -> ChatBackend: ...

    def vision(self) -> ChatBackend: ...

    def memory_allowed(self, device_id: str) -> bool: ...

    @property
    def memory(self) -> MemoryStore: ...


class HandToHuman:
    """Out-of-scope asks: no skill fits, so a person answers rather than a wrong skill guessing."""

    name = "human"
    needs_frame = False
    calibrated = False

    def run(self, ask: Ask) -> Answer:
        return Answer(
            text="I can't answer that myself — asking a helper.",
            skill=self.name,
            confidence=0.0,
            decision=Decision.ESCALATE,
            model_version="router",
            result={"reason": "out_of_scope"},
        )
