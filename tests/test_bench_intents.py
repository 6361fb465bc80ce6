"""``lookloop bench intents`` on a small CLINC150 subset (hashing embedder, so it runs in seconds)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import typer
from typer.testing import CliRunner

from lookloop.bench.intents import register, score, split_sets
from lookloop.config import get_settings

CLINC = get_settings().data_dir / "clinc150" / "clinc150_train_val.json"
INTENTS = ["translate", "transfer", "timer", "weather", "alarm", "calories"]


def _subset(n_train: int = 30, n_val: int = 8, n_oos: int = 20) -> dict[str, Any]:
    data = json.loads(CLINC.read_text(encoding="utf-8"))
    out: dict[str, Any] = {}
    for key, n in (("train", n_train), ("val", n_val)):
        rows = []
        for intent in INTENTS:
            rows += [r for r in data[key] if r[1] == intent][:n]
        out[key] = rows
    out["oos_train"] = data["oos_train"][:n_oos]
    out["oos_val"] = data["oos_val"][:n_oos]
    return out


@pytest.fixture(scope="module")
def clinc_small(tmp_path_factory: pytest.TempPathFactory) -> Path:
    if not CLINC.exists():
        pytest.skip(f"CLINC150 not found at {CLINC}")
    path = tmp_path_factory.mktemp("clinc") / "small.json"
    path.write_text(json.dumps(_subset()), encoding="utf-8")
    return path


@pytest.fixture()
def cli(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> typer.Typer:
    monkeypatch.setenv("LOOKLOOP_VAR_DIR", str(tmp_path / "var"))
    get_settings.cache_clear()
    app = typer.Typer()
    register(app)

    @app.command("noop")
    def _noop() -> None:  # a second command keeps typer from collapsing the group
        pass

    yield app
    get_settings.cache_clear()


def test_bench_writes_the_three_figures(cli: typer.Typer, clinc_small: Path, tmp_path: Path) -> None:
    out = tmp_path / "figures.json"
    result = CliRunner().invoke(
        cli,
        [
            "intents",
            "--train",
            str(clinc_small),
            "--eval",
            str(clinc_small),
            "--json",
            str(out),
            "--embedder",
            "hashing",
        ],
    )
    assert result.exit_code == 0, result.output
    figures = json.loads(out.read_text())
    for key in ("in_scope_accuracy", "oos_recall", "oos_precision"):
        assert 0.0 <= figures[key] <= 1.0, key
    assert figures["eval_split"] == "val"
    assert figures["n_eval_in_scope"] == 8 * len(INTENTS) and figures["n_eval_oos"] == 20
    # a few intents with distinct words: far better than chance even with hashing features
    assert figures["in_scope_accuracy"] > 0.5
    assert "in_scope_accuracy" in result.output


def test_eval_prefers_the_test_split(clinc_small: Path, tmp_path: Path) -> None:
    data = json.loads(clinc_small.read_text())
    data["test"], data["oos_test"] = data["val"][:5], data["oos_val"][:3]
    ev = tmp_path / "eval.json"
    ev.write_text(json.dumps(data))
    train, evaluation, split = split_sets(clinc_small, ev)
    assert split == "test" and len(evaluation) == 8
    assert sum(1 for _, i in train if i == "oos") == 20


def test_score_counts_by_hand() -> None:
    figures = score(["a", None, "b", None, "a"], ["a", "oos", "a", "a", "oos"])
    assert figures["in_scope_accuracy"] == pytest.approx(1 / 3)
    assert figures["oos_recall"] == pytest.approx(1 / 2)
    assert figures["oos_precision"] == pytest.approx(1 / 2)


@pytest.mark.parametrize("content", [None, "not json", '{"val": []}', '{"train": [["only text"]]}'])
def test_bad_files_give_a_one_line_error(cli: typer.Typer, tmp_path: Path, content: str | None) -> None:
    path = tmp_path / "data.json"
    if content is not None:
        path.write_text(content)
    result = CliRunner().invoke(cli, ["intents", "--train", str(path), "--eval", str(path), "--embedder", "hashing"])
    assert result.exit_code == 2
    assert "error:" in result.output and "Traceback" not in result.output
