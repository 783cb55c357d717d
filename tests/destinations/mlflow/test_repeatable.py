"""Repeatable imports into real MLflow stores (issue 12): import digest, conflicts between dumps,
incomplete source runs and run end times, read back through MlflowClient."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from neptune_migrate.destinations.mlflow import MlflowDestination
from neptune_migrate.destinations.mlflow import mapping as m
from neptune_migrate.dump.reader import DumpReader
from neptune_migrate.pipeline.import_ import ImportOptions, import_runs
from neptune_migrate.retry import FAST
from neptune_migrate.verify.verifier import VerifyOptions, verify_runs
from tests.destinations.mlflow.conftest import MlflowBackend
from tests.factories import build_two_run_dump

OPTS = ImportOptions(retry=FAST)


def _dest(backend: MlflowBackend, experiment: str) -> MlflowDestination:
    return MlflowDestination(backend.tracking_uri, experiment, artifact_location=backend.artifact_location)


def _dump(root: Path, points: int = 20) -> DumpReader:
    build_two_run_dump(root, points)
    return DumpReader(root)


def _runs(dest: MlflowDestination, experiment: str) -> dict[str, object]:
    exp = dest.client.get_experiment_by_name(experiment)
    found = dest.client.search_runs([exp.experiment_id], "", max_results=100)
    return {r.data.tags[m.TAG_RUN_ID]: r for r in found}


def test_filtered_then_full_import_is_redone_and_verifies(mlflow_backend: MlflowBackend, tmp_path: Path) -> None:
    reader = _dump(tmp_path / "dump")
    dest = _dest(mlflow_backend, "rep-filter")
    first = import_runs(reader, dest, ImportOptions(retry=FAST, attribute_regex="^train/loss$"))
    assert [r.status for r in first.runs] == ["created", "created"]
    assert sorted(_runs(dest, "rep-filter")["PROJ-1"].data.metrics) == ["train/loss"]  # type: ignore[attr-defined]
    full = import_runs(reader, dest, OPTS)
    # PROJ-2 holds nothing but train/loss: the filter kept all of it, so that run is the same import
    assert [r.status for r in full.runs] == ["repaired", "skipped"]
    assert "imported with other options" in full.runs[0].message
    runs = _runs(dest, "rep-filter")
    assert len(runs) == 2  # the filtered runs were deleted, not kept beside the new ones
    assert sorted(runs["PROJ-1"].data.metrics) == ["eval/loss", "train/acc", "train/loss"]  # type: ignore[attr-defined]
    tags = runs["PROJ-1"].data.tags  # type: ignore[attr-defined]
    assert tags[m.TAG_ORIGIN] == reader.manifest.dump_id
    assert len(tags[m.TAG_IMPORT_DIGEST]) == 64
    assert [r.status for r in import_runs(reader, dest, OPTS).runs] == ["skipped", "skipped"]
    report = verify_runs(reader, dest, VerifyOptions(import_options=OPTS))
    assert report.findings == []
    assert report.dump_losses() == {"lost": 0, "not_in_source": 0}


def test_another_dumps_run_is_never_replaced_silently(mlflow_backend: MlflowBackend, tmp_path: Path) -> None:
    a = _dump(tmp_path / "a", points=20)
    b = _dump(tmp_path / "b", points=12)
    dest = _dest(mlflow_backend, "rep-conflict")
    import_runs(a, dest, OPTS)
    before = {k: r.info.run_id for k, r in _runs(dest, "rep-conflict").items()}  # type: ignore[attr-defined]
    plan = import_runs(b, dest, ImportOptions(retry=FAST, dry_run=True))
    assert [r.status for r in plan.runs] == ["would_conflict", "would_conflict"]
    report = import_runs(b, dest, OPTS)
    assert [r.status for r in report.runs] == ["conflict", "conflict"]
    assert report.conflicts == ["my-ws/my-proj/PROJ-1", "my-ws/my-proj/PROJ-2"]
    assert f"belongs to dump {a.manifest.dump_id}" in report.runs[0].message
    after = _runs(dest, "rep-conflict")
    assert {k: r.info.run_id for k, r in after.items()} == before  # type: ignore[attr-defined]
    assert len(dest.client.get_metric_history(before["PROJ-1"], "train/loss")) == 20
    replaced = import_runs(b, dest, ImportOptions(retry=FAST, on_conflict="replace"))
    assert [r.status for r in replaced.runs] == ["replaced", "replaced"]
    now = _runs(dest, "rep-conflict")
    assert now["PROJ-1"].data.tags[m.TAG_ORIGIN] == b.manifest.dump_id  # type: ignore[attr-defined]
    assert len(dest.client.get_metric_history(now["PROJ-1"].info.run_id, "train/loss")) == 12  # type: ignore[attr-defined]


def test_incomplete_run_and_end_times_read_back(mlflow_backend: MlflowBackend, tmp_path: Path) -> None:
    reader = _dump(tmp_path / "dump")
    dest = _dest(mlflow_backend, "rep-times")
    import_runs(reader, dest, OPTS)
    runs = _runs(dest, "rep-times")
    whole, cut = runs["PROJ-1"].info, runs["PROJ-2"].info  # type: ignore[attr-defined]
    assert whole.status == "FINISHED"
    assert whole.end_time - whole.start_time == 3600 * 1000  # sys/modification_time - creation
    assert m.TAG_SOURCE_COMPLETE not in runs["PROJ-1"].data.tags  # type: ignore[attr-defined]
    assert cut.status == "KILLED"  # never FINISHED: the source holds only part of it
    assert runs["PROJ-2"].data.tags[m.TAG_SOURCE_COMPLETE] == "false"  # type: ignore[attr-defined]
    # no modification time: the end is the last point (5 min + 19 s after creation), not the start
    assert cut.end_time - cut.start_time == (5 * 60 + 19) * 1000
    assert verify_runs(reader, dest, VerifyOptions(import_options=OPTS)).findings == []


@pytest.mark.slow  # default run: test_another_dumps_run_is_never_replaced_silently and the pipeline's conflict tests
def test_cli_on_conflict_exit_codes_name_the_runs(tmp_path: Path, cli: Any) -> None:
    build_two_run_dump(tmp_path / "a", points=20)
    build_two_run_dump(tmp_path / "b", points=12)
    uri = f"sqlite:///{tmp_path}/mlflow.db"
    cli("import", str(tmp_path / "a"), "--to", "mlflow", "--tracking-uri", uri, check_rc=0)
    plan = cli("import", str(tmp_path / "b"), "--to", "mlflow", "--tracking-uri", uri, "--dry-run")
    assert plan.returncode == 4, plan.stderr
    assert "would_conflict" in plan.stderr
    text = " ".join(plan.stderr.split())
    assert ("conflict: 2 run(s) in the destination were imported from another dump: "
            "my-ws/my-proj/PROJ-1, my-ws/my-proj/PROJ-2") in text
    done = cli("import", str(tmp_path / "b"), "--to", "mlflow", "--tracking-uri", uri,
               "--report", str(tmp_path / "r.json"))
    assert done.returncode == 1, done.stderr
    doc = json.loads((tmp_path / "r.json").read_text())
    assert doc["counts"] == {"conflict": 2}
    skip = cli("import", str(tmp_path / "b"), "--to", "mlflow", "--tracking-uri", uri, "--on-conflict", "skip")
    assert skip.returncode == 0, skip.stderr
    bad = cli("import", str(tmp_path / "b"), "--to", "mlflow", "--tracking-uri", uri, "--on-conflict", "merge")
    assert bad.returncode == 2
    assert "--on-conflict 'merge': choose one of fail, skip, replace" in bad.stderr
    replace = cli("import", str(tmp_path / "b"), "--to", "mlflow", "--tracking-uri", uri, "--on-conflict", "replace")
    assert replace.returncode == 0, replace.stderr
    assert "replaced 2" in replace.stderr
    verify = cli("verify", str(tmp_path / "b"), "--to", "mlflow", "--tracking-uri", uri,
                 "--report", str(tmp_path / "v.json"))
    assert verify.returncode == 0, verify.stderr
    assert json.loads((tmp_path / "v.json").read_text())["dump_losses"] == {"lost": 0, "not_in_source": 0}


def test_truncated_queue_fixture_is_killed_and_ends_at_its_last_point(tmp_path: Path, cli: Any) -> None:
    """The real neptune-client queue of a SIGKILLed process (last_put_version 72, queue ends at 43):
    exported, imported through the CLI, read back with MlflowClient, verified."""
    import pyarrow.compute as pc

    from neptune_migrate.model import SERIES_KINDS

    fixture = Path(__file__).resolve().parents[3] / "fixtures" / "neptune1" / "async_killed"
    dump = tmp_path / "dump"
    cli("export", str(fixture), "--from", "neptune-offline", "--project", "acme/vision", "--out", str(dump))
    reader = DumpReader(dump)
    [run] = list(reader.runs())
    assert run.record.complete is False
    assert run.record.provenance.details["modified_at_from"] in ("last operation", "last point")
    last = max(pc.max(t.column("timestamp")).as_py() for kind in SERIES_KINDS
               for t in reader.iter_points(run, kind, columns=["timestamp"]))
    uri = f"sqlite:///{tmp_path}/mlflow.db"
    done = cli("import", str(dump), "--to", "mlflow", "--tracking-uri", uri)
    assert done.returncode == 0, done.stderr
    dest = MlflowDestination(uri, "{project}")
    [mrun] = _runs(dest, "acme/vision").values()
    info = mrun.info  # type: ignore[attr-defined]
    assert info.status == "KILLED"
    assert mrun.data.tags[m.TAG_SOURCE_COMPLETE] == "false"  # type: ignore[attr-defined]
    assert info.start_time == m.ms(run.record.system.created_at)  # type: ignore[arg-type]
    # the generator logged its points with fixed 2025 timestamps, before the run's real creation
    # time: the end is the source's last operation (modified_at), never the start or the import time
    assert last < run.record.system.created_at < run.record.system.modified_at  # type: ignore[operator]
    assert info.end_time == m.ms(run.record.system.modified_at) > info.start_time  # type: ignore[arg-type]
    verify = cli("verify", str(dump), "--to", "mlflow", "--tracking-uri", uri, "--report", str(tmp_path / "v.json"))
    doc = json.loads((tmp_path / "v.json").read_text())
    assert doc["counts"] == {"missing": 0, "extra": 0, "differs": 0, "error": 0}
    assert doc["dump_losses"] == {"lost": 0, "not_in_source": 1}  # the 29 operations cut off the queue
    assert doc["runs"][0]["dump_losses"][0]["kind"] == "truncated_queue"
    assert doc["runs"][0]["dump_losses"][0]["count"] == 29
    assert doc["totals"]["runs_incomplete_in_source"] == 1
    # Not in the source any more: a warning (exit 0); --strict makes it exit 1.
    assert verify.returncode == 0, verify.stderr
    assert "1 item(s) were not in the source any more" in " ".join(verify.stderr.split())
    strict = cli("verify", str(dump), "--to", "mlflow", "--tracking-uri", uri, "--strict")
    assert strict.returncode == 1
    assert strict.stderr.strip().splitlines()[-1].startswith("verify exit 1: not in the source any more: 1 (--strict)")
    dest.close()
