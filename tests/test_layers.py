"""The layer contracts hold, and they catch an upward import (import-linter over a scratch copy of the package)."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
LINT_IMPORTS = Path(sys.executable).with_name("lint-imports")

pytestmark = pytest.mark.skipif(not LINT_IMPORTS.exists(), reason="import-linter is not installed (make install-dev)")


def _lint(root: Path) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PYTHONPATH": str(root / "src")}
    return subprocess.run([str(LINT_IMPORTS), "--no-logo", "--no-cache"], cwd=root, env=env, capture_output=True,
                          text=True, timeout=300)


def _scratch(tmp_path: Path) -> Path:
    root = tmp_path / "repo"
    shutil.copytree(REPO / "src" / "lookloop", root / "src" / "lookloop",
                    ignore=shutil.ignore_patterns("__pycache__", "pages", "data"))
    shutil.copy(REPO / "pyproject.toml", root / "pyproject.toml")
    return root


def test_the_contracts_hold_and_an_upward_import_breaks_them(tmp_path: Path) -> None:
    root = _scratch(tmp_path)
    clean = _lint(root)
    assert clean.returncode == 0, clean.stdout + clean.stderr
    assert "BROKEN" not in clean.stdout

    # A skill reaching up into the loop (what the loop decides on must not decide for it).
    skill = root / "src" / "lookloop" / "skills" / "colour.py"
    skill.write_text(skill.read_text() + "\nfrom lookloop.loop import policies  # noqa: E402,F401\n")
    broken = _lint(root)
    assert broken.returncode != 0
    assert "lookloop.skills is not allowed to import lookloop.loop" in broken.stdout


def test_the_glasses_sdk_may_not_import_the_server_side(tmp_path: Path) -> None:
    root = _scratch(tmp_path)
    sdk = root / "src" / "lookloop" / "device" / "frames.py"
    sdk.write_text(sdk.read_text() + "\nfrom lookloop import system  # noqa: E402,F401\n")
    broken = _lint(root)
    assert broken.returncode != 0
    assert "lookloop.device.frames -> lookloop.system" in broken.stdout
