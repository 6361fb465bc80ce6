"""Where exports go: checked output paths, built aside and moved into place whole, frames beside the records.

An export never leaves a torn or doubled result where it was asked to write: a file is written under a temporary
name and renamed at the end; a folder is built in ``.<name>.partial`` beside it and swapped in at the end. An
interrupted export (a killed worker) leaves the previous result as it was, and its next attempt starts afresh.
"""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

from lookloop.errors import BadInput
from lookloop.exports.episodes import Episode, ExportSource, extension, frame_of
from lookloop.models.embcache import ProgressFn


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
    """Checks that ``out`` may become the export's folder (the old one is replaced only once the new one is whole)."""
    if out.exists() and not out.is_dir():
        raise BadInput(f"{out} exists and is not a folder")
    if out.exists() and any(out.iterdir()) and not force:
        raise BadInput(f"{out} is not empty: pass --force to replace it")
    out.parent.mkdir(parents=True, exist_ok=True)
    return out


@contextmanager
def written_file(out: Path) -> Iterator[Path]:
    """A temporary path beside ``out`` to write; renamed to ``out`` when the block ends without error."""
    tmp = out.with_name(f".{out.name}.tmp")  # a leftover of an interrupted export is overwritten
    try:
        yield tmp
        tmp.replace(out)
    finally:
        tmp.unlink(missing_ok=True)


@dataclass(frozen=True)
class Staging:
    folder: Path  # build the export here: it becomes ``out``
    scratch: Path  # working files that are not part of the export


@contextmanager
def staged_dir(out: Path) -> Iterator[Staging]:
    """An empty folder beside ``out`` to build the export in; swapped in as ``out`` when the block ends without
    error. On an error ``out`` stays as it was."""
    work = out.parent / f".{out.name}.partial"
    if work.exists():
        shutil.rmtree(work)  # left by an interrupted attempt: start afresh
    staging = Staging(work / "export", work / "scratch")
    staging.folder.mkdir(parents=True)
    staging.scratch.mkdir()
    try:
        yield staging
        old = out.parent / f".{out.name}.old"
        if old.exists():
            shutil.rmtree(old)
        if out.exists():
            out.rename(old)
        staging.folder.rename(out)
        shutil.rmtree(old, ignore_errors=True)
    finally:
        shutil.rmtree(work, ignore_errors=True)


def write_bytes_whole(path: Path, data: bytes) -> None:
    """Writes a file under a temporary name and renames it: a reader never sees it half written."""
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_bytes(data)
    tmp.replace(path)


def write_frames(system: ExportSource, episodes: list[Episode], folder: Path, base: Path,
                 progress: ProgressFn | None = None) -> dict[str, str]:
    """Writes each episode's frame once (by content hash); returns ask id → path relative to ``base``."""
    folder.mkdir(parents=True, exist_ok=True)
    written: dict[str, str] = {}
    by_sha: dict[str, str] = {}
    for n, ep in enumerate(episodes):
        if progress:
            progress("writing frames", n, len(episodes))
        if not ep.frame_sha:
            continue
        if ep.frame_sha in by_sha:
            written[ep.ask_id] = by_sha[ep.frame_sha]
            continue
        data = frame_of(system, ep)
        if data is None:
            continue
        path = folder / f"{ep.frame_sha}{extension(ep.frame_media_type)}"
        write_bytes_whole(path, data)
        rel = path.relative_to(base).as_posix()
        by_sha[ep.frame_sha] = rel
        written[ep.ask_id] = rel
    return written
