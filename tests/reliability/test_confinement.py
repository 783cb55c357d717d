"""The one resolver (`dump.layout.confine`) and the pipeline's refusals, in process and fast."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from neptune_migrate.destinations.fake import FakeDestination
from neptune_migrate.dump.layout import DumpLayout, UnsafePathError, check_sha256, confine, run_dir_name
from neptune_migrate.dump.reader import DumpReader, RefusedRun
from neptune_migrate.pipeline.import_ import ImportOptions, import_runs
from neptune_migrate.retry import FAST
from neptune_migrate.sources.base import RunSelection
from neptune_migrate.verify.verifier import VerifyOptions, verify_runs
from tests.factories import build_dump, key

SHA = "ab" * 32


def test_confine_accepts_paths_inside_and_returns_them_resolved(tmp_path: Path) -> None:
    (tmp_path / "runs" / "r" / "series").mkdir(parents=True)
    (tmp_path / "runs" / "r" / "link").symlink_to(tmp_path / "runs" / "r" / "series")
    assert confine(tmp_path, "series/float-00000.parquet", within="runs/r") == (
        tmp_path.resolve() / "runs/r/series/float-00000.parquet")
    assert confine(tmp_path, "link/x.parquet", within="runs/r") == tmp_path.resolve() / "runs/r/series/x.parquet"


@pytest.mark.parametrize(("value", "reason"), [
    ("../other/x.parquet", "contains '..'"),
    ("series/../../x.parquet", "contains '..'"),
    ("/etc/passwd", "is an absolute path"),
    ("", "is not a relative path"),
    ("a\x00b", "is not a relative path"),
    (None, "is not a relative path"),
    (["series/x"], "is not a relative path"),
    ("out/x", "resolves outside"),
    ("loop/x", "cannot be resolved"),
])
def test_confine_refuses_everything_else_with_one_line(tmp_path: Path, value: object, reason: str) -> None:
    (tmp_path / "runs" / "r").mkdir(parents=True)
    (tmp_path / "runs" / "r" / "out").symlink_to(tmp_path.parent)
    (tmp_path / "runs" / "r" / "loop").symlink_to(tmp_path / "runs" / "r" / "loop")
    with pytest.raises(UnsafePathError, match=reason) as info:
        confine(tmp_path, value, within="runs/r", what="part file")
    assert "\n" not in str(info.value)
    assert str(info.value).startswith("part file ")


@pytest.mark.parametrize("value", ["AB" * 32, "ab" * 31, "ab" * 33, "../" + "a" * 61, "g" * 64, 64, None])
def test_blob_names_must_be_64_lower_case_hex_digits(tmp_path: Path, value: object) -> None:
    with pytest.raises(UnsafePathError, match="not 64 lower-case hex digits"):
        check_sha256(value)
    if isinstance(value, str):
        with pytest.raises(UnsafePathError):
            DumpLayout(tmp_path).blob(value)
    assert DumpLayout(tmp_path).blob(SHA) == tmp_path.resolve() / "files" / "sha256" / "ab" / SHA


def test_a_files_folder_symlinked_out_of_the_dump_is_refused(tmp_path: Path) -> None:
    (tmp_path / "elsewhere" / "sha256" / "ab").mkdir(parents=True)
    (tmp_path / "dump").mkdir()
    (tmp_path / "dump" / "files").symlink_to(tmp_path / "elsewhere")
    with pytest.raises(UnsafePathError, match="resolves outside files/"):
        DumpLayout(tmp_path / "dump").blob(SHA)


def _victim_dump(tmp_path: Path) -> tuple[DumpReader, Path]:
    root = tmp_path / "dump"
    build_dump(root, tmp_path, run_ids=("GOOD-1", "GOOD-2", "BAD-1"), points=10, lost_file=False, own_blobs=True)
    return DumpReader(root), root / "runs" / run_dir_name(key("BAD-1"))


def test_scan_yields_the_good_runs_and_one_refusal(tmp_path: Path) -> None:
    reader, bad = _victim_dump(tmp_path)
    doc = json.loads((bad / "run.json").read_text())
    doc["parts"][0]["file"] = "../../../../etc/passwd"
    (bad / "run.json").write_text(json.dumps(doc))
    entries = list(reader.scan())
    refused = [e for e in entries if isinstance(e, RefusedRun)]
    assert [str(e.key) for e in entries if not isinstance(e, RefusedRun)] == ["my-ws/my-proj/GOOD-1",
                                                                               "my-ws/my-proj/GOOD-2"]
    assert [(str(r.key), str(r.problem)) for r in refused] == [(
        "my-ws/my-proj/BAD-1",
        "my-ws/my-proj/BAD-1: run.json: part file '../../../../etc/passwd' contains '..'; "
        "only paths inside the dump are read",
    )]


def test_dry_run_plans_the_refusal_of_a_corrupt_blob_and_the_import_uploads_nothing_of_it(tmp_path: Path) -> None:
    reader, bad = _victim_dump(tmp_path)
    doc = json.loads((bad / "run.json").read_text())
    sha = doc["files"][0]["sha256"]
    blob = reader.blob_path(sha)
    os.chmod(blob, 0o644)
    blob.write_bytes(blob.read_bytes() + b"tampered")
    fake = FakeDestination()
    plan = import_runs(reader, fake, ImportOptions(retry=FAST, dry_run=True))
    assert {r.key: r.status for r in plan.runs} == {"my-ws/my-proj/GOOD-1": "would_create",
                                                   "my-ws/my-proj/GOOD-2": "would_create",
                                                   "my-ws/my-proj/BAD-1": "would_fail"}
    assert fake.writes == 0
    report = import_runs(reader, fake, ImportOptions(retry=FAST))
    [bad_result] = [r for r in report.runs if r.key == "my-ws/my-proj/BAD-1"]
    assert bad_result.status == "failed"
    assert bad_result.message == (f"model/weights (weights.bin): files/sha256/{sha[:2]}/{sha}: blob content does "
                                  "not match its sha256; not uploaded")
    uploaded = [data for run in fake.runs.values() for data in run.files.values()]
    assert len(uploaded) == 2  # the two good runs' weights
    assert blob.read_bytes() not in uploaded
    verification = verify_runs(reader, fake, VerifyOptions(import_options=ImportOptions(retry=FAST)))
    by_run = {r.key: r for r in verification.runs}
    assert by_run["my-ws/my-proj/GOOD-1"].status == "match"
    assert (f"error dump:files/sha256/{sha[:2]}/{sha}" in "\n".join(
        f"{f.kind} {f.item}" for f in by_run["my-ws/my-proj/BAD-1"].findings))


def test_a_refused_run_outside_the_selection_is_filtered_when_its_key_is_known(tmp_path: Path) -> None:
    reader, bad = _victim_dump(tmp_path)
    doc = json.loads((bad / "run.json").read_text())
    doc["format_version"] = "9.1"
    (bad / "run.json").write_text(json.dumps(doc))
    only_good = ImportOptions(retry=FAST, selection=RunSelection(run_ids=("GOOD-1",)))
    report = import_runs(reader, FakeDestination(), only_good)
    assert {r.key: r.status for r in report.runs} == {
        "my-ws/my-proj/GOOD-1": "created", "my-ws/my-proj/GOOD-2": "filtered", "my-ws/my-proj/BAD-1": "filtered"}
    (bad / "run.json").write_text("{")  # now its key cannot be read: always reported
    report = import_runs(DumpReader(reader.root), FakeDestination(), only_good)
    assert {r.key: r.status for r in report.runs}[bad.name] == "failed"


def test_progress_hears_of_a_refused_run_after_start_like_any_other(tmp_path: Path) -> None:
    from neptune_migrate.pipeline.import_ import RunResult

    reader, bad = _victim_dump(tmp_path)
    (bad / "run.json").write_text("")
    events: list[str] = []

    class Recorder:
        def start(self, runs: int, points: int) -> None:
            events.append(f"start {runs}")

        def advance(self, points: int) -> None:
            pass

        def run_done(self, result: RunResult) -> None:
            events.append(f"{result.status} {result.key}")

    import_runs(reader, FakeDestination(), ImportOptions(retry=FAST), progress=Recorder())
    assert events == ["start 3", f"failed {bad.name}", "created my-ws/my-proj/GOOD-1", "created my-ws/my-proj/GOOD-2"]
