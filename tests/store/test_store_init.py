"""Issue 13: a fresh SQLite store is initialised once, even by two imports started together."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest

from neptune_migrate.dump.reader import DumpReader
from neptune_migrate.pipeline.import_ import ImportOptions
from neptune_migrate.retry import FAST
from neptune_migrate.verify.verifier import VerifyOptions, verify_runs
from tests.store.conftest import cli_args, small_dump, start

pytest.importorskip("mlflow")


@pytest.mark.parametrize("round_", [1, pytest.param(2, marks=pytest.mark.slow), pytest.param(3, marks=pytest.mark.slow),
                                    pytest.param(4, marks=pytest.mark.slow)])
def test_two_dumps_imported_together_into_a_fresh_sqlite_store_both_succeed(
    round_: int, tmp_path: Path, cli_env: dict[str, str]
) -> None:
    from mlflow import MlflowClient

    from neptune_migrate.destinations.mlflow.destination import MlflowDestination

    # Two different dumps: they do not share the dump's import lock, only the store.
    small_dump(tmp_path / "a", ("A-1", "A-2"), project="ws/alpha")
    small_dump(tmp_path / "b", ("B-1", "B-2"), project="ws/beta")
    db = tmp_path / "mlflow.db"
    uri = f"sqlite:///{db}"
    procs = [start(cli_args("import", str(tmp_path / name), "--to", "mlflow", "--tracking-uri", uri,
                            "--report", str(tmp_path / f"{name}.json")), cli_env) for name in ("a", "b")]
    results = [p.communicate(timeout=280) for p in procs]
    for p, (_, err) in zip(procs, results, strict=True):
        assert p.returncode == 0, err
        assert "_alembic_tmp" not in err
    # Exactly one of them created the store; both imported every run of their dump.
    created = [json.loads((tmp_path / f"{n}.json").read_text())["store"] for n in ("a", "b")]
    assert sorted(str(c) for c in created) == ["None", f"created the MLflow store {db}"]
    assert (tmp_path / ".mlflow.db.neptune-migrate.lock").is_file()  # the store lock, beside the database
    for name in ("a", "b"):
        assert [r["status"] for r in json.loads((tmp_path / f"{name}.json").read_text())["runs"]] == ["created"] * 2
    # The store is healthy afterwards, for MLflow itself and for verify.
    names = sorted(e.name for e in MlflowClient(uri).search_experiments())
    assert names == ["Default", "ws/alpha", "ws/beta"]
    dest = MlflowDestination(uri)
    for name in ("a", "b"):
        report = verify_runs(DumpReader(tmp_path / name), dest, VerifyOptions(import_options=ImportOptions(retry=FAST)))
        assert report.ok, [str(f) for f in report.findings]
        assert report.to_json()["totals"]["runs_matching"] == 2
    dest.close()


def test_a_sqlite_store_in_a_missing_folder_is_a_usage_error(
    tmp_path: Path, cli_env: dict[str, str]
) -> None:
    small_dump(tmp_path / "dump", ("PROJ-1",))
    proc = subprocess.run(cli_args("import", str(tmp_path / "dump"), "--to", "mlflow", "--tracking-uri",
                                   f"sqlite:///{tmp_path / 'nowhere' / 'mlflow.db'}"),
                          env=cli_env, capture_output=True, text=True, timeout=120, check=False)
    assert proc.returncode == 2, proc.stderr
    assert f"error: {tmp_path / 'nowhere'}: folder does not exist (for the MLflow store mlflow.db)" in proc.stderr
    assert not (tmp_path / "nowhere").exists()


def test_sigkill_while_mlflow_migrates_a_fresh_store_then_rerun_imports_and_verifies(
    tmp_path: Path, cli_env: dict[str, str]
) -> None:
    """Found by the soak: a kill during MLflow's schema migration left a half-migrated store
    (`table _alembic_tmp_... already exists`) that every later import failed on. The schema is now
    built in a file beside the store and renamed into place, so a kill leaves no store at all."""
    import os
    import signal

    from neptune_migrate.destinations.mlflow.destination import INIT_PREFIX, _has_mlflow_schema
    from tests.store.conftest import wait_for

    small_dump(tmp_path / "dump", ("PROJ-1",))
    db = tmp_path / "mlflow.db"
    args = cli_args("import", str(tmp_path / "dump"), "--to", "mlflow", "--tracking-uri", f"sqlite:///{db}")
    proc = start(args, cli_env)
    try:
        wait_for(lambda: bool(list(tmp_path.glob(f".mlflow.db{INIT_PREFIX}*"))), "the migration to start",
                 proc=proc, interval=0.005)
        assert proc.poll() is None, "the import finished before it could be killed"
        os.kill(proc.pid, signal.SIGKILL)  # in the middle of MLflow's migration
    finally:
        proc.kill()
        proc.communicate()
    assert not db.exists()  # never a half-migrated store: none at all
    rerun = subprocess.run([*args, "--report", str(tmp_path / "r.json")], env=cli_env, capture_output=True,
                           text=True, timeout=280, check=False)
    assert rerun.returncode == 0, rerun.stderr
    assert [r["status"] for r in json.loads((tmp_path / "r.json").read_text())["runs"]] == ["created"]
    assert _has_mlflow_schema(db) and not list(tmp_path.glob(f".mlflow.db{INIT_PREFIX}*"))  # leftover removed
    verify = subprocess.run(cli_args("verify", str(tmp_path / "dump"), "--to", "mlflow", "--tracking-uri",
                                     f"sqlite:///{db}"), env=cli_env, capture_output=True, text=True, timeout=280,
                            check=False)
    assert verify.returncode == 0, verify.stderr
    assert "all runs match: 1 runs" in verify.stderr
