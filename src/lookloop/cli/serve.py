"""``lookloop serve``: the service (API, pages, sockets), with the demo catalogue on first start."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Annotated, Any

import typer
import uvicorn
from rich.console import Console

from lookloop import telemetry
from lookloop.catalog import GroceryDataset
from lookloop.cli._shared import Lookloop, console, err_console, fail, open_system, open_system_models
from lookloop.config import get_settings
from lookloop.errors import LookloopError
from lookloop.humans.gold import gold_photos
from lookloop.server.app import create_app

PAGES = Path(__file__).resolve().parent.parent / "server" / "pages"


def ensure_demo(system: Lookloop) -> None:
    """First start: the demo catalogue and the train labels from the Grocery Store data."""
    if system.list_items():
        return
    root = system.settings.grocery_dir
    if not (root / "classes.csv").is_file():
        err_console.print(
            f"[yellow]No demo data at {root}.[/yellow] Point LOOKLOOP_DATA at a folder holding grocery/ "
            "(e.g. export LOOKLOOP_DATA=/path/to/shared/data) to load the demo catalogue."
        )
        return
    items, labels = system.import_grocery(root)
    err_console.print(f"imported the demo catalogue: {items} products, {labels} labelled photos")


DEMO_GOLD = 12  # gold items the demo starts with: enough for a reviewer to become trusted with one slip


def ensure_demo_gold(system: Lookloop, count: int = DEMO_GOLD) -> int:
    """First start: gold items from the Grocery Store ``val`` photos with their known labels, so a demo reviewer's
    answers can make them trusted (their labels then teach every wearer at once). Returns how many were added:
    none on a restart (each photo is added once) or without the demo data."""
    root = system.settings.grocery_dir
    if not (root / "val.txt").is_file():
        return 0
    photos = gold_photos(GroceryDataset(root), "val", count, lambda name: system.find_item(name) is not None)
    added = sum(1 for p in photos if system.gold.add(Path(p.path).read_bytes(), p.label) is not None)
    if added:
        err_console.print(f"added {added} gold items (known answers that make a demo reviewer trusted)")
    return added


def print_demo_credentials(system: Lookloop, out: Console = console) -> dict[str, Any]:
    """First start: demo device, reviewer and operator (var/demo-credentials.json, mode 0600), printed."""
    path = system.settings.resolved_var_dir / "demo-credentials.json"
    creds: dict[str, Any] = system.humans.accounts.ensure_demo(path)
    out.print(f"[bold]demo credentials[/bold] ({path}):")
    out.print(f"  wearer device    {creds['device']['id']}  token {creds['device']['token']}")
    for role in ("reviewer", "operator"):
        out.print(f"  {role:<16} {creds[role]['username']} / {creds[role]['password']}")
    return creds


def extra_pages() -> list[tuple[str, str]]:
    """The pages the server serves (simulator, reviewer, dashboard), listed when they exist."""
    known = (("simulator.html", "/simulator", "glasses simulator"), ("review.html", "/review", "reviewer page"),
             ("dashboard.html", "/dashboard", "operator dashboard"))
    return [(url, what) for file, url, what in known if (PAGES / file).exists()]


def serve(
    host: Annotated[str | None, typer.Option(help="Address to bind (default from LOOKLOOP_HOST).")] = None,
    port: Annotated[int | None, typer.Option(help="Port (default from LOOKLOOP_PORT).")] = None,
    demo: Annotated[bool, typer.Option(help="Load the demo catalogue on first start.")] = True,
    workers: Annotated[int, typer.Option(help="API worker processes (more than 1 needs Postgres).")] = 1,
) -> None:
    """Start the service (API, pages, sockets)."""
    settings = get_settings()
    if workers < 1:
        raise fail("--workers must be at least 1")
    if workers > 1 and not settings.resolved_database_url.startswith("postgresql"):
        raise fail(
            f"--workers {workers} needs Postgres: SQLite is the one-process default. Set "
            "LOOKLOOP_DATABASE_URL=postgresql://… and run `lookloop worker` beside the API (or try "
            "`lookloop cluster up --workers N`)."
        )
    try:
        system = open_system(settings, build=False)
        if demo:
            with err_console.status("importing the demo catalogue and its labelled photos…"):
                ensure_demo(system)
        open_system_models(system)  # a progress bar per embedding pass (minutes on a first start)
        if demo:
            with err_console.status("adding the demo's gold items…"):
                ensure_demo_gold(system)
        with err_console.status("loading the intent router and the speech models…"):
            system.warm()
    except LookloopError as exc:
        raise fail(exc.message) from None
    h, p = host or settings.host, port or settings.port
    base = f"http://{h}:{p}"
    console.print(f"[bold green]lookloop serving[/bold green] at {base}")
    for path, what in (("/start", "start page"), ("/docs", "API (OpenAPI)"), ("/healthz", "health")):
        console.print(f"  {what:<16} {base}{path}")
    for path, what in extra_pages():
        console.print(f"  {what:<16} {base}{path}")
    if demo:
        print_demo_credentials(system)
    if workers == 1:
        uvicorn.run(create_app(settings, system=system), host=h, port=p, **server_options())
        return
    # Stateless workers: each process builds its own system from the same settings (the models and caches
    # were made above, once); the database holds what they share. This process only supervises them.
    system.close()
    system.db.dispose()
    del system
    console.print(f"  {workers} API worker processes; background jobs run in `lookloop worker` processes")
    # The workers share this machine's cores: each takes its share for a forward pass and its ask threads.
    os.environ.setdefault("LOOKLOOP_API_WORKERS_PER_MACHINE", str(workers))
    # /metrics of any worker adds up every worker's figures (the workers inherit the directory's name).
    telemetry.prepare_multiprocess(Path(os.environ.get(telemetry.MULTIPROC_ENV) or
                                        settings.resolved_var_dir / "prometheus"))
    uvicorn.run("lookloop.server.app:create_app", factory=True, workers=workers, host=h, port=p,
                **server_options())


def server_options() -> dict[str, Any]:
    """uvicorn's options beyond the address. ``proxy_headers=False``: uvicorn would otherwise believe
    X-Forwarded-For from loopback and rewrite the client's address before the app sees it; the app reads the
    header itself, only from ``LOOKLOOP_TRUSTED_PROXIES``."""
    return {"log_level": "warning", "proxy_headers": False, "server_header": False}


def register(app: typer.Typer) -> None:
    app.command()(serve)
