"""neptune 1.x queues from the wild (issues #12, #13): old folder names, copies of one run, several
`.neptune` folders, Windows paths, huge integers, unreadable folders, escaping upload names.

Every input is a real-client fixture from `fixtures/neptune1/` or a copy of one edited in `tmp_path`
the way the named situation leaves it.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import pytest

from neptune_migrate.dump.reader import DumpReader
from neptune_migrate.dump.schema import FORMAT_VERSION
from neptune_migrate.dump.writer import DumpWriter
from neptune_migrate.model import LossCategory, RunKey, SourceRunId
from neptune_migrate.pipeline.export import ExportSummary, export_runs
from neptune_migrate.sources import load_source
from neptune_migrate.sources.base import PathMap, RunSelection, SourceOptions
from tests.conftest import FIXTURES
from tests.support.unprivileged import unprivileged

N1 = FIXTURES / "neptune1"
ART = N1 / "artifacts"
RECORDED = "/tmp/neptune-migrate-fixture-artifacts"
PROJECT = "ws/proj"
MAIN = "47df0450-5fd2-40ea-ba37-3792bb9c26fd"
MAIN_NAME = f"run__{MAIN}__11459__ynpunblz"
LEGACY = "a2c06d7b-e453-5ae7-9874-ed31c0ae9dd3"
KILLED = "033662d1-b058-4a0f-b373-359419d49f93"
UTC = timezone.utc
T0 = datetime(2025, 1, 2, 3, 4, 5, tzinfo=UTC)
REPO = Path(__file__).resolve().parents[3]


def export(path: Path, out: Path, *, path_map: list[str] | None = None, force: bool = False) -> ExportSummary:
    pm = PathMap.parse(path_map if path_map is not None else [f"{RECORDED}={ART}"])
    source = load_source("neptune-offline", SourceOptions(path=path, project=PROJECT, path_map=pm))
    with DumpWriter(out) as writer:
        return export_runs(source, writer, RunSelection(), location=str(path), force=force, source_root=path)


def record(out: Path, run_id: str = MAIN) -> Any:
    run = DumpReader(out).get_run(RunKey(PROJECT, SourceRunId(run_id)))
    assert run is not None
    return run


def lines(run_dir: Path) -> list[str]:
    return (run_dir / "data-1.log").read_text().splitlines()


def truncate_queue(run_dir: Path, keep: int) -> None:
    """Leave the first `keep` operations, as an older copy of the same run folder would hold."""
    (run_dir / "data-1.log").write_text("\n".join(lines(run_dir)[:keep]) + "\n")
    (run_dir / "last_put_version").write_text(str(keep))


# ---------------------------------------------------------------------------------------------
# 1-2: creation and end times


def test_exec0_local_date_folder_gets_its_first_point_time(tmp_path: Path) -> None:
    out = tmp_path / "dump"
    export(N1 / "exec", out)
    rec = record(out, LEGACY).record
    # `exec-0-2025-01-02_03.04.05.123456`: no epoch in the name, no `at` in the records.
    assert rec.system.created_at == T0  # the first point's ts, UTC
    details = rec.provenance.details
    assert details["created_at_from"] == "first point's ts"
    assert details["created_at_check"].startswith("the exec folder's local date is +0.0 h from it")
    assert rec.system.modified_at is not None and rec.system.modified_at > rec.system.created_at
    assert details["modified_at_from"] == "last point"
    assert "created_at" not in rec.absent and "modified_at" not in rec.absent


def test_local_date_far_from_the_data_is_reported_not_used(tmp_path: Path) -> None:
    src = tmp_path / "src"
    shutil.copytree(N1 / "exec", src)
    old = next((src / "async" / LEGACY).iterdir())
    old.rename(old.with_name("exec-0-2021-04-23_12.38.54.066327"))
    out = tmp_path / "dump"
    export(src, out)
    rec = record(out, LEGACY).record
    assert rec.system.created_at == T0
    assert "more than any UTC offset" in rec.provenance.details["created_at_check"]


# ---------------------------------------------------------------------------------------------
# 3: truncated tails and files the client had uploaded


def test_acknowledged_upload_gone_is_not_in_source_unacknowledged_is_lost(tmp_path: Path) -> None:
    src = tmp_path / "src"
    shutil.copytree(N1 / "async_killed", src)
    [run_dir] = list((src / "async").iterdir())
    [upload] = [json.loads(x) for x in lines(run_dir) if '"UploadFile"' in x]
    version = upload["version"]
    for f in (run_dir / "upload_path").iterdir():
        f.unlink()  # the client deletes what it uploaded
    (run_dir / "last_ack_version").write_text(str(version))
    out = tmp_path / "acked"
    export(src, out)
    rec = record(out, KILLED).record
    gone = [lo for lo in rec.losses if lo.path == "model/inmem"]
    assert [(lo.kind, lo.category) for lo in gone] == [("file_gone_after_upload", LossCategory.NOT_IN_SOURCE)]
    assert f"last_ack_version {version}" in gone[0].detail
    [tail] = [lo for lo in rec.losses if lo.kind == "truncated_queue"]
    assert (tail.count, tail.category) == (29, LossCategory.NOT_IN_SOURCE) and not rec.complete

    (run_dir / "last_ack_version").write_text(str(version - 1))
    out2 = tmp_path / "not-acked"
    export(src, out2)
    lost = [lo for lo in record(out2, KILLED).record.losses if lo.path == "model/inmem"]
    assert [(lo.kind, lo.category) for lo in lost] == [("missing_file", LossCategory.LOST)]


# ---------------------------------------------------------------------------------------------
# 4-5: copies of one run, several .neptune folders


def _two_copies(tmp_path: Path) -> tuple[Path, Path]:
    v4, v5 = tmp_path / "proj" / "V4" / ".neptune", tmp_path / "proj" / "V5" / ".neptune"
    shutil.copytree(N1 / "offline", v4)
    shutil.copytree(N1 / "offline", v5)
    truncate_queue(v4 / "offline" / MAIN_NAME, 40)  # the older copy: 40 of 67 operations
    return v4, v5


def test_folder_with_several_neptune_folders_keeps_the_more_complete_copy(tmp_path: Path) -> None:
    v4, _ = _two_copies(tmp_path)
    out = tmp_path / "dump"
    summary = export(tmp_path / "proj", out)
    assert "folder holding 2 .neptune data folder(s) (V4/.neptune, V5/.neptune)" in summary.detected
    assert "2 execution folder(s) found twice" in summary.detected
    assert summary.count("exported") == 2 and not summary.has_problems
    rec = record(out).record
    assert rec.provenance.details["operations"] == "67"
    assert sum(s.count for s in rec.series if s.path == "train/loss") == 7
    [dup] = [lo for lo in rec.losses if lo.kind == "duplicate_copy"]
    assert dup.category is LossCategory.CHANGED_FORM
    # paths are stored relative to the export's source root (the root itself is in the manifest)
    assert f"kept V5/.neptune/offline/{MAIN_NAME} (last_put_version 67" in dup.detail
    assert f"ignored V4/.neptune/offline/{MAIN_NAME} (last_put_version 40" in rec.provenance.details["duplicate_copies"]
    assert v4.is_dir()


def test_second_copy_exported_into_the_same_dump_replaces_a_smaller_one(tmp_path: Path) -> None:
    v4, v5 = _two_copies(tmp_path)
    out = tmp_path / "dump"
    first = export(v4.parent, out)
    assert first.count("exported") == 2
    small = sum(s.count for s in record(out).record.series)

    second = export(v5.parent, out)
    by_key = {r.key: r for r in second.runs}
    main = by_key[f"{PROJECT}/{MAIN}"]
    assert main.status == "exported" and "replaced the dump's copy" in main.message
    assert main.points > small
    assert by_key[f"{PROJECT}/6864882f-dbad-48f6-9d1d-045313ef0093"].status == "skipped"  # same content
    rec = record(out).record
    assert rec.provenance.details["operations"] == "67"
    assert [lo.kind for lo in rec.losses if lo.kind == "copy_replaced"] == ["copy_replaced"]

    third = export(v4.parent, out)  # the smaller copy again: the dump keeps the larger one
    main = {r.key: r for r in third.runs}[f"{PROJECT}/{MAIN}"]
    assert main.status == "skipped" and "kept the dump's more complete copy" in main.message
    assert record(out).record.provenance.details["operations"] == "67"


# ---------------------------------------------------------------------------------------------
# 6: Windows paths


@pytest.mark.parametrize("old", ["C:\\Users\\u\\proj", "C:/Users/u/proj", "c:\\users\\u\\proj\\"])
def test_windows_paths_are_mapped_and_named_by_their_last_component(tmp_path: Path, old: str) -> None:
    out = tmp_path / "dump"
    summary = export(N1 / "windows", out, path_map=[f"{old}={ART}"])
    files = {(f.attribute_path, f.name): f for f in record(out).record.files}
    assert files[("model/weights", "model.txt")].sha256 is not None
    assert files[("model/weights", "model.txt")].origin == "C:\\Users\\u\\proj\\model.txt"
    assert {n for a, n in files if a == "config_files"} == {"configs/a.yaml", "configs/b.yaml"}
    assert all(f.sha256 for f in files.values() if f.kind != "artifact")
    assert not any(lo["error"] for r in summary.runs for lo in r.losses)


def test_unmapped_windows_path_is_missing_under_its_file_name_with_a_hint(tmp_path: Path) -> None:
    out = tmp_path / "dump"
    summary = export(N1 / "windows", out, path_map=[])
    [weights] = [f for f in record(out).record.files if f.attribute_path == "model/weights"]
    assert weights.name == "model.txt" and weights.sha256 is None
    assert "--path-map C:\\Users\\u\\proj=NEW_PREFIX" in (weights.missing or "")
    assert summary.path_map_hint().endswith(
        "--path-map C:\\Users\\u\\proj=WHERE_THEY_ARE_NOW (runs missing files are re-read without --force)")


# ---------------------------------------------------------------------------------------------
# 7: layout labels


def test_layout_labels_say_what_was_found(tmp_path: Path) -> None:
    src = tmp_path / "src"
    shutil.copytree(N1 / "exec", src)
    summary = export(src, tmp_path / "d1")
    assert "<uuid>/exec-* (StructureVersion 1, client 0.x) (1)" in summary.detected
    assert summary.detected.endswith("; 1 with a container_type file")
    next((src / "async" / LEGACY).rglob("container_type")).unlink()
    summary = export(src, tmp_path / "d2")
    assert "container_type" not in summary.detected


# ---------------------------------------------------------------------------------------------
# 8: re-export with a corrected --path-map


def test_reexport_with_corrected_path_map_fills_missing_files_without_force(tmp_path: Path) -> None:
    out = tmp_path / "dump"
    first = export(N1 / "offline", out, path_map=[])
    missing = [f for f in record(out).record.files if f.sha256 is None]
    assert {f.attribute_path for f in missing} == {"model/weights", "config_files", "artifacts/dataset"}
    assert f"--path-map {RECORDED}=WHERE_THEY_ARE_NOW" in first.path_map_hint()
    assert first.has_problems and first.to_json()["categories"]["lost"] == 4

    second = export(N1 / "offline", out)
    main = {r.key: r for r in second.runs}[f"{PROJECT}/{MAIN}"]
    assert main.status == "exported" and "replaced the dump's copy" in main.message
    assert [f for f in record(out).record.files if f.sha256 is None] == []
    assert not second.has_problems and second.to_json()["categories"]["lost"] == 0


# ---------------------------------------------------------------------------------------------
# 9: integers beyond 2**53


def test_huge_integer_step_and_value_keep_the_run(tmp_path: Path) -> None:
    out = tmp_path / "dump"
    summary = export(N1 / "bigint", out)
    [run] = summary.runs
    assert run.status == "exported" and run.points == 3
    dump_run = DumpReader(out).get_run(RunKey(PROJECT, SourceRunId(run.key.rsplit("/", 1)[1])))
    assert dump_run is not None
    reader = DumpReader(out)
    loss = reader.read_series(dump_run, "float", "train/loss").to_pylist()
    assert [(r["step"], r["value"]) for r in loss] == [(1.0, 0.5), (float(2**60 + 1), 0.25)]
    big = reader.read_series(dump_run, "float", "train/big_value").to_pylist()
    assert [(r["step"], r["value"]) for r in big] == [(0.0, 1152921504606846976.0)]
    rounded = {lo.path: lo for lo in dump_run.record.losses if lo.kind == "int_rounded_to_double"}
    assert set(rounded) == {"train/loss", "train/big_value"}
    assert rounded["train/big_value"].category is LossCategory.CHANGED_FORM
    assert "value 1152921504606846977 is beyond 2**53" in rounded["train/big_value"].detail


# ---------------------------------------------------------------------------------------------
# 10: a folder that cannot be read


@pytest.mark.skipif(unprivileged() is None, reason="needs root and setpriv to run the export as 'nobody'")
def test_unreadable_run_folder_is_reported_and_the_others_exported() -> None:
    prefix = unprivileged()
    assert prefix is not None
    with tempfile.TemporaryDirectory(prefix="nm-perm-") as tmp:
        base = Path(tmp)
        base.chmod(0o777)
        src = base / ".neptune"
        shutil.copytree(N1 / "offline", src)
        for p in [src, *src.rglob("*")]:
            p.chmod(0o777 if p.is_dir() else 0o666)
        blocked = src / "offline" / MAIN_NAME
        blocked.chmod(0o000)
        out = base / "dump"
        env = {**os.environ, "PYTHONPATH": str(REPO), "HOME": tmp, "COLUMNS": "400"}
        proc = subprocess.run(
            [*prefix, sys.executable, "-m", "neptune_migrate", "export", "--from", "neptune-offline", str(src),
             "--project", PROJECT, "--out", str(out)],
            capture_output=True, text=True, env=env, cwd=tmp, timeout=120, check=False,
        )
        blocked.chmod(0o755)
        assert proc.returncode == 1, proc.stderr
        assert "Traceback" not in proc.stderr
        flat = " ".join(proc.stderr.split())
        assert f"failed {PROJECT}/{MAIN} points=0 files=0 {blocked}: cannot be read (PermissionError" in flat
        assert "1 run folder(s) cannot be read" in flat
        assert "exported 1, skipped 0 (already complete), filtered 0, failed 1" in proc.stderr
        assert proc.stderr.strip().splitlines()[-1].startswith("export exit 1: 1 run(s) failed")


# ---------------------------------------------------------------------------------------------
# 13: tmp_file_name must stay inside the queue folder


@pytest.mark.parametrize("name", ["../" * 20 + "etc/passwd", "/etc/passwd", "../metadata.json", "link.txt"])
def test_tmp_file_name_escaping_the_queue_folder_is_refused(tmp_path: Path, name: str) -> None:
    src = tmp_path / "src"
    shutil.copytree(N1 / "offline", src)
    run_dir = src / "offline" / MAIN_NAME
    (run_dir / "upload_path" / "link.txt").symlink_to("/etc/hostname")
    text = []
    for line in lines(run_dir):
        rec = json.loads(line)
        if rec["obj"].get("tmp_file_name"):
            rec["obj"]["tmp_file_name"] = name
        text.append(json.dumps(rec))
    (run_dir / "data-1.log").write_text("\n".join(text) + "\n")
    out = tmp_path / "dump"
    summary = export(src, out)
    main = {r.key: r for r in summary.runs}[f"{PROJECT}/{MAIN}"]
    assert main.status == "exported"
    [entry] = [f for f in record(out).record.files if f.attribute_path == "model/inmem"]
    assert entry.sha256 is None and entry.missing is not None
    assert entry.missing.startswith(f"refused: tmp_file_name {name!r} does not stay inside")
    [lost] = [lo for lo in main.losses if lo["path"] == "model/inmem"]
    assert lost["category"] == "lost" and "\n" not in lost["detail"]


# ---------------------------------------------------------------------------------------------
# 11: the digest does not depend on where the source sits


def _digests(out: Path) -> dict[str, str]:
    found = {}
    for run_json in sorted((out / "runs").glob("*/run.json")):
        doc = json.loads(run_json.read_text())
        found[doc["key"]["run_id"]] = doc["digest"]
        assert doc["format_version"] == FORMAT_VERSION and doc["source_root"] == 0
    return found


def test_same_data_same_digest_wherever_it_sits(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    here, there = tmp_path / "a" / ".neptune", tmp_path / "b" / "deeper" / ".neptune"
    shutil.copytree(N1 / "offline", here)
    shutil.copytree(N1 / "offline", there)
    export(here, tmp_path / "d1")
    export(there, tmp_path / "d2")
    monkeypatch.chdir(tmp_path / "a")
    export(Path(".neptune"), tmp_path / "d3")  # a relative path
    first = _digests(tmp_path / "d1")
    assert len(first) == 2
    assert first == _digests(tmp_path / "d2") == _digests(tmp_path / "d3")
    manifest = json.loads((tmp_path / "d3" / "manifest.json").read_text())
    assert manifest["source_roots"] == [str(here)]
    rec = record(tmp_path / "d3").record
    assert rec.provenance.location == f"offline/{MAIN_NAME}"
    assert rec.provenance.files[0] == f"offline/{MAIN_NAME}/data-1.log"
    [inmem] = [f for f in rec.files if f.attribute_path == "model/inmem"]
    assert inmem.origin is not None and inmem.origin.startswith(f"offline/{MAIN_NAME}/upload_path/")
