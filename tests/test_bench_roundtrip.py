"""``lookloop bench roundtrip`` runs end to end with a couple of wearers and writes the named figures."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import typer
from typer.testing import CliRunner

from lookloop.bench import roundtrip


@pytest.mark.slow
def test_roundtrip_bench_writes_its_figures(tmp_path: Path, data_dir: Path) -> None:
    app = typer.Typer()
    roundtrip.register(app)
    app.command("noop")(lambda: None)  # a second command keeps typer's sub-command parsing
    out = tmp_path / "rt.json"
    result = CliRunner().invoke(app, ["roundtrip", "--wearers", "2", "--asks", "1", "--period", "0.5",
                                      "--deadline", "60", "--json", str(out)])
    assert result.exit_code == 0, result.output
    figures = json.loads(out.read_text())
    for key in ("to_reviewer_p50_ms", "to_reviewer_p95_ms", "to_wearer_p50_ms", "to_wearer_p95_ms", "wearers"):
        assert key in figures
    assert figures["wearers"] == 2 and figures["completed"] == 2
    assert 0 < figures["to_reviewer_p50_ms"] <= figures["to_reviewer_p95_ms"]
    assert 0 < figures["to_wearer_p50_ms"] <= figures["to_wearer_p95_ms"]
