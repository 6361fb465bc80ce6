"""Episodes written straight into the tables (real photos as frames), for metrics, export and dashboard tests.

Writing rows directly keeps these tests free of model loading; the rows are what the service itself writes.
"""

from __future__ import annotations

import datetime as dt
import random
from dataclasses import dataclass, field
from typing import Any

from lookloop.catalog import LabelledImage
from lookloop.domain import utcnow
from lookloop.store.tables import AskRow, LabelRow


@dataclass
class Seeded:
    """What was written, so tests compute their expectations from it."""

    asks: list[dict[str, Any]] = field(default_factory=list)

    def by_id(self) -> dict[str, dict[str, Any]]:
        return {a["id"]: a for a in self.asks}


def add_episode(
    system: Any,
    *,
    image: LabelledImage | None,
    truth: str,
    guess: str,
    decision: str,
    created_at: dt.datetime,
    device_id: str = "dev-a",
    label_source: str | None = None,
    label_value: str | None = None,
    label_after_s: float = 0.0,
    author: str = "",
    feedback: tuple[str, str | None, bool] | None = None,  # verdict, correction, implicit
    model_version: str = "lite0+head-test",
    question: str = "what is this?",
    skill: str = "identify",
    answer_text: str | None = None,
    result: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """One ask as the service stores it, with an optional label and wearer feedback."""
    sha = system.frames.put(image.path.read_bytes()) if image is not None else None
    confidence = 0.9 if decision == "answer" else 0.3
    row = AskRow(
        device_id=device_id, question=question, frame_sha=sha, frame_media_type="image/jpeg" if sha else None,
        frame_width=640 if sha else None, frame_height=480 if sha else None, created_at=created_at,
        skill=skill, answer_text=answer_text or (
            guess if decision == "answer" else f"Not sure — maybe {guess}; asking a helper."),
        confidence=confidence, decision=decision, policy="fixed", model_version=model_version,
        result={"label": guess} if result is None else result, candidates=[[guess, confidence], [truth, 0.1]],
        outcome="answered" if decision == "answer" else "escalated", latency_ms=40.0,
        answered_at=created_at if decision == "answer" else None,
    )
    with system.db.session() as s:
        s.add(row)
        s.flush()
        ask_id = row.id
        if label_source is not None:
            at = created_at + dt.timedelta(seconds=label_after_s)
            s.add(LabelRow(ask_id=ask_id, frame_sha=sha, device_id=device_id, skill=skill,
                           value=label_value or truth, source=label_source, author=author, created_at=at))
            r = s.get(AskRow, ask_id)
            assert r is not None
            r.outcome = "human_answered" if label_source != "wearer" else (
                "confirmed" if (label_value or truth) == guess else "corrected")
            r.final_answer = label_value or truth
            r.answered_at = at
        if feedback is not None:
            from lookloop.humans.tables import FeedbackRow

            verdict, correction, implicit = feedback
            s.add(FeedbackRow(ask_id=ask_id, device_id=device_id, verdict=verdict, correction=correction,
                              implicit=implicit, created_at=created_at + dt.timedelta(seconds=5)))
    return {"id": ask_id, "truth": truth, "guess": guess, "decision": decision, "created_at": created_at,
            "label_source": label_source, "label_value": label_value or (truth if label_source else None),
            "label_after_s": label_after_s, "frame_sha": sha, "device_id": device_id, "feedback": feedback}


def seed_history(
    system: Any, images: list[LabelledImage], *, days: int = 10, per_day: int = 14, seed: int = 7,
    now: dt.datetime | None = None,
) -> Seeded:
    """A plausible fortnight: the AI starts unsure and wrong, humans answer, it gets better every day."""
    rng = random.Random(seed)
    now = now or utcnow()
    classes = sorted({i.label for i in images})
    out = Seeded()
    for day in range(days):
        skill_level = 0.45 + 0.5 * day / max(1, days - 1)  # share the AI gets right and is sure of
        for k in range(per_day):
            img = images[(day * per_day + k) % len(images)]
            at = now - dt.timedelta(days=days - day) + dt.timedelta(minutes=37 * k + rng.randint(0, 20))
            knows = rng.random() < skill_level
            # Sure answers are right about 95% of the time; unsure guesses only now and then.
            right = rng.random() < (0.95 if knows else 0.3)
            guess = img.label if right else rng.choice([c for c in classes if c != img.label])
            decision = "answer" if knows else "escalate"
            reviewer = rng.choice(["ana", "bo", "chen"])
            if decision == "escalate":
                wait = rng.uniform(4, 25) * (1.4 - day / days)
                out.asks.append(add_episode(system, image=img, truth=img.label, guess=guess, decision=decision,
                                            created_at=at, label_source="human", label_after_s=wait,
                                            author=reviewer))
            elif rng.random() < 0.35:
                right = guess == img.label
                out.asks.append(add_episode(
                    system, image=img, truth=img.label, guess=guess, decision=decision, created_at=at,
                    label_source="wearer", label_after_s=5,
                    feedback=("right", None, False) if right else ("wrong", img.label, False)))
            else:
                out.asks.append(add_episode(system, image=img, truth=img.label, guess=guess, decision=decision,
                                            created_at=at))
    return out
