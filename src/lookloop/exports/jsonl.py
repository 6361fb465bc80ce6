"""JSONL of episodes: one ask per line with its answer, outcome, labels, feedback and lineage."""

from __future__ import annotations

import datetime as dt
import json
from pathlib import Path

from lookloop.exports.episodes import ExportSource, load_episodes
from lookloop.exports.output import ExportResult, prepare_file, write_frames, written_file
from lookloop.models.embcache import ProgressFn


def export_jsonl(
    system: ExportSource,
    out: Path,
    *,
    since: dt.datetime | None = None,
    until: dt.datetime | None = None,
    labelled_only: bool = False,
    frames: bool = False,
    force: bool = False,
    progress: ProgressFn | None = None,
) -> ExportResult:
    """Writes ``out`` (and with ``frames``, the images into ``<out stem>_frames/`` beside it)."""
    prepare_file(out, force=force)
    episodes = load_episodes(system, since=since, until=until, labelled_only=labelled_only)
    files = (write_frames(system, episodes, out.parent / f"{out.stem}_frames", out.parent, progress)
             if frames else {})
    with written_file(out) as tmp, tmp.open("w", encoding="utf-8") as fh:
        for n, ep in enumerate(episodes):
            if progress:
                progress("writing episodes", n, len(episodes))
            record = ep.to_json()
            if frames:
                record["frame_file"] = files.get(ep.ask_id)
            fh.write(json.dumps(record, ensure_ascii=False) + "\n")
    return ExportResult(out, len(episodes), {
        "labelled": sum(1 for e in episodes if e.labels),
        "frames": len(set(files.values())),
    })
