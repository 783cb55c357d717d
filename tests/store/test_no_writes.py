"""Issue 12: `import --dry-run` and `verify` write nothing anywhere, and say when a store is missing."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from tests.store.conftest import cli_args, small_dump, tree


def _to(kind: str, dest: Path) -> list[str]:
    """Options naming a store that does not exist (a mistyped path)."""
    return {
        "mlflow": ["--to", "mlflow", "--tracking-uri", f"sqlite:///{dest / 'mlflow.db'}"],
        "aim": ["--to", "aim", "--aim-repo", str(dest / "aim")],
        "wandb": ["--to", "wandb", "--wandb-mode", "offline", "--wandb-dir", str(dest / "wandb-runs")],
    }[kind]


@pytest.mark.parametrize("kind", ["mlflow", "aim", "wandb"])
def test_dry_run_and_verify_against_a_missing_store_create_nothing(
    kind: str, tmp_path: Path, cli_env: dict[str, str]
) -> None:
    pytest.importorskip(kind)
    small_dump(tmp_path / "dump", ("PROJ-1", "PROJ-2"))
    (tmp_path / "dest").mkdir()
    (tmp_path / "cwd").mkdir()
    before = tree(tmp_path)

    plan = subprocess.run(cli_args("import", str(tmp_path / "dump"), *_to(kind, tmp_path / "dest"), "--dry-run"),
                          env=cli_env, cwd=tmp_path / "cwd", capture_output=True, text=True, timeout=280, check=False)
    assert tree(tmp_path) == before  # not a file, not a folder: the dump, the store and the cwd alike
    assert plan.returncode == 0, plan.stderr
    assert plan.stderr.count("would_create my-ws/my-proj/PROJ-") == 2
    assert "does not exist yet: the import would create it" in plan.stderr
    assert "nothing was written" in plan.stderr

    check = subprocess.run(cli_args("verify", str(tmp_path / "dump"), *_to(kind, tmp_path / "dest")),
                           env=cli_env, cwd=tmp_path / "cwd", capture_output=True, text=True, timeout=280,
                           check=False)
    assert tree(tmp_path) == before
    assert check.returncode == 2, check.stderr
    # One line naming the store, instead of every run listed as missing.
    [line] = check.stderr.strip().splitlines()
    assert line.startswith("error: ") and line.endswith(": the store does not exist (nothing was imported there; "
                                                        "check the path)"), line
    assert str(tmp_path / "dest") in line
