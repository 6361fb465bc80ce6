"""Shared fixtures: real data from ../shared/data, a shared model cache, small systems on SQLite or Postgres."""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from lookloop.catalog import GroceryDataset, LabelledImage, grocery_catalog
from lookloop.config import Settings, get_settings

REPO = Path(__file__).resolve().parents[1]
# One model cache for the whole suite (and across runs): the ONNX export and embeddings are made once.
MODEL_DIR = REPO / "var" / "test-models"

# A few visually distinct products keep start-up fast while the photos stay real.
SMALL_CLASSES = ("Granny-Smith", "Banana", "Arla-Standard-Milk", "Red-Bell-Pepper", "Cucumber", "Oatly-Oat-Milk")

# Audit asks are drawn at random (5% by default): off in tests unless a test asks for them
# (tests/test_live_calibration.py), so queue contents and outcomes elsewhere stay deterministic.
os.environ.setdefault("LOOKLOOP_AUDIT_RATE", "0")
# The start-up model calibrates by cross-fitting (several heads): off unless a test asks for it, so small systems
# answer with the fixed threshold (with a few dozen labels no group could hold a certificate, and all would ask).
os.environ.setdefault("LOOKLOOP_STARTUP_CALIBRATION", "0")


@pytest.fixture(scope="session")
def data_dir() -> Path:
    path = get_settings().data_dir
    if not (path / "grocery" / "classes.csv").is_file():
        pytest.fail(f"the shared data is missing at {path}: set LOOKLOOP_DATA_DIR to the folder holding grocery/")
    return path


@pytest.fixture(scope="session")
def grocery(data_dir: Path) -> GroceryDataset:
    return GroceryDataset(data_dir / "grocery")


@pytest.fixture(scope="session")
def model_dir() -> Path:
    MODEL_DIR.mkdir(parents=True, exist_ok=True)
    return MODEL_DIR


def _postgres_url() -> str | None:
    return os.environ.get("LOOKLOOP_TEST_POSTGRES_URL") or None


def reset_postgres(url: str) -> None:
    from sqlalchemy import create_engine, text

    engine = create_engine(url.replace("postgresql://", "postgresql+psycopg://", 1))
    with engine.begin() as conn:
        conn.execute(text("DROP SCHEMA public CASCADE"))
        conn.execute(text("CREATE SCHEMA public"))
    engine.dispose()


@pytest.fixture(params=["sqlite", "postgres"])
def database_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """Runs a test on SQLite and, where LOOKLOOP_TEST_POSTGRES_URL is set (as in CI), on Postgres."""
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'lookloop.db'}"
    url = _postgres_url()
    if url is None:
        pytest.skip("LOOKLOOP_TEST_POSTGRES_URL is not set (CI sets it)")
    reset_postgres(url)
    return url


def make_settings(tmp_path: Path, data_dir: Path, model_dir: Path, **overrides: object) -> Settings:
    return Settings(var_dir=tmp_path / "var", data_dir=data_dir, model_dir=model_dir, **overrides)  # type: ignore[arg-type]


def small_labels(grocery: GroceryDataset, per_class: int = 12) -> list[LabelledImage]:
    out: list[LabelledImage] = []
    for name in SMALL_CLASSES:
        out.extend([i for i in grocery.split("train") if i.label == name][:per_class])
    return out


def small_val(grocery: GroceryDataset, per_class: int = 3) -> list[LabelledImage]:
    out: list[LabelledImage] = []
    for name in SMALL_CLASSES:
        out.extend([i for i in grocery.split("val") if i.label == name][:per_class])
    return out


def build_small_system(settings: Settings, grocery: GroceryDataset, *, per_class: int = 12):  # type: ignore[no-untyped-def]
    """A migrated system knowing SMALL_CLASSES from their iconic images plus a few train photos each."""
    from lookloop.system import Lookloop

    system = Lookloop(settings)
    system.migrate()
    items = [i for i in grocery_catalog(grocery.root) if i.name in SMALL_CLASSES]
    system.upsert_items(items)
    system.import_labelled_images(small_labels(grocery, per_class), source="import")
    system.build_identify()
    return system


@contextlib.contextmanager
def two_workers(settings: Settings, grocery: GroceryDataset) -> Iterator[tuple[Any, Any]]:
    """Two workers on one database, telling each other what changed over one in-process bus (as two API worker
    processes on Postgres do over NOTIFY); each migrated and serving the small system's model."""
    from lookloop.store.bus import LocalBus, LocalNetwork
    from lookloop.system import Lookloop

    build_small_system(settings, grocery).close()
    net = LocalNetwork()
    a = Lookloop(settings, bus=LocalBus(net))
    b = Lookloop(settings, bus=LocalBus(net))
    try:
        for worker in (a, b):  # as each worker process starts
            worker.migrate()
            worker.build_identify()
        yield a, b
    finally:
        a.close()
        b.close()


@pytest.fixture
def small_system(tmp_path: Path, data_dir: Path, model_dir: Path, grocery: GroceryDataset) -> Iterator[object]:
    system = build_small_system(make_settings(tmp_path, data_dir, model_dir), grocery)
    yield system
    system.db.dispose()


def run_queued_jobs(system: object, timeout: float = 300.0) -> None:
    """Runs what ``system`` queued: this process's job thread on SQLite, a `lookloop worker --burst` on Postgres."""
    import subprocess
    import sys

    from lookloop.jobs import InProcessJobs

    jobs = system.jobs  # type: ignore[attr-defined]
    if isinstance(jobs, InProcessJobs):
        assert jobs.flush(timeout=timeout)
        return
    settings = system.settings  # type: ignore[attr-defined]
    env = {**os.environ, "PYTHONPATH": str(REPO / "src"), "LOOKLOOP_DATABASE_URL": settings.database_url,
           "LOOKLOOP_VAR_DIR": str(settings.var_dir), "LOOKLOOP_MODEL_DIR": str(settings.model_dir),
           "LOOKLOOP_DATA_DIR": str(settings.data_dir)}
    done = subprocess.run([sys.executable, "-m", "lookloop.cli", "worker", "--burst"], env=env,
                          capture_output=True, text=True, timeout=timeout)
    assert done.returncode == 0, (done.stdout + done.stderr)[-3000:]
