"""End to end against real Aim: a local repository, Aim's own query API, a SIGKILLed CLI import,
and a real `aim server` on 127.0.0.1."""

from __future__ import annotations

import io
import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from datetime import timedelta
from pathlib import Path

import pyarrow as pa
import pytest

from neptune_migrate.destinations.aim import mapping as m
from neptune_migrate.destinations.aim.destination import AimDestination
from neptune_migrate.dump.reader import DumpReader
from neptune_migrate.dump.writer import DumpWriter
from neptune_migrate.model import Field
from neptune_migrate.pipeline.import_ import ImportOptions, import_runs
from neptune_migrate.retry import FAST
from neptune_migrate.verify.verifier import VerifyOptions, verify_runs
from tests.factories import T0, build_dump, float_points, key, make_record

OPTS = ImportOptions(retry=FAST)


def _verify(reader: DumpReader, dest: AimDestination) -> list:  # type: ignore[type-arg]
    return verify_runs(reader, dest, VerifyOptions(import_options=OPTS)).findings


def _aim_hashes(repo: Path) -> list[str]:
    chunks = repo / ".aim" / "meta" / "chunks"
    return sorted(p.name for p in chunks.iterdir()) if chunks.is_dir() else []


def _loss_kinds(report) -> set[str]:  # type: ignore[no-untyped-def]
    return {lo["kind"] for r in report.runs for lo in r.losses}


def test_every_kind_round_trips_and_reimport_creates_nothing(tmp_path: Path) -> None:
    build_dump(tmp_path / "dump", tmp_path, run_ids=("PROJ-0", "PROJ-1"))
    reader = DumpReader(tmp_path / "dump")
    repo = tmp_path / "aim"
    dest = AimDestination(str(repo))
    report = import_runs(reader, dest, OPTS)
    assert [r.status for r in report.runs] == ["created", "created"], [r.message for r in report.runs]
    # uneven histogram edges (0, 1, 2.5) and a fake PNG are reported, not silently changed
    assert {"histogram_edges_lost", "file_not_image", "datetime_as_string"} <= _loss_kinds(report)
    assert _verify(reader, dest) == []
    hashes = _aim_hashes(repo)
    assert hashes == sorted(m.run_hash(key(r)) for r in ("PROJ-0", "PROJ-1"))
    dest.close()

    again = AimDestination(str(repo))
    report = import_runs(reader, again, OPTS)
    assert [r.status for r in report.runs] == ["skipped", "skipped"]
    assert _aim_hashes(repo) == hashes
    assert _verify(reader, again) == []
    snap = again.read_snapshot(again.find_run(key("PROJ-1")).run_id)  # type: ignore[union-attr]
    assert snap.params["parameters/batch_size"] == m.param_text(64)
    assert snap.extra["neptune.fork.parent"] == m.param_text("my-ws/my-proj/PROJ-0")
    assert snap.extra["neptune.fork.parent_hash"] == m.param_text(m.run_hash(key("PROJ-0")))
    assert snap.start_time == T0
    again.close()


def test_verify_sees_what_changed_in_aim(tmp_path: Path) -> None:
    build_dump(tmp_path / "dump", tmp_path)
    reader = DumpReader(tmp_path / "dump")
    dest = AimDestination(str(tmp_path / "aim"))
    import_runs(reader, dest, OPTS)
    from aim import Run

    run = Run(run_hash=m.run_hash(key()), repo=str(tmp_path / "aim"), system_tracking_interval=None,
              capture_terminal_logs=False)
    run["parameters"] = {**run["parameters"], "lr": 0.5}
    run.track(123.0, name="train/loss", step=7)
    run.close()
    items = {(f.kind, f.item) for f in _verify(reader, dest)}
    assert ("differs", "param:parameters/lr") in items
    assert ("differs", "series:float:train/loss") in items
    dest.close()


def test_aims_own_repo_and_query_api_see_the_import(tmp_path: Path) -> None:
    build_dump(tmp_path / "dump", tmp_path, points=100)
    dest = AimDestination(str(tmp_path / "aim"))
    import_runs(DumpReader(tmp_path / "dump"), dest, OPTS)
    dest.close()
    script = textwrap.dedent(f"""
        import json
        from aim import Repo
        repo = Repo.from_path({str(tmp_path / "aim")!r})
        runs = [r.run for r in repo.query_runs("run.neptune.run_id == 'PROJ-1'", report_mode=0).iter_runs()]
        metrics = list(repo.query_metrics("metric.name == 'train/loss'", report_mode=0).iter())
        steps, (values,) = metrics[0].data.view(["val"]).numpy()
        print(json.dumps({{"runs": [(r.name, r.experiment, r["parameters"]["optimizer"]) for r in runs],
                          "points": len(values), "last": float(values[-1])}}))
    """)
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, check=True, timeout=120)
    got = json.loads(out.stdout.strip().splitlines()[-1])
    assert got == {"runs": [["resnet-baseline", "my-ws/my-proj", "adam"]], "points": 100, "last": 1 / 100}


def test_real_images_become_aim_images(tmp_path: Path) -> None:
    from PIL import Image

    buf = io.BytesIO()
    Image.new("RGB", (3, 2), (0, 128, 255)).save(buf, format="PNG")
    with DumpWriter(tmp_path / "dump") as dump, dump.begin_run(key()) as run:
        sha, size = run.store_bytes(buf.getvalue())
        run.add_points("file", pa.table({
            "path": ["images/x"] * 2, "step": [1.0, 2.0],
            "timestamp": pa.array([T0, T0 + timedelta(seconds=1)], pa.timestamp("us", tz="UTC")),
            "sha256": [sha, None], "size": [size, None], "name": ["a.png", "b.png"],
            "mime_type": ["image/png"] * 2, "missing": [None, "gone"],
        }))
        run.commit(make_record(key(), fields={}))
    reader = DumpReader(tmp_path / "dump")
    dest = AimDestination(str(tmp_path / "aim"))
    report = import_runs(reader, dest, OPTS)
    assert report.runs[0].status == "created", report.runs[0].message
    assert "file_not_image" not in _loss_kinds(report)
    assert _verify(reader, dest) == []
    from aim import Repo
    from aim.storage.context import Context

    run = Repo.from_path(str(tmp_path / "aim")).get_run(m.run_hash(key()))
    [(step, (image, _, _))] = list(run.get_image_sequence("images/x", Context({})).data.items())
    assert step == 1
    assert image.size == (3, 2)
    dest.close()


def test_parallel_workers_write_separate_runs(tmp_path: Path) -> None:
    ids = ("PROJ-1", "PROJ-2", "PROJ-3", "PROJ-4")
    build_dump(tmp_path / "dump", tmp_path, run_ids=ids, points=300)
    reader = DumpReader(tmp_path / "dump")
    dest = AimDestination(str(tmp_path / "aim"))
    report = import_runs(reader, dest, ImportOptions(retry=FAST, workers=3))
    assert [r.status for r in report.runs] == ["created"] * 4, [r.message for r in report.runs]
    assert _verify(reader, dest) == []
    dest.close()


@pytest.mark.slow  # default run: tests/store/test_aim_repo.py kills an Aim import during repository creation
def test_sigkill_mid_import_then_rerun_gives_one_complete_run(tmp_path: Path, cli_env: dict[str, str]) -> None:
    with DumpWriter(tmp_path / "dump") as dump, dump.begin_run(key()) as run:
        for start in range(0, 60_000, 20_000):
            steps = list(range(start, start + 20_000))
            run.add_points("float", float_points("train/loss", steps, [s / 7 for s in steps]))
        run.commit(make_record(key(), fields={"p": Field("int", 1)}))
    repo = tmp_path / "aim"
    args = [sys.executable, "-m", "neptune_migrate", "import", str(tmp_path / "dump"), "--to", "aim",
            "--aim-repo", str(repo)]
    proc = subprocess.Popen(args, env=cli_env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 60
    while not (repo / ".aim" / "meta" / "chunks" / m.run_hash(key())).is_dir():
        assert proc.poll() is None, "the import finished before it could be killed"
        assert time.monotonic() < deadline
        time.sleep(0.05)
    time.sleep(1.0)  # mid-series
    assert proc.poll() is None, "the import finished before it could be killed"
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    dest = AimDestination(str(repo))
    found = dest.find_run(key())
    assert found is not None
    assert not found.complete
    dest.close()

    rerun = subprocess.run([*args, "--report", str(tmp_path / "report.json")], env=cli_env, capture_output=True,
                           text=True, timeout=300, check=False)
    assert rerun.returncode == 0, rerun.stdout + rerun.stderr
    assert [r["status"] for r in json.loads((tmp_path / "report.json").read_text())["runs"]] == ["repaired"]
    dest = AimDestination(str(repo))
    assert _aim_hashes(repo) == [m.run_hash(key())]
    assert _verify(DumpReader(tmp_path / "dump"), dest) == []
    dest.close()


@pytest.mark.server
def test_remote_aim_server_round_trip(tmp_path: Path, aim_server: str) -> None:
    build_dump(tmp_path / "dump", tmp_path, run_ids=("PROJ-0", "PROJ-1"), points=50)
    reader = DumpReader(tmp_path / "dump")
    artifacts = f"file://{tmp_path / 'artifacts'}"
    dest = AimDestination(aim_server, artifacts_uri=artifacts)
    report = import_runs(reader, dest, OPTS)
    assert [r.status for r in report.runs] == ["created", "created"], [r.message for r in report.runs]
    assert _verify(reader, dest) == []
    dest.close()
    again = AimDestination(aim_server, artifacts_uri=artifacts)
    report = import_runs(reader, again, OPTS)
    assert [r.status for r in report.runs] == ["skipped", "skipped"]
    assert _verify(reader, again) == []
    again.close()


@pytest.mark.parametrize("fixture", [name for name, *_ in __import__("tests.conftest").conftest.FIXTURE_SOURCES])
def test_every_fixture_imports_verifies_and_reimports_as_a_no_op(
    fixture: str, fixture_dumps: dict[str, Path], tmp_path: Path
) -> None:
    if fixture not in fixture_dumps:
        pytest.skip(f"{fixture}: source not available")
    reader = DumpReader(fixture_dumps[fixture])
    repo = tmp_path / "aim"
    dest = AimDestination(str(repo))
    report = import_runs(reader, dest, OPTS)
    assert {r.status for r in report.runs} == {"created"}, [(r.key, r.message) for r in report.runs]
    assert [str(f) for f in _verify(reader, dest)] == []
    dest.close()
    hashes = _aim_hashes(repo)
    assert len(hashes) == len(report.runs)
    again = AimDestination(str(repo))
    assert {r.status for r in import_runs(reader, again, OPTS).runs} == {"skipped"}
    assert _aim_hashes(repo) == hashes
    again.close()


@pytest.mark.server
@pytest.mark.parametrize(
    "fixture", ["scale-offline", "offline-neptune1", "exporter-neptune2-current", "exporter-models"]
)
def test_fixtures_through_a_remote_aim_server_verify(
    fixture: str, fixture_dumps: dict[str, Path], tmp_path: Path, aim_server: str
) -> None:
    # The server's repository is shared by the session: these fixtures' run keys are unique in it.
    reader = DumpReader(fixture_dumps[fixture])
    dest = AimDestination(aim_server, artifacts_uri=f"file://{tmp_path / 'artifacts'}")
    report = import_runs(reader, dest, OPTS)
    assert {r.status for r in report.runs} == {"created"}, [(r.key, r.message) for r in report.runs]
    assert [str(f) for f in _verify(reader, dest)] == []
    dest.close()
