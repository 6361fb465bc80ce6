"""Exports as background jobs: queued by an operator (HTTP) or ``lookloop export … --job``, written by a worker.

The job is keyed by its output path, so one export at a time writes to a path. A retried attempt (its worker
died, or an attempt failed) replaces whatever an interrupted one left: the first attempt already checked that
the path was free or that replacing it was asked for, and the writers publish whole files and folders only.
"""

from __future__ import annotations

import datetime as dt
import re
from pathlib import Path
from typing import Any

from lookloop.domain import utcnow
from lookloop.errors import BadInput
from lookloop.exports.episodes import ExportSource
from lookloop.exports.hf import export_hf
from lookloop.exports.imagefolder import export_imagefolder
from lookloop.exports.jsonl import export_jsonl
from lookloop.exports.kto import export_kto
from lookloop.exports.output import ExportResult, prepare_dir, prepare_file
from lookloop.jobs import JobContext, JobQueue
from lookloop.models.embcache import ProgressFn

EXPORT_JOB = "exports.write"
FORMATS = ("jsonl", "hf", "kto", "imagefolder")
_FILE_FORMATS = frozenset({"jsonl", "kto"})  # one file (the others write a folder)
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,99}$")


def run_export(source: ExportSource, fmt: str, out: Path, *, since: dt.datetime | None = None,
               until: dt.datetime | None = None, labelled_only: bool = False, frames: bool = False,
               skill: str = "identify", imports: bool = False, force: bool = False,
               progress: ProgressFn | None = None) -> ExportResult:
    """One export in this process, whichever the format (the options a format has no use for are ignored)."""
    if fmt == "jsonl":
        return export_jsonl(source, out, since=since, until=until, labelled_only=labelled_only, frames=frames,
                            force=force, progress=progress)
    if fmt == "hf":
        return export_hf(source, out, since=since, until=until, labelled_only=labelled_only, force=force,
                         progress=progress)
    if fmt == "kto":
        return export_kto(source, out, since=since, until=until, frames=frames, force=force, progress=progress)
    if fmt == "imagefolder":
        return export_imagefolder(source, out, since=since, until=until, skill=skill, imports=imports, force=force,
                                  progress=progress)
    raise BadInput(f"unknown export format {fmt!r}; one of {', '.join(FORMATS)}")


def _when(value: str | None) -> dt.datetime | None:
    return dt.datetime.fromisoformat(value) if value else None


class Exports:
    """Queues exports as jobs and runs them (the ``exports.write`` job); ``folder`` holds the ones asked over HTTP."""

    def __init__(self, source: ExportSource, jobs: JobQueue, folder: Path) -> None:
        self._source = source
        self._jobs = jobs
        self.folder = folder

    def path_for(self, fmt: str, name: str | None = None) -> Path:
        """Where an export asked over HTTP goes: ``name`` (a plain file name) in the exports folder, by default
        the format and the time. Callers never choose a path on the server."""
        if fmt not in FORMATS:
            raise BadInput(f"unknown export format {fmt!r}; one of {', '.join(FORMATS)}")
        if name is None:
            name = f"{fmt}-{utcnow().strftime('%Y%m%dT%H%M%SZ')}" + (".jsonl" if fmt in _FILE_FORMATS else "")
        if not _NAME.match(name) or name.endswith((".partial", ".old", ".tmp")):
            raise BadInput(f"{name!r} is not a plain file name (letters, digits, '.', '_', '-'; up to 100)")
        return self.folder / name

    def run(self, fmt: str, out: Path, **options: Any) -> ExportResult:
        """An export written now, in this process (``run_export``'s options)."""
        return run_export(self._source, fmt, out, **options)

    def queue(self, fmt: str, out: Path, *, since: dt.datetime | None = None, until: dt.datetime | None = None,
              labelled_only: bool = False, frames: bool = False, skill: str = "identify", imports: bool = False,
              force: bool = False) -> str:
        """Queues an export to ``out`` (an absolute path that the job workers see too); returns the job's id.

        Refuses at once what the job would refuse: an unknown format, or a path taken without ``force``."""
        if fmt not in FORMATS:
            raise BadInput(f"unknown export format {fmt!r}; one of {', '.join(FORMATS)}")
        if not out.is_absolute():
            raise BadInput(f"{out} is not an absolute path: a job worker's working folder is not this one")
        (prepare_file if fmt in _FILE_FORMATS else prepare_dir)(out, force=force)
        return self._jobs.defer(
            EXPORT_JOB, key=f"export:{out}", format=fmt, out=str(out),
            since=since.isoformat() if since else None, until=until.isoformat() if until else None,
            labelled_only=labelled_only, frames=frames, skill=skill, imports=imports, force=force,
        )

    def job(self, ctx: JobContext, *, format: str, out: str, since: str | None = None,  # noqa: A002 - the job's args
            until: str | None = None, labelled_only: bool = False, frames: bool = False, skill: str = "identify",
            imports: bool = False, force: bool = False) -> dict[str, Any]:
        """The ``exports.write`` job: an attempt after the first replaces what an interrupted one left."""
        ctx.progress(0.0, "reading episodes", force=True)
        result = run_export(self._source, format, Path(out), since=_when(since), until=_when(until),
                            labelled_only=labelled_only, frames=frames, skill=skill, imports=imports,
                            force=force or ctx.attempt > 1, progress=ctx.reporter())
        return {"path": str(result.path), "records": result.records, **result.details}
