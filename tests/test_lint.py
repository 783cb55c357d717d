"""ruff and mypy are part of the test run, so CI keeps the code clean."""

from __future__ import annotations

import importlib.util
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import REPO


@pytest.mark.parametrize(
    "tool",
    [["ruff", "check", "."], ["mypy"], ["importlinter.cli", "lint-imports"]],
    ids=["ruff", "mypy", "import-linter"],
)
def test_lint_is_clean(tool: list[str]) -> None:
    """ruff, strict mypy, and the layer contracts in pyproject.toml (core never imports a vendor SDK)."""
    module = tool[0].split(".")[0]
    if importlib.util.find_spec(module) is None:
        pytest.skip(f"{module} not installed")
    if tool[0] == "importlinter.cli":
        cmd = [str(Path(sys.executable).parent / "lint-imports")]
    else:
        cmd = [sys.executable, "-m", *tool]
    proc = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, check=False)
    assert proc.returncode == 0, proc.stdout + proc.stderr
