"""Issue 13: an Aim repository is created atomically; a half-created one is repaired or refused."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time
from pathlib import Path

import pytest

from neptune_migrate.destinations.aim import mapping as m
from neptune_migrate.destinations.aim.destination import BUILD_PREFIX, AimDestination, _repo_problem
from neptune_migrate.dump.reader import DumpReader
from neptune_migrate.pipeline.import_ import ImportOptions, import_runs
from neptune_migrate.retry import FAST
from tests.factories import key
from tests.store.conftest import cli_args, small_dump, start, tree, wait_for

pytest.importorskip("aim")


def _first_sqlite(root: Path) -> bool:
    return root.is_dir() and any(root.rglob("run_metadata.sqlite"))


# (what to wait for, seconds after it): from the repository folder appearing to the finished
# repository being renamed into place; the creation takes ~1-3 s.
MOMENTS = [
    pytest.param("sqlite", 0.0, id="sqlite-appears"),
    pytest.param("root", 0.0, id="root+0.0s", marks=pytest.mark.slow),
    pytest.param("root", 0.3, id="root+0.3s", marks=pytest.mark.slow),
    pytest.param("root", 0.8, id="root+0.8s", marks=pytest.mark.slow),
    pytest.param("sqlite", 0.3, id="sqlite+0.3s", marks=pytest.mark.slow),
    pytest.param("root", 1.5, id="root+1.5s", marks=pytest.mark.slow),
    pytest.param("aim", 0.0, id="aim-installed", marks=pytest.mark.slow),
]


@pytest.mark.parametrize(("event", "delay"), MOMENTS)
def test_sigkill_while_the_repository_is_created_then_rerun_imports_and_verifies(
    event: str, delay: float, tmp_path: Path, cli_env: dict[str, str]
) -> None:
    small_dump(tmp_path / "dump", ("PROJ-1",), points=10_000)
    root = tmp_path / "aim"
    args = cli_args("import", str(tmp_path / "dump"), "--to", "aim", "--aim-repo", str(root))
    proc = start(args, cli_env)
    try:
        seen = {"root": root.is_dir, "sqlite": lambda: _first_sqlite(root), "aim": (root / ".aim").is_dir}[event]
        wait_for(seen, f"{event} to appear", proc=proc, interval=0.005)
        time.sleep(delay)
        assert proc.poll() is None, "the import finished before it could be killed"
        os.kill(proc.pid, signal.SIGKILL)
    finally:
        proc.kill()
        proc.communicate()
    # Never a repository that no later command can use: none at all, or a complete one.
    aim_dir = root / ".aim"
    assert not aim_dir.exists() or _repo_problem(aim_dir) is None, tree(root)

    rerun = subprocess.run([*args, "--report", str(tmp_path / "report.json")], env=cli_env, capture_output=True,
                           text=True, timeout=280, check=False)
    assert rerun.returncode == 0, rerun.stderr
    statuses = [r["status"] for r in json.loads((tmp_path / "report.json").read_text())["runs"]]
    assert statuses in (["created"], ["repaired"])
    assert not list(root.glob(f"{BUILD_PREFIX}*"))  # the killed build's folder is cleaned up
    assert sorted(p.name for p in (aim_dir / "meta" / "chunks").iterdir()) == [m.run_hash(key("PROJ-1"))]
    verify = subprocess.run(cli_args("verify", str(tmp_path / "dump"), "--to", "aim", "--aim-repo", str(root)),
                            env=cli_env, capture_output=True, text=True, timeout=280, check=False)
    assert verify.returncode == 0, verify.stderr
    assert "all runs match: 1 runs" in verify.stderr


def _half_created(root: Path) -> None:
    """What an interrupted creation left before imports created repositories atomically: the
    folders and a 0-byte `run_metadata.sqlite`."""
    for sub in ("locks", "meta/index", "meta/chunks", "seqs/chunks"):
        (root / ".aim" / sub).mkdir(parents=True)
    (root / ".aim" / "run_metadata.sqlite").touch()


def test_half_created_repository_without_runs_is_repaired_and_kept_aside(
    tmp_path: Path, cli_env: dict[str, str]
) -> None:
    small_dump(tmp_path / "dump", ("PROJ-1", "PROJ-2"))
    root = tmp_path / "aim"
    _half_created(root)
    before = tree(root)
    to_aim = ["--to", "aim", "--aim-repo", str(root)]
    damaged = f"error: Aim repository {root} is damaged (run_metadata.sqlite is empty); "

    # verify and a dry run say what is wrong and how to repair it, and change nothing.
    for args in (["verify", str(tmp_path / "dump"), *to_aim], ["import", str(tmp_path / "dump"), *to_aim, "--dry-run"]):
        proc = subprocess.run(cli_args(*args), env=cli_env, capture_output=True, text=True, timeout=280, check=False)
        assert proc.returncode == 2, proc.stderr
        assert damaged + "`neptune-migrate import` (without --dry-run) repairs it" in proc.stderr
        assert tree(root) == before

    proc = subprocess.run(cli_args("import", str(tmp_path / "dump"), *to_aim), env=cli_env, capture_output=True,
                          text=True, timeout=280, check=False)
    assert proc.returncode == 0, proc.stderr
    [aside] = root.glob(".aim-broken-*")
    assert (f"store: repaired the Aim repository {root}: run_metadata.sqlite is empty (its creation had been "
            f"interrupted); the damaged one, which held no runs, is kept as {aside.name}") in proc.stderr
    assert tree(aside) == {k.removeprefix(".aim/"): v for k, v in before.items() if k.startswith(".aim/")}
    assert _repo_problem(root / ".aim") is None
    verify = subprocess.run(cli_args("verify", str(tmp_path / "dump"), *to_aim), env=cli_env, capture_output=True,
                            text=True, timeout=280, check=False)
    assert verify.returncode == 0, verify.stderr


def test_damaged_repository_holding_runs_is_refused_untouched(tmp_path: Path, cli_env: dict[str, str]) -> None:
    small_dump(tmp_path / "dump", ("PROJ-1",))
    root = tmp_path / "aim"
    dest = AimDestination(str(root))
    assert [r.status for r in import_runs(DumpReader(tmp_path / "dump"), dest, ImportOptions(retry=FAST)).runs] == [
        "created"]
    dest.close()
    (root / ".aim" / "run_metadata.sqlite").write_bytes(b"")  # the run's data is still in meta/ and seqs/
    before = tree(root)
    proc = subprocess.run(cli_args("import", str(tmp_path / "dump"), "--to", "aim", "--aim-repo", str(root)),
                          env=cli_env, capture_output=True, text=True, timeout=280, check=False)
    assert proc.returncode == 2, proc.stderr
    assert (f"error: Aim repository {root} is damaged (run_metadata.sqlite is empty) and holds runs: not repairing "
            f"it; repair it with Aim's tools or move {root / '.aim'} away, then import again") in proc.stderr
    assert tree(root) == before
