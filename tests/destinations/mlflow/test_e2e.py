"""End to end against real MLflow: every fixture, re-import, SIGKILL + resume, faults, tampering, dry run."""

from __future__ import annotations

import json
import os
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest

from neptune_migrate.destinations.mlflow.destination import MlflowDestination
from neptune_migrate.dump.reader import DumpReader
from neptune_migrate.dump.writer import DumpWriter
from neptune_migrate.model import Field
from neptune_migrate.pipeline.import_ import ImportOptions, import_runs
from neptune_migrate.retry import FAST, RetryPolicy
from neptune_migrate.verify.verifier import VerifyOptions, verify_runs
from tests.conftest import FIXTURE_SOURCES, REPO
from tests.destinations.mlflow.conftest import MlflowBackend
from tests.factories import build_dump, float_points, key, make_record
from tests.support.proxy import Fault, FaultProxy

OPTS = ImportOptions(retry=FAST)


def _dest(backend: MlflowBackend, template: str) -> MlflowDestination:
    return MlflowDestination(backend.tracking_uri, template, artifact_location=backend.artifact_location)


def _active_runs(dest: MlflowDestination, template_project: str) -> list[Any]:
    exp = dest.client.get_experiment_by_name(template_project)
    return [] if exp is None else dest.client.search_runs([exp.experiment_id], max_results=1000)


@pytest.mark.parametrize("fixture", [name for name, *_ in FIXTURE_SOURCES])
def test_every_fixture_imports_verifies_and_reimports_as_a_no_op(
    fixture: str, fixture_dumps: dict[str, Path], mlflow_backend: MlflowBackend
) -> None:
    if fixture not in fixture_dumps:
        pytest.skip(f"{fixture}: source not available")
    reader = DumpReader(fixture_dumps[fixture])
    template = f"e2e-{fixture}-{mlflow_backend.name}-{{project}}"
    dest = _dest(mlflow_backend, template)
    report = import_runs(reader, dest, OPTS)
    assert all(r.status == "created" for r in report.runs), [(r.key, r.status, r.message) for r in report.runs]
    verification = verify_runs(reader, dest, VerifyOptions(import_options=OPTS))
    assert [str(f) for f in verification.findings] == []
    assert verification.to_json()["totals"]["points_compared"] == sum(
        s.count for r in reader.runs() for s in r.record.series)
    again = import_runs(reader, _dest(mlflow_backend, template), OPTS)
    assert {r.status for r in again.runs} == {"skipped"}
    projects = {r.key.project for r in reader.runs()}
    total = sum(len(_active_runs(dest, template.format(project=p))) for p in projects)
    assert total == len(report.runs)


def _big_dump(root: Path, points: int) -> DumpReader:
    with DumpWriter(root) as dump, dump.begin_run(key("BIG-1")) as run:
        for start in range(0, points, 10_000):
            steps = list(range(start, start + 10_000))
            run.add_points("float", float_points("train/loss", steps, [s / 3 for s in steps]))
            run.add_points("float", float_points("train/acc", steps, [1 - s / points for s in steps]))
        run.commit(make_record(key("BIG-1"), fields={"p": Field("int", 1)}))
    return DumpReader(root)


def _metric_rows(db: Path) -> int:
    try:
        with sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=1) as conn:
            return int(conn.execute("SELECT count(*) FROM metrics").fetchone()[0])
    except sqlite3.Error:
        return 0


@pytest.mark.slow  # default run: tests/reliability/test_soak.py kills a CLI import twice
def test_sigkill_mid_run_then_rerun_gives_exactly_one_complete_equal_run(tmp_path: Path) -> None:
    reader = _big_dump(tmp_path / "dump", 30_000)
    db = tmp_path / "mlflow.db"
    uri = f"sqlite:///{db}"
    env = dict(os.environ, PYTHONPATH=str(REPO))
    cmd = [sys.executable, "-m", "neptune_migrate", "import", str(tmp_path / "dump"), "--to", "mlflow",
           "--tracking-uri", uri]
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 120
    while _metric_rows(db) < 5_000:  # well inside the run: some batches written, most not
        assert proc.poll() is None, "the import finished before it could be killed"
        assert time.monotonic() < deadline
        time.sleep(0.05)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert 0 < _metric_rows(db) < 60_000
    rerun = subprocess.run([*cmd, "--report", str(tmp_path / "report.json")], env=env,
                           capture_output=True, text=True, check=False)
    assert rerun.returncode == 0, rerun.stderr
    doc = json.loads((tmp_path / "report.json").read_text())
    assert [r["status"] for r in doc["runs"]] == ["repaired"]
    dest = MlflowDestination(uri)
    runs = _active_runs(dest, "my-ws/my-proj")
    assert len(runs) == 1
    assert runs[0].data.tags["nm.status"] == "complete"
    assert [str(f) for f in verify_runs(reader, dest, VerifyOptions(import_options=OPTS)).findings] == []
    history = dest.client.get_metric_history(runs[0].info.run_id, "train/loss")
    assert sorted(m.step for m in history) == list(range(30_000))


@pytest.mark.server
def test_import_through_a_faulty_network_completes_and_equals_the_dump(
    tmp_path: Path, mlflow_server: MlflowBackend
) -> None:
    build_dump(tmp_path / "dump", tmp_path, run_ids=("FAULT-1", "FAULT-2"), points=3000)
    reader = DumpReader(tmp_path / "dump")
    upstream = mlflow_server.tracking_uri.removeprefix("http://")
    faults = [
        Fault("POST", "runs/log-batch", "429", every=3),
        Fault("POST", "runs/log-batch", "drop_after_forward", every=5),
        Fault("POST", "runs/create", "503", every=2, limit=1),
        Fault("GET", "runs/search|runs/get", "drop", every=4),
        # A call that makes several requests (finish_series uploads several artifacts) is retried
        # as a whole, so faults that hit every n-th request forever are capped here.
        Fault("PUT", "mlflow-artifacts", "503", every=3, limit=3),
    ]
    policy = RetryPolicy(max_attempts=8, initial_wait=0.01, max_wait=0.2, max_total=60)
    with FaultProxy(upstream, faults) as proxy:
        dest = MlflowDestination(proxy.url, "faults-{project}")
        report = import_runs(reader, dest, ImportOptions(retry=policy))
    assert [r.status for r in report.runs] == ["created", "created"], [r.message for r in report.runs]
    assert {a for _, _, a in proxy.injected} >= {"429", "drop_after_forward", "503", "drop"}
    assert report.retries >= len(proxy.injected) - 1
    direct = MlflowDestination(mlflow_server.tracking_uri, "faults-{project}")
    assert [str(f) for f in verify_runs(reader, direct, VerifyOptions(import_options=OPTS)).findings] == []
    assert len(_active_runs(direct, "faults-my-ws/my-proj")) == 2


@pytest.mark.server
def test_verify_reports_exactly_the_tampering(tmp_path: Path, mlflow_server: MlflowBackend) -> None:
    build_dump(tmp_path / "dump", tmp_path, run_ids=("TAMPER-1",), points=20)
    reader = DumpReader(tmp_path / "dump")
    dest = MlflowDestination(mlflow_server.tracking_uri, "tamper-{project}")
    import_runs(reader, dest, OPTS)
    vopts = VerifyOptions(import_options=OPTS)
    assert verify_runs(reader, dest, vopts).findings == []
    found = dest.find_run(key("TAMPER-1"))
    assert found is not None
    run_id = found.run_id
    client = dest.client
    from mlflow.entities import Metric

    # MLflow has no API to delete a point or edit a param or timestamp: edit the server's database.
    # (MLflow steps 50, 60 are Neptune steps 5, 6: train/special's half steps give the run scale 10.)
    with sqlite3.connect(mlflow_server.db_path) as conn:
        conn.execute("DELETE FROM metrics WHERE run_uuid=? AND key='train/loss' AND step=50", (run_id,))
        conn.execute("UPDATE metrics SET timestamp=timestamp+1 WHERE run_uuid=? AND key='train/loss' AND step=60",
                     (run_id,))
        conn.execute("UPDATE params SET value='sgd' WHERE run_uuid=? AND key='parameters/optimizer'", (run_id,))
    client.set_tag(run_id, "intruder", "1")
    client.log_batch(run_id, metrics=[Metric("train/loss", 99.0, 0, 10_000)])
    [weights] = [p for p in mlflow_server.artifacts_root.rglob("weights.bin") if run_id in p.parts]
    weights.unlink()
    report = verify_runs(reader, dest, vopts)
    items = sorted((f.kind, f.item, f.step) for f in report.findings)
    assert items == [  # exactly one finding per tampering, nothing else (steps as MLflow holds them)
        ("differs", "param:parameters/optimizer", None),
        ("differs", "series:float:train/loss", 60.0),
        ("extra", "meta:intruder", None),
        ("extra", "series:float:train/loss", 10000.0),
        ("missing", "file:neptune/files/model/weights/weights.bin", None),
        ("missing", "series:float:train/loss", 50.0),
    ]
    assert not report.ok


def _renaming_dump(root: Path) -> DumpReader:
    """A run whose keys MLflow refuses (renamed, one collision), fractional steps, inf, a long param."""
    with DumpWriter(root) as dump, dump.begin_run(key("PLAN-1")) as run:
        run.add_points("float", float_points("loss(train)", [0.5, 1.5], [1.0, float("inf")]))
        run.add_points("float", float_points("loss[train]", [0, 1], [2.0, 3.0]))
        run.add_points("float", float_points("ok/metric", [0, 1], [4.0, 5.0]))
        run.commit(make_record(key("PLAN-1"), fields={"notes": Field("string", "x" * 7000),
                                                       "a=b": Field("int", 1)}))
    return DumpReader(root)


@pytest.mark.server
def test_dry_run_sends_no_mutating_request_and_plans_what_the_import_reports(
    tmp_path: Path, mlflow_server: MlflowBackend
) -> None:
    reader = _renaming_dump(tmp_path / "dump")
    upstream = mlflow_server.tracking_uri.removeprefix("http://")
    with FaultProxy(upstream) as proxy:
        dest = MlflowDestination(proxy.url, "plan-{project}")
        plan = import_runs(reader, dest, ImportOptions(retry=FAST, dry_run=True))
        assert proxy.requests, "the dry run looked the run up"
        assert proxy.mutating_requests() == []
    [planned] = plan.runs
    assert planned.status == "would_create"
    kinds = {lo["kind"] for lo in planned.losses}
    assert {"key_renamed", "key_collision", "step_converted", "param_truncated", "inf_clamped"} <= kinds
    assert set(planned.renamed_keys) == {"loss(train)", "loss[train]", "a=b"}
    real = import_runs(reader, MlflowDestination(mlflow_server.tracking_uri, "plan-{project}"), OPTS)
    [done] = real.runs
    assert done.status == "created"
    assert done.renamed_keys == planned.renamed_keys
    assert done.collisions == planned.collisions
    assert done.step_changes == planned.step_changes
    assert sorted(map(str, done.losses)) == sorted(map(str, planned.losses))


@pytest.mark.slow  # default run: tests/cli/test_cli_contract.py covers every exit code through the CLI
def test_cli_import_verify_exit_codes_and_reports(tmp_path: Path, cli: Any) -> None:
    reader = _renaming_dump(tmp_path / "dump")
    uri = f"sqlite:///{tmp_path}/mlflow.db"
    dump = str(reader.root)
    plan = cli("import", dump, "--to", "mlflow", "--tracking-uri", uri, "--dry-run",
               "--report", str(tmp_path / "p.json"))
    assert plan.returncode == 0, plan.stderr  # renames and truncation are reported, not blocking
    assert "nothing was written" in plan.stderr
    assert not (tmp_path / "mlflow.db").exists()  # not even an empty database was created
    assert not (reader.root / "_ledger").exists()
    done = cli("import", dump, "--to", "mlflow", "--tracking-uri", uri, "--workers", "2")
    assert done.returncode == 0, done.stderr
    assert "created 1" in done.stderr
    assert list((reader.root / "_reports").glob("import-mlflow-*.json"))
    ok = cli("verify", dump, "--to", "mlflow", "--tracking-uri", uri, "--html", str(tmp_path / "v.html"),
             "--report", str(tmp_path / "v.json"))
    assert ok.returncode == 0, ok.stderr
    assert json.loads((tmp_path / "v.json").read_text())["ok"] is True
    assert '<svg class="plot-svg"' in (tmp_path / "v.html").read_text()
    with sqlite3.connect(tmp_path / "mlflow.db") as conn:
        conn.execute("UPDATE metrics SET value = 42 WHERE key = 'ok/metric' AND step = 1")
    bad = cli("verify", dump, "--to", "mlflow", "--tracking-uri", uri, "--report", str(tmp_path / "v2.json"))
    assert bad.returncode == 1
    [finding] = json.loads((tmp_path / "v2.json").read_text())["runs"][0]["findings"]
    assert (finding["kind"], finding["item"], finding["step"]) == ("differs", "series:float:ok/metric", 1.0)
    missing = cli("import", dump, "--to", "mlflow")
    assert missing.returncode == 2
    assert "MLFLOW_TRACKING_URI" in missing.stderr


def test_cli_dry_run_exits_4_and_import_exits_1_when_a_file_is_missing_from_the_dump(
    tmp_path: Path, cli: Any
) -> None:
    build_dump(tmp_path / "dump", tmp_path, run_ids=("LOST-1",), points=5)  # model/lost has no content
    uri = f"sqlite:///{tmp_path}/mlflow.db"
    plan = cli("import", str(tmp_path / "dump"), "--to", "mlflow", "--tracking-uri", uri, "--dry-run")
    assert plan.returncode == 4, plan.stderr
    assert "file_missing_in_dump" in plan.stderr
    done = cli("import", str(tmp_path / "dump"), "--to", "mlflow", "--tracking-uri", uri)
    assert done.returncode == 1, done.stderr
    assert "lost:" in done.stderr
    assert "model/lost" in done.stderr
    again = cli("verify", str(tmp_path / "dump"), "--to", "mlflow", "--tracking-uri", uri)
    # everything the dump holds arrived, but the dump itself lost model/lost at export: not "all match"
    assert again.returncode == 1, again.stderr
    text = " ".join(again.stderr.split())
    assert "findings: missing 0, extra 0, differs 0, error 0" in text
    assert "the destination matches the dump, but the dump lost data at export" in text
    assert "lost at export: my-ws/my-proj/LOST-1: missing_file model/lost" in text
