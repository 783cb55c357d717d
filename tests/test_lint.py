"""ruff and mypy are part of the test run, so CI keeps the code clean."""

from __future__ import annotations

import shutil
import subprocess
import sys

import pytest

from tests.conftest import REPO


@pytest.mark.parametrize("tool", [["ruff", "check", "."], ["mypy"]], ids=["ruff", "mypy"])
def test_lint_is_clean(tool: list[str]) -> None:
    if shutil.which(tool[0]) is None and not (REPO / ".venv" / "bin" / tool[0]).exists():
        pytest.skip(f"{tool[0]} not installed")
    proc = subprocess.run([sys.executable, "-m", *tool], cwd=REPO, capture_output=True, text=True, check=False)
    assert proc.returncode == 0, proc.stdout + proc.stderr
