"""`neptune-migrate export --from neptune-offline`: the real console entry point, then `inspect --json`."""

from __future__ import annotations

import hashlib
import json
import shutil
from pathlib import Path

from tests.conftest import FIXTURES

N1 = FIXTURES / "neptune1"
PATH_MAP = f"/tmp/neptune-migrate-fixture-artifacts={N1 / 'artifacts'}"


def tree_digest(root: Path) -> dict[str, str]:
    """Every file and folder under `root` with the sha256 of its bytes."""
    return {
        p.relative_to(root).as_posix(): (hashlib.sha256(p.read_bytes()).hexdigest() if p.is_file() else "dir")
        for p in sorted(root.rglob("*"))
    }


def test_export_offline_runs_then_inspect(cli, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    src = tmp_path / "project" / ".neptune"
    shutil.copytree(N1 / "offline", src)
    before = tree_digest(src)
    dump = tmp_path / "dump"
    proc = cli("export", "--from", "neptune-offline", str(tmp_path / "project"), "--project", "ws/proj",
               "--path-map", PATH_MAP, "--out", str(dump), check_rc=0)
    assert "folder containing .neptune" in proc.stderr and "offline: 2 runs" in proc.stderr
    assert "exported 2, skipped 0" in proc.stderr
    assert tree_digest(src) == before  # the input is never written, locked or cleaned up

    doc = json.loads(cli("inspect", str(dump), "--json", check_rc=0).stdout)
    assert doc["runs"] == 2 and doc["kinds"] == {"run": 2}
    assert doc["points"] == {"float": 19 + 5, "string": 5, "file": 2}
    assert doc["files"] == 7 and doc["missing_files"] == 0
    assert doc["problems"] == [] and doc["incomplete_runs"] == [] and doc["partial_copies"] == []
    assert doc["losses"] == {"artifact_content_not_exported": 1}

    again = cli("export", "--from", "neptune-offline", str(tmp_path / "project"), "--project", "ws/proj",
                "--out", str(dump), check_rc=0)
    assert "skipped 2 (already complete)" in again.stderr


def test_truncated_async_leftover_is_a_warning_and_strict_exits_1(cli, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    before = tree_digest(N1 / "async_torn")
    strict = cli("export", "--from", "neptune-offline", str(N1 / "async_torn"), "--project", "ws/proj",
                 "--path-map", PATH_MAP, "--out", str(tmp_path / "strict"), "--strict", check_rc=1)
    assert strict.stderr.strip().splitlines()[-1].startswith("export exit 1: not in the source any more: 30 (--strict)")
    dump = tmp_path / "dump"
    # The lost tail is not in the source any more (the client died before writing it): a warning.
    proc = cli("export", "--from", "neptune-offline", str(N1 / "async_torn"), "--project", "ws/proj",
               "--path-map", PATH_MAP, "--out", str(dump), check_rc=0)
    assert "not in the source any more: 30 (warning)" in proc.stderr
    assert "(incomplete in the source) (partial copy)" in proc.stderr
    assert "(truncated_queue=30)" in proc.stderr
    doc = json.loads(cli("inspect", str(dump), "--json", check_rc=0).stdout)
    key = "ws/proj/033662d1-b058-4a0f-b373-359419d49f93"
    assert doc["incomplete_runs"] == [key] and doc["partial_copies"] == [key]
    assert doc["losses"] == {"truncated_queue": 30}
    assert tree_digest(N1 / "async_torn") == before


def test_project_is_required(cli, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    proc = cli("export", "--from", "neptune-offline", str(N1 / "offline"), "--out", str(tmp_path / "d"), check_rc=2)
    assert "--project WORKSPACE/PROJECT is required" in proc.stderr


def test_missing_files_hint_then_corrected_path_map_fills_them(cli, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    dump = tmp_path / "dump"
    proc = cli("export", "--from", "neptune-offline", str(N1 / "offline"), "--project", "ws/proj",
               "--out", str(dump), check_rc=1)
    lines = proc.stderr.strip().splitlines()
    flat = " ".join(proc.stderr.split())
    assert "hint: 4 file(s) referenced by absolute paths were not found; if they moved, export again with " \
           "--path-map /tmp/neptune-migrate-fixture-artifacts=WHERE_THEY_ARE_NOW" in flat
    assert lines[-1] == "export exit 1: lost: 4"  # the last line says why
    proc = cli("export", "--from", "neptune-offline", str(N1 / "offline"), "--project", "ws/proj",
               "--path-map", PATH_MAP, "--out", str(dump), check_rc=0)
    assert "exported 1, skipped 1 (already complete)" in proc.stderr
    assert "replaced the dump's copy with this more complete one" in " ".join(proc.stderr.split())
    doc = json.loads(cli("inspect", str(dump), "--json", check_rc=0).stdout)
    assert doc["files"] == 7 and doc["missing_files"] == 0
