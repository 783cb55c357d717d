"""verify against the fake destination: a clean import matches; each tampering is one exact finding."""

from __future__ import annotations

from pathlib import Path

import pyarrow as pa
import pyarrow.compute as pc

from neptune_migrate.destinations.fake import FakeDestination
from neptune_migrate.dump.reader import DumpReader
from neptune_migrate.pipeline.import_ import ImportOptions, import_runs
from neptune_migrate.retry import FAST
from neptune_migrate.sources.base import RunSelection
from neptune_migrate.verify.findings import Finding
from neptune_migrate.verify.report import render_html
from neptune_migrate.verify.verifier import VerifyOptions, verify_runs
from tests.factories import build_dump

RUN = "my-ws/my-proj/PROJ-1"


def _imported(tmp_path: Path) -> tuple[DumpReader, FakeDestination]:
    build_dump(tmp_path / "dump", tmp_path, run_ids=("PROJ-1", "PROJ-2"))
    reader = DumpReader(tmp_path / "dump")
    fake = FakeDestination()
    import_runs(reader, fake, ImportOptions(retry=FAST))
    return reader, fake


def _verify(reader: DumpReader, fake: FakeDestination, **kw: object):  # type: ignore[no-untyped-def]
    return verify_runs(reader, fake, VerifyOptions(import_options=ImportOptions(retry=FAST), **kw))  # type: ignore[arg-type]


def test_clean_import_verifies_with_zero_findings(tmp_path: Path) -> None:
    reader, fake = _imported(tmp_path)
    report = _verify(reader, fake)
    assert report.findings == []
    assert [r.status for r in report.runs] == ["match", "match"]
    # the factory's runs lost model/lost at export: the destination matches, the verdict does not
    assert report.dump_losses() == {"lost": 2, "not_in_source": 0}
    assert not report.ok
    assert report.to_json()["totals"]["points_compared"] == 2 * (100 + 3 + 2 + 1 + 1)


def test_each_tampering_is_exactly_one_finding(tmp_path: Path) -> None:
    reader, fake = _imported(tmp_path)
    [run] = [r for r in fake.live_runs() if str(r.key) == RUN]
    loss = pa.concat_tables(run.series["float", "train/loss"])
    # delete the point at step 7, change the value at step 8
    values = loss.column("value").to_pylist()
    values[8] = 123.0
    loss = loss.set_column(loss.column_names.index("value"), "value", pa.array(values))
    run.series["float", "train/loss"] = [loss.filter(pc.not_equal(loss.column("step"), 7.0))]
    run.params["parameters/optimizer"] = '{"type": "string", "value": "sgd"}'
    del run.files["model/weights/weights.bin"]
    run.params["surprise"] = "1"
    report = _verify(reader, fake)
    item = "series:float:train/loss"
    got = set(report.findings)
    # dest_step 70: one step scale per run (train/special needs x10, train/loss shares it)
    assert got == {
        Finding(RUN, "missing", item, step=7.0, expected="path=train/loss, timestamp=2025-03-01T12:00:07+00:00, "
                "value=0.125, preview_completion=None, key=train/loss, dest_step=70"),
        Finding(RUN, "differs", item, step=8.0, expected="value=0.1111111111111111", actual="value=123.0",
                detail="value"),
        Finding(RUN, "differs", item, expected="100 points", actual="99 points", detail="point count"),
        Finding(RUN, "differs", "param:parameters/optimizer", expected='{"type": "string", "value": "adam"}',
                actual='{"type": "string", "value": "sgd"}'),
        Finding(RUN, "missing", "file:model/weights/weights.bin", expected="900 bytes"),
        Finding(RUN, "extra", "param:surprise", actual="1"),
    }
    assert [r.status for r in report.runs] == ["mismatch", "match"]
    html = render_html(report)
    assert "<figure class='plot differs' data-item='series:float:train/loss'>" in html
    assert "param:parameters/optimizer" in html


def test_missing_and_half_written_runs_are_findings(tmp_path: Path) -> None:
    reader, fake = _imported(tmp_path)
    [run] = [r for r in fake.live_runs() if str(r.key) == RUN]
    run.complete = False
    other = next(r for r in fake.live_runs() if str(r.key) != RUN)
    other.deleted = True
    report = _verify(reader, fake)
    kinds = {(f.run, f.kind, f.item, f.detail) for f in report.findings}
    assert (RUN, "differs", "run", "import did not finish") in kinds
    assert ("my-ws/my-proj/PROJ-2", "missing", "run", "not in the destination") in kinds


def test_sampling_compares_fewer_series_and_says_so(tmp_path: Path) -> None:
    reader, fake = _imported(tmp_path)
    report = _verify(reader, fake, sample=0.5, seed=1)
    doc = report.to_json()
    assert doc["sample"] == 0.5
    assert doc["totals"]["series_sampled_out"] > 0
    assert doc["totals"]["series_compared"] + doc["totals"]["series_sampled_out"] == 2 * 5  # 5 non-empty per run


def test_json_report_follows_the_documented_schema(tmp_path: Path) -> None:
    import json

    jsonschema = __import__("pytest").importorskip("jsonschema")
    from tests.conftest import REPO

    schema = json.loads((REPO / "docs" / "schemas" / "verify-report.schema.json").read_text())
    reader, fake = _imported(tmp_path)
    [run] = [r for r in fake.live_runs() if str(r.key) == RUN]
    run.params["surprise"] = "1"
    for report in (_verify(reader, fake), _verify(reader, fake, sample=0.5)):
        jsonschema.validate(report.to_json(), schema)
    assert not _verify(reader, fake).to_json()["ok"]


def test_the_dumps_own_losses_are_part_of_the_verdict(tmp_path: Path) -> None:
    from neptune_migrate.dump.writer import DumpWriter
    from neptune_migrate.model import Loss, LossCategory
    from tests.factories import float_points, key, make_record

    lost = Loss("missing_file", "model/ckpt", 1, "not found: /old/ckpt.pt", category=LossCategory.LOST)
    gone = Loss("queue_tail_missing", None, 12, "operations 88..99 were uploaded and deleted by the client",
                category=LossCategory.NOT_IN_SOURCE)
    renamed = Loss("type_conflict", "x", 1, "kept as string", category=LossCategory.CHANGED_FORM)
    with DumpWriter(tmp_path / "dump") as dump:
        for rid, losses, complete in (("PROJ-1", (lost, renamed), True), ("PROJ-2", (gone,), False),
                                      ("PROJ-3", (), True)):
            with dump.begin_run(key(rid)) as run:
                run.add_points("float", float_points("loss", [0, 1], [1.0, 2.0]))
                run.commit(make_record(key(rid), fields={}, losses=losses, complete=complete))
    reader = DumpReader(tmp_path / "dump")
    fake = FakeDestination()
    import_runs(reader, fake, ImportOptions(retry=FAST))
    report = _verify(reader, fake)
    assert report.findings == []
    assert report.dump_losses() == {"lost": 1, "not_in_source": 1}
    assert not report.ok  # LOST at export: exit 1 even though every run matches
    doc = report.to_json()
    assert doc["ok"] is False
    assert doc["dump_losses"] == {"lost": 1, "not_in_source": 1}
    assert doc["totals"]["runs_incomplete_in_source"] == 1
    by_key = {r["key"]: r for r in doc["runs"]}
    assert [lo["kind"] for lo in by_key["my-ws/my-proj/PROJ-1"]["dump_losses"]] == ["missing_file"]
    assert by_key["my-ws/my-proj/PROJ-2"]["dump_losses"][0]["category"] == "not_in_source"
    assert by_key["my-ws/my-proj/PROJ-2"]["dump_losses"][0]["count"] == 12
    assert by_key["my-ws/my-proj/PROJ-2"]["source_complete"] is False
    assert by_key["my-ws/my-proj/PROJ-3"]["dump_losses"] == []
    assert "the dump lost 1 item(s) at export" in render_html(report)
    # NOT_IN_SOURCE alone is a warning: the verdict stays ok
    only_gone = verify_runs(reader, fake, VerifyOptions(import_options=ImportOptions(
        retry=FAST, selection=RunSelection(run_ids=("PROJ-2",)))))
    assert only_gone.ok
    assert only_gone.dump_losses() == {"lost": 0, "not_in_source": 1}


def test_verify_names_a_run_imported_with_other_options(tmp_path: Path) -> None:
    build_dump(tmp_path / "dump", tmp_path, run_ids=("PROJ-1",))
    reader = DumpReader(tmp_path / "dump")
    fake = FakeDestination()
    import_runs(reader, fake, ImportOptions(retry=FAST, step_policy="floor"))
    report = _verify(reader, fake)
    [digest] = [f for f in report.findings if f.item == "run"]
    assert digest.kind == "differs"
    assert "imported with other options" in digest.detail
