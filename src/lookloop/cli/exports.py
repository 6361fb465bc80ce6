"""``lookloop export jsonl|hf|kto|imagefolder``: the loop's data out, for training elsewhere."""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable
from pathlib import Path
from typing import Annotated

import typer

from lookloop.cli._shared import Lookloop, console, fail, open_system
from lookloop.errors import LookloopError
from lookloop.exports.hf import export_hf
from lookloop.exports.imagefolder import export_imagefolder
from lookloop.exports.jsonl import export_jsonl
from lookloop.exports.kto import export_kto
from lookloop.exports.output import ExportResult
from lookloop.metrics import parse_when

Out = Annotated[Path, typer.Option("--out", "-o", help="Where to write the export.")]
Since = Annotated[str | None, typer.Option(help="Only asks from this time: a date, an ISO time, or 7d / 12h.")]
Until = Annotated[str | None, typer.Option(help="Only asks before this time (same forms as --since).")]
Force = Annotated[bool, typer.Option("--force", help="Replace an existing file or non-empty folder.")]
Frames = Annotated[bool, typer.Option("--frames/--no-frames", help="Also write the frames beside the file.")]
Labelled = Annotated[bool, typer.Option("--labelled-only", help="Only asks that have a label.")]


export_app = typer.Typer(help="Export episodes, labels and feedback for training.", no_args_is_help=True)


def _window(since: str | None, until: str | None) -> tuple[dt.datetime | None, dt.datetime | None]:
    return parse_when(since), parse_when(until)


def _run(what: str, job: Callable[[Lookloop], ExportResult]) -> None:
    """Open the system, run the export and print what it wrote; errors (a bad time too) as one line."""
    try:
        result = job(open_system(build=False))
    except LookloopError as exc:
        raise fail(exc.message) from None
    details = ", ".join(f"{v} {k.replace('_', ' ')}" for k, v in result.details.items())
    console.print(f"exported {result.records} {what} to {result.path}" + (f" ({details})" if details else ""))


@export_app.command("jsonl")
def jsonl(out: Out, since: Since = None, until: Until = None, labelled_only: Labelled = False,
          frames: Frames = False, force: Force = False) -> None:
    """Episodes as JSON lines: ask, answer, outcome, labels, feedback and lineage."""

    def job(system: Lookloop) -> ExportResult:
        s, u = _window(since, until)
        return export_jsonl(system, out, since=s, until=u, labelled_only=labelled_only, frames=frames, force=force)

    _run("episodes", job)


@export_app.command("hf")
def hf(out: Out, since: Since = None, until: Until = None, labelled_only: Labelled = False,
       force: Force = False) -> None:
    """A Hugging Face dataset (save_to_disk) with the frames as an Image feature."""

    def job(system: Lookloop) -> ExportResult:
        s, u = _window(since, until)
        return export_hf(system, out, since=s, until=u, labelled_only=labelled_only, force=force)

    _run("episodes", job)


@export_app.command("kto")
def kto(out: Out, since: Since = None, until: Until = None, frames: Frames = False, force: Force = False) -> None:
    """KTO records (prompt, completion, label) from wearer feedback and human corrections."""

    def job(system: Lookloop) -> ExportResult:
        s, u = _window(since, until)
        return export_kto(system, out, since=s, until=u, frames=frames, force=force)

    _run("records", job)


@export_app.command("imagefolder")
def imagefolder(
    out: Out, since: Since = None, until: Until = None, force: Force = False,
    skill: Annotated[str, typer.Option(help="Which skill's labelled frames.")] = "identify",
    imports: Annotated[bool, typer.Option("--imports", help="Add the imported labelled photos.")] = False,
) -> None:
    """An image-folder tree (<class>/<file>) plus metadata.csv, for classifiers."""

    def job(system: Lookloop) -> ExportResult:
        s, u = _window(since, until)
        return export_imagefolder(system, out, since=s, until=u, skill=skill, imports=imports, force=force)

    _run("images", job)


def register(app: typer.Typer) -> None:
    app.add_typer(export_app, name="export")
