"""A Hugging Face ``datasets`` dataset of episodes, saved with ``save_to_disk`` (frames as an Image feature)."""

from __future__ import annotations

import datetime as dt
from pathlib import Path
from typing import Any

from lookloop.exports.episodes import Episode, ExportSource, frame_of, load_episodes
from lookloop.exports.output import ExportResult, prepare_dir, staged_dir
from lookloop.models.embcache import ProgressFn


def features() -> Any:
    from datasets import Features, Image, Value  # slow to import: loaded on first use

    text = Value("string")
    return Features({
        "ask_id": text,
        "wearer": text,
        "created_at": text,
        "question": text,
        "skill": text,
        "image": Image(),
        "answer_text": text,
        "ai_label": text,
        "confidence": Value("float32"),
        "decision": text,
        "candidates": [{"label": text, "score": Value("float32")}],
        "outcome": text,
        "final_answer": text,
        "label": text,
        "label_source": text,
        "label_author": text,
        "label_status": text,
        "ai_correct": Value("bool"),
        "labels": [{"value": text, "source": text, "author": text, "created_at": text, "trust": Value("float32"),
                    "status": text}],
        "feedback": [{"verdict": text, "correction": text, "implicit": Value("bool")}],
        "model_version": text,
        "trained_in": [text],
    })


def row(system: ExportSource, ep: Episode) -> dict[str, Any]:
    lab = ep.label
    data = frame_of(system, ep)
    return {
        "ask_id": ep.ask_id,
        "wearer": ep.wearer,
        "created_at": ep.created_at.isoformat(),
        "question": ep.question,
        "skill": ep.skill,
        "image": {"bytes": data, "path": None} if data is not None else None,
        "answer_text": ep.answer_text,
        "ai_label": ep.ai_label,
        "confidence": ep.confidence,
        "decision": ep.decision,
        "candidates": [{"label": c, "score": s} for c, s in ep.candidates],
        "outcome": ep.outcome,
        "final_answer": ep.final_answer,
        "label": lab.value if lab else None,
        "label_source": lab.source if lab else None,
        "label_author": lab.author if lab else None,
        "label_status": lab.status if lab else None,
        "ai_correct": ep.ai_correct,
        "labels": [{"value": x.value, "source": x.source, "author": x.author,
                    "created_at": x.created_at.isoformat(), "trust": x.trust, "status": x.status}
                   for x in ep.labels],
        "feedback": [{"verdict": f.verdict, "correction": f.correction, "implicit": f.implicit}
                     for f in ep.feedback],
        "model_version": ep.model_version,
        "trained_in": list(ep.trained_in),
    }


def export_hf(
    system: ExportSource,
    out: Path,
    *,
    since: dt.datetime | None = None,
    until: dt.datetime | None = None,
    labelled_only: bool = False,
    force: bool = False,
    progress: ProgressFn | None = None,
) -> ExportResult:
    """Writes rows to an Arrow file one at a time (frames are never all held in memory), then saves."""
    from datasets import Dataset  # slow to import: loaded on first use
    from datasets.arrow_writer import ArrowWriter  # slow to import: loaded on first use

    prepare_dir(out, force=force)
    episodes = load_episodes(system, since=since, until=until, labelled_only=labelled_only)
    feats = features()
    images = 0
    # Scratch space beside the output, not the user's ~/.cache; the saved copy is self-contained.
    with staged_dir(out) as staging:
        arrow = staging.scratch / "episodes.arrow"
        writer = ArrowWriter(features=feats, path=str(arrow), writer_batch_size=64)
        try:
            for n, ep in enumerate(episodes):
                if progress:
                    progress("writing episodes", n, len(episodes))
                r = row(system, ep)
                images += r["image"] is not None
                writer.write(feats.encode_example(r))
            writer.finalize()
        finally:
            writer.close()
        ds = Dataset.from_file(str(arrow))
        ds.save_to_disk(str(staging.folder))
        n = len(ds)
        del ds
    return ExportResult(out, n, {"labelled": sum(1 for e in episodes if e.labels), "images": images})
