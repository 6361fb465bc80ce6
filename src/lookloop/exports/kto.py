"""KTO-style records (prompt, completion, label) for fine-tuning a language or vision model.

Each labelled or judged episode gives binary desirability signals:

- the AI's answer, marked ``True`` when it matches the truth and ``False`` when it does not;
- the truth itself (a human's or the wearer's correction), marked ``True``, when the AI was wrong;
- without any truth, the wearer's verdict ("right"/"wrong", or a quick re-ask counted as "wrong") marks the
  AI's answer alone.

The truth is the latest label, or else the latest correction the wearer typed. Completions are phrased the
way the system speaks (product name and price for identify), so desirable and undesirable ones differ in
content, not in style.
"""

from __future__ import annotations

import datetime as dt
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from lookloop.domain import same_label
from lookloop.exports.episodes import Episode, ExportSource, load_episodes
from lookloop.exports.output import ExportResult, prepare_file, write_frames
from lookloop.skills.identify import product_line


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


def _phrase(system: ExportSource, ep: Episode, label: str) -> str:
    if ep.skill == "identify":

        return product_line(system.find_item(label), label)
    return label


def _ai_completion(system: ExportSource, ep: Episode) -> str:
    # An escalated answer's text is a hedge ("Not sure — maybe …"); judge the guess it put forward instead.
    if ep.skill == "identify" and ep.ai_label:
        return _phrase(system, ep, ep.ai_label)
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
        if not right:
            out.append(rec(_phrase(system, ep, truth), True, signal))
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
) -> ExportResult:
    """Writes KTO records as JSONL; with ``frames`` each record also names its image file."""
    prepare_file(out, force=force)
    episodes = [e for e in load_episodes(system, since=since, until=until) if e.labels or e.feedback]
    records = [(ep, r) for ep in episodes for r in records_for(system, ep)]
    files = write_frames(system, episodes, out.parent / f"{out.stem}_frames", out.parent) if frames else {}
    tmp = out.with_name(f".{out.name}.tmp")
    with tmp.open("w", encoding="utf-8") as fh:
        for ep, r in records:
            row = r.to_json()
            if frames:
                row["image"] = files.get(ep.ask_id)
            fh.write(json.dumps(row, ensure_ascii=False) + "\n")
    tmp.replace(out)
    return ExportResult(out, len(records), {
        "desirable": sum(1 for _, r in records if r.label),
        "undesirable": sum(1 for _, r in records if not r.label),
        "episodes": len({ep.ask_id for ep, _ in records}),
    })
