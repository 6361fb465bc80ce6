"""``lookloop train`` and ``lookloop models list|promote|rollback``: model versions."""

from __future__ import annotations

import json
from typing import Annotated

import typer
from rich.table import Table

from lookloop.cli._shared import console, fail, make_progress, open_system, reporter
from lookloop.errors import LookloopError
from lookloop.jobs import PostgresJobs
from lookloop.loop.finetune import FinetuneConfig
from lookloop.loop.registry import ModelVersion
from lookloop.loop.training import TRAIN_JOB, train_versions

models_app = typer.Typer(help="Model versions: list, promote (gated), roll back.", no_args_is_help=True)


def _versions_table(versions: list[ModelVersion]) -> Table:
    table = Table(title="model versions")
    for col in ("", "id", "kind", "created", "labels", "accuracy", "serving acc.", "coverage", "parent", "status"):
        table.add_column(col)
    for v in versions:
        m = v.metrics
        acc = m.get("accuracy")
        sacc = m.get("serving_accuracy")
        cov = m.get("coverage")
        table.add_row(
            "▶" if v.serving else "", v.id, v.kind, v.created_at.strftime("%Y-%m-%d %H:%M"), str(v.label_count),
            f"{acc:.3f}" if isinstance(acc, float) else "–", f"{sacc:.3f}" if isinstance(sacc, float) else "–",
            f"{cov:.3f}" if isinstance(cov, float) else "–", v.parent_id or "–", v.status,
        )
    return table


def train(
    finetune: Annotated[bool, typer.Option("--finetune", help="Also fine-tune the backbone (CPU, minutes).")]
    = False,
    finetune_minutes: Annotated[float, typer.Option(help="Time budget of the fine-tuning run.")] = 25.0,
    holdout: Annotated[float, typer.Option(help="Share of labels held out for metrics and calibration.")]
    = 0.15,
    promote: Annotated[bool, typer.Option(help="Promote the best version when it passes the gate.")] = True,
    job: Annotated[bool, typer.Option("--job", help="Queue it for a `lookloop worker` (Postgres) and return.")]
    = False,
) -> None:
    """Retrain on every label: a new model version, evaluated, gated and (by default) promoted."""
    if not 0.0 < holdout < 0.9:
        raise fail("--holdout must lie in (0, 0.9)")
    if finetune_minutes <= 0:
        raise fail("--finetune-minutes must be positive")
    system = open_system(build=False)
    if job:
        if not isinstance(system.jobs, PostgresJobs):
            raise fail("--job needs Postgres and a `lookloop worker`; with SQLite, train here (without --job)")
        job_id = system.jobs.defer(TRAIN_JOB, key=TRAIN_JOB, finetune=finetune, finetune_minutes=finetune_minutes,
                                   holdout=holdout, promote=promote)
        console.print(f"queued training job {job_id}: follow it with `lookloop jobs show {job_id}`")
        return
    with make_progress() as progress:
        try:
            result = train_versions(system.serving, finetune=finetune, holdout=holdout, promote=promote,
                                    finetune_config=FinetuneConfig(time_budget_s=finetune_minutes * 60),
                                    progress=reporter(progress))
        except LookloopError as exc:
            raise fail(exc.message) from None
    console.print(_versions_table(result.versions))
    if result.excluded:
        console.print(f"{result.excluded} labels left out by training filters (consent)")
    if result.promoted:
        console.print(f"[green]promoted[/green] {result.promoted}: {result.gate_message}")
    elif promote:
        console.print(f"[yellow]not promoted[/yellow]: {result.gate_message}")
    console.print(f"took {result.seconds:.1f} s")


@models_app.command("list")
def list_cmd(
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON.")] = False,
    limit: Annotated[int, typer.Option(help="Newest N versions.")] = 50,
) -> None:
    """Versions, newest first; ▶ marks the serving one."""
    versions = open_system(build=False).registry.list(limit=max(1, limit))
    if as_json:
        typer.echo(json.dumps([v.as_dict() for v in versions], indent=2))
        return
    if not versions:
        console.print("no model versions yet: run `lookloop train`")
        return
    console.print(_versions_table(versions))


@models_app.command("promote")
def promote_cmd(
    version: Annotated[str, typer.Argument(help="Version id (see `lookloop models list`).")],
    force: Annotated[bool, typer.Option("--force", help="Skip the evaluation gate.")] = False,
) -> None:
    """Serve a version (if the evaluation gate passes); running servers switch within seconds."""
    system = open_system(build=False)
    try:
        v = system.serving.promote(version, force=force, reason="lookloop models promote")
    except LookloopError as exc:
        raise fail(exc.message) from None
    console.print(f"[green]serving[/green] {v.id}")


@models_app.command("rollback")
def rollback_cmd() -> None:
    """Back to the version that served before the current one."""
    system = open_system(build=False)
    try:
        v = system.serving.rollback(reason="lookloop models rollback")
    except LookloopError as exc:
        raise fail(exc.message) from None
    console.print(f"[green]serving[/green] {v.id}")


def register(app: typer.Typer) -> None:
    app.command()(train)
    app.add_typer(models_app, name="models")
