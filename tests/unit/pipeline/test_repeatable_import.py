"""Repeatable imports on the fake destination: completion keyed on the import digest, conflicts
between dumps, incomplete runs and end times (issue 12)."""

from __future__ import annotations

import json
from datetime import timedelta
from pathlib import Path

import pyarrow as pa
import pytest

from neptune_migrate.destinations.fake import FakeDestination
from neptune_migrate.dump.manifest import Manifest
from neptune_migrate.dump.reader import DumpReader
from neptune_migrate.dump.writer import DumpWriter
from neptune_migrate.model import SystemInfo
from neptune_migrate.pipeline.import_ import ImportOptions, import_runs
from neptune_migrate.pipeline.ledger import Ledger
from neptune_migrate.retry import FAST
from tests.factories import T0, build_dump, float_points, key, make_record

OPTS = ImportOptions(retry=FAST)
KEY = "my-ws/my-proj/PROJ-1"


def _dump(root: Path, tmp: Path, points: int = 100) -> DumpReader:
    build_dump(root, tmp, run_ids=("PROJ-1",), points=points)
    return DumpReader(root)


def _series(fake: FakeDestination) -> dict[tuple[str, str], int]:
    [run] = fake.live_runs()
    return {k: sum(t.num_rows for t in v) for k, v in run.series.items()}


def _statuses(report: object) -> list[tuple[str, str]]:
    return [(r.status, r.message) for r in report.runs]  # type: ignore[attr-defined]


def test_filtered_then_full_import_is_redone_then_skipped(tmp_path: Path) -> None:
    reader = _dump(tmp_path / "dump", tmp_path)
    fake = FakeDestination()
    first = import_runs(reader, fake, ImportOptions(retry=FAST, attribute_regex="^train/loss$"))
    assert first.runs[0].status == "created"
    assert _series(fake) == {("float", "train/loss"): 100}
    full = import_runs(reader, fake, OPTS)
    assert full.runs[0].status == "repaired"
    assert "imported with other options" in full.runs[0].message
    assert _series(fake) == {("float", "train/loss"): 100, ("float", "train/special"): 3,
                             ("string", "train/log"): 2, ("histogram", "hist/w"): 1, ("file", "images/preds"): 1}
    assert len(fake.live_runs()) == 1
    writes = fake.writes
    again = import_runs(reader, fake, OPTS)
    assert again.runs[0].status == "skipped"
    assert fake.writes == writes


def test_a_filter_that_keeps_everything_is_the_same_import(tmp_path: Path) -> None:
    reader = _dump(tmp_path / "dump", tmp_path)
    fake = FakeDestination()
    import_runs(reader, fake, ImportOptions(retry=FAST, attribute_regex="."))
    assert import_runs(reader, fake, OPTS).runs[0].status == "skipped"


def test_step_policy_change_redoes_runs_with_fractional_steps(tmp_path: Path) -> None:
    reader = _dump(tmp_path / "dump", tmp_path)  # train/special has steps 0.5, 1.5, 2.5
    fake = FakeDestination()
    import_runs(reader, fake, ImportOptions(retry=FAST, step_policy="floor"))
    [run] = fake.live_runs()
    assert pa.concat_tables(run.series["float", "train/special"]).column("dest_step").to_pylist() == [0, 1, 2]
    report = import_runs(reader, fake, OPTS)
    assert report.runs[0].status == "repaired"
    [run] = fake.live_runs()
    assert pa.concat_tables(run.series["float", "train/special"]).column("dest_step").to_pylist() == [5, 15, 25]
    dry = import_runs(reader, fake, ImportOptions(retry=FAST, step_policy="floor", dry_run=True))
    assert dry.runs[0].status == "would_repair"


def test_step_policy_does_not_matter_for_integer_steps(tmp_path: Path) -> None:
    with DumpWriter(tmp_path / "dump") as dump, dump.begin_run(key()) as run:
        run.add_points("float", float_points("loss", [0, 1, 2], [1.0, 2.0, 3.0]))
        run.commit(make_record(key(), fields={}))
    reader = DumpReader(tmp_path / "dump")
    fake = FakeDestination()
    assert import_runs(reader, fake, ImportOptions(retry=FAST, step_policy="floor")).runs[0].status == "created"
    assert import_runs(reader, fake, OPTS).runs[0].status == "skipped"


def test_reexport_into_the_same_dump_is_a_redo_not_a_conflict(tmp_path: Path) -> None:
    reader = _dump(tmp_path / "dump", tmp_path, points=100)
    fake = FakeDestination()
    import_runs(reader, fake, OPTS)
    reader = _dump(tmp_path / "dump", tmp_path, points=50)  # same dump folder, same dump_id
    report = import_runs(reader, fake, OPTS)
    assert _statuses(report) == [("repaired", "the dump changed since the last import (different digest)")]
    assert _series(fake)["float", "train/loss"] == 50


def test_another_dumps_run_is_a_conflict_by_default(tmp_path: Path) -> None:
    a = _dump(tmp_path / "a", tmp_path, points=100)
    b = _dump(tmp_path / "b", tmp_path, points=40)
    assert a.manifest.origin != b.manifest.origin
    fake = FakeDestination()
    import_runs(a, fake, OPTS)
    writes = fake.writes
    dry = import_runs(b, fake, ImportOptions(retry=FAST, dry_run=True))
    assert dry.runs[0].status == "would_conflict"
    assert dry.failed
    report = import_runs(b, fake, OPTS)
    [run] = report.runs
    assert run.status == "conflict"
    assert run.destination_run_id == "fake-1"
    assert f"belongs to dump {a.manifest.origin}, not to this dump ({b.manifest.origin})" in run.message
    assert report.failed
    assert report.conflicts == [KEY]
    assert fake.writes == writes
    assert _series(fake)["float", "train/loss"] == 100


def test_on_conflict_skip_and_replace(tmp_path: Path) -> None:
    a = _dump(tmp_path / "a", tmp_path, points=100)
    b = _dump(tmp_path / "b", tmp_path, points=40)
    fake = FakeDestination()
    import_runs(a, fake, OPTS)
    skipped = import_runs(b, fake, ImportOptions(retry=FAST, on_conflict="skip"))
    assert skipped.runs[0].status == "skipped"
    assert "left as it is (--on-conflict skip)" in skipped.runs[0].message
    assert not skipped.conflicts
    assert skipped.runs[0].losses == []  # b's losses (its missing file) do not describe a's run
    assert not skipped.failed
    assert _series(fake)["float", "train/loss"] == 100
    plan = import_runs(b, fake, ImportOptions(retry=FAST, on_conflict="replace", dry_run=True))
    assert plan.runs[0].status == "would_replace"
    replaced = import_runs(b, fake, ImportOptions(retry=FAST, on_conflict="replace"))
    assert replaced.runs[0].status == "replaced"
    [run] = fake.live_runs()
    assert run.origin == b.manifest.origin
    assert _series(fake)["float", "train/loss"] == 40
    # now the run is b's: a plain import of b skips it, one of a conflicts
    assert import_runs(b, fake, OPTS).runs[0].status == "skipped"
    assert import_runs(a, fake, OPTS).runs[0].status == "conflict"


def test_identical_content_from_another_dump_is_skipped(tmp_path: Path) -> None:
    a = _dump(tmp_path / "a", tmp_path)
    b = _dump(tmp_path / "b", tmp_path)  # the same runs exported twice: same run digests
    assert next(a.runs()).digest == next(b.runs()).digest
    fake = FakeDestination()
    import_runs(a, fake, OPTS)
    [run] = import_runs(b, fake, OPTS).runs
    assert run.status == "skipped"
    assert run.message == f"already complete in the destination (same content, imported from dump {a.manifest.origin})"


def _make_legacy(fake: FakeDestination) -> None:
    """What the previous version left: a completion marker and dump digest, no import digest or origin."""
    for run in fake.live_runs():
        run.import_digest = None
        run.origin = None


def _integer_steps_dump(root: Path) -> DumpReader:
    with DumpWriter(root) as dump, dump.begin_run(key()) as run:
        run.add_points("float", float_points("train/loss", [0, 1, 2], [1.0, 2.0, 3.0]))
        run.add_points("float", float_points("eval/acc", [0, 10], [0.5, 0.75]))
        run.commit(make_record(key()))
    return DumpReader(root)


def test_legacy_run_with_the_same_content_is_kept(tmp_path: Path) -> None:
    reader = _integer_steps_dump(tmp_path / "dump")
    fake = FakeDestination()
    import_runs(reader, fake, ImportOptions(retry=FAST, attribute_regex="^(train|eval|parameters|info)/"))
    _make_legacy(fake)
    writes = fake.writes
    report = import_runs(reader, fake, OPTS)
    assert _statuses(report) == [("skipped", "already complete in the destination")]
    assert fake.writes == writes


def test_legacy_run_with_another_end_time_is_redone(tmp_path: Path) -> None:
    """Earlier versions ended a run without a modification time at its start: such runs are redone."""
    reader = _integer_steps_dump(tmp_path / "dump")
    fake = FakeDestination()
    import_runs(reader, fake, OPTS)
    _make_legacy(fake)
    fake.live_runs()[0].end_time = T0
    report = import_runs(reader, fake, OPTS)
    assert report.runs[0].status == "repaired"
    assert fake.live_runs()[0].end_time == T0 + timedelta(hours=1)


def test_legacy_filtered_run_is_redone(tmp_path: Path) -> None:
    reader = _integer_steps_dump(tmp_path / "dump")
    fake = FakeDestination()
    import_runs(reader, fake, ImportOptions(retry=FAST, attribute_regex="^train/loss$"))
    _make_legacy(fake)
    report = import_runs(reader, fake, OPTS)
    assert _statuses(report) == [
        ("repaired", "imported by an earlier version that did not record its options; redone once")]
    assert _series(fake) == {("float", "train/loss"): 3, ("float", "eval/acc"): 2}
    assert len(fake.live_runs()[0].params) == 12


def test_legacy_run_with_fractional_steps_is_redone(tmp_path: Path) -> None:
    """An earlier import's step policy is unknown: a run whose steps need converting is redone."""
    reader = _dump(tmp_path / "dump", tmp_path)
    fake = FakeDestination()
    import_runs(reader, fake, OPTS)
    _make_legacy(fake)
    assert import_runs(reader, fake, OPTS).runs[0].status == "repaired"


def test_legacy_run_of_unknown_origin_is_a_conflict_unless_the_ledger_knows_it(tmp_path: Path) -> None:
    a = _dump(tmp_path / "a", tmp_path, points=100)
    fake = FakeDestination()
    import_runs(a, fake, OPTS)
    _make_legacy(fake)
    b = _dump(tmp_path / "b", tmp_path, points=40)
    [run] = import_runs(b, fake, OPTS).runs
    assert run.status == "conflict"
    assert "belongs to another dump or an unknown earlier import" in run.message
    # b's own ledger says it imported that destination run: it is b's, redone as a changed dump
    Ledger(b.layout, fake.name, fake.describe()).append(
        {"key": KEY, "destination_run_id": "fake-1", "digest": "old", "status": "created"})
    assert import_runs(b, fake, OPTS).runs[0].status == "repaired"


def test_incomplete_source_run_and_end_time(tmp_path: Path) -> None:
    k1, k2 = key("PROJ-1"), key("PROJ-2")
    with DumpWriter(tmp_path / "dump") as dump:
        with dump.begin_run(k1) as run:
            run.add_points("float", float_points("loss", [0, 1, 2], [1.0, 2.0, 3.0], t0=T0 + timedelta(minutes=5)))
            run.commit(make_record(k1, fields={}, complete=False,
                                   system=SystemInfo(name="cut", created_at=T0, modified_at=None)))
        with dump.begin_run(k2) as run:
            run.add_points("float", float_points("loss", [0], [1.0]))
            run.commit(make_record(k2, fields={}))
    fake = FakeDestination()
    report = import_runs(DumpReader(tmp_path / "dump"), fake, OPTS)
    assert [r.status for r in report.runs] == ["created", "created"]
    cut, whole = sorted(fake.live_runs(), key=lambda r: str(r.key))
    assert (cut.source_complete, whole.source_complete) == (False, True)
    # no modification time: the last point's timestamp (T0 + 5 min + 2 s), never the import time
    assert cut.end_time == T0 + timedelta(minutes=5, seconds=2)
    assert whole.end_time == T0 + timedelta(hours=1)  # sys/modification_time when the source has it


def test_end_time_never_precedes_the_start(tmp_path: Path) -> None:
    with DumpWriter(tmp_path / "dump") as dump, dump.begin_run(key()) as run:
        run.add_points("float", float_points("loss", [0], [1.0], t0=T0 - timedelta(days=1)))
        run.commit(make_record(key(), fields={}, system=SystemInfo(created_at=T0)))
    fake = FakeDestination()
    import_runs(DumpReader(tmp_path / "dump"), fake, OPTS)
    assert fake.live_runs()[0].end_time == T0


def test_new_dumps_get_an_id_and_old_ones_a_stable_derived_origin(tmp_path: Path) -> None:
    reader = _dump(tmp_path / "dump", tmp_path)
    doc = json.loads((tmp_path / "dump" / "manifest.json").read_text())
    assert len(doc["dump_id"]) == 32
    assert reader.manifest.origin == doc["dump_id"]
    del doc["dump_id"]
    (tmp_path / "dump" / "manifest.json").write_text(json.dumps(doc))
    old = DumpReader(tmp_path / "dump")
    assert old.manifest.dump_id is None
    assert old.manifest.origin.startswith("created-")
    with DumpWriter(tmp_path / "dump"):
        pass  # reopening for another export never gives an old dump a new identity
    assert "dump_id" not in json.loads((tmp_path / "dump" / "manifest.json").read_text())
    assert DumpReader(tmp_path / "dump").manifest.origin == old.manifest.origin
    assert Manifest.new().dump_id != Manifest.new().dump_id


@pytest.mark.parametrize("option", ["fail", "skip", "replace"])
def test_on_conflict_does_nothing_without_a_conflict(tmp_path: Path, option: str) -> None:
    reader = _dump(tmp_path / "dump", tmp_path)
    fake = FakeDestination()
    opts = ImportOptions(retry=FAST, on_conflict=option)  # type: ignore[arg-type]
    assert import_runs(reader, fake, opts).runs[0].status == "created"
    assert import_runs(reader, fake, opts).runs[0].status == "skipped"


def test_a_filter_that_matches_nothing_in_a_run_imports_an_empty_run(tmp_path: Path) -> None:
    with DumpWriter(tmp_path / "dump") as dump, dump.begin_run(key()) as run:
        run.add_points("float", float_points("metrics/x", [0, 1], [1.0, 2.0]))
        run.commit(make_record(key(), fields={}))
    fake = FakeDestination()
    report = import_runs(DumpReader(tmp_path / "dump"), fake, ImportOptions(retry=FAST, attribute_regex="^train/"))
    assert _statuses(report) == [("created", "")]
    assert fake.live_runs()[0].series == {}


def test_a_series_that_turns_fractional_after_a_batch_is_collected_again(tmp_path: Path) -> None:
    """70,000 integral steps (more than one 64k read batch), then 0.5 steps: the first pass only
    counted the integral ones, so the step plan re-reads the series and scales it by 10."""
    steps = [float(s) for s in range(70_000)] + [70_000.5, 70_001.5]
    with DumpWriter(tmp_path / "dump") as dump, dump.begin_run(key("PROJ-1")) as run:
        run.add_points("float", float_points("a", steps, [1.0] * len(steps), T0))
        run.add_points("float", float_points("b", [0.0, 1.0, 1.0], [1.0, 2.0, 3.0], T0))
        run.commit(make_record(key("PROJ-1")))
    fake = FakeDestination()
    report = import_runs(DumpReader(tmp_path / "dump"), fake, OPTS)
    assert [r.status for r in report.runs] == ["created"]
    changes = {c["path"]: (c["policy"], c["scale"], c["points"]) for c in report.runs[0].step_changes}
    assert changes == {"a": ("scale", 10, 70_002), "b": ("scale", 10, 3)}  # one scale for the run
    dupes = [(x["kind"], x["path"], x["count"]) for x in report.runs[0].losses if x["kind"] == "duplicate_step"]
    assert dupes == [("duplicate_step", "b", 1)]
