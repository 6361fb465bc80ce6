"""The catalogue service: products by name, their canonical label form, and imported labelled photos."""

from __future__ import annotations

import threading
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path

from sqlalchemy import select

from lookloop.catalog.dataset import GroceryDataset, LabelledImage, grocery_catalog
from lookloop.domain import CatalogItem, normalise_label
from lookloop.errors import Conflict, NotFound
from lookloop.store.db import Database
from lookloop.store.tables import CatalogItemRow, LabelRow


def _row_to_item(row: CatalogItemRow) -> CatalogItem:
    return CatalogItem(
        id=row.id,
        name=row.name,
        coarse_class=row.coarse_class,
        description=row.description,
        price=row.price,
        currency=row.currency,
        barcode=row.barcode,
        images=tuple(row.images or ()),
        family=row.family or "",
    )


class Catalogue:
    """The products the glasses know, cached in memory and reloaded after every change."""

    def __init__(self, db: Database) -> None:
        self.db = db
        self._lock = threading.Lock()
        self._items: dict[str, CatalogItem] = {}
        self._by_norm: dict[str, CatalogItem] = {}
        # Called after every change this process made (other workers reload: their copies are stale).
        self.changed: list[Callable[[], None]] = []

    def reload(self) -> None:
        with self.db.session() as s:
            items = {r.name: _row_to_item(r) for r in s.scalars(select(CatalogItemRow)).all()}
        by_norm = {normalise_label(i.name): i for i in items.values()}
        by_norm.update({normalise_label(i.id): i for i in items.values()})
        with self._lock:
            self._items, self._by_norm = items, by_norm

    def _changed(self) -> None:
        self.reload()
        for hook in self.changed:
            hook()

    def find(self, name: str) -> CatalogItem | None:
        return self._items.get(name) or self._by_norm.get(normalise_label(name))

    def canonical_label(self, value: str) -> str:
        """A human's free-text answer mapped onto the catalogue name when it names a product."""
        item = self.find(value)
        return item.name if item else value.strip()

    def items(self) -> list[CatalogItem]:
        return sorted(self._items.values(), key=lambda i: i.name)

    def search(self, text: str | None = None) -> list[CatalogItem]:
        """The items whose name or coarse class holds ``text`` (any case, "standard milk" finding
        "Arla-Standard-Milk"); every item when it is empty."""
        items = self.items()
        if not text:
            return items
        needle = text.lower()
        norm = normalise_label(text)
        return [i for i in items if needle in i.name.lower() or needle in i.coarse_class.lower()
                or (norm and norm in normalise_label(i.name))]

    def create(self, item: CatalogItem) -> CatalogItem:
        """Adds a new item; Conflict when one with its id exists."""
        if any(i.id == item.id for i in self.items()):
            raise Conflict(f"catalogue item {item.id!r} exists; use PUT to change it")
        self.upsert([item])
        return self.get(item.id)

    def put(self, item: CatalogItem) -> CatalogItem:
        """Adds an item or replaces its details; a replaced item keeps its images."""
        existing = next((i for i in self.items() if i.id == item.id), None)
        if existing is not None:
            item = replace(item, images=existing.images)
        self.upsert([item])
        return self.get(item.id)

    def get(self, item_id: str) -> CatalogItem:
        with self.db.session() as s:
            row = s.get(CatalogItemRow, item_id)
            if row is None:
                raise NotFound(f"no catalogue item {item_id!r}")
            return _row_to_item(row)

    def upsert(self, items: list[CatalogItem]) -> int:
        with self.db.session() as s:
            for item in items:
                row = s.get(CatalogItemRow, item.id)
                if row is None:
                    row = CatalogItemRow(id=item.id)
                    s.add(row)
                row.name = item.name
                row.coarse_class = item.coarse_class
                row.description = item.description
                row.price = item.price
                row.currency = item.currency
                row.barcode = item.barcode
                row.images = list(item.images)
                row.family = item.family
        self._changed()
        return len(items)

    def delete(self, item_id: str) -> None:
        with self.db.session() as s:
            row = s.get(CatalogItemRow, item_id)
            if row is None:
                raise NotFound(f"no catalogue item {item_id!r}")
            s.delete(row)
        self._changed()

    def import_grocery(self, root: Path, *, splits: tuple[str, ...] = ("train",)) -> tuple[int, int]:
        """The demo catalogue (81 products, iconic images, descriptions, demo prices) plus split labels."""
        items = grocery_catalog(root)
        self.upsert(items)
        ds = GroceryDataset(root)
        images: list[LabelledImage] = []
        for split in splits:
            images.extend(ds.split(split))
        return len(items), self.import_labelled_images(images, source="import")

    def import_labelled_images(self, images: list[LabelledImage], *, source: str) -> int:
        with self.db.session() as s:
            existing = set(s.scalars(select(LabelRow.image_path).where(LabelRow.image_path.is_not(None))).all())
            added = 0
            for img in images:
                p = str(Path(img.path).resolve())
                if p in existing:
                    continue
                s.add(LabelRow(image_path=p, value=img.label, source=source, skill="identify"))
                existing.add(p)
                added += 1
        return added
