"""MlflowDestination against real MLflow backends (SQLite store and `mlflow server`).

Runs are built with tests/factories.py, written through the destination the way the import
pipeline drives it, then read back and compared value by value.
"""

from __future__ import annotations

import hashlib
import json
import math
import threading
from collections.abc import Iterator
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc
import pytest

from neptune_migrate.destinations.base import FileDigest, PreparedRun, StepPlan
from neptune_migrate.destinations.mlflow import MlflowDestination
from neptune_migrate.destinations.mlflow import mapping as m
from neptune_migrate.dump.reader import DumpReader, DumpRun
from neptune_migrate.dump.writer import DumpWriter
from neptune_migrate.errors import PermanentError
from neptune_migrate.model import SERIES_KINDS, DestinationRunId, Field, RunKey, SeriesKind
from tests.destinations.mlflow.conftest import MlflowBackend
from tests.factories import T0, key, write_full_run

START_MS = 1740830400000  # T0
END_MS = START_MS + 3600 * 1000


def _dest(backend: MlflowBackend, **kw: Any) -> MlflowDestination:
    return MlflowDestination(backend.tracking_uri, "it-{workspace}-{project_name}",
                             artifact_location=backend.artifact_location, **kw)


def _prepare(run: DumpRun) -> PreparedRun:
    rec = run.record
    paths = [*rec.fields, *(s.path for s in rec.series)]
    key_map = {p: m.sanitize_key(p) for p in paths}
    steps = {(s.kind, s.path): StepPlan("int") for s in rec.series}
    return PreparedRun(rec, run.digest, key_map, steps)


def _with_dest_columns(table: pa.Table, prepared: PreparedRun) -> pa.Table:
    keys = [prepared.key_map[p] for p in table.column("path").to_pylist()]
    dest_steps = [math.floor(s) for s in table.column("step").to_pylist()]
    return (table.append_column("key", pa.array(keys, pa.string()))
            .append_column("dest_step", pa.array(dest_steps, pa.int64())))


def _chunks(reader: DumpReader, run: DumpRun, prepared: PreparedRun, kind: SeriesKind,
            *, local_paths: bool = False) -> Iterator[pa.Table]:
    for table in reader.iter_points(run, kind, batch_rows=40):
        chunk = _with_dest_columns(table, prepared)
        if kind == "file" and local_paths:  # as the pipeline does; otherwise the blob resolver is used
            paths = [None if s is None else str(reader.blob_path(s)) for s in chunk.column("sha256").to_pylist()]
            chunk = chunk.append_column("local_path", pa.array(paths, pa.string()))
        yield chunk


def _import(dest: MlflowDestination, reader: DumpReader, run: DumpRun, *, complete: bool = True,
            local_paths: bool = False) -> DestinationRunId:
    prepared = _prepare(run)
    if not local_paths:
        dest.set_blob_resolver(reader.blob_path)
    run_id = dest.create_run(prepared)
    for kind in SERIES_KINDS:
        for chunk in _chunks(reader, run, prepared, kind, local_paths=local_paths):
            dest.write_series(run_id, kind, chunk)
    if not complete:
        return run_id
    dest.finish_series(run_id, prepared)
    for entry in run.record.files:
        if entry.sha256 is not None:
            dest.upload_file(run_id, entry, reader.blob_path(entry.sha256))
    dest.mark_complete(run_id, prepared)
    return run_id


def _rows(table: pa.Table) -> list[dict[str, Any]]:
    """Rows with NaN made comparable."""
    def fix(v: Any) -> Any:
        if isinstance(v, float) and math.isnan(v):
            return "NaN"
        if isinstance(v, list):
            return [fix(x) for x in v]
        return v
    return [{k: fix(v) for k, v in row.items()} for row in table.to_pylist()]


def _unique_project(request: pytest.FixtureRequest) -> str:
    digest = hashlib.sha256(request.node.nodeid.encode()).hexdigest()[:10]
    return f"ws-{digest}/proj"


def _dump_in(tmp_path: Path, project: str, mutate: Any = None, run_id: str = "PROJ-1") -> DumpReader:
    root = tmp_path / "dump"
    with DumpWriter(root) as writer:
        k = RunKey(project, key(run_id).run_id)
        with writer.begin_run(k) as rw:
            record = write_full_run(rw, k, tmp_path)
            if mutate is not None:
                record = mutate(record)
            rw.commit(record)
    return DumpReader(root)


def test_round_trip_exact(mlflow_backend: MlflowBackend, tmp_path: Path, request: pytest.FixtureRequest) -> None:
    reader = _dump_in(tmp_path, _unique_project(request))
    (run,) = list(reader.runs())
    dest = _dest(mlflow_backend)
    prepared = _prepare(run)
    run_id = _import(dest, reader, run, local_paths=True)

    found = dest.find_run(run.key)
    assert found is not None and found.run_id == run_id and found.complete and found.digest == run.digest

    snap = dest.read_snapshot(run_id)
    expected = dest.expected_snapshot(prepared)
    expected.run_id = run_id
    assert snap == expected

    # hand-checked values, not only "expected == actual"
    assert snap.name == "resnet-baseline" and snap.description == "a run" and snap.owner == "alice"
    assert snap.status == "FINISHED"
    assert snap.start_time == T0 and snap.end_time == T0 + timedelta(hours=1)
    assert snap.tags == frozenset({"baseline", "ünï"})
    assert snap.params["parameters/lr"] == "0.001"
    assert snap.params["parameters/nan"] == "nan" and snap.params["parameters/-inf"] == "-inf"
    assert snap.params["parameters/big"] == str(2**62)
    assert snap.params["parameters/use_bn"] == "True"
    assert snap.params["parameters/ünïcødé/ключ"] == "значение ✓"
    assert snap.params["info/started_at"] == "2025-03-01T12:00:00+00:00"
    assert snap.params["info/labels"] == '["a", "b"]' and snap.params["info/empty_set"] == "[]"
    assert snap.extra["neptune.project"] == run.key.project and snap.extra["neptune.run_id"] == "PROJ-1"
    assert snap.extra["nm.status"] == "complete"
    assert snap.extra["neptune.fork.parent"] == "my-ws/my-proj/PROJ-0" and snap.extra["neptune.fork.step"] == "3.0"
    assert json.loads(snap.extra["neptune.group_tags"]) == ["group-a"]
    assert snap.series == {("float", "train/loss"): 100, ("float", "train/special"): 3, ("string", "train/log"): 2,
                           ("histogram", "hist/w"): 1, ("file", "images/preds"): 1}
    weights = run.record.files[0]
    assert snap.files == {"neptune/files/model/weights/weights.bin": FileDigest(weights.size, weights.sha256)}

    for kind in SERIES_KINDS:
        for si in (s for s in run.record.series if s.kind == kind and s.count):
            points = _with_dest_columns(reader.read_series(run, kind, si.path), prepared)
            got = dest.read_series(run_id, kind, prepared.key_map[si.path])
            assert _rows(got) == _rows(dest.expected_series(kind, points)), (kind, si.path)

    loss = dest.read_series(run_id, "float", "train/loss").to_pylist()
    assert [r["step"] for r in loss] == list(range(100))
    assert loss[7]["value"] == 1.0 / 8 and loss[7]["timestamp"] == T0 + timedelta(seconds=7)
    special = dest.read_series(run_id, "float", "train/special").to_pylist()
    assert [r["step"] for r in special] == [0, 1, 2]
    assert math.isnan(special[0]["value"])
    assert special[1]["value"] == m.FLOAT_MAX and special[2]["value"] == -m.FLOAT_MAX
    text = dest.read_series(run_id, "string", "train/log").to_pylist()
    assert [(r["step"], r["neptune_step"], r["value"], r["timestamp"]) for r in text] == [
        (0, 0.0, "épоch 0", T0), (1, 1.0, "", T0)]
    (hist,) = dest.read_series(run_id, "histogram", "hist/w").to_pylist()
    assert (hist["type"], hist["edges"], hist["values"]) == ("COUNTING", [0.0, 1.0, 2.5], [3.0, 4.0])
    (image,) = dest.read_series(run_id, "file", "images/preds").to_pylist()
    assert image["sha256"] == hashlib.sha256(b"\x89PNG fake image").hexdigest() and image["name"] == "red.png"
    assert image["title"] == "red" and image["mime_type"] == "image/png"

    out = dest.read_file(run_id, "neptune/files/model/weights/weights.bin", tmp_path / "dl")
    assert out is not None and out.read_bytes() == b"\x00\x01weights" * 100
    out = dest.read_file(run_id, "neptune/file_series/images/preds/0_red.png", tmp_path / "dl")
    assert out is not None and out.read_bytes() == b"\x89PNG fake image"
    key_map = json.loads(dest.read_file(run_id, m.KEY_MAP_ARTIFACT, tmp_path / "dl").read_text())  # type: ignore[union-attr]
    assert key_map == dict(prepared.key_map)
    types = json.loads(dest.read_file(run_id, m.PARAMS_TYPES_ARTIFACT, tmp_path / "dl").read_text())  # type: ignore[union-attr]
    assert types["info/started_at"] == "datetime" and types["parameters/batch_size"] == "int"
    doc = json.loads(dest.read_file(run_id, m.RUN_ARTIFACT, tmp_path / "dl").read_text())  # type: ignore[union-attr]
    assert doc["losses"][0]["kind"] == "missing_file" and doc["digest"] == run.digest

    losses = {(lo.kind, lo.path): lo.count for lo in dest.plan_run(prepared)}
    assert losses == {("empty_series", "train/empty"): 1, ("series_as_artifact", "train/log"): 2,
                      ("series_as_artifact", "hist/w"): 1, ("series_as_artifact", "images/preds"): 1}
    dest.close()


def test_half_written_run_is_incomplete_then_discarded(mlflow_backend: MlflowBackend, tmp_path: Path,
                                                       request: pytest.FixtureRequest) -> None:
    reader = _dump_in(tmp_path, _unique_project(request))
    (run,) = list(reader.runs())
    dest = _dest(mlflow_backend)
    run_id = _import(dest, reader, run, complete=False)
    found = dest.find_run(run.key)
    assert found is not None and found.run_id == run_id and not found.complete and found.digest == run.digest
    dest.discard_run(run_id)
    assert dest.find_run(run.key) is None
    dest.discard_run(run_id)  # again: no error
    new_id = _import(dest, reader, run)
    assert new_id != run_id
    found = dest.find_run(run.key)
    assert found is not None and found.run_id == new_id and found.complete
    dest.close()


def test_find_run_unknown_project_and_key(mlflow_sqlite: MlflowBackend) -> None:
    dest = _dest(mlflow_sqlite)
    assert dest.find_run(RunKey("nobody/nothing", key("X-1").run_id)) is None


def test_create_run_is_reused_when_called_again(mlflow_sqlite: MlflowBackend, tmp_path: Path,
                                                request: pytest.FixtureRequest) -> None:
    reader = _dump_in(tmp_path, _unique_project(request))
    (run,) = list(reader.runs())
    dest = _dest(mlflow_sqlite)
    prepared = _prepare(run)
    first = dest.create_run(prepared)
    assert dest.create_run(prepared) == first  # a retried create_run does not make a second run
    dest.write_series(first, "float", next(_chunks(reader, run, prepared, "float")))
    dest.write_series(first, "float", next(_chunks(reader, run, prepared, "float")))  # replayed batch
    assert len(dest.read_series(first, "float", "train/loss")) == 40


def test_long_param_kept_in_full(mlflow_sqlite: MlflowBackend, tmp_path: Path, request: pytest.FixtureRequest) -> None:
    long_text = "λ" + "x" * 7000 + "END"

    def mutate(record: Any) -> Any:
        from dataclasses import replace

        return replace(record, fields={**record.fields, "config/long": Field("string", long_text)})

    reader = _dump_in(tmp_path, _unique_project(request), mutate)
    (run,) = list(reader.runs())
    dest = _dest(mlflow_sqlite)
    prepared = _prepare(run)
    losses = [lo for lo in dest.plan_run(prepared) if lo.kind == "param_truncated"]
    assert [(lo.path, lo.count, lo.error) for lo in losses] == [("config/long", 1, False)]
    assert "neptune/params/config/long.txt" in losses[0].detail
    run_id = _import(dest, reader, run)
    snap = dest.read_snapshot(run_id)
    assert snap.params["config/long"] == long_text[:5986] + "...[truncated]"
    assert snap.params == dest.expected_snapshot(prepared).params
    full = dest.read_file(run_id, "neptune/params/config/long.txt", tmp_path / "dl")
    assert full is not None and full.read_text(encoding="utf-8") == long_text


def test_failed_run_status_and_missing_file(mlflow_sqlite: MlflowBackend, tmp_path: Path,
                                            request: pytest.FixtureRequest) -> None:
    from dataclasses import replace

    def mutate(record: Any) -> Any:
        system = replace(record.system, failed=True, owner=None, description=None,
                         modified_at=record.system.created_at - timedelta(minutes=1))
        return replace(record, system=system)

    reader = _dump_in(tmp_path, _unique_project(request), mutate)
    (run,) = list(reader.runs())
    dest = _dest(mlflow_sqlite, artifact_check=False)
    prepared = _prepare(run)
    run_id = _import(dest, reader, run)
    snap = dest.read_snapshot(run_id)
    assert snap.status == "FAILED" and snap.owner is None and snap.description is None
    assert snap.end_time == snap.start_time == T0  # end never before start
    expected = dest.expected_snapshot(prepared)
    expected.run_id = run_id
    assert snap == expected  # artifact_check=False: sizes only
    missing = next(e for e in run.record.files if e.sha256 is None)
    with pytest.raises(PermanentError, match="model/lost"):
        dest.upload_file(run_id, missing, tmp_path / "nothing")


def test_parallel_runs_share_one_new_experiment(mlflow_sqlite: MlflowBackend, tmp_path: Path,
                                                request: pytest.FixtureRequest) -> None:
    project = _unique_project(request)
    root = tmp_path / "dump"
    with DumpWriter(root) as writer:
        for rid in ("P-1", "P-2", "P-3"):
            k = RunKey(project, key(rid).run_id)
            with writer.begin_run(k) as rw:
                rw.commit(write_full_run(rw, k, tmp_path, points=5))
    reader = DumpReader(root)
    runs = list(reader.runs())
    errors: list[BaseException] = []
    ids: list[str] = []

    def work(run: DumpRun) -> None:
        try:
            ids.append(_import(_dest(mlflow_sqlite), reader, run))  # separate destinations race on the experiment
        except BaseException as exc:  # noqa: BLE001
            errors.append(exc)

    threads = [threading.Thread(target=work, args=(r,)) for r in runs]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors
    dest = _dest(mlflow_sqlite)
    found = [dest.find_run(r.key) for r in runs]
    assert sorted(f.run_id for f in found if f is not None and f.complete) == sorted(ids)
    experiments = {dest.client.get_run(i).info.experiment_id for i in ids}
    assert len(experiments) == 1


def test_float_chunk_without_timestamps(mlflow_sqlite: MlflowBackend, tmp_path: Path,
                                        request: pytest.FixtureRequest) -> None:
    reader = _dump_in(tmp_path, _unique_project(request))
    (run,) = list(reader.runs())
    dest = _dest(mlflow_sqlite)
    prepared = _prepare(run)
    run_id = dest.create_run(prepared)
    chunk = pa.table({
        "path": ["train/loss"] * 3, "step": [0.0, 1.0, 2.0],
        "timestamp": pa.nulls(3, pa.timestamp("us", tz="UTC")),
        "value": pa.array([1.0, None, float("-inf")], pa.float64()),
        "preview_completion": pa.nulls(3, pa.float64()),
    })
    chunk = _with_dest_columns(chunk, prepared)
    dest.write_series(run_id, "float", chunk)
    got = dest.read_series(run_id, "float", "train/loss")
    assert _rows(got) == _rows(dest.expected_series("float", chunk))
    epoch = datetime(1970, 1, 1, tzinfo=timezone.utc)
    assert got.to_pylist() == [{"step": 0, "timestamp": epoch, "value": 1.0},
                               {"step": 2, "timestamp": epoch, "value": -m.FLOAT_MAX}]
    assert pc.sum(pc.is_null(got.column("timestamp"))).as_py() == 0
