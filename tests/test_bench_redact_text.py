"""``lookloop bench redact-text``: the seeded fixture, the scoring, and a short run through the real OCR."""

from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
import pytest
import typer
from typer.testing import CliRunner

from lookloop.bench.redact_text import PERSONAL, Planted, make_fixture, register, save_fixture, score_image
from lookloop.privacy.pii import ean_ok, iban_ok, luhn_ok


def _app() -> typer.Typer:
    app = typer.Typer()
    register(app)
    app.command("noop")(lambda: None)  # a group of one command would hide the command's name
    return app


def test_fixture_is_seeded_and_its_strings_are_valid(tmp_path: Path) -> None:
    a, b = make_fixture(5, seed=3), make_fixture(5, seed=3)
    assert [im.name for im in a] == [im.name for im in b]
    assert all(np.array_equal(x.rgb, y.rgb) and x.planted == y.planted for x, y in zip(a, b, strict=True))
    assert make_fixture(5, seed=4)[0].planted != a[0].planted
    assert {im.template for im in a} == {"receipt", "sign", "card", "letter", "boarding"}
    for im in a:
        assert any(p.personal for p in im.planted)
        h, w = im.rgb.shape[:2]
        for p in im.planted:
            assert len(p.chars) == sum(not c.isspace() for c in p.text)
            assert all(0 <= x0 < x1 <= w and 0 <= y0 < y1 <= h for x0, y0, x1, y1 in p.chars)
            digits = re.sub(r"\D", "", p.text)
            if p.kind == "card":
                assert luhn_ok(digits)
            if p.kind == "iban":
                assert iban_ok(p.text)
            if p.kind == "barcode":
                assert ean_ok(digits)
    save_fixture(a[:2], tmp_path)
    truth = json.loads((tmp_path / "truth.json").read_text(encoding="utf-8"))
    assert [t["file"] for t in truth] == [im.name for im in a[:2]]
    assert (tmp_path / a[0].name).is_file()


def test_scoring_counts_hidden_strings_and_boxes_on_them() -> None:
    name = Planted("name", "Anna", ((10, 10, 20, 30), (20, 10, 30, 30), (30, 10, 40, 30), (40, 10, 50, 30)))
    price = Planted("price", "12.90", ((100, 10, 140, 30),))
    phone = Planted("phone", "555", ((10, 50, 40, 70),))
    # The name fully under a box, the phone half covered, a stray box over nothing planted.
    s = score_image((100, 200), [name, price, phone], [(8, 8, 45, 25), (10, 50, 15, 20), (150, 80, 20, 10)])
    hidden = {p.kind: ok for p, ok in s.planted}
    assert hidden == {"name": True, "price": True, "phone": False}
    assert (s.boxes, s.boxes_on_personal) == (3, 2)
    assert "name" in PERSONAL and "price" not in PERSONAL


@pytest.mark.slow
def test_bench_runs_small_and_writes_flat_json(tmp_path: Path) -> None:
    out = tmp_path / "redact-text.json"
    result = CliRunner().invoke(_app(), ["redact-text", "--limit", "2", "--seed", "1", "--json", str(out)])
    assert result.exit_code == 0, result.output
    figures = json.loads(out.read_text(encoding="utf-8"))
    assert {"text_recall", "text_precision", "n_strings", "n_images", "ms_per_image", "ordinary_kept"} <= set(figures)
    assert figures["n_images"] == 2 and figures["n_strings"] > 0
    assert 0.0 <= figures["text_recall"] <= 1.0 and 0.0 <= figures["text_precision"] <= 1.0
    assert all(not isinstance(v, dict | list) for v in figures.values())
    assert "text_recall" in result.output


def test_bench_bad_option_is_one_line_and_exit_2(tmp_path: Path) -> None:
    for args in (["--limit", "0"], ["--images", "-3"], ["--json", str(tmp_path)]):
        result = CliRunner().invoke(_app(), ["redact-text", *args])
        assert result.exit_code == 2, (args, result.output)
        assert "Traceback" not in result.output
        assert len([ln for ln in result.output.splitlines() if ln.strip()]) == 1, result.output
