"""neptune-exporter dumps -> our dump: real samples (both flavours) and every historic layout.

Golden tests: exact values, steps, timestamps and file bytes, compared with what the exporter wrote.
"""

from __future__ import annotations

import random
import shutil
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from decimal import Decimal
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from neptune_migrate.dump.reader import DumpReader, DumpRun
from neptune_migrate.dump.writer import DumpWriter
from neptune_migrate.errors import SourceFormatError
from neptune_migrate.model import Field, ForkPoint, Loss, LossCategory, RunKey, SourceRunId
from neptune_migrate.pipeline.export import ExportSummary, export_runs
from neptune_migrate.sources import load_source
from neptune_migrate.sources.base import RunSelection, SourceOptions
from neptune_migrate.sources.exporter_dump import mapping
from neptune_migrate.sources.exporter_dump.errors import IncompleteRunError, classify_error
from neptune_migrate.sources.exporter_dump.source import ExporterDumpSource
from tests.conftest import FIXTURES

SAMPLES = FIXTURES / "neptune-exporter"
GEN = SAMPLES / "generated"
PROJECT = "my-ws/my-proj"
T0 = datetime(2025, 1, 2, 3, 4, 5, tzinfo=timezone.utc)


@dataclass
class Exported:
    source: ExporterDumpSource
    summary: ExportSummary
    reader: DumpReader

    def run(self, run_id: str, project: str = PROJECT) -> DumpRun:
        run = self.reader.get_run(RunKey(project, SourceRunId(run_id)))
        assert run is not None, f"{project}/{run_id} not in the dump"
        return run

    def points(self, run_id: str, kind: Any, path: str) -> list[dict[str, Any]]:
        rows: list[dict[str, Any]] = self.reader.read_series(self.run(run_id), kind, path).to_pylist()
        return rows

    def blob(self, sha256: str | None) -> bytes:
        assert sha256 is not None
        return self.reader.blob_path(sha256).read_bytes()

    def outcome(self, run_id: str, project: str = PROJECT) -> Any:
        [outcome] = [r for r in self.summary.runs if r.key == f"{project}/{run_id}"]
        return outcome


def export(tmp_path: Path, data: Path, **options: Any) -> Exported:
    source = ExporterDumpSource(SourceOptions(path=data, **options))
    with DumpWriter(tmp_path / "dump") as writer:
        summary = export_runs(source, writer, RunSelection(), location=str(data))
    return Exported(source, summary, DumpReader(tmp_path / "dump"))


def ts(seconds: float) -> datetime:
    return T0 + timedelta(seconds=seconds)


def raw_rows(part: Path) -> list[dict[str, Any]]:
    rows: list[dict[str, Any]] = pq.read_table(part).to_pylist()
    return rows


def losses(run: DumpRun) -> dict[tuple[str, str | None], Loss]:
    return {(lo.kind, lo.path): lo for lo in run.record.losses}


# ---------------------------------------------------------------------------------------------
# Real samples made by the real exporter


def test_real_neptune2_sample_golden(tmp_path: Path) -> None:
    data = SAMPLES / "neptune2" / "data"
    out = export(tmp_path, data)
    assert "flavours: neptune2 (1)" in out.source.describe()
    assert out.source.warnings() == []
    run = out.run("PROJ-1")
    rec = run.record
    assert rec.kind == "run" and rec.complete and rec.losses == ()
    assert rec.system.name == "resnet-baseline"
    assert rec.system.experiment_name is None
    assert rec.system.created_at == T0
    assert rec.system.tags == frozenset({"baseline", "extra-tag"})
    assert rec.fork is None
    assert rec.provenance.details["sys/id"] == "PROJ-1"
    assert rec.provenance.details["flavour"] == "neptune2"
    assert set(rec.absent) == {"description", "owner", "state", "failed", "trashed",
                               "custom_run_id", "experiment_name", "group_tags"}
    # no sys/modification_time in this sample: the run ends at its last point (T0 + 4 s), not the export time
    assert rec.system.modified_at == T0 + timedelta(seconds=4)
    assert rec.provenance.details["modified_at_from"] == "last point"
    assert dict(rec.fields) == {
        "parameters/lr": Field("float", 0.001),
        "parameters/batch_size": Field("int", 64),
        "parameters/optimizer": Field("string", "adam"),
        "parameters/use_bn": Field("bool", True),
    }
    # Values exactly as the exporter stored them (0.333333... is whatever double it wrote).
    [part] = (data).rglob("*_part_0.parquet")
    expected = [(float(r["step"]), r["timestamp"], r["float_value"]) for r in raw_rows(part)
                if r["attribute_path"] == "train/loss"]
    loss = out.points("PROJ-1", "float", "train/loss")
    assert [(p["step"], p["timestamp"], p["value"]) for p in loss] == expected
    assert [p["step"] for p in loss] == [0.0, 1.0, 2.0, 3.0, 4.0]
    assert [p["timestamp"] for p in loss] == [ts(i) for i in range(5)]
    log = out.points("PROJ-1", "string", "train/log")
    assert [(p["step"], p["timestamp"], p["value"]) for p in log] == [
        (float(i), ts(i), f"epoch {i} done") for i in range(5)
    ]
    [weights] = rec.files
    assert (weights.attribute_path, weights.kind, weights.name, weights.mime_type) == (
        "model/weights", "file", "weights.txt", "text/plain")
    assert weights.origin == "my-ws/my-proj/PROJ-1/model/weights"
    assert out.blob(weights.sha256) == b"weights=42\n"
    assert weights.size == 11


def test_real_neptune3_sample_golden(tmp_path: Path) -> None:
    out = export(tmp_path, SAMPLES / "neptune3" / "data")
    assert "flavours: neptune3 (2)" in out.source.describe()
    assert [str(k) for k in out.source.list_runs()] == ["my-ws/my-proj/child-run", "my-ws/my-proj/parent-run"]

    parent = out.run("parent-run").record
    assert parent.system.experiment_name == "exp-resnet"
    assert parent.system.name is None and "name" in parent.absent
    assert parent.system.custom_run_id == "parent-run"
    assert parent.system.trashed is False
    assert parent.system.created_at == T0
    assert parent.system.tags == frozenset({"baseline"})
    assert parent.fork is None  # its sys/forking/* rows are null: skipped, nothing invented
    assert parent.provenance.details["sys/id"] == "PROJ-1"
    assert parent.provenance.details["null_rows_skipped"] == "2"
    assert dict(parent.fields) == {
        "info/started_at": Field("datetime", T0),
        "parameters/batch_size": Field("int", 64),
        "parameters/lr": Field("float", 0.001),
        "parameters/optimizer": Field("string", "adam"),
        "parameters/use_bn": Field("bool", True),
    }
    assert [(p["step"], p["value"]) for p in out.points("parent-run", "float", "train/loss")] == [
        (0.0, 1.0), (1.0, 0.5), (2.0, 1 / 3), (3.0, 0.25), (4.0, 0.2)]
    [hist] = out.points("parent-run", "histogram", "hist/w")
    assert hist == {"path": "hist/w", "step": 0.0, "timestamp": T0, "type": "COUNTING",
                    "edges": [0.0, 1.0, 2.0], "values": [3.0, 4.0]}
    [pred] = out.points("parent-run", "file", "images/preds")
    assert (pred["step"], pred["timestamp"], pred["name"], pred["mime_type"], pred["missing"]) == (
        0.0, T0, "step_0_000000.png", "image/png", None)
    assert out.blob(pred["sha256"]) == b"\x89PNG fake"
    [weights] = parent.files
    assert (weights.name, weights.mime_type, out.blob(weights.sha256)) == ("weights.txt", "text/plain",
                                                                          b"weights=42\n")
    assert parent.losses == ()

    child = out.run("child-run").record
    assert child.fork == ForkPoint(RunKey(PROJECT, SourceRunId("parent-run")), 3.0)
    assert child.system.tags == frozenset() and "tags" not in child.absent
    assert child.system.created_at == T0 + timedelta(minutes=1)
    assert dict(child.fields) == {"parameters/lr": Field("float", 0.0005)}
    assert child.provenance.details["null_rows_skipped"] == "4"
    assert out.points("child-run", "float", "train/loss") == [
        {"path": "train/loss", "step": 4.0, "timestamp": T0 + timedelta(seconds=70), "value": 0.3,
         "preview_completion": None}]


# ---------------------------------------------------------------------------------------------
# Historic layouts


def test_multi_run_layout_groups_by_columns(tmp_path: Path) -> None:
    out = export(tmp_path, GEN / "multi_run" / "data")
    described = out.source.describe()
    assert "one multi-run part_<n>.parquet series per project" in described
    assert "3 runs in 2 project(s)" in described
    assert [str(k) for k in out.source.list_runs()] == [
        "my-ws/my-proj/PROJ-1", "my-ws/my-proj/PROJ-2", "other-ws/other-proj/OTH-1"]
    loss = out.points("PROJ-1", "float", "train/loss")
    assert [(p["step"], p["timestamp"], p["value"]) for p in loss] == [
        (0.0, ts(0), 1.0), (1.0, ts(1), 0.5), (2.0, ts(2), 0.25), (3.0, ts(3), 0.125), (4.0, ts(4), 0.0625)]
    assert [(p["step"], p["value"]) for p in out.points("PROJ-2", "float", "train/loss")] == [(0.0, 2.0), (1.0, 1.5)]
    rec = out.run("PROJ-1").record
    assert rec.system.name == "baseline" and rec.complete
    assert rec.provenance.files == ("my-ws_my-proj/part_0.parquet", "my-ws_my-proj/part_1.parquet")
    [weights] = rec.files
    assert (weights.name, out.blob(weights.sha256)) == ("weights.txt", b"legacy weights\n")
    other = out.run("OTH-1", "other-ws/other-proj").record
    assert other.fields["parameters/lr"] == Field("float", 0.5)
    assert out.summary.count("exported") == 3 and not out.summary.has_problems


def test_per_run_files_without_digest_and_multi_part(tmp_path: Path) -> None:
    out = export(tmp_path, GEN / "per_run_no_digest" / "data")
    assert "per-run files without digest suffix" in out.source.describe()
    assert "1 run(s) span several files" in out.source.describe()
    loss = out.points("PROJ-1", "float", "train/loss")
    assert [(p["step"], p["timestamp"], p["value"]) for p in loss] == [
        (float(i), ts(i), 1.0 / 2 ** i) for i in range(6)]
    assert [p["value"] for p in out.points("PROJ-1", "string", "train/log")] == ["epoch 0 done", "epoch 1 done"]
    rec = out.run("PROJ-1").record
    assert rec.complete
    assert rec.provenance.files == ("my-ws_my-proj/PROJ-1_part_0.parquet", "my-ws_my-proj/PROJ-1_part_1.parquet")
    assert out.run("PROJ-2").record.fields["parameters/lr"] == Field("float", 0.02)


def test_neptune2_every_type_golden(tmp_path: Path) -> None:
    root = GEN / "neptune2_current"
    out = export(tmp_path, root / "data")
    rec = out.run("PROJ-7").record
    s = rec.system
    assert (s.name, s.owner, s.description, s.state, s.failed, s.trashed, s.custom_run_id) == (
        "resnet-v2", "alice", "baseline with BN", "Inactive", False, False, "resnet-v2-seed1")
    assert (s.created_at, s.modified_at) == (T0, T0 + timedelta(hours=2))
    assert (s.tags, s.group_tags) == (frozenset({"baseline", "resnet"}), frozenset({"vision"}))
    assert rec.absent == ("experiment_name",)
    assert rec.provenance.details["flavour"] == "neptune2"  # run_id is sys/id despite a custom run id
    assert not any(p.startswith("sys/") and p not in ("sys/ping_time", "sys/size") for p in rec.fields)
    assert rec.fields["sys/ping_time"] == Field("datetime", T0 + timedelta(hours=1))
    assert rec.fields["sys/size"] == Field("float", 1234.0)
    assert rec.fields["parameters/ünïcødé/ключ"] == Field("string", "значение ✓")
    assert rec.fields["info/started_at"] == Field("datetime", T0 + timedelta(milliseconds=123))
    assert rec.fields["info/labels"] == Field("string_set", frozenset({"a", "b"}))
    # Decimal steps converted exactly: 0.29 stays 0.29 (the nearest double), not 0.28999...
    loss = out.points("PROJ-7", "float", "train/loss")
    assert [(p["step"], p["value"]) for p in loss] == [(0.29, 0.9), (0.57, 0.8), (2.3, 0.7)]
    assert [p["value"] for p in out.points("PROJ-7", "string", "train/log")] == ["start", ""]

    files = {f.attribute_path: f for f in rec.files}
    base = root / "files" / "my-ws_my-proj-1746a105736f741e" / "my-ws/my-proj/PROJ-7"
    assert (files["model/weights"].name, files["model/weights"].mime_type) == ("weights.txt", "text/plain")
    assert (files["data/config"].name, files["data/config"].mime_type) == ("config.json", "application/json")
    assert (files["images/logo"].name, files["images/logo"].mime_type) == ("logo.png", "image/png")
    for attr, rel in (("model/weights", "model/weights"), ("data/config", "data/config"),
                      ("images/logo", "images/logo")):
        assert out.blob(files[attr].sha256) == (base / rel).read_bytes()
        assert files[attr].origin == f"my-ws/my-proj/PROJ-7/{rel}"
    file_set = files["source_code/files"]
    assert (file_set.kind, file_set.name, file_set.mime_type) == ("file_set", "files.zip", "application/zip")
    assert out.blob(file_set.sha256) == (base / "source_code/files/files.zip").read_bytes()
    artifact = files["datasets/train"]
    assert (artifact.kind, artifact.name) == ("artifact", "files_list.json")
    assert out.blob(artifact.sha256) == (base / "datasets/train/files_list.json").read_bytes()
    missing = files["model/missing"]
    assert missing.sha256 is None and missing.size is None
    assert missing.missing is not None and "my-ws/my-proj/PROJ-7/model/missing" in missing.missing

    samples = out.points("PROJ-7", "file", "images/samples")
    assert [(p["step"], p["timestamp"], p["name"], p["mime_type"]) for p in samples] == [
        (0.0, None, "0.png", "image/png"), (1.0, None, "1.png", "image/png")]
    assert [out.blob(p["sha256"]) for p in samples] == [
        (base / "images/samples/0.png").read_bytes(), (base / "images/samples/1.png").read_bytes()]

    lost = losses(out.run("PROJ-7"))
    assert set(lost) == {("missing_file", "model/missing"), ("artifact_content_not_exported", "datasets/train"),
                         ("file_series_step_is_index", "images/samples")}
    assert lost[("missing_file", "model/missing")].error
    assert lost[("file_series_step_is_index", "images/samples")].count == 2
    assert not lost[("file_series_step_is_index", "images/samples")].error
    assert not lost[("artifact_content_not_exported", "datasets/train")].error
    assert out.summary.has_problems  # the missing file

    trashed = out.run("PROJ-8").record.system
    assert (trashed.trashed, trashed.failed, trashed.name, trashed.created_at) == (
        True, True, "Untitled", T0 + timedelta(days=1))


def test_neptune3_decimal_steps_nulls_fork_and_multi_part(tmp_path: Path) -> None:
    out = export(tmp_path, GEN / "neptune3_current" / "data")
    parent = out.run("parent-run")
    loss = out.points("parent-run", "float", "train/loss")
    assert [(p["step"], p["timestamp"], p["value"]) for p in loss] == [
        (0.0, ts(0), 1.0), (0.5, ts(1), 0.75), (1.000001, ts(2), 0.5), (2.3, ts(3), 0.25),
        (123456789012.12346, ts(5), 0.125)]
    lost = losses(parent)
    precision = lost[("step_precision", "train/loss")]
    assert (precision.count, precision.category) == (1, LossCategory.CHANGED_FORM)  # stored, rounded
    assert "123456789012.123456" in precision.detail
    null_point = lost[("null_point_skipped", "train/loss")]
    assert (null_point.count, null_point.error) == (1, False)
    assert [(p["step"], p["edges"], p["values"]) for p in out.points("parent-run", "histogram", "hist/w")] == [
        (0.0, [0.0, 1.0, 2.0], [3.0, 4.0]), (1.0, [0.0, 0.5, 1.0], [1.0, 6.0])]
    assert [(p["step"], p["value"]) for p in out.points("parent-run", "string", "train/log")] == [
        (0.0, "epoch 0 done"), (2.3, "epoch 1 done")]
    preds = out.points("parent-run", "file", "images/preds")
    assert [(p["step"], p["timestamp"], p["name"]) for p in preds] == [
        (0.0, ts(0), "step_0_000000.png"), (1.5, ts(1), "step_1_500000.png")]
    assert ("file_series_step_is_index", "images/preds") not in lost
    assert parent.record.provenance.details["null_rows_skipped"] == "2"
    assert parent.record.system.modified_at == T0 + timedelta(minutes=5)
    assert parent.record.system.owner == "bob"

    child = out.run("child-run").record
    assert child.fork == ForkPoint(RunKey(PROJECT, SourceRunId("parent-run")), 2.5)
    assert dict(child.fields) == {"parameters/lr": Field("float", 0.0005)}
    assert child.files == ()  # its model/weights row is null: nothing invented, nothing missing
    assert child.provenance.details["null_rows_skipped"] == "4"
    assert child.losses == ()


def test_interrupted_runs_are_reported_not_exported(tmp_path: Path) -> None:
    out = export(tmp_path, GEN / "interrupted" / "data")
    cut = out.outcome("cut-run")
    assert cut.status == "failed"
    assert "cut-run-b6a66f837d6ee35a_part_0.parquet.tmp" in cut.message and "--include-incomplete" in cut.message
    legacy = out.outcome("LEG-1", "my-ws/legacy")
    assert legacy.status == "failed" and "part_0.parquet.tmp" in legacy.message
    assert out.outcome("done-run").status == "exported"
    [lost] = [w for w in out.source.warnings() if "lost-run" in w]
    assert "lost-run-9887ada7f8c0299c_part_0.parquet.tmp" in lost and "interrupted" in lost
    assert "2 incomplete" in out.source.describe()
    assert out.summary.has_problems


def test_include_incomplete_exports_what_exists_flagged(tmp_path: Path) -> None:
    out = export(tmp_path, GEN / "interrupted" / "data", include_incomplete=True)
    rec = out.run("cut-run").record
    assert not rec.complete
    interrupted = losses(out.run("cut-run"))[("interrupted_export", None)]
    assert interrupted.category is LossCategory.NOT_IN_SOURCE and ".tmp" in interrupted.detail
    assert [(p["step"], p["timestamp"], p["value"]) for p in out.points("cut-run", "float", "train/loss")] == [
        (10.0, ts(10), 0.5), (11.0, ts(11), 0.25)]
    assert not out.run("LEG-1", "my-ws/legacy").record.complete
    assert out.run("done-run").record.complete
    assert out.outcome("cut-run").complete is False


def test_corrupt_file_does_not_stop_other_runs(tmp_path: Path) -> None:
    out = export(tmp_path, GEN / "corrupt" / "data")
    warnings = out.source.warnings()
    assert any(w.startswith("my-ws_my-proj-1746a105736f741e/bad-run-0557e317c8eeb369_part_0.parquet: unreadable")
               for w in warnings)
    assert any("split-run-123942926cd248a2_part_1.parquet: unreadable" in w for w in warnings)
    assert all("\n" not in w for w in warnings)
    assert out.run("good-run").record.fields["parameters/lr"] == Field("float", 0.3)
    split = out.outcome("split-run")
    assert split.status == "failed" and "unreadable" in split.message
    assert out.summary.has_problems

    again = export(tmp_path / "again", GEN / "corrupt" / "data", include_incomplete=True)
    rec = again.run("split-run").record
    assert not rec.complete and rec.fields["parameters/lr"] == Field("float", 0.4)


def test_model_registry_export(tmp_path: Path) -> None:
    out = export(tmp_path, GEN / "model_registry" / "model_data")
    assert "1 models, 1 model versions" in out.source.describe()
    files_root = GEN / "model_registry" / "model_files" / "my-ws_my-proj-1746a105736f741e"
    model = out.run("PROJ-MOD").record
    assert model.kind == "model"
    assert (model.system.name, model.system.owner, model.system.created_at) == ("resnet-model", "alice", T0)
    assert model.system.tags == frozenset({"prod"})
    assert model.fields == {"info/framework": Field("string", "torch")}
    [signature] = model.files
    assert (signature.name, signature.mime_type) == ("signature.json", "application/json")
    assert out.blob(signature.sha256) == (files_root / "models/my-ws/my-proj/PROJ-MOD/model/signature").read_bytes()

    version = out.run("PROJ-MOD-1").record
    assert version.kind == "model_version"
    assert version.fields["sys/model_id"] == Field("string", "PROJ-MOD")
    assert version.fields["sys/stage"] == Field("string", "production")
    assert version.fields["validation/acc"] == Field("float", 0.93)
    assert [(p["step"], p["value"]) for p in out.points("PROJ-MOD-1", "float", "validation/loss")] == [
        (0.0, 0.4), (1.0, 0.3)]
    [binary] = version.files
    assert (binary.name, binary.mime_type) == ("binary.zip", "application/zip")
    assert out.blob(binary.sha256) == (
        files_root / "model_versions/my-ws/my-proj/PROJ-MOD-1/model/binary").read_bytes()
    assert not out.summary.has_problems


def test_missing_files_folder_reports_every_file(tmp_path: Path) -> None:
    out = export(tmp_path, SAMPLES / "neptune3" / "data", files_path=tmp_path / "nowhere")
    parent = out.run("parent-run")
    lost = losses(parent)
    assert lost[("missing_file", "model/weights")].error
    assert lost[("missing_file", "images/preds")].count == 1
    [pred] = out.points("parent-run", "file", "images/preds")
    assert pred["sha256"] is None and pred["missing"]
    assert out.outcome("parent-run").status == "exported"


def test_registry_and_empty_folder(tmp_path: Path) -> None:
    source = load_source("neptune-exporter", SourceOptions(path=SAMPLES / "neptune2" / "data"))
    assert isinstance(source, ExporterDumpSource)
    (tmp_path / "empty").mkdir()
    with pytest.raises(SourceFormatError, match="no neptune-exporter data files"):
        ExporterDumpSource(SourceOptions(path=tmp_path / "empty"))


def test_a_single_parquet_file_is_a_dump(tmp_path: Path) -> None:
    [part] = (SAMPLES / "neptune2" / "data").rglob("*.parquet")
    out = export(tmp_path, part, files_path=SAMPLES / "neptune2" / "files")
    [weights] = out.run("PROJ-1").record.files
    assert out.blob(weights.sha256) == b"weights=42\n"


def test_classify_error() -> None:
    import errno

    assert classify_error(OSError(errno.EAGAIN, "again")) == "transient"
    assert classify_error(TimeoutError()) == "transient"
    assert classify_error(IncompleteRunError("x")) == "permanent"
    assert classify_error(FileNotFoundError(errno.ENOENT, "gone")) == "permanent"


# ---------------------------------------------------------------------------------------------
# Pure mapping


def test_steps_to_float_is_exact_and_flags_what_float64_cannot_hold() -> None:
    rng = random.Random(5)
    values: list[Decimal | None] = [Decimal("0.29"), None, Decimal("-2.3"), Decimal("123456789012.123456"),
                                    Decimal("4503599627.370495"), Decimal("10000000000.5"), Decimal("0.000001")]
    values += [Decimal(rng.randint(-10 ** 17, 10 ** 17)).scaleb(-6) for _ in range(20000)]
    arr = pa.array([None, *values], pa.decimal128(18, 6)).slice(1)  # a non-zero offset
    steps = mapping.steps_to_float(arr)
    floats, inexact = steps.values.to_pylist(), steps.inexact.to_pylist()
    for d, f, flag in zip(values, floats, inexact, strict=True):
        if d is None:
            assert f is None and flag is False
            continue
        assert f == float(d)
        assert flag == (Decimal(repr(f)) != d)
    assert floats[:3] == [0.29, None, -2.3] and inexact[3] is True and sum(inexact[4:7]) == 0


def test_sniff() -> None:
    assert mapping.sniff(b"\x89PNG\r\n\x1a\n....", complete=True) == (".png", "image/png")
    assert mapping.sniff(b"\xff\xd8\xff\xe0", complete=True) == (".jpg", "image/jpeg")
    assert mapping.sniff(b"GIF89a..", complete=True) == (".gif", "image/gif")
    assert mapping.sniff(b"PK\x03\x04..", complete=True) == (".zip", "application/zip")
    assert mapping.sniff(b' {"a": 1}', complete=True) == (".json", "application/json")
    assert mapping.sniff(b'{"a": 1', complete=True) == (".txt", "text/plain")
    assert mapping.sniff("héllo".encode(), complete=True) == (".txt", "text/plain")
    assert mapping.sniff(b"\x00\x01\x02", complete=True) == (".bin", "application/octet-stream")
    assert mapping.has_extension("a.png") and not mapping.has_extension("weights")
    assert not mapping.has_extension(".hidden")


def test_part_names_and_sanitize() -> None:
    assert mapping.sanitize("my-ws/my-proj") == "my-ws_my-proj-1746a105736f741e"
    assert mapping.sanitize("my-ws/my-proj", digest=False) == "my-ws_my-proj"
    assert mapping.parse_part_name("part_3.parquet") == mapping.PartName("multi_run", None, 3, False)
    assert mapping.parse_part_name("PROJ-1_part_0.parquet") == mapping.PartName("per_run", "PROJ-1", 0, False)
    assert mapping.parse_part_name("PROJ-1-cae2b9fa0a012497_part_12.parquet.tmp") == mapping.PartName(
        "per_run_digest", "PROJ-1-cae2b9fa0a012497", 12, True)
    assert mapping.parse_part_name("notes.parquet").layout == "unrecognised"


def test_detect_flavour() -> None:
    assert mapping.detect_flavour("PROJ-1", "PROJ-1", None) == "neptune2"
    assert mapping.detect_flavour("PROJ-1", "PROJ-1", "my-custom") == "neptune2"
    assert mapping.detect_flavour("parent-run", "PROJ-1", "parent-run") == "neptune3"
    assert mapping.detect_flavour("x", None, None) == "unknown"


def test_identical_copy_elsewhere_is_recognised_by_content(tmp_path: Path) -> None:
    """Issue #12: the fingerprint ignores where the exporter dump sits, so an identical copy is skipped."""
    shutil.copytree(SAMPLES / "neptune2", tmp_path / "a")
    shutil.copytree(SAMPLES / "neptune2", tmp_path / "b" / "deeper")
    first = export(tmp_path, tmp_path / "a" / "data")
    assert not first.summary.has_problems
    second = export(tmp_path, tmp_path / "b" / "deeper" / "data")
    assert first.summary.count("exported") == len(first.summary.runs) > 0
    assert [o.status for o in second.summary.runs] == ["skipped"] * len(first.summary.runs)
    assert all(o.message == "already complete in the dump" for o in second.summary.runs)


def test_two_copies_of_an_export_in_one_input_are_read_once(tmp_path: Path) -> None:
    """Issue #12: `V4/data` and `V5/data` holding the same run: its points are not doubled."""
    single = export(tmp_path / "one", SAMPLES / "neptune2" / "data")
    shutil.copytree(SAMPLES / "neptune2", tmp_path / "src" / "V4")
    shutil.copytree(SAMPLES / "neptune2", tmp_path / "src" / "V5")
    both = export(tmp_path / "two", tmp_path / "src")
    assert both.source.warnings() == []  # no "points may be duplicated"
    [one_run], [two_run] = single.summary.runs, both.summary.runs
    assert two_run.points == one_run.points == 10
    [dup] = [lo for lo in two_run.losses if lo["kind"] == "duplicate_copy"]
    assert dup["category"] == "changed_form" and "(identical sizes)" in dup["detail"]
    assert "read V5/data/" in dup["detail"] and "ignored V4/data/" in dup["detail"]


def _float_rows(project: str, run_id: str, n: int) -> pa.Table:
    steps = pa.array([Decimal(i) for i in range(n)], pa.decimal128(18, 6))
    return pa.table({
        "project_id": pa.array([project] * n, pa.string()),
        "run_id": pa.array([run_id] * n, pa.string()),
        "attribute_path": pa.array(["train/loss"] * n, pa.string()),
        "attribute_type": pa.array(["float_series"] * n, pa.string()),
        "step": steps,
        "timestamp": pa.array([T0.replace(tzinfo=None)] * n, pa.timestamp("ms", tz="UTC")),
        "float_value": pa.array([i / 7 for i in range(n)], pa.float64()),
    })


def test_run_rows_stream_one_row_group_at_a_time(tmp_path: Path) -> None:
    """The exporter reader decodes a bounded window, not the file, and skips other runs' row groups."""
    from neptune_migrate.sources.exporter_dump.source import iter_run_rows

    n = 200_000
    path = tmp_path / "part_0.parquet"
    table = pa.concat_tables([_float_rows(PROJECT, "OTHER-1", 50_000), _float_rows(PROJECT, "RUN-1", n)])
    pq.write_table(table, path, row_group_size=25_000)
    decoded = _float_rows(PROJECT, "RUN-1", n).nbytes
    key = RunKey(PROJECT, SourceRunId("RUN-1"))
    base = pa.total_allocated_bytes()
    peak = 0
    rows = 0
    batches = 0
    last_step = -1.0
    for batch in iter_run_rows(path, key, batch_rows=10_000):
        peak = max(peak, pa.total_allocated_bytes() - base)
        assert batch.num_rows <= 10_000
        assert set(batch.column("run_id").to_pylist()) == {"RUN-1"}
        first = float(batch.column("step")[0].as_py())
        assert first == last_step + 1  # in file order, nothing skipped or repeated
        last_step = float(batch.column("step")[-1].as_py())
        rows += batch.num_rows
        batches += 1
    assert (rows, batches, last_step) == (n, 20, n - 1)
    # One 25k-row group (~1/8 of the run) plus a batch in flight; a reader that decoded ahead
    # (the dataset scanner did) holds most of the run.
    assert peak < decoded / 3, (peak, decoded)
