"""Helpers shared by the benchmark commands, and the terminal helpers the whole command line uses.

``console``, ``fail`` and ``make_progress`` live here, not in ``lookloop.cli``, because the CLI registers
the benchmarks: the benchmarks must not import it back.
"""

from __future__ import annotations

import json
import math
import signal
import subprocess
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import httpx
import typer
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from lookloop import domain
from lookloop.config import Settings, get_settings
from lookloop.system import Lookloop

console = Console()
err_console = Console(stderr=True, soft_wrap=True)  # one-line errors stay on one line


def fail(message: str, code: int = 2) -> typer.Exit:
    """Print ``error: message`` on stderr; raise what it returns to end the command with ``code``."""
    err_console.print(f"[red]error:[/red] {message}")
    return typer.Exit(code)


def make_progress() -> Progress:
    """A progress bar on stderr (stdout stays clean for figures and JSON)."""
    return Progress(
        TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
        console=err_console, transient=False,
    )


def percentile(values: Sequence[float], q: float) -> float:
    """A benchmark figure: ``lookloop.domain.percentile``, NaN when nothing was measured (JSON null)."""
    found = domain.percentile(values, q)
    return math.nan if found is None else found


def write_json(path: Path | None, figures: dict[str, Any]) -> None:
    """One flat JSON object: the figures the issues name, plus context."""
    if path is None:
        return
    flat = {k: v for k, v in figures.items() if not isinstance(v, dict | list)}
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(flat, indent=2, sort_keys=True) + "\n", encoding="utf-8")
    console.print(f"figures written to {path}")


def print_figures(title: str, figures: dict[str, Any]) -> None:
    table = Table(title=title)
    table.add_column("figure")
    table.add_column("value", justify="right")
    for key, value in figures.items():
        table.add_row(key, f"{value:.4g}" if isinstance(value, float) else str(value))
    console.print(table)


def demo_system(var_dir: Path) -> Any:
    """A fresh system in ``var_dir`` with the whole demo catalogue and train labels, models loaded.

    Rate limits are off: the benchmarks measure the service, not its abuse protection. Model and embedding
    caches are shared with the operator's settings, so nothing is embedded twice.
    """

    base = get_settings()
    settings = Settings(
        var_dir=var_dir, data_dir=base.data_dir, model_dir=base.model_cache_dir,
        rate_limit_device_per_min=0, rate_limit_account_per_min=0, rate_limit_anonymous_per_min=0,
    )
    system = Lookloop(settings)
    system.migrate()
    system.import_grocery(settings.grocery_dir)
    system.build_identify()
    return system


class ServerProcess:
    """The server as a child process that can be killed with SIGKILL and started again."""

    def __init__(self, env: dict[str, str], port: int, log: Path) -> None:
        self.env, self.port, self.log = env, port, log
        self.proc: subprocess.Popen[bytes] | None = None
        self.base = f"http://127.0.0.1:{port}"

    def start(self, timeout: float = 120.0) -> float:
        t0 = time.perf_counter()
        cmd = [sys.executable, "-m", "uvicorn", "--factory", "lookloop.server.app:create_app",
               "--host", "127.0.0.1", "--port", str(self.port), "--log-level", "warning"]
        with self.log.open("ab") as fh:
            self.proc = subprocess.Popen(cmd, env=self.env, stdout=fh, stderr=subprocess.STDOUT)
        while time.perf_counter() - t0 < timeout:
            if self.proc.poll() is not None:
                raise RuntimeError(f"the server exited with {self.proc.returncode}; see {self.log}")
            try:
                if httpx.get(self.base + "/healthz", timeout=1.0).status_code == 200:
                    return time.perf_counter() - t0
            except httpx.HTTPError:
                pass
            time.sleep(0.1)
        raise RuntimeError(f"the server did not come up in {timeout:.0f} s; see {self.log}")

    def kill(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)
            self.proc.wait()

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                self.kill()
