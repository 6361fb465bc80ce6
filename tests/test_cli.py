"""The CLI: ask in process and through a server, catalogue import, clear errors."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from conftest import SMALL_CLASSES
from typer.testing import CliRunner
from voice_util import LiveServer

from lookloop.cli import app, open_system
from lookloop.config import get_settings
from lookloop.server.app import create_app

runner = CliRunner()


@pytest.fixture
def env(tmp_path: Path, data_dir: Path, model_dir: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("LOOKLOOP_VAR_DIR", str(tmp_path / "var"))
    monkeypatch.setenv("LOOKLOOP_DATA_DIR", str(data_dir))
    monkeypatch.setenv("LOOKLOOP_MODEL_DIR", str(model_dir))
    get_settings.cache_clear()
    yield tmp_path
    get_settings.cache_clear()


def _small_catalogue(tmp_path: Path, grocery) -> Path:  # type: ignore[no-untyped-def]
    rows = [
        {"id": c.name.lower(), "name": c.name, "coarse_class": c.coarse_name, "price": 9.5,
         "images": [str(c.iconic_image)]}
        for c in grocery.classes if c.name in SMALL_CLASSES
    ]
    path = tmp_path / "catalogue.json"
    path.write_text(json.dumps(rows))
    return path


def test_catalog_import_json_then_ask(env: Path, grocery) -> None:  # type: ignore[no-untyped-def]
    result = runner.invoke(app, ["catalog", "import", str(_small_catalogue(env, grocery))])
    assert result.exit_code == 0, result.output
    assert f"imported {len(SMALL_CLASSES)} products" in result.output
    photo = next(i for i in grocery.split("val") if i.label == "Banana").path
    result = runner.invoke(app, ["ask", str(photo), "what is this?", "--json"])
    assert result.exit_code == 0, result.output
    payload = json.loads(result.stdout[result.stdout.index("{"):])
    assert payload["answer"]["skill"] == "identify"
    assert payload["answer"]["candidates"][0]["label"] in SMALL_CLASSES


def test_catalog_import_csv(env: Path) -> None:
    csv = env / "c.csv"
    csv.write_text("id,name,price,currency,barcode\ncola,Cola 33cl,12.5,SEK,7310070000001\n")
    result = runner.invoke(app, ["catalog", "import", str(csv)])
    assert result.exit_code == 0, result.output
    result = runner.invoke(app, ["catalog", "list"])
    assert "Cola 33cl" in result.output


def test_clear_errors(env: Path, tmp_path: Path) -> None:
    result = runner.invoke(app, ["ask", str(tmp_path / "missing.jpg"), "what is this?"])
    assert result.exit_code != 0 and "not a file" in result.output
    not_image = tmp_path / "notes.txt"
    not_image.write_text("hello")
    result = runner.invoke(app, ["ask", str(not_image), "what is this?"])
    assert result.exit_code != 0 and "not an image" in result.output
    bad = tmp_path / "bad.csv"
    bad.write_text("id,name,price\nx,Thing,cheap\n")
    result = runner.invoke(app, ["catalog", "import", str(bad)])
    assert result.exit_code != 0 and "not a number" in result.output
    result = runner.invoke(app, ["ask", str(not_image), "hi", "--server", "http://127.0.0.1:9"])
    assert result.exit_code == 2 and "could not reach http://127.0.0.1:9" in result.output


def test_ask_through_a_server(env: Path, grocery) -> None:  # type: ignore[no-untyped-def]
    result = runner.invoke(app, ["catalog", "import", str(_small_catalogue(env, grocery))])
    assert result.exit_code == 0, result.output
    photo = next(i for i in grocery.split("val") if i.label == "Banana").path
    not_image = env / "notes.txt"
    not_image.write_text("hello")
    system = open_system()
    with LiveServer(create_app(system=system, warm=False)) as server:
        result = runner.invoke(app, ["ask", str(photo), "what is this?", "--server", server.url, "--json"])
        assert result.exit_code == 0, result.output
        payload = json.loads(result.stdout[result.stdout.index("{"):])
        assert payload["answer"]["skill"] == "identify" and payload["device_id"] == "anonymous"
        assert payload["answer"]["candidates"][0]["label"] in SMALL_CLASSES
        result = runner.invoke(app, ["ask", str(photo), "--server", server.url + "/"])
        assert result.exit_code == 0, result.output
        assert "identify · confidence" in result.output and "· ask " in result.output
        result = runner.invoke(app, ["ask", str(not_image), "hi", "--server", server.url])
        assert result.exit_code == 2 and "the server answered 4" in result.output and "not an image" in result.output
        assert "Traceback" not in result.output
    system.db.dispose()


def test_ask_a_server_without_a_catalogue(env: Path, grocery) -> None:  # type: ignore[no-untyped-def]
    photo = next(i for i in grocery.split("val") if i.label == "Banana").path
    system = open_system(build=False)
    with LiveServer(create_app(system=system, warm=False)) as server:
        result = runner.invoke(app, ["ask", str(photo), "--server", server.url])
    assert result.exit_code == 2, result.output
    assert "the server answered 503" in result.output and "import a catalogue" in result.output
    assert len(result.stderr.strip().splitlines()) == 1 and "Traceback" not in result.output
    system.db.dispose()
