"""The cluster benchmark in a short form: two API workers on Postgres, one killed mid-run; nothing lost or doubled."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
import typer
from typer.testing import CliRunner

from lookloop.bench import cluster
from lookloop.config import get_settings
from tests.conftest import reset_postgres


@pytest.mark.postgres
@pytest.mark.slow
def test_cluster_short(tmp_path: Path, data_dir: Path, model_dir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    url = os.environ.get("LOOKLOOP_TEST_POSTGRES_URL")
    if not url:
        pytest.skip("LOOKLOOP_TEST_POSTGRES_URL is not set (CI sets it)")
    reset_postgres(url)
    monkeypatch.setenv("LOOKLOOP_DATA_DIR", str(data_dir))
    monkeypatch.setenv("LOOKLOOP_MODEL_DIR", str(model_dir))
    get_settings.cache_clear()  # the benchmark reads the data and model folders from the settings
    app = typer.Typer()
    cluster.register(app)
    app.command("noop")(lambda: None)  # a group of one command would hide the command's name
    out = tmp_path / "cluster.json"
    result = CliRunner().invoke(app, ["cluster", "--workers", "2", "--wearers", "3", "--duration", "20",
                                      "--kill-one", "--classes", "4", "--think", "0.3", "--database-url", url,
                                      "--json", str(out)])
    get_settings.cache_clear()
    assert result.exit_code == 0, result.output
    figures = json.loads(out.read_text())
    for key in ("workers", "wearers", "asks_per_s", "identify_p50_ms", "identify_p95_ms", "errors", "dispatch_p95_ms",
                "label_effect_p95_ms", "lost", "duplicated", "throughput_ratio_2v1"):
        assert key in figures
    assert figures["workers"] == 2 and figures["killed"] == 1
    assert figures["asks_per_s"] > 0
    assert figures["errors"] == 0 and figures["lost"] == 0 and figures["duplicated"] == 0
    assert figures["dispatch_n"] > 0  # an escalation on one worker reached the reviewer's socket on the other
    assert figures["label_effect_n"] > 0


def test_cluster_refuses_bad_flags() -> None:
    app = typer.Typer()
    cluster.register(app)
    app.command("noop")(lambda: None)
    result = CliRunner().invoke(app, ["cluster", "--workers", "0"])
    assert result.exit_code == 2
