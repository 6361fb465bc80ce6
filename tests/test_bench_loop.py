"""A fast ``bench loop`` on a small slice: the Grocery layout through the function, a folder tree via the CLI."""

from __future__ import annotations

import json
import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest
import typer
from typer.testing import CliRunner

from lookloop.bench import loop as bench_loop
from lookloop.catalog import GroceryDataset
from lookloop.loop.simulation import load_loop_data, oracle_coverage

KEYS = {"final_accuracy", "auto_error", "coverage", "coverage_at_10pct", "alpha", "labels_used", "rounds"}


def test_small_loop_on_the_grocery_layout(grocery: GroceryDataset, model_dir: Path, tmp_path: Path) -> None:
    data = load_loop_data(grocery.root, "val.txt").subset(classes=5, per_class=8, eval_per_class=4)
    figures = bench_loop.run_loop_bench(
        grocery.root, "val.txt", strategy="margin", rounds=4, compare_random=True, out=tmp_path / "out",
        model_dir=model_dir, data=data,
    )
    assert KEYS | {"labels_to_match_random_full"} <= set(figures)
    assert figures["rounds"] == 4
    assert figures["labels_used"] == 40
    assert figures["calibration_labels"] == figures["eval_images"] == len(data.eval_labels)  # by default: all
    assert 0.0 <= figures["final_accuracy"] <= 1.0
    assert 0.0 <= figures["coverage"] <= 1.0
    # Whatever it answers alone, the policy never answered more wrongly than its certified bound allowed.
    assert figures["auto_error"] <= max(figures["error_bound"], figures["alpha"]) or figures["coverage"] == 0
    assert 0.0 <= figures["oracle_coverage"] <= 1.0 and 0.0 <= figures["oracle_coverage_at_10pct"] <= 1.0
    assert (tmp_path / "out" / "loop.png").stat().st_size > 1000
    report = (tmp_path / "out" / "report.md").read_text(encoding="utf-8")
    assert "## Rounds: margin" in report and "## Rounds: random" in report


def _folder_tree(grocery: GroceryDataset, root: Path) -> Path:
    """train/<class>/*.jpg and val/<class>/*.jpg, copied into a temporary folder."""
    for split, n in (("train", 6), ("val", 3)):
        counts: dict[str, int] = {}
        for img in grocery.split(split):
            if img.label not in ("Banana", "Granny-Smith", "Cucumber"):
                continue
            if counts.get(img.label, 0) >= n:
                continue
            counts[img.label] = counts.get(img.label, 0) + 1
            target = root / split / img.label / Path(img.path).name
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(img.path, target)
    return root


@pytest.fixture
def cli(model_dir: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[typer.Typer]:
    from lookloop.config import get_settings

    monkeypatch.setenv("LOOKLOOP_MODEL_DIR", str(model_dir))
    get_settings.cache_clear()
    app = typer.Typer()
    bench_loop.register(app)

    @app.command("noop")
    def _noop() -> None:  # a second command keeps typer's sub-command parsing
        pass

    yield app
    get_settings.cache_clear()


def test_cli_on_an_image_folder_tree(cli: typer.Typer, grocery: GroceryDataset, tmp_path: Path) -> None:
    root = _folder_tree(grocery, tmp_path / "shop")
    out = tmp_path / "fig.json"
    result = CliRunner().invoke(cli, ["loop", "--dataset", str(root), "--eval-split", "val", "--strategy",
                                      "k-center", "--rounds", "2", "--budget", "5", "--json", str(out)])
    assert result.exit_code == 0, result.output
    figures = json.loads(out.read_text())
    assert KEYS <= set(figures)
    assert figures["labels_used"] == 10 and figures["rounds"] == 2
    assert all(not isinstance(v, dict | list) for v in figures.values())


@pytest.mark.parametrize(
    "args, message",
    [
        (["--strategy", "oracle"], "unknown strategy"),
        (["--rounds", "0"], "at least 1"),
        (["--alpha", "1.5"], "alpha"),
        (["--dataset", "/nonexistent/folder"], "not found"),
    ],
)
def test_bad_input_is_a_one_line_error(cli: typer.Typer, args: list[str], message: str) -> None:
    result = CliRunner().invoke(cli, ["loop", *args])
    assert result.exit_code == 2
    assert message in result.output
    assert "Traceback" not in result.output


def test_oracle_coverage_is_the_largest_prefix_within_alpha() -> None:
    import numpy as np

    scores = np.array([0.9, 0.8, 0.7, 0.6, 0.5])
    right = np.array([True, True, False, True, False])
    assert oracle_coverage(scores, right, 0.25) == pytest.approx(0.8)  # 1 wrong in the top 4
    assert oracle_coverage(scores, right, 0.0) == pytest.approx(0.4)
    assert oracle_coverage(scores, ~right | True, 0.0) == 1.0
    assert oracle_coverage(np.array([0.9]), np.array([False]), 0.05) == 0.0


def _outlier_folder(root: Path) -> Path:
    """Two photos that are no groceries: a checkerboard and noise, one in a sub-folder."""
    import cv2
    import numpy as np

    board = (np.indices((96, 96)).sum(axis=0) // 12 % 2 * 255).astype(np.uint8)
    noise = np.random.default_rng(0).integers(0, 255, size=(96, 96, 3), dtype=np.uint8)
    (root / "deep").mkdir(parents=True)
    cv2.imwrite(str(root / "board.png"), np.dstack([board] * 3))
    cv2.imwrite(str(root / "deep" / "noise.jpg"), noise)
    (root / "notes.txt").write_text("not an image", encoding="utf-8")
    return root


def test_open_world_loop_with_seeds(grocery: GroceryDataset, model_dir: Path, tmp_path: Path) -> None:
    data = load_loop_data(grocery.root, "val.txt").subset(classes=6, per_class=6, eval_per_class=3)
    figures = bench_loop.run_loop_bench(
        grocery.root, "val.txt", rounds=2, compare_random=True, out=tmp_path / "out", model_dir=model_dir,
        data=data, unknown_classes=2, outliers=_outlier_folder(tmp_path / "outliers"), calibration_budget=10,
        seeds=2,
    )
    assert figures["seeds"] == 2 and figures["unknown_classes"] == 2
    held = figures["unknown_classes_held_out"].split(";")
    assert len(held) == 2
    assert figures["outlier_asks"] == 2
    assert figures["unknown_asks"] == sum(lab in held for lab in data.eval_labels) > 0
    assert figures["eval_images"] == len(data.eval_labels) + 2
    # each seed asks a bootstrap of the eval photos: labels of asks it did not draw are not spent
    assert 0 < figures["calibration_labels"] <= 10
    assert figures["labels_spent"] == figures["labels_used"] + figures["calibration_labels"]
    for key in ("unknown_auto_answer_rate", "outlier_auto_answer_rate", "worst_group_auto_error", "auto_error",
                "coverage"):
        assert 0.0 <= figures[key] <= 1.0, key
        assert f"{key}_sd" in figures
    assert "labels_to_match_random_full_sd" in figures and "labels_to_match_random_full_share_sd" in figures
    groups = {k.removeprefix("group_n_") for k in figures if k.startswith("group_n_")}
    assert groups and groups <= {"fruit", "vegetables", "packages", "unknown"}
    for g in groups:
        assert 0.0 <= figures[f"group_error_{g}"] <= figures["worst_group_auto_error"] + 1e-12
    report = (tmp_path / "out" / "report.md").read_text(encoding="utf-8")
    assert "board.png" in report and "noise.jpg" in report and "means over 2 seeds" in report
    assert (tmp_path / "out" / "loop.png").stat().st_size > 1000


def test_held_out_classes_leave_the_catalogue_and_training(grocery: GroceryDataset) -> None:
    from lookloop.errors import BadInput
    from lookloop.loop.simulation import KNOWN, UNKNOWN, hold_out_classes

    data = load_loop_data(grocery.root, "val.txt").subset(classes=6, per_class=4, eval_per_class=2)
    held, train_idx, seed_idx = hold_out_classes(data, 2, seed=3)
    assert len(held.held_out) == 2
    assert not set(held.held_out) & (set(held.train_labels) | set(held.seed_labels))
    assert [data.train_labels[i] for i in train_idx] == held.train_labels
    assert [data.seed_labels[i] for i in seed_idx] == held.seed_labels
    assert [lab in held.held_out for lab in held.eval_labels] == [k == UNKNOWN for k in held.eval_kinds]
    assert held.eval_paths == data.eval_paths
    assert hold_out_classes(data, 2, seed=3)[0].held_out == held.held_out  # a seeded draw
    assert hold_out_classes(data, 0, seed=3)[0].eval_kinds == [KNOWN] * len(data.eval_labels)
    with pytest.raises(BadInput):
        hold_out_classes(data, 5, seed=0)  # two classes must stay known


@pytest.mark.parametrize(
    "args, message",
    [
        (["--seeds", "0"], "--seeds"),
        (["--unknown-classes", "-1"], "--unknown-classes"),
        (["--unknown-classes", "500"], "--unknown-classes must lie in"),
        (["--calibration-budget", "-5"], "--calibration-budget"),
        (["--outliers", "/nonexistent/folder"], "not found"),
        (["--policy", "pooled"], "unknown policy"),
        (["--gate-rate", "1.5"], "--gate-rate"),
    ],
)
def test_bad_open_world_flags_are_one_line_errors(cli: typer.Typer, args: list[str], message: str) -> None:
    result = CliRunner().invoke(cli, ["loop", *args])
    assert result.exit_code == 2, result.output
    assert message in result.output
    assert "Traceback" not in result.output
