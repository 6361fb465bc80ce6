"""The ``lookloop`` command line: serve, ask, import, train, bench."""

from __future__ import annotations

import importlib
import json
import pkgutil
import sys
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from lookloop.config import Settings, get_settings
from lookloop.errors import LookloopError

console = Console()
err_console = Console(stderr=True, soft_wrap=True)  # one-line errors stay on one line

app = typer.Typer(help="lookloop: glasses that answer what they are sure of and ask a human for the rest.",
                  no_args_is_help=True, pretty_exceptions_enable=False)
catalog_app = typer.Typer(help="The product catalogue.", no_args_is_help=True)
bench_app = typer.Typer(help="Benchmarks: figures printed, and written with --json PATH.", no_args_is_help=True)
app.add_typer(catalog_app, name="catalog")
app.add_typer(bench_app, name="bench")


def fail(message: str, code: int = 2) -> typer.Exit:
    err_console.print(f"[red]error:[/red] {message}")
    return typer.Exit(code)


def make_progress() -> Progress:
    return Progress(
        TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
        console=err_console, transient=False,
    )


def open_system(settings: Settings | None = None, *, build: bool = True) -> Any:
    """The in-process system, migrated, with models loaded (and a progress bar while it embeds)."""
    from lookloop.system import Lookloop

    system = Lookloop(settings or get_settings())
    system.migrate()
    if build:
        open_system_models(system)
    return system


def ensure_demo(system: Any) -> None:
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


@app.command()
def serve(
    host: Annotated[str | None, typer.Option(help="Address to bind (default from LOOKLOOP_HOST).")] = None,
    port: Annotated[int | None, typer.Option(help="Port (default from LOOKLOOP_PORT).")] = None,
    demo: Annotated[bool, typer.Option(help="Load the demo catalogue on first start.")] = True,
) -> None:
    """Start the service (API, pages, sockets)."""
    import uvicorn

    from lookloop.server.app import create_app

    settings = get_settings()
    try:
        system = open_system(settings, build=False)
        if demo:
            ensure_demo(system)
        open_system_models(system)
    except LookloopError as exc:
        raise fail(exc.message) from None
    h, p = host or settings.host, port or settings.port
    base = f"http://{h}:{p}"
    console.print(f"[bold green]lookloop serving[/bold green] at {base}")
    for path, what in (("/docs", "API (OpenAPI)"), ("/healthz", "health")):
        console.print(f"  {what:<16} {base}{path}")
    for path, what in extra_pages():
        console.print(f"  {what:<16} {base}{path}")
    if demo:
        from lookloop.humans.commands import print_demo_credentials

        print_demo_credentials(system, console)
    uvicorn.run(create_app(settings, system=system), host=h, port=p, log_level="warning")


def extra_pages() -> list[tuple[str, str]]:
    """Pages other packages serve (simulator, reviewer, dashboard), listed when they exist."""
    pages = Path(__file__).parent / "server" / "pages"
    known = (("simulator.html", "/simulator", "glasses simulator"), ("review.html", "/review", "reviewer page"),
             ("dashboard.html", "/dashboard", "operator dashboard"))
    return [(url, what) for file, url, what in known if (pages / file).exists()]


def open_system_models(system: Any) -> None:
    with make_progress() as progress:
        tasks: dict[str, Any] = {}

        def report(what: str, done: int, total: int) -> None:
            if what not in tasks:
                tasks[what] = progress.add_task(what, total=total)
            progress.update(tasks[what], completed=done, total=total)

        system.build_identify(progress=report)


@app.command()
def ask(
    image: Annotated[Path, typer.Argument(help="A photo (JPEG/PNG/WebP).")],
    question: Annotated[str, typer.Argument(help="The question, e.g. 'what is this?'")] = "what is this?",
    server: Annotated[str | None, typer.Option(help="Ask a running server at this URL instead of in process.")] = None,
    device_id: Annotated[str, typer.Option(help="Device id recorded with the ask.")] = "cli",
    as_json: Annotated[bool, typer.Option("--json", help="Print the whole answer as JSON.")] = False,
) -> None:
    """Ask about a photo and print the answer."""
    if not image.is_file():
        raise fail(f"{image} is not a file")
    data = image.read_bytes()
    if server:
        import httpx

        try:
            resp = httpx.post(
                server.rstrip("/") + "/v1/asks",
                data={"question": question, "device_id": device_id},
                files={"image": (image.name, data)},
                timeout=60,
            )
        except httpx.HTTPError as exc:
            raise fail(f"could not reach {server}: {exc}") from None
        if resp.status_code >= 400:
            try:
                detail = resp.json().get("detail", resp.text)
            except ValueError:
                detail = resp.text
            raise fail(f"the server answered {resp.status_code}: {detail}")
        payload = resp.json()
    else:
        from lookloop.server.schemas import AskOut

        try:
            system = open_system()
            record = system.ask(question, data, device_id=device_id)
        except LookloopError as exc:
            raise fail(exc.message) from None
        payload = AskOut.of(record).model_dump(mode="json")
    if as_json:
        console.print_json(json.dumps(payload))
        return
    answer = payload["answer"]
    for line in answer["hud"]:
        console.print(f"[bold]{line}[/bold]")
    console.print(
        f"[dim]{answer['skill']} · confidence {answer['confidence']:.2f} · {answer['decision']}"
        f" · ask {payload['id']}[/dim]"
    )


@catalog_app.command("import")
def catalog_import(
    source: Annotated[Path | None, typer.Argument(help="Grocery Store folder, or a CSV/JSON catalogue file.")] = None,
    labels: Annotated[str, typer.Option(help="Grocery splits whose photos become labels (comma list).")] = "train",
) -> None:
    """Import products (and, for the Grocery Store layout, labelled photos)."""
    from lookloop.catalog import load_catalog_file

    settings = get_settings()
    src = source or settings.grocery_dir
    try:
        system = open_system(settings, build=False)
        if src.is_dir():
            splits = tuple(s for s in labels.split(",") if s.strip())
            n_items, n_labels = system.import_grocery(src, splits=splits)
            console.print(f"imported {n_items} products and {n_labels} labelled photos from {src}")
        else:
            items = load_catalog_file(src)
            system.upsert_items(items)
            console.print(f"imported {len(items)} products from {src}")
    except LookloopError as exc:
        raise fail(exc.message) from None


@catalog_app.command("list")
def catalog_list() -> None:
    """List the catalogue."""
    from rich.table import Table

    system = open_system(build=False)
    table = Table("id", "name", "class", "price")
    for item in system.list_items():
        table.add_row(item.id, item.name, item.coarse_class, f"{item.price:.2f} {item.currency}" if item.price else "")
    console.print(table)


def _register_benches() -> None:
    import lookloop.bench as bench_pkg

    for mod in sorted(pkgutil.iter_modules(bench_pkg.__path__), key=lambda m: m.name):
        if mod.name.startswith("_"):
            continue
        module = importlib.import_module(f"lookloop.bench.{mod.name}")
        register = getattr(module, "register", None)
        if callable(register):
            register(bench_app)


def _register_commands() -> None:
    """Command groups that live beside their domain code (train, models, export, …)."""
    for name in ("lookloop.loop.commands", "lookloop.humans.commands", "lookloop.privacy.commands",
                 "lookloop.exports.commands"):
        try:
            module = importlib.import_module(name)
        except ModuleNotFoundError as exc:
            if exc.name == name:
                continue
            raise
        module.register(app)


_register_benches()
_register_commands()


def main() -> None:
    try:
        app()
    except LookloopError as exc:
        err_console.print(f"[red]error:[/red] {exc.message}")
        sys.exit(2)


if __name__ == "__main__":
    main()
