"""Crash safety: a writer killed mid-run leaves nothing that looks complete, and the next run redoes it."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

from neptune_migrate.dump.reader import DumpReader
from neptune_migrate.dump.summary import summarize
from neptune_migrate.dump.writer import DumpWriter
from tests.conftest import REPO
from tests.factories import build_dump, key, write_full_run

KILLER = textwrap.dedent("""
    import os, signal, sys
    from pathlib import Path
    sys.path.insert(0, {repo!r})
    from neptune_migrate.dump.writer import DumpWriter
    from tests.factories import key, write_full_run, float_points
    root, tmp = Path(sys.argv[1]), Path(sys.argv[2])
    with DumpWriter(root) as dump:
        with dump.begin_run(key("PROJ-1")) as run:
            run.commit(write_full_run(run, key("PROJ-1"), tmp))
        with dump.begin_run(key("PROJ-2")) as run:
            write_full_run(run, key("PROJ-2"), tmp, points=300_000)
            run.add_points("float", float_points("more", list(range(1000)), [1.0] * 1000))
            os.kill(os.getpid(), signal.SIGKILL)   # dies before commit: no cleanup code runs
""")


def test_killed_writer_leaves_no_committed_partial_run_and_rerun_redoes_it(tmp_path: Path) -> None:
    root = tmp_path / "dump"
    script = tmp_path / "killer.py"
    script.write_text(KILLER.format(repo=str(REPO)))
    proc = subprocess.run([sys.executable, str(script), str(root), str(tmp_path)], check=False)
    assert proc.returncode == -signal.SIGKILL

    reader = DumpReader(root)
    assert [r.key for r in reader.runs()] == [key("PROJ-1")]
    assert len(reader.staged_leftovers()) == 1  # the half-written PROJ-2 is there, but not visible
    assert summarize(reader).uncommitted == [reader.staged_leftovers()[0].name]

    with DumpWriter(root) as dump:
        assert dump.is_committed(key("PROJ-1"))
        assert not dump.is_committed(key("PROJ-2"))
        with dump.begin_run(key("PROJ-2")) as run:
            run.commit(write_full_run(run, key("PROJ-2"), tmp_path))
    reader = DumpReader(root)
    assert [r.key for r in reader.runs()] == [key("PROJ-1"), key("PROJ-2")]
    assert reader.staged_leftovers() == []
    assert reader.check() == []
    run2 = reader.get_run(key("PROJ-2"))
    assert run2 is not None
    assert reader.read_series(run2, "float", "train/loss").num_rows == 100
    assert reader.read_series(run2, "float", "more").num_rows == 0  # nothing of the dead attempt


def test_an_exception_inside_a_run_discards_it(tmp_path: Path) -> None:
    root = tmp_path / "dump"
    with DumpWriter(root) as dump:
        try:
            with dump.begin_run(key("PROJ-9")) as run:
                write_full_run(run, key("PROJ-9"), tmp_path)
                raise RuntimeError("source broke")
        except RuntimeError:
            pass
        assert not dump.is_committed(key("PROJ-9"))
    assert list(DumpReader(root).runs()) == []
    assert DumpReader(root).staged_leftovers() == []


def test_second_writer_on_the_same_dump_is_refused(tmp_path: Path) -> None:
    import pytest

    from neptune_migrate.errors import UsageError

    with DumpWriter(tmp_path / "dump"), pytest.raises(UsageError, match="another neptune-migrate"):
        DumpWriter(tmp_path / "dump").open()


def test_recommit_replaces_a_run_atomically(tmp_path: Path) -> None:
    root = tmp_path / "dump"
    build_dump(root, tmp_path, points=10)
    with DumpWriter(root) as dump, dump.begin_run(key()) as run:
        run.commit(write_full_run(run, key(), tmp_path, points=20))
    reader = DumpReader(root)
    [run] = list(reader.runs())
    assert reader.read_series(run, "float", "train/loss").num_rows == 20
    assert reader.check() == []


def _corrupt(path: Path) -> None:
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0xFF
    path.write_bytes(bytes(data))


def test_corrupt_part_and_tampered_checksum_are_named_by_run_and_file(tmp_path: Path) -> None:
    root = tmp_path / "dump"
    build_dump(root, tmp_path, run_ids=("PROJ-1", "PROJ-2", "PROJ-3"))
    reader = DumpReader(root)
    runs = {str(r.key): r for r in reader.runs()}
    # PROJ-1: a flipped byte in a Parquet part.
    part = runs["my-ws/my-proj/PROJ-1"].part_paths("float")[0]
    _corrupt(part)
    # PROJ-2: the checksum in run.json edited by hand.
    doc_path = runs["my-ws/my-proj/PROJ-2"].run_dir / "run.json"
    doc = json.loads(doc_path.read_text())
    doc["parts"][0]["sha256"] = "0" * 64
    doc_path.write_text(json.dumps(doc))
    # PROJ-3 untouched.
    problems = {(p.run, p.file, p.message) for p in DumpReader(root).check()}
    assert ("my-ws/my-proj/PROJ-1", "series/float-00000.parquet", "sha256 does not match the record") in problems
    assert ("my-ws/my-proj/PROJ-2", "run.json", "record digest does not match its content") in problems
    assert ("my-ws/my-proj/PROJ-2", doc["parts"][0]["file"], "sha256 does not match the record") in problems
    assert not any(p[0] == "my-ws/my-proj/PROJ-3" for p in problems)
    with DumpWriter(root) as dump:
        assert not dump.is_committed(key("PROJ-1"))  # a re-export redoes a corrupt run
        assert dump.is_committed(key("PROJ-3"))


def test_corrupt_blob_is_reported(tmp_path: Path) -> None:
    root = tmp_path / "dump"
    [rec] = build_dump(root, tmp_path)
    weights = next(f for f in rec.files if f.sha256)
    blob = DumpReader(root).blob_path(weights.sha256 or "")
    os.chmod(blob, 0o644)
    _corrupt(blob)
    [problem] = DumpReader(root).check()
    assert problem.run == "my-ws/my-proj/PROJ-1"
    assert problem.file.endswith(weights.sha256 or "")
    assert "does not match" in problem.message
