"""neptune-scale source: golden tests against the real client's SQLite logs in fixtures/neptune_scale/."""

from __future__ import annotations

import hashlib
import math
import pickle
import shutil
import sqlite3
import tempfile
from contextlib import closing
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import pytest

from neptune_migrate.dump.reader import DumpReader, DumpRun
from neptune_migrate.dump.writer import DumpWriter
from neptune_migrate.model import ForkPoint, RunKey, RunRecord, SourceRunId
from neptune_migrate.pipeline.export import ExportSummary, export_runs
from neptune_migrate.sources import load_source
from neptune_migrate.sources.base import PathMap, RunSelection, SourceOptions
from neptune_migrate.sources.neptune_scale import mapping
from tests.conftest import FIXTURES

SCALE = FIXTURES / "neptune_scale"
ARTIFACTS = SCALE / "artifacts"
ART_PREFIX = "/tmp/neptune-migrate-scale-artifacts"
PATH_MAP = PathMap.parse([f"{ART_PREFIX}={ARTIFACTS}"])
PROJECT = "my-ws/my-proj"
UTC = timezone.utc


def run_dir(fixture: str, run: str) -> Path:
    [d] = sorted((SCALE / fixture).glob(f"my-ws_my-proj_{run}_*"))
    return d


def tree_digest(root: Path) -> dict[str, str]:
    return {str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(root.rglob("*")) if p.is_file()}


def export(path: Path, dump: Path, **options: Any) -> tuple[ExportSummary, DumpReader]:
    source = load_source("neptune-scale", SourceOptions(path=path, **options))
    with DumpWriter(dump) as writer:
        summary = export_runs(source, writer, RunSelection(), location=str(path))
    return summary, DumpReader(dump)


def run_of(reader: DumpReader, run_id: str) -> DumpRun:
    run = reader.get_run(RunKey(PROJECT, SourceRunId(run_id)))
    assert run is not None, run_id
    return run


def series(reader: DumpReader, run: DumpRun, kind: Any, path: str) -> list[dict[str, Any]]:
    return reader.read_series(run, kind, path).to_pylist()


def ts(*args: int) -> datetime:
    return datetime(*args, tzinfo=UTC)


def losses(record: RunRecord) -> dict[tuple[str, str | None], tuple[int, bool]]:
    return {(lo.kind, lo.path): (lo.count, lo.error) for lo in record.losses}


@pytest.fixture(scope="module")
def offline(tmp_path_factory: pytest.TempPathFactory) -> tuple[ExportSummary, DumpReader]:
    before = tree_digest(SCALE)
    out = export(SCALE / "offline", tmp_path_factory.mktemp("offline") / "dump", path_map=PATH_MAP)
    assert tree_digest(SCALE) == before  # the user's files are byte-identical (and nothing was added)
    return out


# ---------------------------------------------------------------------------------------------
# The realistic parent run


def test_parent_identity_and_configs(offline: tuple[ExportSummary, DumpReader]) -> None:
    summary, reader = offline
    assert summary.warnings == []
    assert {r.key: r.status for r in summary.runs} == {
        f"{PROJECT}/child-run": "exported", f"{PROJECT}/parent-run": "exported"}
    rec = run_of(reader, "parent-run").record
    assert rec.system.created_at == ts(2025, 1, 1)
    assert rec.system.experiment_name == "exp-resnet"
    assert rec.system.custom_run_id == "parent-run"
    assert rec.system.tags == {"baseline", "resnet"}
    assert rec.system.group_tags == {"group-a"}
    assert rec.fork is None
    assert rec.complete and not rec.partial_copy
    assert set(rec.absent) == {"name", "description", "owner", "state", "failed", "trashed"}
    with tempfile.TemporaryDirectory() as tmp:  # never open the fixture itself (SQLite may write -shm)
        shutil.copytree(run_dir("offline", "parent-run"), Path(tmp) / "run")
        with closing(sqlite3.connect(Path(tmp) / "run" / "run_operations.sqlite3")) as con:
            (last_ms,) = con.execute("select max(timestamp) from run_operations").fetchone()
    assert rec.system.modified_at == datetime(1970, 1, 1, tzinfo=timezone.utc) + timedelta(milliseconds=last_ms)
    assert rec.provenance.details["modified_at_from"] == "last operation"
    values = {path: (f.type, f.value) for path, f in rec.fields.items()}
    assert values == {
        "parameters/lr": ("float", 0.001),
        "parameters/batch_size": ("int", 64),
        "parameters/big_int": ("int", 2**53 + 1),
        "parameters/neg_int": ("int", -7),
        "parameters/optimizer": ("string", "adam"),
        "parameters/unicode": ("string", "zażółć ✓"),
        "parameters/empty": ("string", ""),
        "parameters/use_bn": ("bool", True),
        "parameters/frozen": ("bool", False),
        "parameters/layers": ("string_set", frozenset({"64", "128"})),
        "info/started_at": ("datetime", ts(2025, 1, 2, 3, 4, 5, 123456)),
        "parameters/nested/dropout": ("float", 0.5),
        "parameters/nested/depth": ("int", 3),
    }
    assert type(rec.fields["parameters/batch_size"].value) is int
    assert not any(p.startswith("sys/") for p in rec.fields)
    assert rec.provenance.source == "neptune-scale"
    assert rec.provenance.details["db_version"] == "v5"
    assert rec.provenance.details["operations"] == "38"
    assert losses(rec) == {("preview_excluded", "train/loss"): (2, False)}


def test_parent_float_series_exact(offline: tuple[ExportSummary, DumpReader]) -> None:
    _, reader = offline
    run = run_of(reader, "parent-run")
    loss = series(reader, run, "float", "train/loss")
    assert [(p["step"], p["value"], p["timestamp"], p["preview_completion"]) for p in loss] == [
        (0.0, 1.0, ts(2025, 1, 2, 3, 5, 0), None),
        (1.0, 0.5, ts(2025, 1, 2, 3, 5, 1), None),
        (2.0, 0.3333333333333333, ts(2025, 1, 2, 3, 5, 2), None),
        (3.0, 0.25, ts(2025, 1, 2, 3, 5, 3), None),
        (4.0, 0.2, ts(2025, 1, 2, 3, 5, 4), None),
        (5.0, 0.17, ts(2025, 1, 2, 3, 8, 2), None),  # the final value; the two previews are excluded
    ]
    acc = series(reader, run, "float", "train/acc")
    assert [(p["step"], p["value"]) for p in acc] == [(0.0, 0.5), (1.0, 0.6), (2.0, 0.7), (3.0, 0.8), (4.0, 0.9)]
    lr = series(reader, run, "float", "train/lr_sched")
    assert [(p["step"], p["value"], p["timestamp"]) for p in lr] == [
        (0.5, 0.1, ts(2025, 1, 2, 3, 6, 0)),
        (1.25, 0.2, ts(2025, 1, 2, 3, 6, 1)),
        (2.0001, 0.30000000000000004, ts(2025, 1, 2, 3, 6, 2)),
        (3.000001, 0.4, ts(2025, 1, 2, 3, 6, 3)),
    ]
    unstable = series(reader, run, "float", "train/unstable")
    assert [p["step"] for p in unstable] == [0.0, 1.0, 2.0, 3.0]
    v = [p["value"] for p in unstable]
    assert math.isnan(v[0]) and v[1:] == [math.inf, -math.inf, 1.5]


def test_parent_string_and_histogram_series(offline: tuple[ExportSummary, DumpReader]) -> None:
    _, reader = offline
    run = run_of(reader, "parent-run")
    log = series(reader, run, "string", "train/log")
    assert [(p["step"], p["value"], p["timestamp"]) for p in log] == [
        (float(s), f"epoch {s} done", ts(2025, 1, 2, 3, 5, s, 500000)) for s in range(5)]
    weights = series(reader, run, "histogram", "hist/weights")
    assert [(p["step"], p["type"], p["edges"], p["values"], p["timestamp"]) for p in weights] == [
        (float(s), "COUNTING", [0.0, 1.0, 2.0, 3.0], [1.0 + s, 5.0, 2.0 * s], ts(2025, 1, 2, 3, 9, s))
        for s in range(3)]
    density = series(reader, run, "histogram", "hist/density")
    assert [(p["step"], p["type"], p["edges"], p["values"]) for p in density] == [
        (0.0, "DENSITY", [-1.0, 0.0, 0.5, 1.0], [0.25, 1.0, 0.5]),
        (1.0, "DENSITY", [-1.0, 0.0, 0.5, 1.0], [0.25, 1.5, 0.5]),
    ]


def test_parent_files_bytes(offline: tuple[ExportSummary, DumpReader]) -> None:
    _, reader = offline
    run = run_of(reader, "parent-run")
    folder = run_dir("offline", "parent-run")
    [inmem] = list(folder.glob("*.bin"))
    [typed] = list(folder.glob("*.json"))
    [png] = list(folder.glob("*.png"))
    files = {f.attribute_path: f for f in run.record.files}
    expected = {
        "model/weights": ("model.txt", ARTIFACTS / "model.txt", "text/plain"),
        "model/config": ("config.yaml", ARTIFACTS / "config.yaml", "application/yaml"),
        "model/typed_path": ("metrics.csv", ARTIFACTS / "metrics.csv", "text/csv"),
        "model/inmem": (inmem.name, inmem, "application/octet-stream"),
        "model/typed": (typed.name, typed, "application/json"),
    }
    assert set(files) == set(expected)
    for attr, (name, src, mime) in expected.items():
        fe = files[attr]
        assert (fe.name, fe.mime_type, fe.missing, fe.kind) == (name, mime, None, "file"), attr
        assert fe.sha256 is not None
        assert reader.blob_path(fe.sha256).read_bytes() == src.read_bytes(), attr
        assert fe.size == src.stat().st_size
    assert reader.blob_path(files["model/inmem"].sha256 or "").read_bytes() == b"hello bytes"
    preds = series(reader, run, "file", "images/preds")
    assert [(p["step"], p["name"], p["mime_type"], p["timestamp"]) for p in preds] == [
        (0.0, "red.png", "image/png", ts(2025, 1, 2, 3, 11, 0)),
        (1.0, "green.png", "image/png", ts(2025, 1, 2, 3, 11, 1)),
        (2.0, "blue.png", "image/png", ts(2025, 1, 2, 3, 11, 2)),
        (3.0, png.name, "image/png", ts(2025, 1, 2, 3, 11, 3)),
    ]
    for p, src in zip(preds, ("red", "green", "blue", "red"), strict=True):
        assert reader.blob_path(p["sha256"]).read_bytes() == (ARTIFACTS / f"{src}.png").read_bytes()
        assert p["size"] == (ARTIFACTS / f"{src}.png").stat().st_size and p["missing"] is None
    assert reader.check() == []
    assert str(ARTIFACTS / "model.txt") in run.record.provenance.files  # read through --path-map


def test_fork_child(offline: tuple[ExportSummary, DumpReader]) -> None:
    _, reader = offline
    rec = run_of(reader, "child-run").record
    assert rec.fork == ForkPoint(RunKey(PROJECT, SourceRunId("parent-run")), 3.0)
    assert rec.system.created_at == ts(2025, 1, 3)
    assert rec.system.experiment_name is None and "experiment_name" in rec.absent
    assert {p: f.value for p, f in rec.fields.items()} == {"parameters/lr": 0.0005}
    loss = series(reader, run_of(reader, "child-run"), "float", "train/loss")
    assert [(p["step"], p["value"], p["timestamp"]) for p in loss] == [
        (4.0, 0.025, ts(2025, 1, 3, 1, 0, 4)),
        (5.0, 0.02, ts(2025, 1, 3, 1, 0, 5)),
        (6.0, 0.016666666666666666, ts(2025, 1, 3, 1, 0, 6)),
    ]


# ---------------------------------------------------------------------------------------------
# Options, layouts and damaged inputs


def test_include_previews(tmp_path: Path) -> None:
    _, reader = export(run_dir("offline", "parent-run"), tmp_path / "d", path_map=PATH_MAP, include_previews=True)
    run = run_of(reader, "parent-run")
    at5 = [(p["value"], p["preview_completion"], p["timestamp"])
           for p in series(reader, run, "float", "train/loss") if p["step"] == 5.0]
    assert sorted(at5, key=lambda r: r[2]) == [
        (0.19, 0.25, ts(2025, 1, 2, 3, 8, 0)),
        (0.18, 0.75, ts(2025, 1, 2, 3, 8, 1)),
        (0.17, None, ts(2025, 1, 2, 3, 8, 2)),
    ]
    assert not any(lo.kind == "preview_excluded" for lo in run.record.losses)


def test_missing_files_without_path_map(tmp_path: Path) -> None:
    gone = tmp_path / "moved-away"
    summary, reader = export(run_dir("offline", "parent-run"), tmp_path / "d",
                             path_map=PathMap.parse([f"{ART_PREFIX}={gone}"]))
    rec = run_of(reader, "parent-run").record
    files = {f.attribute_path: f for f in rec.files}
    # in-place files are not where the map points; temporary copies are found next to the log
    assert files["model/weights"].sha256 is None and str(gone) in (files["model/weights"].missing or "")
    assert files["model/weights"].origin == f"{ART_PREFIX}/model.txt"
    assert files["model/inmem"].sha256 is not None
    lost = losses(rec)
    assert lost[("missing_file", "model/weights")] == (1, True)
    assert lost[("missing_file", "images/preds")] == (3, True)  # red/green/blue by path; the bytes copy is found
    assert summary.has_problems
    preds = series(reader, run_of(reader, "parent-run"), "file", "images/preds")
    assert [p["sha256"] is None for p in preds] == [True, True, True, False]


def test_v1_single_file(tmp_path: Path) -> None:
    [db] = (SCALE / "v1_single_file").glob("*.sqlite3")
    before = tree_digest(SCALE / "v1_single_file")
    summary, reader = export(db, tmp_path / "d")
    assert tree_digest(SCALE / "v1_single_file") == before
    assert summary.warnings == []
    run = run_of(reader, "parent-run")
    rec = run.record
    assert rec.provenance.details["db_version"] == "v1"
    assert rec.provenance.details["layout"] == "single file"
    assert rec.system.created_at == ts(2025, 1, 1) and rec.system.experiment_name == "exp-resnet"
    assert rec.system.tags == {"baseline", "resnet"} and rec.files == ()
    assert rec.fields["parameters/big_int"].value == 2**53 + 1
    assert [p["step"] for p in series(reader, run, "float", "train/lr_sched")] == [0.5, 1.25, 2.0001, 3.000001]
    assert [p["value"] for p in series(reader, run, "float", "train/loss")][-1] == 0.17
    assert "images/preds" not in {s.path for s in rec.series}


@pytest.mark.parametrize("version", ["v2", "v3", "v4"])
def test_older_folder_versions(tmp_path: Path, version: str) -> None:
    """v2-v4 are v5 minus tables: rebuild a copy of the parent log without them."""
    src = run_dir("offline", "parent-run")
    folder = tmp_path / "logs" / src.name
    shutil.copytree(src, folder)
    with sqlite3.connect(folder / "run_operations.sqlite3") as con:  # our copy, not the fixture
        con.execute("drop table operation_errors")
        if version in ("v2", "v3"):
            con.execute("drop table run_operation_submission")
        con.execute("update metadata set version = ?", (version,))
    summary, reader = export(tmp_path / "logs", tmp_path / "d", path_map=PATH_MAP)
    assert summary.warnings == []
    rec = run_of(reader, "parent-run").record
    assert rec.provenance.details["db_version"] == version
    assert len(rec.files) == 5 and all(f.sha256 for f in rec.files)


def test_crash_wal_only(tmp_path: Path) -> None:
    folder = run_dir("crash_wal", "crash-run")
    assert (folder / "run_operations.sqlite3").stat().st_size == 4096  # the main file holds no tables
    before = tree_digest(folder)
    summary, reader = export(folder, tmp_path / "d")
    assert tree_digest(folder) == before  # WAL not checkpointed into the fixture, no -shm rewritten
    assert summary.warnings == []
    run = run_of(reader, "crash-run")
    assert run.record.system.created_at == ts(2025, 1, 4)
    loss = series(reader, run, "float", "train/loss")
    assert [(p["step"], p["value"], p["timestamp"]) for p in loss] == [
        (float(s), 1 / (s + 1), ts(2025, 1, 4, 1) + timedelta(seconds=s)) for s in range(50)]


def test_crash_without_wal_warns(tmp_path: Path) -> None:
    folder = tmp_path / "copy"
    folder.mkdir()
    shutil.copyfile(run_dir("crash_wal", "crash-run") / "run_operations.sqlite3", folder / "run_operations.sqlite3")
    summary, _reader = export(folder / "run_operations.sqlite3", tmp_path / "d")
    [warning] = summary.warnings
    assert "run_operations.sqlite3" in warning and "-wal" in warning and "data may be missing" in warning
    assert summary.runs == [] and summary.has_problems


def test_async_leftover_is_complete_until_rows_are_acknowledged(tmp_path: Path) -> None:
    src = run_dir("async_noserver", "async-run")
    _, reader = export(src, tmp_path / "d1")
    rec = run_of(reader, "async-run").record
    assert not rec.partial_copy and rec.system.created_at == ts(2025, 1, 5)
    assert rec.fields["parameters/lr"].value == 0.01
    # What the sync process does once the server acknowledged the first two operations:
    folder = tmp_path / "logs" / src.name
    shutil.copytree(src, folder)
    with sqlite3.connect(folder / "run_operations.sqlite3") as con:
        con.execute("delete from run_operations where sequence_id <= 2")
    _, reader = export(tmp_path / "logs", tmp_path / "d2")
    run = run_of(reader, "async-run")
    rec = run.record
    assert rec.partial_copy and rec.complete
    assert rec.provenance.details["acknowledged_gone"] == "2"
    # The CreateRun row is gone: the run starts at its first remaining operation's enqueue time (never
    # the export time) and ends at its last one's.
    with sqlite3.connect(folder / "run_operations.sqlite3") as con:
        first_ms, last_ms = con.execute("select min(timestamp), max(timestamp) from run_operations").fetchone()
    epoch = datetime(1970, 1, 1, tzinfo=timezone.utc)
    assert rec.system.created_at == epoch + timedelta(milliseconds=first_ms)
    assert rec.system.modified_at == epoch + timedelta(milliseconds=last_ms)
    assert rec.provenance.details["created_at_from"] == "first operation's enqueue time"
    assert rec.provenance.details["modified_at_from"] == "last operation"
    assert "created_at" not in rec.absent and {"tags", "fork"} <= set(rec.absent)
    assert rec.fields == {}
    [point] = series(reader, run, "float", "train/loss")
    assert (point["step"], point["value"], point["timestamp"]) == (0.0, 0.5, ts(2025, 1, 5, 1))


class _Trap:
    def __reduce__(self) -> tuple[Any, tuple[str]]:
        return (Path.touch, (str(_TRAP),))


_TRAP = Path("/tmp/neptune-migrate-scale-unpickled-trap")


def test_operation_errors_reported_never_unpickled(tmp_path: Path) -> None:
    _TRAP.unlink(missing_ok=True)
    src = run_dir("offline", "child-run")
    folder = tmp_path / "logs" / src.name
    shutil.copytree(src, folder)
    with sqlite3.connect(folder / "run_operations.sqlite3") as con:
        con.execute(
            "insert into operation_errors (timestamp, error_type, error_details, error_body, sequence_id) "
            "values (1, 'NeptuneSeriesStepNonIncreasing', 'step 4 is not after 5', ?, 3)",
            (pickle.dumps(_Trap()).hex(),),
        )
    summary, reader = export(tmp_path / "logs", tmp_path / "d")
    assert [r.status for r in summary.runs] == ["exported"], summary.runs
    rec = run_of(reader, "child-run").record
    [err] = [lo for lo in rec.losses if lo.kind == "operation_error"]
    assert err.error and err.count == 1
    assert err.detail.startswith("seq 3: NeptuneSeriesStepNonIncreasing: step 4 is not after 5 [error_body:")
    assert not _TRAP.exists()


def test_resumed_run_in_two_logs_is_merged(tmp_path: Path) -> None:
    """The same run in two logs (a resumed run, or a copy): replayed in order; repeats are duplicates."""
    _, reader = export(SCALE, tmp_path / "d", path_map=PATH_MAP)
    rec = run_of(reader, "parent-run").record
    assert rec.provenance.details["databases"] == "2"
    assert {s.path: s.count for s in rec.series}["train/loss"] == 6
    lost = losses(rec)
    # the second log repeats steps 0-5: step 5 is an identical point; 0-4 and the two previews at
    # step 5 are not after the last committed step
    assert lost[("duplicate_point", "train/loss")] == (1, False)
    assert lost[("non_increasing_step", "train/loss")] == (7, False)


# ---------------------------------------------------------------------------------------------
# mapping: steps and server rules


@pytest.mark.parametrize(
    ("whole", "micro", "value", "exact"),
    [(0, 0, 0.0, True), (3, 1, 3.000001, True), (2, 100, 2.0001, True), (1, 250000, 1.25, True),
     (999_999_999, 999_999, 999999999.999999, True), (123_456_789_012, 345_678, 123456789012.34568, False)],
)
def test_steps(whole: int, micro: int, value: float, exact: bool) -> None:
    n = whole * mapping.MICRO + micro
    assert mapping.micros_to_float(n) == value
    assert mapping.micros_exact(n) is exact


def test_non_increasing_steps_follow_the_server() -> None:
    from neptune_api.proto.neptune_pb.ingest.v1.common_pb2 import Step, UpdateRunSnapshot, Value

    rows: list[Any] = []
    state = mapping.RunState(project=PROJECT, sink=lambda kind, t: rows.extend(t.to_pylist()),
                             resolve_file=lambda ref: pytest.fail("no files"))
    for whole, value in ((1, 1.0), (2, 2.0), (2, 2.0), (2, 3.0), (1, 4.0), (3, 5.0)):
        state.apply_snapshot(UpdateRunSnapshot(step=Step(whole=whole), append={"m": Value(float64=value)}))
    state.flush()
    assert [(r["step"], r["value"]) for r in rows] == [(1.0, 1.0), (2.0, 2.0), (3.0, 5.0)]
    got = {lo.kind: (lo.count, lo.error) for lo in state.losses()}
    assert got == {"duplicate_point": (1, False), "non_increasing_step": (2, False)}
