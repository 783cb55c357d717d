"""neptune-scale logs from the wild (issues #12, #13): a run left with only its `-wal`, two copies of one
log directory, and a log re-exported from another copy. Inputs are real-client fixtures (see
`fixtures/neptune_scale/README.md`), edited in `tmp_path` where a test says so."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
from datetime import datetime, timezone
from pathlib import Path

import pytest

from neptune_migrate.dump.reader import DumpReader
from neptune_migrate.dump.writer import DumpWriter
from neptune_migrate.model import LossCategory, RunKey, SourceRunId
from neptune_migrate.pipeline.export import ExportSummary, export_runs
from neptune_migrate.sources import load_source
from neptune_migrate.sources.base import RunSelection, SourceOptions
from tests.conftest import FIXTURES
from tests.support.unprivileged import unprivileged

SCALE = FIXTURES / "neptune_scale"
PROJECT = "my-ws/my-proj"


def export(path: Path, out: Path) -> tuple[ExportSummary, DumpReader]:
    source = load_source("neptune-scale", SourceOptions(path=path))
    with DumpWriter(out) as writer:
        summary = export_runs(source, writer, RunSelection(), location=str(path), source_root=path)
    return summary, DumpReader(out)


def test_wal_only_run_is_rebuilt_from_its_wal(tmp_path: Path) -> None:
    src = tmp_path / "logs"
    shutil.copytree(SCALE / "wal_only", src)
    [folder] = list(src.iterdir())
    assert sorted(p.name for p in folder.iterdir()) == ["run_operations.sqlite3-shm", "run_operations.sqlite3-wal"]
    before = {p.name: p.read_bytes() for p in folder.iterdir()}
    summary, reader = export(src, tmp_path / "dump")
    assert summary.warnings == [] and [r.status for r in summary.runs] == ["exported"]
    assert not summary.has_problems
    run = reader.get_run(RunKey(PROJECT, SourceRunId("wal-only-run")))
    assert run is not None
    rec = run.record
    assert rec.complete and rec.system.created_at == datetime(2025, 1, 6, tzinfo=timezone.utc)
    assert rec.fields["parameters/lr"].value == 0.02
    points = reader.read_series(run, "float", "train/loss").to_pylist()
    assert len(points) == 30
    assert (points[-1]["step"], points[-1]["value"]) == (29.0, 1 / 30)
    assert points[-1]["timestamp"] == datetime(2025, 1, 6, 1, 0, 29, tzinfo=timezone.utc)
    assert rec.provenance.details["wal_only"].startswith("rebuilt from the -wal")
    [note] = [lo for lo in rec.losses if lo.kind == "recovered_from_wal"]
    assert note.category is LossCategory.CHANGED_FORM and "32 operation(s)" in note.detail
    assert {p.name: p.read_bytes() for p in folder.iterdir()} == before  # nothing written next to the WAL


def test_wal_only_that_cannot_be_replayed_is_reported(tmp_path: Path) -> None:
    src = tmp_path / "logs"
    shutil.copytree(SCALE / "wal_only", src)
    [wal] = list(src.rglob("*.sqlite3-wal"))
    data = bytearray(wal.read_bytes())
    data[24] ^= 0xFF  # the header checksum: SQLite ignores every frame of a WAL whose header does not check
    wal.write_bytes(bytes(data))
    summary, _ = export(src, tmp_path / "dump")
    assert summary.runs == [] and summary.has_problems
    [warning] = summary.warnings
    assert warning.startswith(f"{wal}: the main file run_operations.sqlite3 is missing; replaying the -wal onto an "
                              "empty database of its page size (4096) did not give back the operation log")
    assert "\n" not in warning


def test_two_copies_of_a_log_directory_are_not_replayed_twice(tmp_path: Path) -> None:
    src = tmp_path / "both"
    shutil.copytree(SCALE / "offline", src / "V4" / ".neptune")
    shutil.copytree(SCALE / "offline", src / "V5" / ".neptune")
    summary, reader = export(src, tmp_path / "dump")
    assert sorted(r.status for r in summary.runs) == ["exported", "exported"]
    run = reader.get_run(RunKey(PROJECT, SourceRunId("parent-run")))
    assert run is not None
    once, _ = export(SCALE / "offline", tmp_path / "single")
    single = {r.key: r.points for r in once.runs}
    assert {r.key: r.points for r in summary.runs} == single  # not doubled
    [dup] = [lo for lo in run.record.losses if lo.kind == "duplicate_copy"]
    assert dup.category is LossCategory.CHANGED_FORM and "(identical counts)" in dup.detail
    assert "kept V4/.neptune/" in dup.detail  # relative to the export's source root


def test_same_log_re_exported_is_skipped_a_longer_copy_replaces_it(tmp_path: Path) -> None:
    import sqlite3
    from contextlib import closing

    short = tmp_path / "short"
    shutil.copytree(SCALE / "async_noserver", short)
    [db] = list(short.rglob("run_operations.sqlite3"))
    with closing(sqlite3.connect(db)) as con:
        con.execute("delete from run_operations where sequence_id = (select max(sequence_id) from run_operations)")
        con.commit()
    out = tmp_path / "dump"
    first, _ = export(short, out)
    assert [r.status for r in first.runs] == ["exported"]
    again, _ = export(short, out)
    assert [(r.status, r.message) for r in again.runs] == [("skipped", "already complete in the dump")]
    full, reader = export(SCALE / "async_noserver", out)
    [outcome] = full.runs
    assert outcome.status == "exported" and "replaced the dump's copy with this more complete one" in outcome.message
    run = reader.get_run(RunKey(PROJECT, SourceRunId("async-run")))
    assert run is not None and sum(s.count for s in run.record.series) == 1
    assert run.record.system.modified_at is not None and run.record.system.created_at is not None
    assert run.record.system.modified_at > run.record.system.created_at
    assert run.record.provenance.details["modified_at_from"] == "last operation"


@pytest.mark.skipif(unprivileged() is None, reason="needs root and setpriv to run the export as 'nobody'")
def test_unreadable_log_is_reported_and_the_others_exported() -> None:
    prefix = unprivileged()
    assert prefix is not None
    with tempfile.TemporaryDirectory(prefix="nm-perm-scale-") as tmp:
        base = Path(tmp)
        base.chmod(0o777)
        src = base / "logs"
        shutil.copytree(SCALE / "offline", src)
        for p in [src, *src.rglob("*")]:
            p.chmod(0o777 if p.is_dir() else 0o666)
        [child] = [d for d in src.iterdir() if "child-run" in d.name]
        blocked = child / "run_operations.sqlite3"
        blocked.chmod(0o000)
        env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[3]), "HOME": tmp, "COLUMNS": "400"}
        proc = subprocess.run(
            [*prefix, sys.executable, "-m", "neptune_migrate", "export", "--from", "neptune-scale", str(src),
             "--out", str(base / "dump")],
            capture_output=True, text=True, env=env, cwd=tmp, timeout=120, check=False,
        )
        blocked.chmod(0o644)
        assert proc.returncode == 1, proc.stderr
        assert "Traceback" not in proc.stderr
        assert f"warning: {blocked}: cannot be read (PermissionError: Permission denied); skipped" in proc.stderr
        assert "exported 1, skipped 0 (already complete), filtered 0, failed 0" in proc.stderr
        last = proc.stderr.strip().splitlines()[-1]  # the parent's files are not remapped here: lost too
        assert last.startswith("export exit 1: ") and last.endswith("1 source warning(s)")
