"""Catalogue sources: the Grocery Store layout, plain CSV/JSON files, and the demo price list."""

from __future__ import annotations

import csv
import json
from dataclasses import dataclass
from importlib import resources
from pathlib import Path

from lookloop.domain import CatalogItem
from lookloop.errors import BadInput


@dataclass(frozen=True)
class GroceryClass:
    name: str
    class_id: int
    coarse_name: str
    coarse_id: int
    iconic_image: Path | None
    description: str
    family: str = ""  # the top folder of the class's images: Fruit, Vegetables or Packages


@dataclass(frozen=True)
class LabelledImage:
    path: Path
    label: str


def _family(relative: Path) -> str:
    """``iconic-images-and-descriptions/Fruit/Apple/...`` → ``Fruit``: the folder below the set's own."""
    parts = relative.parts
    return parts[1] if len(parts) > 2 else ""


class GroceryDataset:
    """Reads Klasson et al.'s Grocery Store layout (``classes.csv``, ``train.txt``, ``val.txt``)."""

    def __init__(self, root: Path) -> None:
        self.root = Path(root)
        if not (self.root / "classes.csv").is_file():
            raise BadInput(
                f"no Grocery Store data at {self.root} (classes.csv missing); "
                "set LOOKLOOP_DATA_DIR to the folder that holds grocery/"
            )
        self.classes = self._read_classes()
        self._by_id = {c.class_id: c for c in self.classes}

    def _read_classes(self) -> list[GroceryClass]:
        out: list[GroceryClass] = []
        with (self.root / "classes.csv").open(newline="", encoding="utf-8") as fh:
            reader = csv.reader(fh)
            next(reader, None)
            for row in reader:
                if len(row) < 6:
                    continue
                rel = Path(row[4].lstrip("/"))
                iconic = self.root / rel
                desc_path = self.root / row[5].lstrip("/")
                desc = desc_path.read_text(encoding="utf-8", errors="replace").strip() if desc_path.is_file() else ""
                out.append(
                    GroceryClass(
                        name=row[0].strip(),
                        class_id=int(row[1]),
                        coarse_name=row[2].strip(),
                        coarse_id=int(row[3]),
                        iconic_image=iconic if iconic.is_file() else None,
                        description=desc,
                        family=_family(rel),
                    )
                )
        return out

    def split(self, name_or_file: str | Path) -> list[LabelledImage]:
        """Images of a split file (``train.txt``, ``val.txt`` or any file in that layout)."""
        path = Path(name_or_file)
        if not path.is_absolute():
            candidate = self.root / (path if path.suffix else Path(f"{path}.txt"))
            path = candidate
        if not path.is_file():
            raise BadInput(f"split file {path} not found")
        out: list[LabelledImage] = []
        for line in path.read_text(encoding="utf-8").splitlines():
            parts = [p.strip() for p in line.split(",")]
            if len(parts) < 2 or not parts[0]:
                continue
            out.append(LabelledImage(self.root / parts[0], self._by_id[int(parts[1])].name))
        return out

    def iconic(self) -> list[LabelledImage]:
        return [LabelledImage(c.iconic_image, c.name) for c in self.classes if c.iconic_image is not None]


def demo_prices() -> dict[str, tuple[float, str]]:
    """The demo price list shipped with the package: product name → (price, currency)."""
    text = resources.files("lookloop").joinpath("data/demo_prices.csv").read_text(encoding="utf-8")
    out: dict[str, tuple[float, str]] = {}
    for row in csv.DictReader(text.splitlines()):
        out[row["name"]] = (float(row["price"]), row["currency"])
    return out


def grocery_catalog(root: Path) -> list[CatalogItem]:
    ds = GroceryDataset(root)
    prices = demo_prices()
    items = []
    for c in ds.classes:
        price, currency = prices.get(c.name, (None, "SEK"))
        items.append(
            CatalogItem(
                id=c.name.lower(),
                name=c.name,
                coarse_class=c.coarse_name,
                description=c.description,
                price=price,
                currency=currency,
                images=(str(c.iconic_image),) if c.iconic_image else (),
                family=c.family,
            )
        )
    return items


_FIELDS = ("id", "name", "coarse_class", "description", "price", "currency", "barcode", "images", "family")


def _item_from_mapping(row: dict[str, object], where: str) -> CatalogItem:
    name = str(row.get("name") or "").strip()
    if not name:
        raise BadInput(f"{where}: every catalogue item needs a name")
    raw_price = row.get("price")
    price: float | None = None
    if raw_price not in (None, ""):
        try:
            price = float(str(raw_price))
        except ValueError as exc:
            raise BadInput(f"{where}: price {raw_price!r} is not a number") from exc
    images = row.get("images") or ()
    if isinstance(images, str):
        images = tuple(p for p in images.split(";") if p)
    return CatalogItem(
        id=str(row.get("id") or name.lower()).strip(),
        name=name,
        coarse_class=str(row.get("coarse_class") or ""),
        description=str(row.get("description") or ""),
        price=price,
        currency=str(row.get("currency") or "SEK"),
        barcode=(str(row["barcode"]) if row.get("barcode") else None),
        images=tuple(str(p) for p in images) if isinstance(images, list | tuple) else (),
        family=str(row.get("family") or "").strip(),
    )


def load_catalog_file(path: Path) -> list[CatalogItem]:
    """A plain catalogue: CSV with a header or JSON (a list of objects), fields as in ``CatalogItem``."""
    if not path.is_file():
        raise BadInput(f"catalogue file {path} not found")
    if path.suffix.lower() == ".json":
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
        except json.JSONDecodeError as exc:
            raise BadInput(f"{path}: not valid JSON ({exc.msg} at line {exc.lineno})") from exc
        if isinstance(data, dict):
            data = data.get("items", [])
        if not isinstance(data, list):
            raise BadInput(f"{path}: expected a list of catalogue items")
        return [_item_from_mapping(dict(r), f"{path} item {i}") for i, r in enumerate(data) if isinstance(r, dict)]
    with path.open(newline="", encoding="utf-8") as fh:
        rows = list(csv.DictReader(fh))
    return [_item_from_mapping(dict(r), f"{path} line {i + 2}") for i, r in enumerate(rows)]
