"""The ``lookloop`` command line: serve, ask, import, train, bench, and the operators' tools.

Every command group is a module of this package with a ``register(app)`` function; every benchmark is
a module of ``lookloop.bench`` with a ``register(bench_app)`` function. Both are listed below by name,
so a renamed or missing module fails at import rather than quietly dropping its commands.
"""

from __future__ import annotations

import sys

import typer

from lookloop.bench import asr, crash, intents, latency, loop, poison, redact, redact_text, roundtrip, voice
from lookloop.bench import cluster as cluster_bench
from lookloop.cli import ask, catalog, cluster, exports, humans, jobs, models, privacy, serve
from lookloop.cli._shared import console, fail, make_progress, open_system, open_system_models
from lookloop.cli.serve import ensure_demo
from lookloop.errors import LookloopError

__all__ = ["app", "console", "ensure_demo", "fail", "main", "make_progress", "open_system", "open_system_models"]

app = typer.Typer(help="lookloop: glasses that answer what they are sure of and ask a human for the rest.",
                  no_args_is_help=True, pretty_exceptions_enable=False)
bench_app = typer.Typer(help="Benchmarks: figures printed, and written with --json PATH.", no_args_is_help=True)

# The order here is the order `lookloop --help` lists them in.
serve.register(app)
jobs.register(app)
cluster.register(app)
ask.register(app)
catalog.register(app)
app.add_typer(bench_app, name="bench")
models.register(app)
humans.register(app)
privacy.register(app)
exports.register(app)

asr.register(bench_app)
cluster_bench.register(bench_app)
crash.register(bench_app)
intents.register(bench_app)
latency.register(bench_app)
loop.register(bench_app)
poison.register(bench_app)
redact.register(bench_app)
redact_text.register(bench_app)
roundtrip.register(bench_app)
voice.register(bench_app)


def main() -> None:
    """The ``lookloop`` entry point: an error the commands did not catch is one line and exit code 2."""
    try:
        app()
    except LookloopError as exc:
        sys.exit(fail(exc.message).exit_code)
