"""Gold items from labelled photos: the known answers a new reviewer's first answers are measured against."""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable

from lookloop.catalog import GroceryDataset, LabelledImage
from lookloop.config import Settings
from lookloop.domain import Answer, Ask, Consent, ai_label
from lookloop.humans.queue import QueueItem, ReviewQueue
from lookloop.imaging import decode_image
from lookloop.loop.asking import FrameKeeper
from lookloop.store.frames import frame_id

GOLD_OWNER = "gold"  # whose uploads gold frames count as: no wearer's (a wearer's deletion never reaches them)
GOLD_QUESTION = "what is this?"
# Kept for review only: no original, never training (a gold answer is no label), no memory.
GOLD_CONSENT = Consent(store_frames=True, keep_originals=False, human_review=True, training_use=False, memory=False)


class GoldPhotos:
    """Makes gold items of labelled photos: each frame stored redacted like any upload and shown with the AI's
    guess and candidates beside it, so it looks like any item in the queue."""

    def __init__(self, settings: Settings, queue: ReviewQueue, frames: FrameKeeper,
                 guess: Callable[[Ask], Answer]) -> None:
        self.settings = settings
        self.queue = queue
        self.frames = frames
        self.guess = guess

    def add(self, data: bytes, label: str, *, question: str = GOLD_QUESTION) -> QueueItem | None:
        """A gold item showing the photo ``data`` whose known answer is ``label``; None when that photo is a gold
        item already (adding the same photos again adds nothing)."""
        frame = decode_image(data, max_bytes=self.settings.max_image_bytes, max_pixels=self.settings.max_image_pixels)
        fid = frame_id(GOLD_OWNER, frame.data)
        if self.queue.is_gold_frame(fid):
            return None
        answer = self.guess(Ask(question=question, frame=frame, device_id=GOLD_OWNER))
        sha = self.frames.store(frame, frame_id=fid, wearer_id=GOLD_OWNER, consent=GOLD_CONSENT, needs_human=True)
        return self.queue.add_gold(
            question=question, frame_sha=sha, answer=label, ai_answer=answer.text,
            ai_label=ai_label(answer.result, answer.text), confidence=answer.confidence,
            candidates=[(c.label, c.score) for c in answer.candidates], skill=answer.skill,
        )


def gold_photos(dataset: GroceryDataset, split: str, count: int, known: Callable[[str], bool]) -> list[LabelledImage]:
    """``count`` photos of ``split`` for gold items, one product after another: products the catalogue knows
    (``known``) with no look-alike variety (alone in their coarse class, so a careful person tells them apart),
    spread over the list; all known products when there are none such."""
    coarse = Counter(c.coarse_name for c in dataset.classes)
    names = [c.name for c in dataset.classes if known(c.name)]
    distinct = [c.name for c in dataset.classes if known(c.name) and coarse[c.coarse_name] == 1]
    names = distinct or names
    by_class: dict[str, list[LabelledImage]] = {n: [] for n in names}
    for image in dataset.split(split):
        if image.label in by_class:
            by_class[image.label].append(image)
    names = [n for n in names if by_class[n]]
    if not names or count <= 0:
        return []
    step = max(1, len(names) // count)
    order = names[::step] + [n for n in names if n not in names[::step]]
    out: list[LabelledImage] = []
    for round_ in range(max(len(v) for v in by_class.values())):
        for name in order:
            if len(out) == count:
                return out
            if round_ < len(by_class[name]):
                out.append(by_class[name][round_])
    return out
