"""`neptune-migrate export --from neptune-exporter`: the real console entry point, then `inspect --json`."""

from __future__ import annotations

import hashlib
import json
import shutil
from pathlib import Path

from tests.conftest import FIXTURES

SAMPLES = FIXTURES / "neptune-exporter"


def tree_digest(root: Path) -> dict[str, str]:
    """Every file and folder under `root` with the sha256 of its bytes."""
    return {
        p.relative_to(root).as_posix(): (hashlib.sha256(p.read_bytes()).hexdigest() if p.is_file() else "dir")
        for p in sorted(root.rglob("*"))
    }


def test_export_real_neptune3_sample_then_inspect(cli, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    src = tmp_path / "exports"
    shutil.copytree(SAMPLES / "neptune3", src)
    before = tree_digest(src)
    dump = tmp_path / "dump"
    proc = cli("export", "--from", "neptune-exporter", str(src / "data"), "--files-path", str(src / "files"),
               "--out", str(dump), check_rc=0)
    assert "flavours: neptune3 (2)" in proc.stderr
    assert "exported 2, skipped 0" in proc.stderr
    assert tree_digest(src) == before  # the input is never written, locked or cleaned up

    doc = json.loads(cli("inspect", str(dump), "--json", check_rc=0).stdout)
    assert doc["runs"] == 2
    assert doc["points"] == {"float": 6, "string": 5, "histogram": 1, "file": 1}
    assert doc["files"] == 1 and doc["missing_files"] == 0
    assert doc["problems"] == [] and doc["incomplete_runs"] == []

    again = cli("export", "--from", "neptune-exporter", str(src / "data"), "--out", str(dump), check_rc=0)
    assert "skipped 2 (already complete)" in again.stderr


def test_missing_file_exits_1_and_names_it(cli, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    src = tmp_path / "exports"
    shutil.copytree(SAMPLES / "neptune2", src)
    [weights] = (src / "files").rglob("weights")
    weights.unlink()
    before = tree_digest(src)
    proc = cli("export", "--from", "neptune-exporter", str(src / "data"), "--out", str(tmp_path / "dump"), check_rc=1)
    assert "missing_file model/weights" in proc.stderr
    assert tree_digest(src) == before
    doc = json.loads(cli("inspect", str(tmp_path / "dump"), "--json", check_rc=0).stdout)
    assert doc["missing_files"] == 1 and doc["losses"] == {"missing_file": 1}


def test_interrupted_export_exits_1_and_include_incomplete_flags(cli, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    src = tmp_path / "interrupted"
    shutil.copytree(SAMPLES / "generated" / "interrupted", src)
    before = tree_digest(src)
    proc = cli("export", "--from", "neptune-exporter", str(src / "data"), "--out", str(tmp_path / "d1"), check_rc=1)
    assert "failed my-ws/my-proj/cut-run" in proc.stderr and "--include-incomplete" in proc.stderr
    proc = cli("export", "--from", "neptune-exporter", str(src / "data"), "--out", str(tmp_path / "d2"),
               "--include-incomplete", check_rc=1)
    assert "exported 3" in proc.stderr
    assert proc.stderr.splitlines()[-1] == "export exit 1: 1 source warning(s)"  # the cut tail: not in the source
    doc = json.loads(cli("inspect", str(tmp_path / "d2"), "--json", check_rc=0).stdout)
    assert sorted(doc["incomplete_runs"]) == ["my-ws/legacy/LEG-1", "my-ws/my-proj/cut-run"]
    assert tree_digest(src) == before
