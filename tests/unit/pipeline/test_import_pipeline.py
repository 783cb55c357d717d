"""The shared import pipeline against the fault-injecting fake destination."""

from __future__ import annotations

from pathlib import Path

import pyarrow as pa
import pytest

from neptune_migrate.destinations.fake import FakeDestination, SimulatedCrash
from neptune_migrate.dump.reader import DumpReader
from neptune_migrate.dump.writer import DumpWriter
from neptune_migrate.pipeline.import_ import ImportOptions, import_runs
from neptune_migrate.pipeline.ledger import Ledger
from neptune_migrate.retry import FAST
from neptune_migrate.sources.base import RunSelection
from tests.factories import build_dump, float_points, key, make_record

OPTS = ImportOptions(retry=FAST)


def _dump(tmp_path: Path, ids: tuple[str, ...] = ("PROJ-1", "PROJ-2", "PROJ-3")) -> DumpReader:
    build_dump(tmp_path / "dump", tmp_path, run_ids=ids)
    return DumpReader(tmp_path / "dump")


def _points(fake: FakeDestination, run_key: str, kind: str, dest_key: str) -> pa.Table:
    [run] = [r for r in fake.live_runs() if str(r.key) == run_key]
    return pa.concat_tables(run.series[kind, dest_key])  # type: ignore[index]


def test_import_writes_everything_and_reimport_creates_nothing(tmp_path: Path) -> None:
    reader = _dump(tmp_path)
    fake = FakeDestination()
    report = import_runs(reader, fake, OPTS)
    assert [r.status for r in report.runs] == ["created"] * 3
    assert len(fake.live_runs()) == 3
    loss = _points(fake, "my-ws/my-proj/PROJ-1", "float", "train/loss")
    assert loss.column("value").to_pylist() == [1.0 / (i + 1) for i in range(100)]
    # one scale per run: train/special needs 10, so train/loss shares it (one x-axis)
    assert loss.column("dest_step").to_pylist() == list(range(0, 1000, 10))
    special = _points(fake, "my-ws/my-proj/PROJ-1", "float", "train/special")
    assert special.column("dest_step").to_pylist() == [5, 15, 25]  # 0.5, 1.5, 2.5 scaled by 10
    files = fake.live_runs()[0].files
    assert files["model/weights/weights.bin"] == b"\x00\x01weights" * 100
    assert report.failed  # model/lost is missing from the dump: an error line for each run
    assert {lo["kind"] for lo in report.runs[0].losses} >= {"file_missing_in_dump", "step_converted",
                                                            "key_renamed"}
    writes = fake.writes
    again = import_runs(reader, fake, OPTS)
    assert [r.status for r in again.runs] == ["skipped"] * 3
    assert fake.writes == writes
    assert len(fake.live_runs()) == 3


def test_renamed_keys_and_collisions_are_in_the_report(tmp_path: Path) -> None:
    with DumpWriter(tmp_path / "dump") as dump, dump.begin_run(key()) as run:
        run.add_points("float", float_points("a b", [0, 1], [1.0, 2.0]))
        run.add_points("float", float_points("a@b", [0], [3.0]))
        run.add_points("float", float_points("a_b", [0], [4.0]))
        run.commit(make_record(key(), fields={}))
    fake = FakeDestination()
    report = import_runs(DumpReader(tmp_path / "dump"), fake, OPTS)
    [res] = report.runs
    assert res.collisions == {"a_b": ["a b", "a@b", "a_b"]}
    assert set(res.renamed_keys) == {"a b", "a@b"}
    [run] = fake.live_runs()
    assert run.series["float", "a_b"][0].column("value").to_pylist() == [4.0]
    assert run.series["float", res.renamed_keys["a b"]][0].column("value").to_pylist() == [1.0, 2.0]
    assert report.to_json()["losses"]["key_collision"] == 3


def test_crash_mid_run_is_repaired_not_skipped(tmp_path: Path) -> None:
    reader = _dump(tmp_path, ("PROJ-1",))
    fake = FakeDestination(crash_on={"write_series": 2})
    with pytest.raises(SimulatedCrash):
        import_runs(reader, fake, OPTS)
    [half] = fake.live_runs()
    assert not half.complete
    fake.crash_on = {}
    report = import_runs(reader, fake, OPTS)
    assert report.runs[0].status == "repaired"
    assert "half-written" in report.runs[0].message
    [run] = fake.live_runs()
    assert run.complete
    assert len(_points(fake, "my-ws/my-proj/PROJ-1", "float", "train/loss")) == 100  # no duplicates


def test_deleting_the_ledger_does_not_duplicate(tmp_path: Path) -> None:
    reader = _dump(tmp_path)
    fake = FakeDestination()
    ledger = Ledger(reader.layout, "fake", "mem")
    import_runs(reader, fake, OPTS, ledger=ledger)
    assert [e["status"] for e in ledger.entries()] == ["created"] * 3
    ledger.path.unlink()
    report = import_runs(reader, fake, OPTS, ledger=ledger)
    assert [r.status for r in report.runs] == ["skipped"] * 3
    assert len(fake.live_runs()) == 3


def test_transient_errors_are_retried_and_the_result_is_the_same(tmp_path: Path) -> None:
    reader = _dump(tmp_path, ("PROJ-1",))
    fake = FakeDestination(fail_on={"write_series": 2, "create_run": 1, "upload_file": 1}, fail_times=2)
    report = import_runs(reader, fake, OPTS)
    assert report.runs[0].status == "created"
    assert report.retries == 6
    assert len(fake.live_runs()) == 1  # the retried create did not duplicate the run
    assert len(_points(fake, "my-ws/my-proj/PROJ-1", "float", "train/loss")) == 100


def test_permanent_error_fails_one_run_and_the_import_goes_on(tmp_path: Path) -> None:
    reader = _dump(tmp_path)
    fake = FakeDestination(fail_on={"upload_file": 2}, transient=False)
    report = import_runs(reader, fake, OPTS)
    statuses = [r.status for r in report.runs]
    assert statuses.count("failed") == 1
    assert statuses.count("created") == 2
    failed = next(r for r in report.runs if r.status == "failed")
    assert failed.message == "FakePermanentError: injected failure in upload_file call 2"
    # the next import repairs exactly that run
    fake.fail_on = {}
    report = import_runs(reader, fake, OPTS)
    assert sorted(r.status for r in report.runs) == ["repaired", "skipped", "skipped"]


def test_dry_run_writes_nothing_and_plans_the_same_losses(tmp_path: Path) -> None:
    reader = _dump(tmp_path)
    fake = FakeDestination()
    plan = import_runs(reader, fake, ImportOptions(retry=FAST, dry_run=True))
    assert fake.writes == 0
    assert [r.status for r in plan.runs] == ["would_create"] * 3
    real = import_runs(reader, fake, OPTS)
    assert [r.losses for r in plan.runs] == [r.losses for r in real.runs]
    assert [r.renamed_keys for r in plan.runs] == [r.renamed_keys for r in real.runs]
    assert [r.step_changes for r in plan.runs] == [r.step_changes for r in real.runs]
    replan = import_runs(reader, fake, ImportOptions(retry=FAST, dry_run=True))
    assert [r.status for r in replan.runs] == ["would_skip"] * 3


def test_result_is_identical_for_any_number_of_workers(tmp_path: Path) -> None:
    reader = _dump(tmp_path, tuple(f"PROJ-{i}" for i in range(8)))

    def content(workers: int) -> list[tuple[str, list[float], bytes]]:
        fake = FakeDestination()
        import_runs(reader, fake, ImportOptions(retry=FAST, workers=workers))
        return sorted(
            (str(r.key), pa.concat_tables(r.series["float", "train/loss"]).column("value").to_pylist(),
             r.files["model/weights/weights.bin"])
            for r in fake.live_runs()
        )

    assert content(1) == content(4)


def test_selection_and_attribute_filter(tmp_path: Path) -> None:
    reader = _dump(tmp_path)
    fake = FakeDestination()
    opts = ImportOptions(retry=FAST, selection=RunSelection(run_ids=("PROJ-2",)), attribute_regex="^train/loss$")
    report = import_runs(reader, fake, opts)
    assert sorted(r.status for r in report.runs) == ["created", "filtered", "filtered"]
    [run] = fake.live_runs()
    assert list(run.series) == [("float", "train/loss")]
    assert run.params == {}


def test_fork_parent_is_imported_before_its_child(tmp_path: Path) -> None:
    from neptune_migrate.model import ForkPoint

    with DumpWriter(tmp_path / "dump") as dump:
        for rid, parent in (("A-child", "Z-parent"), ("Z-parent", None)):
            with dump.begin_run(key(rid)) as run:
                fork = None if parent is None else ForkPoint(key(parent), 2.0)
                run.commit(make_record(key(rid), fields={}, fork=fork))
    fake = FakeDestination()
    import_runs(DumpReader(tmp_path / "dump"), fake, ImportOptions(retry=FAST, workers=2))
    order = [str(r.key).rsplit("/", 1)[1] for r in fake.runs.values()]
    assert order == ["Z-parent", "A-child"]


def test_secrets_never_reach_the_report(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import json

    from neptune_migrate.destinations.fake import FakePermanentError

    monkeypatch.setenv("WANDB_API_KEY", "s3cr3t-token-value")
    reader = _dump(tmp_path, ("PROJ-1",))
    fake = FakeDestination()

    def leaky(*args: object) -> None:
        raise FakePermanentError("POST https://bob:hunter22@host/api failed, key s3cr3t-token-value")

    fake.upload_file = leaky  # type: ignore[method-assign]
    report = import_runs(reader, fake, OPTS)
    text = json.dumps(report.to_json())
    assert "hunter22" not in text
    assert "s3cr3t-token-value" not in text
    assert "https://***@host/api" in report.runs[0].message
    assert "<WANDB_API_KEY>" in report.runs[0].message
