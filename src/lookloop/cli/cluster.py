"""``lookloop cluster up|down|status``: a dev cluster on one machine (Postgres, N API workers, M job workers).

``up`` initialises a private PostgreSQL in ``var/cluster/pg`` (a free port, its socket beside it), migrates it,
starts ``lookloop serve --workers N`` and M ``lookloop worker`` processes, prints the URLs and the processes,
and stops everything on Ctrl-C/SIGTERM; ``--detach`` leaves them running and ``down`` stops them.
"""

from __future__ import annotations

import glob
import json
import os
import signal
import subprocess
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Annotated, Any

import httpx
import typer
from rich.table import Table

from lookloop.cli._shared import console, err_console, fail
from lookloop.config import get_settings
from lookloop.store import localpg
from lookloop.store.db import Database
from lookloop.store.localpg import NOT_INSTALLED, LocalPostgres, cluster_dir, postgres_bin

cluster_app = typer.Typer(help="A dev cluster on this machine: Postgres, N API workers, M job workers.",
                          no_args_is_help=True)

@dataclass
class Proc:
    pid: int
    role: str
    port: int | None = None


@dataclass
class ClusterState:
    """What a running cluster is made of: written to var/cluster/cluster.json for ``status`` and ``down``."""

    pg_bin: str
    pg_data: str
    pg_port: int
    database_url: str
    api_url: str
    run_as_postgres: bool
    procs: list[Proc] = field(default_factory=list)

    @classmethod
    def load(cls, path: Path) -> ClusterState | None:
        if not path.is_file():
            return None
        raw: dict[str, Any] = json.loads(path.read_text())
        raw["procs"] = [Proc(**p) for p in raw.get("procs", [])]
        return cls(**raw)

    def save(self, path: Path) -> None:
        path.write_text(json.dumps(asdict(self), indent=2))
        path.chmod(0o600)


def stop_postgres(state: ClusterState) -> None:
    localpg.stop_postgres(Path(state.pg_bin), Path(state.pg_data), state.run_as_postgres)


def _spawn(args: list[str], env: dict[str, str], log: Path) -> subprocess.Popen[bytes]:
    out = log.open("ab")
    # A session of its own: Ctrl-C reaches this process only, which then stops the others in order.
    return subprocess.Popen([sys.executable, "-m", "lookloop.cli", *args], env=env, stdout=out,
                            stderr=subprocess.STDOUT, start_new_session=True)


def children(pid: int) -> list[int]:
    """The child processes of ``pid`` (Linux /proc), e.g. uvicorn's API workers under its supervisor."""
    out: list[int] = []
    for task in glob.glob(f"/proc/{pid}/task/*/children"):
        try:
            out += [int(x) for x in Path(task).read_text().split()]
        except OSError:
            continue
    return out


def api_workers(pid: int) -> list[int]:
    """uvicorn's worker processes under its supervisor (not multiprocessing's resource tracker)."""
    out = []
    for child in children(pid):
        try:
            cmdline = Path(f"/proc/{child}/cmdline").read_bytes()
        except OSError:
            continue
        if b"resource_tracker" not in cmdline:
            out.append(child)
    return out


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    try:  # a zombie (exited, not yet reaped) is not alive
        return Path(f"/proc/{pid}/stat").read_text().split(") ")[-1][0] != "Z"
    except OSError:
        return True


def _wait_healthy(url: str, procs: list[subprocess.Popen[bytes]], timeout_s: float) -> bool:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if any(p.poll() is not None for p in procs):
            return False
        try:
            if httpx.get(f"{url}/healthz", timeout=2).status_code == 200:
                return True
        except httpx.HTTPError:
            pass
        time.sleep(0.5)
    return False


def _signal_all(procs: list[Proc], sig: signal.Signals) -> None:
    for p in procs:
        if alive(p.pid):
            try:
                os.killpg(p.pid, sig)
            except (ProcessLookupError, PermissionError):
                pass


def stop_procs(procs: list[Proc], grace_s: float = 20.0) -> None:
    """SIGTERM to each (job workers finish their job, API workers their requests), SIGKILL after ``grace_s``."""
    _signal_all(procs, signal.SIGTERM)
    deadline = time.monotonic() + grace_s
    while time.monotonic() < deadline and any(alive(p.pid) for p in procs):
        for p in procs:
            try:
                os.waitpid(p.pid, os.WNOHANG)  # reap our own children
            except ChildProcessError:
                pass
        time.sleep(0.2)
    _signal_all(procs, signal.SIGKILL)


def process_table(state: ClusterState) -> Table:
    table = Table(title="lookloop cluster")
    for col in ("pid", "role", "port", "state"):
        table.add_column(col)
    for p in state.procs:
        table.add_row(str(p.pid), p.role, str(p.port or "–"), "running" if alive(p.pid) else "stopped")
        if p.role == "api":
            for child in api_workers(p.pid):
                table.add_row(str(child), "api worker", str(p.port or "–"), "running" if alive(child) else "stopped")
    return table


def up(
    workers: Annotated[int, typer.Option(help="API worker processes.")] = 2,
    job_workers: Annotated[int, typer.Option(help="Job worker processes (`lookloop worker`).")] = 1,
    port: Annotated[int | None, typer.Option(help="The API's port (default LOOKLOOP_PORT).")] = None,
    host: Annotated[str | None, typer.Option(help="The API's address (default LOOKLOOP_HOST).")] = None,
    demo: Annotated[bool, typer.Option(help="Load the demo catalogue on first start.")] = True,
    detach: Annotated[bool, typer.Option("--detach", help="Leave it running; stop it with `cluster down`.")]
    = False,
    start_timeout: Annotated[float, typer.Option(help="Seconds to wait for the API to answer.")] = 900.0,
) -> None:
    """Start Postgres, N API workers and M job workers; print the URLs and the processes."""
    if not 1 <= workers <= 64:
        raise fail("--workers must lie in 1..64")
    if not 0 <= job_workers <= 64:
        raise fail("--job-workers must lie in 0..64")
    if port is not None and not 1 <= port <= 65535:
        raise fail("--port must lie in 1..65535")
    settings = get_settings()
    state_file = cluster_dir(settings.resolved_var_dir) / "cluster.json"
    running = ClusterState.load(state_file)
    if running is not None and any(alive(p.pid) for p in running.procs):
        raise fail("a cluster runs already (see `lookloop cluster status`); stop it with `lookloop cluster down`")
    pg_bin = postgres_bin()
    if pg_bin is None:
        raise fail(NOT_INSTALLED)
    h, p = host or settings.host, port or settings.port
    with err_console.status("starting PostgreSQL…"):
        try:
            pg = LocalPostgres.start(settings.resolved_var_dir, pg_bin)
        except subprocess.CalledProcessError as exc:
            raise fail(f"PostgreSQL did not start: {(exc.stderr or b'').decode(errors='replace').strip()}") from None
        Database(pg.url).migrate()
    url = pg.url
    state = ClusterState(pg_bin=str(pg_bin), pg_data=str(pg.data), pg_port=pg.port, database_url=url,
                         api_url=f"http://{h}:{p}", run_as_postgres=pg.as_postgres)
    state.save(state_file)
    env = {**os.environ, "LOOKLOOP_DATABASE_URL": url, "LOOKLOOP_VAR_DIR": str(settings.resolved_var_dir)}
    logs = cluster_dir(settings.resolved_var_dir)
    api = _spawn(["serve", "--workers", str(workers), "--host", h, "--port", str(p),
                  "--demo" if demo else "--no-demo"], env, logs / "api.log")
    state.procs.append(Proc(api.pid, "api", p))
    popens = [api]
    for i in range(job_workers):
        # On one machine, jobs take only the CPU the API workers leave (their asks never wait for a redaction).
        w = _spawn(["worker", "--name", f"worker-{i + 1}", "--idle"], env, logs / f"worker-{i + 1}.log")
        state.procs.append(Proc(w.pid, "job worker"))
        popens.append(w)
    state.save(state_file)
    with err_console.status(f"waiting for the API at {state.api_url} (models load on a first start)…"):
        ready = _wait_healthy(state.api_url, popens, start_timeout)
    if not ready:
        stop_procs(state.procs)
        stop_postgres(state)
        state_file.unlink(missing_ok=True)
        raise fail(f"the cluster did not come up; see the logs in {logs}")
    console.print(f"[bold green]lookloop cluster up[/bold green]: {workers} API workers, {job_workers} job workers")
    console.print(f"  API              {state.api_url}  (/start, /docs, /healthz)")
    console.print(f"  database         {url}")
    console.print(f"  logs             {logs}")
    console.print(process_table(state))
    if detach:
        console.print("detached: `lookloop cluster status` to look, `lookloop cluster down` to stop")
        return
    _foreground(state, state_file, popens)


def _foreground(state: ClusterState, state_file: Path, popens: list[subprocess.Popen[bytes]]) -> None:
    stopping = False

    def stop(_sig: int, _frame: object) -> None:
        nonlocal stopping
        stopping = True

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    console.print("Ctrl-C stops the cluster")
    while not stopping:
        if all(pp.poll() is not None for pp in popens):
            err_console.print("[yellow]every process of the cluster stopped[/yellow]")
            break
        time.sleep(0.5)
    _down(state, state_file)


def _down(state: ClusterState, state_file: Path) -> None:
    with err_console.status("stopping the API and job workers, then PostgreSQL…"):
        stop_procs(state.procs)
        stop_postgres(state)
    state_file.unlink(missing_ok=True)
    console.print("cluster stopped")


def down() -> None:
    """Stop a detached cluster: the API and job workers, then PostgreSQL."""
    state_file = cluster_dir(get_settings().resolved_var_dir) / "cluster.json"
    state = ClusterState.load(state_file)
    if state is None:
        raise fail("no cluster is running here (no var/cluster/cluster.json)", code=1)
    _down(state, state_file)


def status(as_json: Annotated[bool, typer.Option("--json", help="Print JSON.")] = False) -> None:
    """The cluster's URLs and processes; exit code 1 when none runs or a process stopped."""
    state = ClusterState.load(cluster_dir(get_settings().resolved_var_dir) / "cluster.json")
    if state is None:
        raise fail("no cluster is running here", code=1)
    every_alive = all(alive(p.pid) for p in state.procs)
    if as_json:
        out = asdict(state) | {"running": every_alive,
                               "api_workers": [c for p in state.procs if p.role == "api" for c in api_workers(p.pid)]}
        typer.echo(json.dumps(out, indent=2))
    else:
        console.print(f"API {state.api_url}   database {state.database_url}")
        console.print(process_table(state))
    if not every_alive:
        raise typer.Exit(1)


def register(app: typer.Typer) -> None:
    cluster_app.command("up")(up)
    cluster_app.command("down")(down)
    cluster_app.command("status")(status)
    app.add_typer(cluster_app, name="cluster")
