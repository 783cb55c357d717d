"""Shared fixtures."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
FIXTURES = REPO / "fixtures"


@pytest.fixture
def cli_env() -> dict[str, str]:
    """Environment for CLI subprocesses: the package importable, no colours."""
    env = dict(os.environ)
    env["PYTHONPATH"] = str(REPO) + os.pathsep + env.get("PYTHONPATH", "")
    env["NO_COLOR"] = "1"
    env["COLUMNS"] = "200"
    return env


@pytest.fixture
def cli(cli_env: dict[str, str]):  # type: ignore[no-untyped-def]
    """Run the real console entry point in a subprocess; returns CompletedProcess."""
    import subprocess

    def run(*args: str, check_rc: int | None = None) -> subprocess.CompletedProcess[str]:
        proc = subprocess.run(
            [sys.executable, "-m", "neptune_migrate", *args],
            capture_output=True, text=True, env=cli_env, timeout=600, check=False,
        )
        if check_rc is not None:
            assert proc.returncode == check_rc, (proc.returncode, proc.stdout, proc.stderr)
        return proc

    return run
