"""``lookloop catalog import|list``: the product catalogue."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.table import Table

from lookloop.catalog import load_catalog_file
from lookloop.cli._shared import console, fail, open_system
from lookloop.config import get_settings
from lookloop.errors import LookloopError

catalog_app = typer.Typer(help="The product catalogue.", no_args_is_help=True)


@catalog_app.command("import")
def catalog_import(
    source: Annotated[Path | None, typer.Argument(help="Grocery Store folder, or a CSV/JSON catalogue file.")] = None,
    labels: Annotated[str, typer.Option(help="Grocery splits whose photos become labels (comma list).")] = "train",
) -> None:
    """Import products (and, for the Grocery Store layout, labelled photos)."""
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
    system = open_system(build=False)
    table = Table("id", "name", "class", "price")
    for item in system.list_items():
        table.add_row(item.id, item.name, item.coarse_class, f"{item.price:.2f} {item.currency}" if item.price else "")
    console.print(table)


def register(app: typer.Typer) -> None:
    app.add_typer(catalog_app, name="catalog")
