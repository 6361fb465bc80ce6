"""identify: "what is this?" → the catalogue product in view, with its price."""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

from lookloop.domain import Answer, Ask, Candidate, CatalogItem, Prediction, display
from lookloop.errors import BadInput
from lookloop.models.embedder import ImageEmbedder
from lookloop.skills.base import Classifier


def product_line(item: CatalogItem | None, label: str) -> str:
    name = item.display_name if item else display(label)
    if item is not None and item.price is not None:
        return f"{name} — {item.price:.2f} {item.currency}"
    return name


class IdentifySkill:
    name = "identify"
    needs_frame = True
    calibrated = True

    def __init__(
        self,
        embedder: Callable[[], ImageEmbedder],
        model: Callable[[], Classifier],
        catalog: Callable[[str], CatalogItem | None],
    ) -> None:
        self._embedder = embedder  # a call: a promotion may swap the backbone
        self._model = model
        self._catalog = catalog

    @property
    def frame_side(self) -> int:
        """The largest frame side worth decoding: twice the model's input, so the resize to it stays sharp."""
        return 2 * self._embedder().image_size

    def embed(self, ask: Ask) -> np.ndarray:
        if ask.frame is None:
            raise BadInput("identify needs an image")
        return self._embedder().embed([ask.frame.rgb])

    def predict(self, ask: Ask, q: np.ndarray | None = None) -> Prediction:
        return self._model().predict(self.embed(ask) if q is None else q)[0]

    def answer_for(self, pred: Prediction, model_version: str) -> Answer:
        label, conf = pred.top
        item = self._catalog(label)
        return Answer(
            text=product_line(item, label),
            skill=self.name,
            confidence=conf,
            model_version=model_version,
            result={
                "label": label,
                "name": item.display_name if item else display(label),
                "price": item.price if item else None,
                "currency": item.currency if item else None,
                "coarse_class": item.coarse_class if item else None,
                "nearest_similarity": round(pred.nearest_similarity, 4),
                "margin": round(pred.margin, 4),
            },
            candidates=tuple(Candidate(lab, round(p, 4)) for lab, p in pred.top_k(5)),
        )

    def run(self, ask: Ask) -> Answer:
        model = self._model()
        return self.answer_for(self.predict(ask), f"{self._embedder().version}+{model.head_version}")
