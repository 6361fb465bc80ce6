"""``lookloop export jsonl|hf|kto|imagefolder [--job]``: the loop's data out, for training elsewhere."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer

from lookloop.cli._shared import console, fail, open_system
from lookloop.errors import LookloopError
from lookloop.jobs import PostgresJobs
from lookloop.metrics import parse_when

Out = Annotated[Path, typer.Option("--out", "-o", help="Where to write the export.")]
Since = Annotated[str | None, typer.Option(help="Only asks from this time: a date, an ISO time, or 7d / 12h.")]
Until = Annotated[str | None, typer.Option(help="Only asks before this time (same forms as --since).")]
Force = Annotated[bool, typer.Option("--force", help="Replace an existing file or non-empty folder.")]
Frames = Annotated[bool, typer.Option("--frames/--no-frames", help="Also write the frames beside the file.")]
Labelled = Annotated[bool, typer.Option("--labelled-only", help="Only asks that have a label.")]


export_app = typer.Typer(help="Export episodes, labels and feedback for training.", no_args_is_help=True)


Job = Annotated[bool, typer.Option("--job", help="Queue it for a `lookloop worker` (Postgres) and return; the "
                                   "path must be one the workers see too.")]


def _export(fmt: str, what: str, out: Path, since: str | None, until: str | None, *, job: bool,
            **options: Any) -> None:
    """Runs the export here and prints what it wrote, or (``job``) queues it; errors (a bad time too) as one line."""
    try:
        s, u = parse_when(since), parse_when(until)
        system = open_system(build=False)
        if job:
            if not isinstance(system.jobs, PostgresJobs):
                raise fail("--job needs Postgres and a `lookloop worker`; with SQLite, export here (without --job)")
            job_id = system.exports.queue(fmt, out.resolve(), since=s, until=u, **options)
            console.print(f"queued export job {job_id} to {out.resolve()}: follow it with "
                          f"`lookloop jobs show {job_id}`")
            return
        result = system.exports.run(fmt, out, since=s, until=u, **options)
    except LookloopError as exc:
        raise fail(exc.message) from None
    details = ", ".join(f"{v} {k.replace('_', ' ')}" for k, v in result.details.items())
    console.print(f"exported {result.records} {what} to {result.path}" + (f" ({details})" if details else ""))


@export_app.command("jsonl")
def jsonl(out: Out, since: Since = None, until: Until = None, labelled_only: Labelled = False,
          frames: Frames = False, force: Force = False, job: Job = False) -> None:
    """Episodes as JSON lines: ask, answer, outcome, labels, feedback and lineage."""
    _export("jsonl", "episodes", out, since, until, job=job, labelled_only=labelled_only, frames=frames, force=force)


@export_app.command("hf")
def hf(out: Out, since: Since = None, until: Until = None, labelled_only: Labelled = False,
       force: Force = False, job: Job = False) -> None:
    """A Hugging Face dataset (save_to_disk) with the frames as an Image feature."""
    _export("hf", "episodes", out, since, until, job=job, labelled_only=labelled_only, force=force)


@export_app.command("kto")
def kto(out: Out, since: Since = None, until: Until = None, frames: Frames = False, force: Force = False,
        job: Job = False) -> None:
    """KTO records (prompt, completion, label) from wearer feedback and human corrections."""
    _export("kto", "records", out, since, until, job=job, frames=frames, force=force)


@export_app.command("imagefolder")
def imagefolder(
    out: Out, since: Since = None, until: Until = None, force: Force = False,
    skill: Annotated[str, typer.Option(help="Which skill's labelled frames.")] = "identify",
    imports: Annotated[bool, typer.Option("--imports", help="Add the imported labelled photos.")] = False,
    job: Job = False,
) -> None:
    """An image-folder tree (<class>/<file>) plus metadata.csv, for classifiers."""
    _export("imagefolder", "images", out, since, until, job=job, skill=skill, imports=imports, force=force)


def register(app: typer.Typer) -> None:
    app.add_typer(export_app, name="export")
