"""The dump format: every attribute type round-trips, plain tools can read it, versions are checked."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from neptune_migrate.dump.reader import DumpReader
from neptune_migrate.dump.schema import FORMAT_VERSION
from neptune_migrate.dump.writer import DumpWriter
from neptune_migrate.errors import DumpFormatError
from tests.factories import T0, build_dump, float_points, key


def test_every_attribute_type_round_trips(tmp_path: Path) -> None:
    [written] = build_dump(tmp_path / "dump", tmp_path)
    reader = DumpReader(tmp_path / "dump")
    [run] = list(reader.runs())
    rec = run.record
    assert rec.key == written.key
    assert rec.system == written.system
    assert rec.fork == written.fork
    assert rec.files == written.files
    assert rec.losses == written.losses
    assert rec.absent == ("experiment_name",)
    assert set(rec.fields) == set(written.fields)
    for path, f in written.fields.items():
        assert rec.fields[path].same_as(f), path
        assert type(rec.fields[path].value) is type(f.value), path
    assert math.isnan(rec.fields["parameters/nan"].value)  # type: ignore[arg-type]
    assert rec.fields["parameters/-inf"].value == float("-inf")
    assert rec.fields["parameters/big"].value == 2**62
    assert rec.fields["info/started_at"].value == T0
    assert rec.fields["parameters/ünïcødé/ключ"].value == "значение ✓"
    info = {(s.kind, s.path): s for s in rec.series}
    assert info["float", "train/loss"].count == 100
    assert info["float", "train/loss"].first_step == 0.0
    assert info["float", "train/loss"].last_step == 99.0
    assert info["float", "train/empty"].count == 0  # an empty series is kept, not dropped


def test_series_values_steps_and_timestamps_round_trip(tmp_path: Path) -> None:
    build_dump(tmp_path / "dump", tmp_path)
    reader = DumpReader(tmp_path / "dump")
    [run] = list(reader.runs())
    loss = reader.read_series(run, "float", "train/loss")
    assert loss.column("step").to_pylist() == [float(i) for i in range(100)]
    assert loss.column("value").to_pylist() == [1.0 / (i + 1) for i in range(100)]
    assert loss.column("timestamp").to_pylist()[3] == T0.replace(second=3)
    special = reader.read_series(run, "float", "train/special").column("value").to_pylist()
    assert math.isnan(special[0]) and special[1] == math.inf and special[2] == -math.inf
    assert reader.read_series(run, "string", "train/log").column("value").to_pylist() == ["épоch 0", ""]
    hist = reader.read_series(run, "histogram", "hist/w").to_pylist()[0]
    assert hist["edges"] == [0.0, 1.0, 2.5] and hist["values"] == [3.0, 4.0]
    img = reader.read_series(run, "file", "images/preds").to_pylist()[0]
    assert reader.blob_path(img["sha256"]).read_bytes() == b"\x89PNG fake image"
    assert (img["name"], img["title"], img["description"]) == ("red.png", "red", "a red square")
    weights = next(f for f in run.record.files if f.attribute_path == "model/weights")
    assert reader.blob_path(weights.sha256 or "").read_bytes() == b"\x00\x01weights" * 100


def test_million_point_series_streams_in_bounded_batches(tmp_path: Path) -> None:
    n = 1_000_000
    with DumpWriter(tmp_path / "dump") as dump, dump.begin_run(key()) as run:
        for start in range(0, n, 100_000):
            steps = list(range(start, start + 100_000))
            run.add_points("float", float_points("big", steps, [s * 0.5 for s in steps]))
        from tests.factories import make_record

        run.commit(make_record(key(), fields={}))
    reader = DumpReader(tmp_path / "dump")
    [dr] = list(reader.runs())
    total, last = 0, -1.0
    for batch in reader.iter_points(dr, "float"):
        assert batch.num_rows <= 64 * 1024
        steps = batch.column("step").to_pylist()
        assert steps[0] == last + 1 and steps == sorted(steps)
        assert batch.column("value").to_pylist()[-1] == steps[-1] * 0.5
        last = steps[-1]
        total += batch.num_rows
    assert total == n
    assert next(s for s in dr.record.series if s.path == "big").count == n


def test_plain_pyarrow_and_duckdb_read_the_parts(tmp_path: Path) -> None:
    build_dump(tmp_path / "dump", tmp_path)
    parts = sorted((tmp_path / "dump" / "runs").glob("*/series/float-*.parquet"))
    assert parts
    table = pq.read_table(parts[0])
    assert table.schema.field("step").type == pa.float64()
    rows = table.filter(pa.compute.equal(table["path"], "train/loss"))
    assert rows.num_rows == 100
    duckdb = pytest.importorskip("duckdb")
    got = duckdb.sql(
        f"SELECT count(*), max(step), min(value) FROM read_parquet('{parts[0]}') WHERE path = 'train/loss'"
    ).fetchall()
    assert got == [(100, 99.0, 0.01)]
    pandas = pytest.importorskip("pandas")
    df = pandas.read_parquet(parts[0])
    assert df[df.path == "train/loss"].value.iloc[0] == 1.0


def test_run_json_is_plain_json_without_nan_tokens(tmp_path: Path) -> None:
    build_dump(tmp_path / "dump", tmp_path)
    [doc_path] = (tmp_path / "dump" / "runs").glob("*/run.json")
    text = doc_path.read_text(encoding="utf-8")
    doc = json.loads(text, parse_constant=lambda c: pytest.fail(f"non-standard JSON token {c}"))
    assert doc["fields"]["parameters/nan"] == {"type": "float", "value": "NaN"}
    assert doc["fields"]["info/labels"] == {"type": "string_set", "value": ["a", "b"]}
    assert doc["format_version"] == FORMAT_VERSION


def test_unknown_major_version_is_refused_with_a_clear_message(tmp_path: Path) -> None:
    build_dump(tmp_path / "dump", tmp_path)
    manifest = tmp_path / "dump" / "manifest.json"
    doc = json.loads(manifest.read_text())
    doc["format_version"] = "2.0"
    manifest.write_text(json.dumps(doc))
    with pytest.raises(DumpFormatError, match=r"format version 2\.0 is not supported.*reads 1\.x"):
        DumpReader(tmp_path / "dump")


def test_newer_minor_version_is_read(tmp_path: Path) -> None:
    build_dump(tmp_path / "dump", tmp_path)
    manifest = tmp_path / "dump" / "manifest.json"
    doc = json.loads(manifest.read_text())
    doc["format_version"] = "1.9"
    manifest.write_text(json.dumps(doc))
    assert len(list(DumpReader(tmp_path / "dump").runs())) == 1


def test_not_a_dump_is_refused(tmp_path: Path) -> None:
    with pytest.raises(DumpFormatError, match="not a neptune-migrate dump"):
        DumpReader(tmp_path)
