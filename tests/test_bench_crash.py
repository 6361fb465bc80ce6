"""The crash benchmark in a short form: SIGKILL the server mid-write; nothing acknowledged is lost or doubled."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import typer
from typer.testing import CliRunner

from lookloop.bench import crash


@pytest.mark.slow
def test_crash_short(tmp_path: Path) -> None:
    app = typer.Typer()
    crash.register(app)
    app.command("noop")(lambda: None)  # a group of one command would hide the command's name
    out = tmp_path / "crash.json"
    result = CliRunner().invoke(app, ["crash", "--wearers", "2", "--reviewers", "1", "--kills", "2",
                                      "--interval", "2", "--drain", "60", "--json", str(out)])
    assert result.exit_code == 0, result.output
    figures = json.loads(out.read_text())
    assert {"acknowledged", "lost", "duplicated", "kills"} <= set(figures)
    assert figures["kills"] == 2
    assert figures["acknowledged"] > 0
    assert figures["lost"] == 0 and figures["duplicated"] == 0
