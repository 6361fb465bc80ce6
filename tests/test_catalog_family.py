"""Each catalogue item's family (Fruit, Vegetables, Packages): read from the data set, stored, migrated."""

from __future__ import annotations

from pathlib import Path

from sqlalchemy import text

from lookloop.catalog import GroceryDataset
from lookloop.catalog.dataset import grocery_catalog, load_catalog_file
from lookloop.catalog.service import Catalogue
from lookloop.store.db import Database


def test_grocery_classes_know_their_family(grocery: GroceryDataset) -> None:
    families = {c.name: c.family for c in grocery.classes}
    assert families["Granny-Smith"] == "Fruit"
    assert families["Cucumber"] == "Vegetables"
    assert families["Oatly-Oat-Milk"] == "Packages"
    assert set(families.values()) == {"Fruit", "Vegetables", "Packages"}
    items = {i.name: i for i in grocery_catalog(grocery.root)}
    assert items["Granny-Smith"].family == "Fruit" and items["Granny-Smith"].coarse_class == "Apple"


def test_the_catalogue_stores_the_family(grocery: GroceryDataset, database_url: str) -> None:
    db = Database(database_url)
    db.migrate()
    catalogue = Catalogue(db)
    catalogue.upsert(grocery_catalog(grocery.root))
    assert catalogue.get("banana").family == "Fruit"
    assert catalogue.find("Oatly-Oat-Milk") is not None
    assert catalogue.find("Oatly-Oat-Milk").family == "Packages"  # type: ignore[union-attr]
    db.dispose()


def test_a_plain_catalogue_file_may_name_the_family(tmp_path: Path) -> None:
    path = tmp_path / "shop.csv"
    path.write_text("name,price,family\nTea,12,Packages\nPlum,3,\n", encoding="utf-8")
    items = load_catalog_file(path)
    assert [i.family for i in items] == ["Packages", ""]


def test_the_migration_fills_the_family_of_imported_items(database_url: str) -> None:
    from alembic import command

    from lookloop.store.db import alembic_config

    db = Database(database_url)
    cfg = alembic_config(db.engine.url.render_as_string(hide_password=False))
    with db.engine.begin() as conn:
        cfg.attributes["connection"] = conn
        command.upgrade(cfg, "0102_loop_audit")
        for item_id, images in (("kiwi", '["/data/grocery/iconic-images-and-descriptions/Fruit/Kiwi/Kiwi/k.jpg"]'),
                                ("tea", "[]")):
            conn.execute(text("INSERT INTO catalog_items (id, name, coarse_class, description, currency, images, "
                              "created_at, updated_at) VALUES (:id, :id, '', '', 'SEK', :images, CURRENT_TIMESTAMP, "
                              "CURRENT_TIMESTAMP)"), {"id": item_id, "images": images})
    db.migrate()
    catalogue = Catalogue(db)
    assert catalogue.get("kiwi").family == "Fruit"
    assert catalogue.get("tea").family == ""
    db.dispose()
