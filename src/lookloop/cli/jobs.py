"""``lookloop worker`` (run background jobs, Postgres) and ``lookloop jobs list|show`` (their progress)."""

from __future__ import annotations

import json
import logging
import os
from pathlib import Path
from typing import Annotated

import typer
from rich.table import Table

from lookloop.cli._shared import console, err_console, fail, open_system
from lookloop.config import get_settings
from lookloop.errors import LookloopError
from lookloop.jobs import JobInfo, JobState, PostgresJobs

jobs_app = typer.Typer(help="Background jobs: redaction, purges, training, exports and their progress.",
                       no_args_is_help=True)

NEEDS_POSTGRES = (
    "`lookloop worker` needs Postgres: set LOOKLOOP_DATABASE_URL=postgresql://… (or try `lookloop cluster up`). "
    "With SQLite, the one default process, `lookloop serve` runs the jobs itself."
)


def lower_priority(*, nice: int = 0, idle: bool = False) -> None:
    """Lowers this process's CPU priority: every thread it runs now (on Linux each thread has its own, e.g. the
    BLAS threads started at import) and, inherited from this one, those it starts later (the job runners)."""
    if idle and not hasattr(os, "SCHED_IDLE"):
        raise OSError("SCHED_IDLE is only on Linux; use --nice instead")
    tasks = Path("/proc/self/task")
    threads = [int(t.name) for t in tasks.iterdir()] if tasks.is_dir() else [0]
    for tid in threads:
        try:
            if nice:
                os.setpriority(os.PRIO_PROCESS, tid, os.getpriority(os.PRIO_PROCESS, tid) + nice)
            if idle:
                os.sched_setscheduler(tid, os.SCHED_IDLE, os.sched_param(0))
        except ProcessLookupError:  # a thread that ended meanwhile
            continue


def worker(
    concurrency: Annotated[int | None, typer.Option(help="Jobs run at once (default LOOKLOOP_JOB_CONCURRENCY).")]
    = None,
    name: Annotated[str, typer.Option(help="This worker's name in the logs and the jobs table.")] = "worker",
    burst: Annotated[bool, typer.Option("--burst", help="Stop once the queue is empty.")] = False,
    nice: Annotated[int, typer.Option(help="Lower this worker's CPU priority by N (0-19): on a machine shared with "
                                           "API workers, jobs then yield to answering asks.")] = 0,
    idle: Annotated[bool, typer.Option("--idle", help="Run jobs only on CPU time nothing else wants (Linux "
                                       "SCHED_IDLE): on a machine shared with API workers, asks never wait for "
                                       "a job. Frames a person opens are redacted on the spot meanwhile.")] = False,
) -> None:
    """Run background jobs from the Postgres queue until SIGINT/SIGTERM (any number of workers, any machine)."""
    settings = get_settings()
    if concurrency is not None and not 1 <= concurrency <= 64:
        raise fail("--concurrency must lie in 1..64")
    if not 0 <= nice <= 19:
        raise fail("--nice must lie in 0..19")
    try:
        lower_priority(nice=nice, idle=idle)
    except OSError as exc:
        raise fail(f"could not lower this worker's priority: {exc}") from None
    if not settings.resolved_database_url.startswith("postgresql"):
        raise fail(NEEDS_POSTGRES)
    try:
        system = open_system(settings, build=False)
    except LookloopError as exc:
        raise fail(exc.message) from None
    queue = system.jobs
    if not isinstance(queue, PostgresJobs):
        raise fail(NEEDS_POSTGRES)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(levelname)s %(message)s")
    logging.getLogger("procrastinate").setLevel(logging.WARNING)
    n = concurrency or settings.job_concurrency
    err_console.print(f"[bold green]lookloop worker[/bold green] {name}: {n} at a time; "
                      f"jobs: {', '.join(queue.tasks())}")
    try:
        queue.run_worker(concurrency=n, name=name, wait=not burst)
    finally:
        system.close()


def _table(jobs: list[JobInfo]) -> Table:
    table = Table(title="jobs")
    for col in ("id", "task", "state", "progress", "attempts", "created", "finished", "worker", "error / detail"):
        table.add_column(col)
    for j in jobs:
        table.add_row(
            j.id[:12], j.task, j.state, f"{j.progress:.0%}", f"{j.attempts}/{j.max_attempts}",
            j.created_at.strftime("%Y-%m-%d %H:%M:%S"), j.finished_at.strftime("%H:%M:%S") if j.finished_at else "–",
            j.worker or "–", (j.error or j.detail)[:60],
        )
    return table


@jobs_app.command("list")
def list_cmd(
    state: Annotated[str | None, typer.Option(help=f"Only jobs in this state: {', '.join(JobState)}.")] = None,
    task: Annotated[str | None, typer.Option(help="Only this job (e.g. privacy.redact, models.train).")] = None,
    limit: Annotated[int, typer.Option(help="Newest N jobs.")] = 50,
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON.")] = False,
) -> None:
    """Jobs, newest first: state, progress, attempts and errors."""
    if limit < 1:
        raise fail("--limit must be at least 1")
    try:
        jobs = open_system(build=False).jobs.recent(state=state, task=task, limit=limit)
    except LookloopError as exc:
        raise fail(exc.message) from None
    if as_json:
        typer.echo(json.dumps([j.as_dict() for j in jobs], indent=2))
        return
    if not jobs:
        console.print("no jobs yet")
        return
    console.print(_table(jobs))


@jobs_app.command("show")
def show_cmd(job_id: Annotated[str, typer.Argument(help="The job's id (see `lookloop jobs list`).")]) -> None:
    """One job as JSON: its arguments, state, progress, result or error."""
    system = open_system(build=False)
    try:
        job = system.jobs.get(job_id)
    except LookloopError:
        # The list shows the first 12 characters: accept them.
        found = [j for j in system.jobs.recent(limit=1000) if j.id.startswith(job_id)] if len(job_id) >= 6 else []
        if len(found) != 1:
            raise fail(f"no job {job_id!r}: see `lookloop jobs list`") from None
        job = found[0]
    typer.echo(json.dumps(job.as_dict(), indent=2))


def register(app: typer.Typer) -> None:
    app.command()(worker)
    app.add_typer(jobs_app, name="jobs")
