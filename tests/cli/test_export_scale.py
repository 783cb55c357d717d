"""`neptune-migrate export --from neptune-scale`: the real console entry point, then `inspect --json`."""

from __future__ import annotations

import hashlib
import json
import shutil
from pathlib import Path

from tests.conftest import FIXTURES

SCALE = FIXTURES / "neptune_scale"


def tree_digest(root: Path) -> dict[str, str]:
    """Every file and folder under `root` with the sha256 of its bytes (a new -shm would show)."""
    return {
        p.relative_to(root).as_posix(): (hashlib.sha256(p.read_bytes()).hexdigest() if p.is_file() else "dir")
        for p in sorted(root.rglob("*"))
    }


def test_export_moved_logs_with_path_map_then_inspect(cli, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    # The user moved the log directory and the artifacts: temporary files are found next to the log,
    # files referenced in place through --path-map.
    src = tmp_path / "moved"
    shutil.copytree(SCALE / "offline", src / "logs")
    shutil.copytree(SCALE / "crash_wal", src / "logs" / "crashed")
    shutil.copytree(SCALE / "artifacts", src / "artifacts")
    before = tree_digest(src)
    dump = tmp_path / "dump"
    proc = cli("export", "--from", "neptune-scale", str(src / "logs"),
               "--path-map", f"/tmp/neptune-migrate-scale-artifacts={src / 'artifacts'}",
               "--out", str(dump), check_rc=0)
    assert "3 database(s) (v5: 3), 3 run(s)" in proc.stderr
    assert "exported 3, skipped 0" in proc.stderr
    assert "warning" not in proc.stderr
    assert tree_digest(src) == before

    doc = json.loads(cli("inspect", str(dump), "--json", check_rc=0).stdout)
    assert doc["runs"] == 3
    assert doc["points"] == {"float": 19 + 3 + 50, "string": 5, "histogram": 5, "file": 4}
    assert doc["files"] == 5 and doc["missing_files"] == 0
    assert doc["losses"] == {"preview_excluded": 2}
    assert doc["problems"] == [] and doc["incomplete_runs"] == [] and doc["partial_copies"] == []

    again = cli("export", "--from", "neptune-scale", str(src / "logs"), "--out", str(dump), check_rc=0)
    assert "exported 0, skipped 3" in again.stderr


def test_export_with_files_moved_away_reports_missing_files(cli, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    src = tmp_path / "logs"
    shutil.copytree(SCALE / "offline", src)
    proc = cli("export", "--from", "neptune-scale", str(src),
               "--path-map", f"/tmp/neptune-migrate-scale-artifacts={tmp_path / 'nowhere'}",
               "--out", str(tmp_path / "dump"), check_rc=1)
    assert "missing_file images/preds" in proc.stderr
    assert "--path-map" in proc.stderr
