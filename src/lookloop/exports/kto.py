"""KTO-style records (prompt, completion, label) for fine-tuning a language or vision model.

Each labelled or judged episode gives binary desirability signals:

- the AI's answer, marked ``True`` when it matches the truth and ``False`` when it does not;
- the truth itself (a human's or the wearer's correction), marked ``True``, when the AI was wrong;
- without any truth, the wearer's verdict ("right"/"wrong", or a quick re-ask counted as "wrong") marks the
  AI's answer alone.

The truth is the latest label, or else the latest correction the wearer typed. Completions are phrased the
way the system speaks, so desirable and undesirable ones differ in content, not in style, and a desirable one
always answers the question asked:

- identify and price: the product line of the corrected product, with its name and price from the catalogue
  (a price ask whose product has no price in the catalogue gives no desirable completion);
- read and translate: the corrected text;
- any other skill: a helper's answer, but never the wearer's correction (a correction of "take notes" or
  "what colour is it?" is a remark about the answer, not an answer to the question).
"""

from __future__ import annotations

import datetime as dt
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from lookloop.domain import same_label
from lookloop.exports.episodes import Episode, ExportSource, load_episodes
from lookloop.exports.output import ExportResult, prepare_file, write_frames, written_file
from lookloop.models.embcache import ProgressFn
from lookloop.skills.identify import product_line
from lookloop.skills.price import price_text


@dataclass(frozen=True)
class KtoRecord:
    prompt: str
    completion: str
    label: bool
    ask_id: str
    frame_sha: str | None
    skill: str
    signal: str  # where the judgement came from: a label source, "feedback" or "implicit"
    model_version: str

    def to_json(self) -> dict[str, Any]:
        return {
            "prompt": self.prompt, "completion": self.completion, "label": self.label, "ask_id": self.ask_id,
            "frame_sha": self.frame_sha, "skill": self.skill, "signal": self.signal,
            "model_version": self.model_version,
        }


PRODUCT_SKILLS = frozenset({"identify", "price"})
TEXT_SKILLS = frozenset({"read", "translate"})
CORRECTION_SOURCES = frozenset({"wearer", "feedback"})  # the wearer's own correction, as a label or as typed


def _phrase(system: ExportSource, ep: Episode, label: str) -> str | None:
    """``label`` as the system says it in answer to this ask's question; None when it does not answer it."""
    if ep.skill == "identify":
        return product_line(system.find_item(label), label)
    if ep.skill == "price":
        item = system.find_item(label)
        return price_text(item) if item is not None and item.price is not None else None
    return label


def _desirable(system: ExportSource, ep: Episode, truth: str, signal: str) -> str | None:
    """The desirable completion the truth gives, if any (see the module's notes)."""
    if ep.skill not in PRODUCT_SKILLS | TEXT_SKILLS and signal in CORRECTION_SOURCES:
        return None
    return _phrase(system, ep, truth)


def _ai_completion(system: ExportSource, ep: Episode) -> str:
    # An escalated answer's text is a hedge ("Not sure — maybe …"); judge the guess it put forward instead.
    if ep.skill in PRODUCT_SKILLS and ep.ai_label:
        return _phrase(system, ep, ep.ai_label) or ep.answer_text
    return ep.answer_text


def records_for(system: ExportSource, ep: Episode) -> list[KtoRecord]:
    """The KTO records one episode gives (none when nobody judged it)."""
    truth: str | None = None
    signal = ""
    if ep.label is not None:
        truth, signal = ep.label.value, ep.label.source
    else:
        corrections = [f for f in ep.feedback if f.verdict == "wrong" and f.correction and f.correction.strip()]
        if corrections:
            truth, signal = str(corrections[-1].correction).strip(), "feedback"
    ai = _ai_completion(system, ep)

    def rec(completion: str, label: bool, why: str) -> KtoRecord:
        return KtoRecord(ep.question, completion, label, ep.ask_id, ep.frame_sha, ep.skill, why, ep.model_version)

    if truth is not None:
        right = same_label(ep.ai_label, truth)
        out = [rec(ai, right, signal)] if ai else []
        desirable = None if right else _desirable(system, ep, truth, signal)
        if desirable:
            out.append(rec(desirable, True, signal))
        return out
    if not ai:
        return []
    # No truth: the latest explicit verdict, else the latest implicit one.
    verdicts = [f for f in ep.feedback if not f.implicit] or list(ep.feedback)
    if not verdicts:
        return []
    last = verdicts[-1]
    return [rec(ai, last.verdict == "right", "implicit" if last.implicit else "feedback")]


def export_kto(
    system: ExportSource,
    out: Path,
    *,
    since: dt.datetime | None = None,
    until: dt.datetime | None = None,
    frames: bool = False,
    force: bool = False,
    progress: ProgressFn | None = None,
) -> ExportResult:
    """Writes KTO records as JSONL; with ``frames`` each record also names its image file."""
    prepare_file(out, force=force)
    episodes = [e for e in load_episodes(system, since=since, until=until) if e.labels or e.feedback]
    records = [(ep, r) for ep in episodes for r in records_for(system, ep)]
    files = (write_frames(system, episodes, out.parent / f"{out.stem}_frames", out.parent, progress)
             if frames else {})
    with written_file(out) as tmp, tmp.open("w", encoding="utf-8") as fh:
        for n, (ep, r) in enumerate(records):
            if progress:
                progress("writing records", n, len(records))
            row = r.to_json()
            if frames:
                row["image"] = files.get(ep.ask_id)
            fh.write(json.dumps(row, ensure_ascii=False) + "\n")
    return ExportResult(out, len(records), {
        "desirable": sum(1 for _, r in records if r.label),
        "undesirable": sum(1 for _, r in records if not r.label),
        "episodes": len({ep.ask_id for ep, _ in records}),
    })
