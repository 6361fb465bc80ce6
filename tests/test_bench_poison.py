"""``lookloop bench poison`` on a tiny catalogue: no other wearer's answer changes, anonymous labels are refused."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import typer
from typer.testing import CliRunner

from lookloop.bench import poison


@pytest.mark.slow
def test_poison_bench_writes_its_figures(tmp_path: Path, data_dir: Path, model_dir: Path,
                                         monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("LOOKLOOP_MODEL_DIR", str(model_dir))
    app = typer.Typer()
    poison.register(app)
    app.command("noop")(lambda: None)  # a second command keeps typer's sub-command parsing
    out = tmp_path / "poison.json"
    result = CliRunner().invoke(app, ["poison", "--labels", "3", "--classes", "5", "--json", str(out)])
    assert result.exit_code == 0, result.output
    figures = json.loads(out.read_text())
    assert figures["labels"] == 3 and figures["photos"] == 3
    assert figures["flipped_for_others"] == 0
    assert figures["refused_anonymous"] == figures["anonymous_attempts"] == 6
    assert figures["accepted_anonymous"] == 0
    assert figures["flipped_for_attacker"] == 3  # the attacker's own answers follow their own labels
    assert figures["other_answers"] == 3 * 3 * 2 * 2  # 3 wearers, photo and near-duplicate, before and after review
    assert all(not isinstance(v, dict | list) for v in figures.values())


def test_near_duplicates_are_the_same_size_and_not_the_same_bytes(grocery) -> None:  # type: ignore[no-untyped-def]
    from lookloop.imaging import decode_image

    data = next(iter(grocery.split("val"))).path.read_bytes()
    dup = poison.near_duplicate(data)
    a = decode_image(data, max_bytes=1 << 30, max_pixels=1 << 30)
    b = decode_image(dup, max_bytes=1 << 30, max_pixels=1 << 30)
    assert dup != data and a.rgb.shape == b.rgb.shape
