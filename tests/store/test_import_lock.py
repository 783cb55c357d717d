"""Issue 12: one import per dump and destination target at a time, across real processes."""

from __future__ import annotations

import contextlib
import json
import os
import sqlite3
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from neptune_migrate.destinations.base import DestinationOptions
from neptune_migrate.dump.layout import DumpLayout
from neptune_migrate.dump.lock import current_holder
from neptune_migrate.dump.reader import DumpReader
from neptune_migrate.pipeline.import_ import ImportOptions
from neptune_migrate.pipeline.lock import import_lock
from neptune_migrate.retry import FAST
from neptune_migrate.verify.verifier import VerifyOptions, verify_runs
from tests.store.conftest import cli_args, small_dump, start, tree, wait_for


def _mlflow(uri: str):  # type: ignore[no-untyped-def]
    pytest.importorskip("mlflow")
    from neptune_migrate.destinations.mlflow.destination import MlflowDestination

    return MlflowDestination.from_options(DestinationOptions(tracking_uri=uri))


def _holder_pid(dump: Path) -> int | None:
    for path in sorted((dump / "_locks").glob("*.lock")) if (dump / "_locks").is_dir() else []:
        holder = current_holder(path)
        if holder is not None:
            return holder.pid
    return None


def test_lock_timeout_exits_3_naming_the_holder_and_touches_nothing(tmp_path: Path, cli_env: dict[str, str]) -> None:
    small_dump(tmp_path / "dump", ("PROJ-1",))
    db = tmp_path / "store" / "mlflow.db"
    db.parent.mkdir()
    uri = f"sqlite:///{db}"
    with import_lock(DumpLayout(tmp_path / "dump"), _mlflow(uri)):
        proc = subprocess.run(cli_args("import", str(tmp_path / "dump"), "--to", "mlflow", "--tracking-uri", uri,
                                       "--lock-timeout", "0.5"),
                              env=cli_env, capture_output=True, text=True, timeout=120, check=False)
    assert proc.returncode == 3, proc.stdout + proc.stderr
    assert f"waiting for the import lock held by pid {os.getpid()} since " in proc.stderr
    assert "(at most 0.5 s)" in proc.stderr
    assert "error: gave up after 0.5 s waiting for the import lock held by pid" in proc.stderr
    assert tree(tmp_path / "store") == {}  # the store was not even created


def test_a_killed_holder_releases_the_lock(tmp_path: Path, cli_env: dict[str, str]) -> None:
    small_dump(tmp_path / "dump", ("PROJ-1",))
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    holder = subprocess.Popen([sys.executable, "-c", textwrap.dedent(f"""
        import time
        from pathlib import Path
        from neptune_migrate.destinations.base import DestinationOptions
        from neptune_migrate.destinations.mlflow.destination import MlflowDestination
        from neptune_migrate.dump.layout import DumpLayout
        from neptune_migrate.pipeline.lock import import_lock
        dest = MlflowDestination.from_options(DestinationOptions(tracking_uri={uri!r}))
        with import_lock(DumpLayout(Path({str(tmp_path / 'dump')!r})), dest):
            time.sleep(600)
    """)], env=cli_env)
    try:
        wait_for(lambda: _holder_pid(tmp_path / "dump") == holder.pid, "the holder to take the lock", proc=holder)
    finally:
        holder.kill()  # SIGKILL
        holder.wait()
    assert _holder_pid(tmp_path / "dump") is None
    proc = subprocess.run(cli_args("import", str(tmp_path / "dump"), "--to", "mlflow", "--tracking-uri", uri,
                                   "--lock-timeout", "0"),
                          env=cli_env, capture_output=True, text=True, timeout=300, check=False)
    assert proc.returncode == 0, proc.stderr
    assert "waiting for the import lock" not in proc.stderr
    assert "created my-ws/my-proj/PROJ-1" in proc.stderr


def _writing(kind: str, tmp_path: Path) -> bool:
    """The destination holds the first points of a run (read only; False while it is being created)."""
    if kind == "aim":
        chunks = tmp_path / "aim" / ".aim" / "seqs" / "chunks"
        return chunks.is_dir() and any(chunks.iterdir())
    try:
        with contextlib.closing(sqlite3.connect(f"file:{tmp_path / 'mlflow.db'}?mode=ro", uri=True, timeout=1)) as c:
            return int(c.execute("SELECT count(*) FROM metrics").fetchone()[0]) > 0
    except sqlite3.Error:
        return False


def _destination_args(kind: str, tmp_path: Path) -> list[str]:
    if kind == "mlflow":
        return ["--to", "mlflow", "--tracking-uri", f"sqlite:///{tmp_path / 'mlflow.db'}"]
    return ["--to", "aim", "--aim-repo", str(tmp_path / "aim")]


def _destination_runs(kind: str, tmp_path: Path) -> list[str]:
    """Every run in the destination (deleted MLflow runs included) as its source run id."""
    if kind == "mlflow":
        from mlflow import MlflowClient
        from mlflow.entities import ViewType

        client = MlflowClient(f"sqlite:///{tmp_path / 'mlflow.db'}")
        exp = client.get_experiment_by_name("my-ws/my-proj")
        runs = client.search_runs([exp.experiment_id], run_view_type=ViewType.ALL, max_results=1000)
        return sorted(r.data.tags["neptune.run_id"] + ("" if r.info.lifecycle_stage == "active" else " (deleted)")
                      for r in runs)
    from neptune_migrate.destinations.aim import mapping as m

    chunks = tmp_path / "aim" / ".aim" / "meta" / "chunks"
    by_hash = {m.run_hash(k): str(k.run_id) for k in small_keys()}
    return sorted(by_hash.get(p.name, p.name) for p in chunks.iterdir())


def small_keys():  # type: ignore[no-untyped-def]
    from tests.factories import key

    return [key(f"PROJ-{i}") for i in range(1, 4)]


@pytest.mark.parametrize("kind", ["mlflow", pytest.param("aim", marks=pytest.mark.slow)])
def test_two_concurrent_imports_of_one_dump_one_run_per_key_second_skips(
    kind: str, tmp_path: Path, cli_env: dict[str, str]
) -> None:
    pytest.importorskip(kind)
    # The first import must still be writing when the second starts: MLflow's bulk path would
    # finish 45,000 points before that, so this lock test keeps the slower API path.
    cli_env = {**cli_env, "NEPTUNE_MIGRATE_BULK": "never"}
    dump = tmp_path / "dump"
    small_dump(dump, ("PROJ-1", "PROJ-2", "PROJ-3"), points=15_000)
    dest = _destination_args(kind, tmp_path)
    first = start(cli_args("import", str(dump), *dest, "--report", str(tmp_path / "first.json")), cli_env)
    try:
        # The first import holds the lock and is writing its first run when the second starts.
        wait_for(lambda: _holder_pid(dump) == first.pid, "the first import to take the lock", proc=first)
        wait_for(lambda: _writing(kind, tmp_path), "the first import to write points", proc=first)
        second = start(cli_args("import", str(dump), *dest, "--report", str(tmp_path / "second.json")), cli_env)
        verify = subprocess.run(cli_args("verify", str(dump), *dest, "--report", str(tmp_path / "during.json")),
                                env=cli_env, capture_output=True, text=True, timeout=300, check=False)
        out1, err1 = first.communicate(timeout=600)
        out2, err2 = second.communicate(timeout=600)
    finally:
        for p in (first, locals().get("second")):
            if p is not None and p.poll() is None:
                p.kill()
    assert first.returncode == 0, err1
    assert second.returncode == 0, err2
    assert f"waiting for the import lock held by pid {first.pid} since " in err2
    assert [r["status"] for r in json.loads((tmp_path / "first.json").read_text())["runs"]] == ["created"] * 3
    assert [r["status"] for r in json.loads((tmp_path / "second.json").read_text())["runs"]] == ["skipped"] * 3
    # Nothing was discarded and recreated: exactly one destination run per source key, ever.
    assert _destination_runs(kind, tmp_path) == ["PROJ-1", "PROJ-2", "PROJ-3"]
    # verify during the import is not broken by it: it tells what is running, and reports runs
    # not finished yet as missing or incomplete, never as errors.
    assert verify.returncode in (0, 1), verify.stderr
    during = json.loads((tmp_path / "during.json").read_text())
    assert during["counts"]["error"] == 0, during
    assert f"an import into this destination is running (pid {first.pid} since " in verify.stderr
    # Both done: verify (in this process, to keep the test light) finds every run equal to the dump.
    assert _holder_pid(dump) is None
    if kind == "mlflow":
        from neptune_migrate.destinations.mlflow.destination import MlflowDestination

        target = MlflowDestination(f"sqlite:///{tmp_path / 'mlflow.db'}")
    else:
        from neptune_migrate.destinations.aim.destination import AimDestination

        target = AimDestination(str(tmp_path / "aim"))
    report = verify_runs(DumpReader(dump), target, VerifyOptions(import_options=ImportOptions(retry=FAST)))
    target.close()
    assert report.ok, [str(f) for f in report.findings]
    assert report.to_json()["totals"]["runs_matching"] == 3
