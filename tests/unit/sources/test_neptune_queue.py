"""neptune 1.x `.neptune` queues -> our dump: real-client fixtures, every layout, replay semantics.

Golden tests compare exact values, steps, timestamps and file bytes with `fixtures/neptune1/README.md`
(clock-derived values, such as `createdAt` and `ts` of points logged without `timestamp=`, are read from
the fixture files themselves).
"""

from __future__ import annotations

import base64
import hashlib
import json
import math
import shutil
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import pytest

from neptune_migrate.dump.reader import DumpReader, DumpRun
from neptune_migrate.dump.writer import DumpWriter, RunWriter
from neptune_migrate.errors import UsageError
from neptune_migrate.model import Field, Loss, LossCategory, RunKey, SourceRunId
from neptune_migrate.pipeline.export import ExportSummary, export_runs
from neptune_migrate.sources import load_source
from neptune_migrate.sources.base import PathMap, RunSelection, SourceOptions
from neptune_migrate.sources.neptune_queue import layout
from neptune_migrate.sources.neptune_queue import source as source_module
from neptune_migrate.sources.neptune_queue.errors import QueueLayoutError
from neptune_migrate.sources.neptune_queue.replay import replay_ops
from neptune_migrate.sources.neptune_queue.source import NeptuneQueueSource
from tests.conftest import FIXTURES

N1 = FIXTURES / "neptune1"
ART = N1 / "artifacts"
RECORDED = "/tmp/neptune-migrate-fixture-artifacts"
PROJECT = "ws/proj"
MAIN = "47df0450-5fd2-40ea-ba37-3792bb9c26fd"
MAIN_DIR = N1 / "offline" / "offline" / f"run__{MAIN}__11459__ynpunblz"
HW = "6864882f-dbad-48f6-9d1d-045313ef0093"
KILLED = "033662d1-b058-4a0f-b373-359419d49f93"
PARTIAL = "90e7af12-559d-4eb7-aa0e-8ef8cfc13b91"
LEGACY = "a2c06d7b-e453-5ae7-9874-ed31c0ae9dd3"
T0 = datetime(2025, 1, 2, 3, 4, 5, tzinfo=timezone.utc)
UTC = timezone.utc


def at(seconds: float) -> datetime:
    return T0 + timedelta(seconds=seconds)


def from_ts(ts: float) -> datetime:
    """A queue `ts` as the dump stores it (microseconds, UTC)."""
    return datetime(1970, 1, 1, tzinfo=UTC) + timedelta(microseconds=round(ts * 1_000_000))


def records(run_dir: Path) -> list[dict[str, Any]]:
    lines = []
    for f in sorted(run_dir.glob("data-*.log"), key=lambda p: int(p.stem.split("-")[1])):
        lines += [json.loads(line) for line in f.read_text().splitlines() if line.strip()]
    return lines


def tree_digest(root: Path) -> dict[str, str]:
    """Every file and folder under `root` with the sha256 of its bytes."""
    return {
        p.relative_to(root).as_posix(): (hashlib.sha256(p.read_bytes()).hexdigest() if p.is_file() else "dir")
        for p in sorted(root.rglob("*"))
    }


@dataclass
class Exported:
    summary: ExportSummary
    reader: DumpReader

    def run(self, run_id: str) -> DumpRun:
        run = self.reader.get_run(RunKey(PROJECT, SourceRunId(run_id)))
        assert run is not None, f"{run_id} not in the dump"
        return run

    def points(self, run_id: str, kind: Any, path: str) -> list[dict[str, Any]]:
        rows: list[dict[str, Any]] = self.reader.read_series(self.run(run_id), kind, path).to_pylist()
        return rows

    def steps_values(self, run_id: str, kind: Any, path: str) -> list[tuple[float, Any, datetime]]:
        return [(r["step"], r["value"], r["timestamp"]) for r in self.points(run_id, kind, path)]

    def blob(self, sha256: str | None) -> bytes:
        assert sha256 is not None
        return self.reader.blob_path(sha256).read_bytes()

    def files(self, run_id: str, attr: str) -> dict[str, Any]:
        return {f.name: f for f in self.run(run_id).record.files if f.attribute_path == attr}


def export(path: Path, out: Path, *, artifacts: Path = ART, project: str | None = PROJECT) -> Exported:
    pm = PathMap.parse([f"{RECORDED}={artifacts}"])
    source = load_source("neptune-offline", SourceOptions(path=path, project=project, path_map=pm))
    with DumpWriter(out) as writer:
        summary = export_runs(source, writer, RunSelection(), location=str(path))
    return Exported(summary, DumpReader(out))


@pytest.fixture(scope="module")
def offline(tmp_path_factory: pytest.TempPathFactory) -> Exported:
    return export(N1 / "offline", tmp_path_factory.mktemp("offline") / "dump")


MAIN_FIELDS = {
    "source_code/entrypoint": Field("string", "producer_neptune1_client.py"),
    "parameters/lr": Field("float", 0.001),
    "parameters/batch_size": Field("int", 64),
    "parameters/optimizer": Field("string", "adam"),
    "parameters/use_bn": Field("bool", True),
    "parameters/layers": Field("string", "[64, 128]"),
    "parameters/none_value": Field("string", "None"),
    "parameters/nested/dropout": Field("float", 0.5),
    "info/started_at": Field("datetime", datetime(2025, 1, 2, 3, 4, 5, 678000, tzinfo=UTC)),
    "eval/f1": Field("float", 0.87),
    "eval/epochs": Field("int", 5),
    "eval/converged": Field("bool", False),
    "eval/negative": Field("int", -3),
    "eval/note": Field("string", 'multi\nline "quoted" text'),
    "data/labels": Field("string_set", frozenset({"bird", "cat"})),
    "data/cleared_set": Field("string_set", frozenset({"z"})),
    "ünïcödé/ключ": Field("string", "значение ✓"),
    "unicode/日本語": Field("float", 1.5),
    "copy/f1": Field("float", 0.87),
}


def check_main_series(ex: Exported, run_id: str = MAIN) -> None:
    loss = [1.0, 0.5, 0.3333333333333333, 0.25, 0.2, 0.15, 0.12]
    assert ex.steps_values(run_id, "float", "train/loss") == [
        (float(i), v, at(i)) for i, v in enumerate(loss)
    ]
    # null steps numbered by the server's rule: previous step + 1, from 0
    acc = [0.5, 0.6, 0.7, 0.8, 0.9, 0.95, 0.97]
    assert ex.steps_values(run_id, "float", "train/acc") == [(float(i), v, at(i)) for i, v in enumerate(acc)]
    assert ex.steps_values(run_id, "string", "train/log") == [
        (float(i), f"epoch {i} done", at(i)) for i in range(5)
    ]
    assert ex.steps_values(run_id, "float", "train/lr") == [(0.5, 0.1, at(10)), (1.5, 0.05, at(11))]
    assert ex.steps_values(run_id, "float", "train/nonfinite") == [(3.0, 7.0, at(3))]
    assert ex.steps_values(run_id, "float", "tmp/cleared_series") == [(0.0, 3.0, at(2))]
    assert ex.points(run_id, "string", "tmp/cleared_log") == []
    assert ex.points(run_id, "file", "images/cleared") == []
    series = {(s.kind, s.path): s for s in ex.run(run_id).record.series}
    assert series[("string", "tmp/cleared_log")].count == 0  # the attribute exists, empty
    assert series[("file", "images/cleared")].count == 0
    assert ("float", "tmp/to_delete") not in series


def test_main_run_fields_and_identity(offline: Exported) -> None:
    rec = offline.run(MAIN).record
    assert rec.kind == "run" and rec.key == RunKey(PROJECT, SourceRunId(MAIN))
    assert dict(rec.fields) == MAIN_FIELDS  # tmp/to_delete deleted; no sys/* identity left in fields
    meta = json.loads((MAIN_DIR / "metadata.json").read_text())
    s = rec.system
    assert (s.name, s.description, s.failed) == ("resnet-baseline", "neptune-migrate fixture: every operation type",
                                                  False)
    assert s.tags == frozenset({"baseline", "extra-tag"}) and s.group_tags == frozenset()
    assert s.created_at == datetime.fromisoformat(meta["createdAt"])
    # No modification time on disk: the run ends at its last operation's `at` (later than any point's ts here).
    last_at = max(r["at"] for r in records(MAIN_DIR))
    assert s.modified_at == datetime.fromtimestamp(last_at, UTC)
    assert rec.provenance.details["modified_at_from"] == "last operation"
    assert rec.provenance.details["created_at_from"] == "metadata.json createdAt"
    assert set(rec.absent) == {"owner", "state", "trashed", "custom_run_id", "experiment_name"}
    assert rec.complete and not rec.partial_copy
    assert rec.losses == (Loss("artifact_content_not_exported", "artifacts/assigned", 1, rec.losses[0].detail),)
    assert rec.provenance.source == "neptune-offline"
    assert rec.provenance.details["operations"] == "67"
    assert rec.provenance.details["neptuneClientVersion"] == "1.14.0.post2"
    assert rec.provenance.details["points_cleared"] == "4"  # tmp/cleared_series x2, cleared_log, images/cleared


def test_main_run_series(offline: Exported) -> None:
    check_main_series(offline)
    [no_ts] = [r for r in records(MAIN_DIR) if r["obj"]["path"] == ["train", "no_ts"]]
    ts = no_ts["obj"]["values"][0]["ts"]  # clock-derived
    assert offline.steps_values(MAIN, "float", "train/no_ts") == [(0.0, 42.0, from_ts(ts))]


def test_main_run_images(offline: Exported) -> None:
    rows = offline.points(MAIN, "file", "images/preds")
    assert [(r["step"], r["timestamp"], r["title"], r["description"], r["mime_type"], r["name"]) for r in rows] == [
        (0.0, at(0), "red", "a red square", "image/png", "preds-0.png"),
        (1.0, at(1), "blue", None, "image/png", "preds-1.png"),
    ]
    assert offline.blob(rows[0]["sha256"]) == (ART / "red.png").read_bytes()
    [blue] = [r for r in records(MAIN_DIR) if r["version"] == 58]
    assert offline.blob(rows[1]["sha256"]) == base64.b64decode(blue["obj"]["values"][0]["value"]["data"])
    assert rows[1]["size"] == 77


def test_main_run_files(offline: Exported) -> None:
    weights = offline.files(MAIN, "model/weights")["model.txt"]
    assert offline.blob(weights.sha256) == (ART / "model.txt").read_bytes()
    assert (weights.kind, weights.origin, weights.size) == ("file", f"{RECORDED}/model.txt", 22)
    inmem = offline.files(MAIN, "model/inmem")["inmem.txt"]
    assert offline.blob(inmem.sha256) == b"hello from memory\n" and inmem.mime_type == "text/plain"
    configs = offline.files(MAIN, "config_files")
    assert sorted(configs) == ["configs/a.yaml", "configs/b.yaml"]  # notes.txt removed by DeleteFiles
    for name, entry in configs.items():
        assert entry.kind == "file_set" and offline.blob(entry.sha256) == (ART / name).read_bytes()
        assert entry.origin == f"{RECORDED}/{name}"
    dataset = offline.files(MAIN, "artifacts/dataset")
    assert sorted(dataset) == ["test.csv", "train.csv"]
    for name, entry in dataset.items():
        assert entry.kind == "artifact" and offline.blob(entry.sha256) == (ART / "dataset" / name).read_bytes()
    ref = offline.files(MAIN, "artifacts/assigned")["artifact_reference.json"]
    assert json.loads(offline.blob(ref.sha256))["hash"] == "0" * 63 + "1"
    assert offline.files(MAIN, "source_code/files") == {}  # an empty file set (no globs)


def test_hardware_metrics_run(offline: Exported) -> None:
    rec = offline.run(HW).record
    assert rec.system.name == "hw-metrics" and rec.system.description == ""
    assert rec.system.tags == frozenset({"hw"})
    assert rec.fields["sys/hostname"] == Field("string", "vm")  # other sys/* stay ordinary fields
    assert rec.fields["metrics/set"] == Field("string_set", frozenset())
    assert offline.steps_values(HW, "float", "metrics/x") == [(0.5, 3.0, at(2)), (1.5, 4.0, at(3))]
    series = {s.path: s for s in rec.series}
    assert series["monitoring/ee680fa9/cpu"].meta == {"min": 0.0, "max": 100.0, "unit": "%"}
    mem_meta = series["monitoring/ee680fa9/memory"].meta
    assert mem_meta["unit"] == "GB" and mem_meta["min"] == 0.0
    hw = records(next((N1 / "offline" / "offline").glob(f"run__{HW}__*")))
    mem = [(r["obj"]["values"][0]["value"], r["obj"]["values"][0]["ts"]) for r in hw
           if r["obj"]["type"] == "LogFloats" and r["obj"]["path"][-1] == "memory"]
    assert offline.steps_values(HW, "float", "monitoring/ee680fa9/memory") == [
        (float(i), v, from_ts(ts)) for i, (v, ts) in enumerate(mem)
    ]
    assert [p["step"] for p in offline.points(HW, "float", "monitoring/ee680fa9/cpu")] == [0.0]


@pytest.mark.parametrize("fixture", ["pre19", "multifile"])
def test_older_layout_and_multi_file_queue_equal_the_main_run(fixture: str, tmp_path: Path) -> None:
    ex = export(N1 / fixture, tmp_path / "dump")
    rec = ex.run(MAIN).record
    assert dict(rec.fields) == MAIN_FIELDS
    assert rec.system.tags == frozenset({"baseline", "extra-tag"}) and rec.complete
    check_main_series(ex)
    assert ex.blob(ex.files(MAIN, "model/inmem")["inmem.txt"].sha256) == b"hello from memory\n"
    details = rec.provenance.details
    if fixture == "pre19":
        assert details["layout"] == "pre-1.9"
        # No metadata.json and no `at`: the run starts at its first point's ts and ends at its last one's
        # (train/no_ts was logged with the clock's ts), never at the export time.
        assert rec.system.created_at == T0 and "created_at" not in rec.absent
        assert details["created_at_from"] == "first point's ts"
        [no_ts] = [r for r in records(next((N1 / fixture).rglob("run__*"))) if r["obj"]["path"] == ["train", "no_ts"]]
        assert rec.system.modified_at == from_ts(no_ts["obj"]["values"][0]["ts"])
        assert details["modified_at_from"] == "last point"
    else:
        assert rec.provenance.files[:2] == (str(next((N1 / fixture).rglob("data-1.log"))),
                                            str(next((N1 / fixture).rglob("data-30.log"))))


def test_exec_layouts(tmp_path: Path) -> None:
    ex = export(N1 / "exec", tmp_path / "dump")
    v2 = ex.run(MAIN).record
    assert v2.provenance.details["layout"] == "exec-v2" and v2.partial_copy and v2.complete
    assert dict(v2.fields) == MAIN_FIELDS
    assert v2.system.created_at == datetime(2025, 1, 2, 3, 4, 5, 123456, tzinfo=UTC)  # exec-<ts> name
    check_main_series(ex)
    rows = ex.points(MAIN, "file", "images/preds")  # bare base64 strings: no name / description
    assert [(r["title"], r["description"]) for r in rows] == [(None, None), (None, None)]
    assert ex.blob(rows[0]["sha256"]) == (ART / "red.png").read_bytes()
    assert "last_ack_version 10" in v2.provenance.details["partial_copy"]

    v1 = ex.run(LEGACY).record
    assert v1.kind == "run" and v1.provenance.details["layout"] == "exec-v1" and v1.partial_copy
    assert v1.system.name == "resnet-baseline"
    assert "model/weights" not in {f.attribute_path for f in v1.files}  # the Upload* ops were removed
    check_main_series(ex, LEGACY)
    # its CopyAttribute names the original run's uuid: another container, not resolvable on disk
    [copy] = [lo for lo in v1.losses if lo.kind == "unresolved_copy"]
    # resolved by the server at sync time: the value was never on disk
    assert (copy.path, copy.count, copy.category) == ("copy/f1", 1, LossCategory.NOT_IN_SOURCE)
    assert "copy/f1" not in v1.fields


def test_nonfinite_values(tmp_path: Path) -> None:
    ex = export(N1 / "nonfinite", tmp_path / "dump")
    fields = ex.run(MAIN).record.fields
    assert math.isnan(float(fields["eval/nan"].value))  # type: ignore[arg-type]
    assert fields["eval/pos_inf"] == Field("float", math.inf)
    got = ex.steps_values(MAIN, "float", "train/nonfinite_crafted")
    assert [s for s, _, _ in got] == [0.0, 1.0, 2.0, 3.0]
    assert math.isnan(got[0][1]) and got[1][1] == math.inf and got[2][1] == -math.inf and got[3][1] == 7.0
    assert [t for _, _, t in got] == [at(0), at(1), at(2), at(3)]


def test_async_killed_tail_lost(tmp_path: Path) -> None:
    ex = export(N1 / "async_killed", tmp_path / "dump")
    rec = ex.run(KILLED).record
    assert not rec.complete and rec.partial_copy
    [lost] = [lo for lo in rec.losses if lo.kind == "truncated_queue"]
    # last_put_version 72, versions 1..43 on disk: the tail never reached the disk (not in the source)
    assert (lost.count, lost.category, lost.error) == (29, LossCategory.NOT_IN_SOURCE, False)
    assert "last_put_version is 72" in lost.detail
    assert ex.steps_values(KILLED, "float", "train/loss") == [(0.0, 1.0, at(0)), (1.0, 0.5, at(1)),
                                                              (2.0, 0.3333333333333333, at(2))]
    log = ex.steps_values(KILLED, "string", "train/log")
    assert len(log) == 31 and log[30] == (30.0, "line 030 " + "x" * 60, at(30))
    inmem = ex.files(KILLED, "model/inmem")["inmem.txt"]
    assert ex.blob(inmem.sha256) == b"in-memory before kill\n"
    assert rec.fields["parameters/optimizer"] == Field("string", "sgd")
    assert ex.summary.has_problems


def test_async_torn_last_line(tmp_path: Path) -> None:
    ex = export(N1 / "async_torn", tmp_path / "dump")
    rec = ex.run(KILLED).record
    [lost] = [lo for lo in rec.losses if lo.kind == "truncated_queue"]
    assert lost.count == 30 and "data-1.log:43" in lost.detail
    assert not rec.complete and not [lo for lo in rec.losses if lo.kind == "unreadable_record"]
    assert len(ex.points(KILLED, "string", "train/log")) == 30


def test_async_partial_ack(tmp_path: Path) -> None:
    ex = export(N1 / "async_partial_ack", tmp_path / "dump")
    rec = ex.run(PARTIAL).record
    assert rec.partial_copy and rec.complete and rec.losses == ()
    assert rec.system.name == "async-partial"
    assert set(rec.absent) >= {"tags", "group_tags"}  # untouched tags of a leftover: unknown, not empty
    assert [p["value"] for p in ex.points(PARTIAL, "float", "train/loss")] == [1.0, 0.5, 0.3333333333333333]
    assert "last_ack_version 5" in rec.provenance.details["partial_copy"]
    assert not ex.summary.has_problems


def test_async_containers(tmp_path: Path) -> None:
    ex = export(N1 / "async_containers", tmp_path / "dump")
    got = {}
    for run in ex.reader.runs():
        r = run.record
        got[r.kind] = (r.key.run_id, r.system.name, dict(r.fields), r.system.tags, r.partial_copy)
    assert got == {
        "model": ("bcc29713-ef15-4408-b6dd-b7d03528c2af", "my-model", {"params/x": Field("int", 1)},
                  frozenset({"model-tag"}), True),
        "model_version": ("0f237cfd-e901-40e8-aa61-74cd21b44509", "v1", {"val/acc": Field("float", 0.9)},
                          frozenset(), True),
        "project": ("5b4d1a86-2c3e-4f55-9a5e-6f1c2d3e4a5b", None,
                    {"general/notes": Field("string", "project-level note")}, frozenset(), True),
    }


def test_input_is_never_modified(tmp_path: Path) -> None:
    before = tree_digest(N1)
    for i, name in enumerate(["offline", "async_killed", "async_torn", "async_partial_ack", "async_containers",
                              "pre19", "exec", "multifile", "nonfinite"]):
        export(N1 / name, tmp_path / f"d{i}")
    export(MAIN_DIR, tmp_path / "single")
    assert tree_digest(N1) == before


def test_missing_files_are_reported_and_the_run_still_exports(tmp_path: Path) -> None:
    ex = export(N1 / "offline", tmp_path / "dump", artifacts=tmp_path / "moved-away")
    rec = ex.run(MAIN).record
    missing = {lo.path: lo for lo in rec.losses if lo.kind == "missing_file"}
    assert set(missing) == {"model/weights", "config_files", "artifacts/dataset"}
    assert all(lo.error for lo in missing.values()) and missing["config_files"].count == 2  # two globs
    weights = ex.files(MAIN, "model/weights")["model.txt"]
    assert weights.sha256 is None and weights.origin == f"{RECORDED}/model.txt" and weights.missing
    assert rec.complete  # the run is still exported in full, with its files marked missing
    assert ex.blob(ex.files(MAIN, "model/inmem")["inmem.txt"].sha256) == b"hello from memory\n"
    check_main_series(ex)
    assert ex.summary.has_problems


def test_project_is_required() -> None:
    with pytest.raises(UsageError, match="--project"):
        NeptuneQueueSource(SourceOptions(path=N1 / "offline"))
    with pytest.raises(UsageError, match="WORKSPACE/PROJECT"):
        NeptuneQueueSource(SourceOptions(path=N1 / "offline", project="no-slash"))


def test_path_forms_are_detected(tmp_path: Path) -> None:
    def describe(path: Path) -> str:
        return NeptuneQueueSource(SourceOptions(path=path, project=PROJECT)).describe()

    assert ".neptune data folder" in describe(N1 / "offline") and "offline: 2 runs" in describe(N1 / "offline")
    shutil.copytree(N1 / "offline", tmp_path / "project" / ".neptune")
    assert "folder containing .neptune" in describe(tmp_path / "project")
    assert "offline/ folder" in describe(N1 / "offline" / "offline")
    single = NeptuneQueueSource(SourceOptions(path=MAIN_DIR, project=PROJECT))
    assert "one run folder" in single.describe()
    assert [k.run_id for k in single.list_runs()] == [MAIN]
    exec_dir = next((N1 / "exec" / "async").glob("run__*/exec-*"))
    assert "one execution folder" in describe(exec_dir)
    assert "StructureVersion 1" in describe(N1 / "exec")
    # .neptune folders deeper down are found too (issue #12: V4/.neptune, V5/.neptune)
    assert "folder holding 1 .neptune data folder(s) (project/.neptune)" in describe(tmp_path)
    (tmp_path / "empty" / "sub").mkdir(parents=True)
    with pytest.raises(QueueLayoutError, match=r"no neptune 1\.x queue"):
        describe(tmp_path / "empty")


# ---------------------------------------------------------------------------------------------
# Hand-built queues


def write_queue(
    folder: Path, ops: list[dict[str, Any]], *, uuid: str = MAIN, kind: str = "run", ats: list[float] | None = None,
    last_put: int | None = None, last_ack: str = "", first_version: int = 1, meta: bool = True,
    separators: tuple[str, str] = (", ", ": "),
) -> Path:
    """One execution folder in the client's format (json.dumps lines)."""
    folder.mkdir(parents=True)
    lines = []
    for i, op in enumerate(ops):
        rec: dict[str, Any] = {"obj": op, "version": first_version + i}
        if ats is not None:
            rec["at"] = ats[i]
        lines.append(json.dumps(rec, separators=separators) + "\n")
    (folder / f"data-{first_version}.log").write_text("".join(lines))
    end = first_version + len(ops) - 1
    (folder / "last_put_version").write_text(str(end if last_put is None else last_put))
    (folder / "last_ack_version").write_text(last_ack)
    if meta:
        (folder / "metadata.json").write_text(json.dumps({
            "mode": folder.parent.name, "containerId": uuid, "containerType": kind, "structureVersion": 3,
            "createdAt": "2025-01-02T03:04:05+00:00",
        }))
    return folder


def log(path: str, *points: tuple[float | None, Any], type_: str = "LogFloats") -> dict[str, Any]:
    return {"type": type_, "path": path.split("/"),
            "values": [{"value": v, "step": s, "ts": T0.timestamp() + i} for i, (s, v) in enumerate(points)]}


@pytest.mark.parametrize("variant", ["client", "small-blocks", "compact-json"])
def test_points_before_the_last_clear_never_reach_the_dump(
    variant: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(source_module, "BATCH_ROWS", 3)
    if variant == "small-blocks":  # the byte pre-scan reads blocks: lines straddle their boundaries
        monkeypatch.setattr(layout, "BLOCK_BYTES", 97)
    calls: list[int] = []
    original = RunWriter.add_points

    def spy(self: RunWriter, kind: Any, table: Any) -> None:
        calls.append(table.num_rows)
        original(self, kind, table)

    monkeypatch.setattr(RunWriter, "add_points", spy)
    ops = [*(log("a", (float(i), float(i))) for i in range(10)),  # one point per op, as training loops log
           {"type": "ClearFloatLog", "path": ["a"]},
           log("a", (None, 100.0), (None, 101.0)),
           log("b", *[(float(i), float(i)) for i in range(7)]),
           {"type": "ClearStringLog", "path": ["b"]},  # wrong type: rejected, so it clears nothing
           log("b", (5.0, -1.0), (7.0, 7.0))]
    separators = (",", ":") if variant == "compact-json" else (", ", ": ")  # not the client's: decode all
    write_queue(tmp_path / "q" / "offline" / f"run__{MAIN}__1__abcdefgh", ops, separators=separators)
    ex = export(tmp_path / "q", tmp_path / "dump")
    assert [(s, v) for s, v, _ in ex.steps_values(MAIN, "float", "a")] == [(0.0, 100.0), (1.0, 101.0)]
    assert [s for s, _, _ in ex.steps_values(MAIN, "float", "b")] == [float(i) for i in range(8)]
    # batches close after the op that fills them: at most BATCH_ROWS + (points of one op - 1)
    assert calls == [2 + 7, 1]  # the 10 points of "a" before its clear were never handed out
    rec = ex.run(MAIN).record
    assert Loss("non_increasing_step", "b", 1, next(lo.detail for lo in rec.losses if lo.kind ==
                                                      "non_increasing_step")) in rec.losses
    [conflict] = [lo for lo in rec.losses if lo.kind == "type_conflict"]
    assert (conflict.path, conflict.count, conflict.error) == ("b", 1, False)
    assert rec.provenance.details["points_cleared"] == "10"


def test_executions_of_one_run_are_merged_by_time(tmp_path: Path) -> None:
    root = tmp_path / "q" / "offline"
    write_queue(root / f"run__{MAIN}__1__aaaaaaaa", [
        {"type": "AssignString", "path": ["sys", "name"], "value": "first"},
        {"type": "AssignFloat", "path": ["x"], "value": 1.0},
        log("m", (0.0, 0.0)),
    ], ats=[10.0, 12.0, 14.0])
    write_queue(root / f"run__{MAIN}__2__bbbbbbbb", [
        {"type": "AssignFloat", "path": ["x"], "value": 2.0},
        log("m", (1.0, 1.0)),
        {"type": "AddStrings", "path": ["sys", "tags"], "values": ["resumed"]},
    ], ats=[11.0, 15.0, 16.0])
    ex = export(tmp_path / "q", tmp_path / "dump")
    rec = ex.run(MAIN).record
    assert rec.fields["x"] == Field("float", 1.0)  # 2.0 at t=11 came before 1.0 at t=12
    assert [(s, v) for s, v, _ in ex.steps_values(MAIN, "float", "m")] == [(0.0, 0.0), (1.0, 1.0)]
    assert rec.system.tags == frozenset({"resumed"}) and rec.provenance.details["executions"] == "2"
    assert [k.run_id for k in NeptuneQueueSource(SourceOptions(tmp_path / "q", PROJECT)).list_runs()] == [MAIN]


def test_gaps_and_unreadable_lines(tmp_path: Path) -> None:
    ops = [log("a", (float(i), 1.0)) for i in range(4)]
    folder = write_queue(tmp_path / "q" / "offline" / f"run__{MAIN}__1__abcdefgh", ops)
    data = folder / "data-1.log"
    lines = data.read_text().splitlines(keepends=True)
    lines[1] = "{garbage\n"
    data.write_text("".join(lines))
    write_queue(tmp_path / "q" / "async" / f"run__{KILLED}__1__abcdefgh", ops[:2], first_version=8,
                last_ack="7")
    write_queue(tmp_path / "q" / "offline" / f"run__{PARTIAL}__1__abcdefgh", ops[:2], first_version=8)
    ex = export(tmp_path / "q", tmp_path / "dump")
    rec = ex.run(MAIN).record
    [bad] = [lo for lo in rec.losses if lo.kind == "unreadable_record"]
    assert bad.count == 1 and "data-1.log:2" in bad.detail and not rec.complete
    [gap] = [lo for lo in rec.losses if lo.kind == "missing_ops"]  # version 2 is the garbage line
    assert gap.count == 1
    acked = ex.run(KILLED).record  # async: versions 1..7 acknowledged, their file deleted
    [removed] = [lo for lo in acked.losses if lo.kind == "acknowledged_ops_removed"]
    assert (removed.count, removed.category, acked.complete) == (7, LossCategory.NOT_IN_SOURCE, True)
    offline = ex.run(PARTIAL).record  # offline: nothing is ever acknowledged; 1..7 are simply gone
    [missing] = [lo for lo in offline.losses if lo.kind == "missing_ops"]
    assert (missing.count, missing.error, offline.complete) == (7, True, False)


# ---------------------------------------------------------------------------------------------
# Replay semantics, one operation type at a time (pure)


def floats(r: Any, path: str) -> list[tuple[float, float]]:
    return [(p["step"], p["value"]) for p in r.buffer.rows("float") if p["path"] == path]


def test_replay_assign_overwrite_type_conflict_and_delete() -> None:
    r = replay_ops([
        {"type": "AssignInt", "path": ["x"], "value": 1},
        {"type": "AssignInt", "path": ["x"], "value": 2},
        {"type": "AssignFloat", "path": ["x"], "value": 3.5},  # rejected: x is an int
        {"type": "AssignBool", "path": ["b"], "value": True},
        {"type": "AssignString", "path": ["s"], "value": "v"},
        {"type": "AssignDatetime", "path": ["d"], "value": 1735787045678},
        {"type": "AssignFloat", "path": ["gone"], "value": 1.0},
        {"type": "DeleteAttribute", "path": ["gone"]},
        {"type": "DeleteAttribute", "path": ["x"]},
        {"type": "AssignString", "path": ["x"], "value": "now a string"},  # type freed by the delete
    ])
    assert r.field_items() == {
        "b": Field("bool", True), "d": Field("datetime", datetime(2025, 1, 2, 3, 4, 5, 678000, tzinfo=UTC)),
        "s": Field("string", "v"), "x": Field("string", "now a string"),
    }
    assert r.conflicts["x"].count == 1 and "int" in r.conflicts["x"].detail


def test_replay_string_sets() -> None:
    r = replay_ops([
        {"type": "AddStrings", "path": ["t"], "values": ["a", "b", "c"]},
        {"type": "RemoveStrings", "path": ["t"], "values": ["b", "zz"]},
        {"type": "AddStrings", "path": ["u"], "values": ["x"]},
        {"type": "ClearStringSet", "path": ["u"]},
        {"type": "RemoveStrings", "path": ["v"], "values": ["x"]},
    ])
    assert r.field_items() == {"t": Field("string_set", frozenset({"a", "c"})), "u": Field("string_set", frozenset()),
                               "v": Field("string_set", frozenset())}


def test_replay_series_steps() -> None:
    r = replay_ops([
        log("a", (None, 1.0), (None, 2.0)),       # null steps: 0, 1
        log("a", (5.0, 3.0), (None, 4.0)),        # explicit 5, then 6
        log("a", (6.0, 9.0), (2.0, 9.0)),         # equal and smaller: dropped, counted
        log("a", (6.5, 5.0)),
        log("b", (0.5, 1.0), (None, 2.0)),        # after a float step: 1.5
        {"type": "ClearFloatLog", "path": ["a"]},
        log("a", (0.0, 7.0)),                     # steps restart after a clear
    ])
    assert floats(r, "b") == [(0.5, 1.0), (1.5, 2.0)]
    # without the pre-pass, points before the clear stay in the buffer; with it they are dropped on arrival
    assert floats(r, "a")[-1] == (0.0, 7.0) and r.dropped_steps == {"a": 2}
    with_discard = replay_ops(list(_ops_clear()), discard={"a": (0, 2)})
    assert floats(with_discard, "a") == [(0.0, 7.0)] and with_discard.discarded_points == 1
    assert r.last_reset == {"a": (0, 6)}


def _ops_clear() -> list[dict[str, Any]]:
    return [log("a", (0.0, 1.0)), {"type": "ClearFloatLog", "path": ["a"]}, log("a", (0.0, 7.0))]


def test_replay_strings_images_config() -> None:
    red = base64.b64encode((ART / "red.png").read_bytes()).decode()
    r = replay_ops([
        log("s", (None, "x"), (None, "y"), type_="LogStrings"),
        {"type": "ClearStringLog", "path": ["s2"]},
        {"type": "LogImages", "path": ["img"], "values": [
            {"value": {"data": red, "name": "red", "description": "d"}, "step": None, "ts": 1.5},
            {"value": red, "step": 3, "ts": 2.0},
            {"value": {"data": "", "name": None, "description": None}, "step": 4, "ts": 3.0},
        ]},
        {"type": "ConfigFloatSeries", "path": ["cpu"], "min": 0.0, "max": 100.0, "unit": "%"},
        {"type": "ClearFloatLog", "path": ["cpu"]},
        log("cpu", (None, 9.1)),
    ])
    assert [(p["step"], p["value"]) for p in r.buffer.rows("string")] == [(0.0, "x"), (1.0, "y")]
    imgs = r.buffer.rows("file")
    sha = hashlib.sha256((ART / "red.png").read_bytes()).hexdigest()
    assert [(p["step"], p["ts"], p["sha256"], p["title"], p["mime_type"]) for p in imgs[:2]] == [
        (0.0, 1.5, sha, "red", "image/png"), (3, 2.0, sha, None, "image/png")]
    assert imgs[2]["sha256"] is None and "size limit" in imgs[2]["missing"] and r.empty_images == {"img": 1}
    assert r.series["cpu"].config == {"min": 0.0, "max": 100.0, "unit": "%"} and floats(r, "cpu") == [(0.0, 9.1)]
    assert set(r.series) == {"s", "s2", "img", "cpu"}


def test_replay_files_and_artifacts() -> None:
    r = replay_ops([
        {"type": "UploadFile", "path": ["f"], "ext": "txt", "file_path": "/a/1.txt", "tmp_file_name": None},
        {"type": "UploadFile", "path": ["f"], "ext": "bin", "file_path": None, "tmp_file_name": "f-1.bin"},
        {"type": "UploadFileContent", "path": ["g"], "ext": "txt", "file_content": "aGk="},
        {"type": "UploadFileSet", "path": ["fs"], "file_globs": ["/a/*.txt"], "reset": "False"},
        {"type": "UploadFileSet", "path": ["fs"], "file_globs": ["/b/*"], "reset": "True"},
        {"type": "DeleteFiles", "path": ["fs"], "file_paths": ["x.txt"]},
        {"type": "AssignArtifact", "path": ["art"], "hash": "abc"},
        {"type": "TrackFilesToArtifact", "path": ["art"], "entries": [["/data", None]], "project_id": "p"},
        {"type": "TrackFilesToArtifact", "path": ["art2"], "entries": [["s3://b/k", "dst"]], "project_id": "p"},
        {"type": "ClearArtifact", "path": ["art2"]},
    ])
    assert (r.files["f"].tmp_file_name, r.files["f"].ext, r.files["g"].content_b64) == ("f-1.bin", "bin", "aGk=")
    assert [(o.action, o.items, o.reset) for o in r.file_sets["fs"]] == [
        ("upload", ("/b/*",), True), ("delete", ("x.txt",), False)]
    assert (r.artifacts["art"].hash, r.artifacts["art"].entries) == ("abc", [("/data", None)])
    assert r.artifacts["art2"].entries == [] and r.artifacts["art2"].hash is None


def test_replay_copy_unknown_and_malformed_ops() -> None:
    me = "11111111-2222-3333-4444-555555555555"
    r = replay_ops([
        {"type": "AssignFloat", "path": ["src"], "value": 0.5},
        {"type": "CopyAttribute", "path": ["c"], "container_id": me, "container_type": "run",
         "source_path": ["src"], "source_attr_name": "Float"},
        {"type": "AssignFloat", "path": ["src"], "value": 0.7},  # a later change does not follow
        {"type": "CopyAttribute", "path": ["o"], "container_id": "other", "container_type": "run",
         "source_path": ["src"], "source_attr_name": "Float"},
        {"type": "CopyAttribute", "path": ["n"], "container_id": me, "container_type": "run",
         "source_path": ["none"], "source_attr_name": "Float"},
        {"type": "FutureOp", "path": ["z"]},
        {"type": "LogFloats", "path": ["m"], "values": [{"value": 1.0, "step": 0, "ts": 1.0}, {"value": 2.0}]},
        log("m", (1.0, 3.0)),
    ], me)
    assert r.fields["c"] == Field("float", 0.5) and "o" not in r.fields and "n" not in r.fields
    assert set(r.unresolved_copies) == {"o", "n"} and r.unknown_ops == {"FutureOp": 1}
    assert r.invalid["LogFloats"].count == 1
    # the malformed op's valid first point went in before the error: columns stay aligned
    cols = r.buffer.columns["float"]
    assert len({len(c) for c in cols.values()}) == 1
    assert floats(r, "m") == [(0.0, 1.0), (1.0, 3.0)]
