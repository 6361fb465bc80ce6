"""Personal memory: a wearer's own corrections change that wearer's answers at once, and nobody else's.

Each wearer has a small example memory of the frames they corrected. An identify ask of theirs is pulled towards
their label when the frame is a near-duplicate of one they corrected, the way the shared example memory pulls the
head (``IdentifyModel``). Other wearers never consult it: their answers change only once a trusted review teaches
the shared model.
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass, field
from typing import Protocol

import numpy as np
from sqlalchemy import func, select

from lookloop.domain import ANONYMOUS, Consent, Prediction
from lookloop.loop.learner import ExampleMemory
from lookloop.loop.serving import ServingModel
from lookloop.store.db import Database
from lookloop.store.tables import LabelRow


class WearerLookup(Protocol):
    """(wearer id, consent) of a device (``lookloop.privacy.consent.ConsentService``)."""

    def lookup(self, device_id: str) -> tuple[str, Consent]: ...


@dataclass
class _Mine:
    """One wearer's memory, for one embedder, as of the labels it was loaded from."""

    embedder: str
    memory: ExampleMemory
    signature: tuple[int, str]
    checked: float = field(default_factory=time.monotonic)


class PersonalMemory:
    """Each wearer's corrected frames, consulted for that wearer's identify asks only."""

    def __init__(self, db: Database, serving: ServingModel, wearers: WearerLookup, *, refresh_s: float = 2.0) -> None:
        self.db = db
        self.serving = serving
        self.wearers = wearers
        self.refresh_s = refresh_s  # how often a wearer's memory checks for labels given through another worker
        self._mine: dict[str, _Mine] = {}
        self._lock = threading.RLock()

    def wearer_of(self, device_id: str) -> str | None:
        """The wearer a device belongs to; None for anonymous asks (they have no memory of their own)."""
        if not device_id or device_id == ANONYMOUS:
            return None
        wearer, _ = self.wearers.lookup(device_id)
        return None if wearer == ANONYMOUS else wearer

    # -- learning -----------------------------------------------------------------------------------------

    def learn(self, wearer_id: str, frame_sha: str, label: str, *, key: str) -> None:
        """The wearer's correction: their next ask about a near-duplicate gets ``label``."""
        mine = self._memory(wearer_id)
        mine.memory.add(self.serving.frame_embedding(frame_sha)[None, :], [label], [key])
        with self._lock:
            mine.signature = self._signature(wearer_id)  # what this worker stored is in already

    def _signature(self, wearer_id: str) -> tuple[int, str]:
        with self.db.session() as s:
            n, last = s.execute(select(func.count(), func.max(LabelRow.created_at)).where(
                LabelRow.wearer_id == wearer_id, LabelRow.source == "wearer", LabelRow.skill == "identify")).one()
        return int(n or 0), str(last or "")

    def _memory(self, wearer_id: str) -> _Mine:
        """The wearer's memory, (re)loaded from their labels when another worker or a deletion changed them."""
        embedder = self.serving.embedder.version
        with self._lock:
            mine = self._mine.get(wearer_id)
            now = time.monotonic()
            if mine is not None and mine.embedder == embedder and now - mine.checked < self.refresh_s:
                return mine
            signature = self._signature(wearer_id)
            if mine is not None and mine.embedder == embedder and mine.signature == signature:
                mine.checked = now
                return mine
            mine = _Mine(embedder, self._load(wearer_id), signature)
            self._mine[wearer_id] = mine
            return mine

    def _load(self, wearer_id: str) -> ExampleMemory:
        with self.db.session() as s:
            rows = s.execute(select(LabelRow.ask_id, LabelRow.frame_sha, LabelRow.value).where(
                LabelRow.wearer_id == wearer_id, LabelRow.source == "wearer", LabelRow.skill == "identify",
                LabelRow.frame_sha.is_not(None)).order_by(LabelRow.created_at, LabelRow.id)).all()
        latest = {f"ask:{ask_id}": (str(sha), str(value)) for ask_id, sha, value in rows}  # the newest answer wins
        memory = ExampleMemory(self.serving.embedder.dim)
        for key, (sha, value) in latest.items():
            try:
                row = self.serving.frame_embedding(sha)
            except Exception:  # noqa: BLE001 - a frame gone (deleted, released) is simply not remembered
                continue
            memory.add(row[None, :], [value], [key])
        return memory

    def forget_wearer(self, wearer_id: str) -> None:
        with self._lock:
            self._mine.pop(wearer_id, None)

    # -- answering ----------------------------------------------------------------------------------------

    def adjust(self, device_id: str, q: np.ndarray, pred: Prediction) -> Prediction:
        """``pred`` for the asking wearer: pulled towards their own label of a near-duplicate frame."""
        wearer = self.wearer_of(device_id)
        if wearer is None:
            return pred
        mine = self._memory(wearer)
        if len(mine.memory) == 0:
            return pred
        idx, sims = mine.memory.nearest(np.asarray(q, dtype=np.float32).reshape(1, -1))
        if int(idx[0]) < 0:
            return pred
        model = self.serving.model
        s = float(sims[0])
        w = float(np.clip((s - model.dup_low) / (model.dup_high - model.dup_low), 0.0, 1.0))
        if w <= 0:
            return pred
        label = mine.memory.label_at(int(idx[0]))
        labels = list(pred.labels)
        probs = np.asarray(pred.probs, dtype=np.float64)
        if label not in labels:  # a name of the wearer's own that the shared model does not know
            labels.append(label)
            probs = np.append(probs, 0.0)
        onehot = np.zeros_like(probs)
        onehot[labels.index(label)] = 1.0
        return Prediction(labels=labels, probs=(1 - w) * probs + w * onehot, nearest_label=label,
                          nearest_similarity=max(s, pred.nearest_similarity))
