"""The console entry point run in the test's own process (importing neptune 1.x costs seconds per subprocess)."""

from __future__ import annotations

import os
import sys

import pytest


def run_cli(capsys: pytest.CaptureFixture[str], *args: str, check_rc: int | None = None) -> tuple[int, str, str]:
    """Run `neptune-migrate ARGS` in this process: (exit code, stdout, stderr). The environment is put back
    afterwards (the CLI hands tokens on through it), so nothing leaks into later tests."""
    from neptune_migrate import cli

    capsys.readouterr()
    old = sys.argv
    environ = dict(os.environ)
    sys.argv = ["neptune-migrate", *args]
    try:
        cli.main()
        rc = 0
    except SystemExit as exc:
        rc = int(exc.code or 0)
    finally:
        sys.argv = old
        os.environ.clear()
        os.environ.update(environ)
    out, err = capsys.readouterr()
    if check_rc is not None:
        assert rc == check_rc, (rc, out, err)
    return rc, out, err
