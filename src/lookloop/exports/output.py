"""Where exports go: checked output paths, frames written beside the records, and a summary."""

from __future__ import annotations

import shutil
from dataclasses import dataclass, field
from pathlib import Path

from lookloop.errors import BadInput
from lookloop.exports.episodes import Episode, ExportSource, extension, frame_of


@dataclass
class ExportResult:
    """What an export wrote: the path, how many records, and a few counts worth printing."""

    path: Path
    records: int
    details: dict[str, int] = field(default_factory=dict)


def prepare_file(out: Path, *, force: bool) -> Path:
    if out.exists() and out.is_dir():
        raise BadInput(f"{out} is a folder: give a file path such as {out / 'episodes.jsonl'}")
    if out.exists() and not force:
        raise BadInput(f"{out} already exists: pass --force to replace it")
    out.parent.mkdir(parents=True, exist_ok=True)
    return out


def prepare_dir(out: Path, *, force: bool) -> Path:
    if out.exists() and not out.is_dir():
        raise BadInput(f"{out} exists and is not a folder")
    if out.exists() and any(out.iterdir()):
        if not force:
            raise BadInput(f"{out} is not empty: pass --force to replace it")
        shutil.rmtree(out)
    out.mkdir(parents=True, exist_ok=True)
    return out


def write_frames(system: ExportSource, episodes: list[Episode], folder: Path, base: Path) -> dict[str, str]:
    """Writes each episode's frame once (by content hash); returns ask id → path relative to ``base``."""
    folder.mkdir(parents=True, exist_ok=True)
    written: dict[str, str] = {}
    by_sha: dict[str, str] = {}
    for ep in episodes:
        if not ep.frame_sha:
            continue
        if ep.frame_sha in by_sha:
            written[ep.ask_id] = by_sha[ep.frame_sha]
            continue
        data = frame_of(system, ep)
        if data is None:
            continue
        path = folder / f"{ep.frame_sha}{extension(ep.frame_media_type)}"
        path.write_bytes(data)
        rel = path.relative_to(base).as_posix()
        by_sha[ep.frame_sha] = rel
        written[ep.ask_id] = rel
    return written
