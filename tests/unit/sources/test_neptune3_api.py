"""`--from neptune3-api`: the real neptune-query client against the 3.x fake server on 127.0.0.1."""

from __future__ import annotations

import hashlib
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import pytest

from neptune_migrate.dump.reader import DumpReader
from neptune_migrate.dump.writer import DumpWriter
from neptune_migrate.model import ForkPoint, RunKey, SourceRunId
from neptune_migrate.pipeline.export import ExportSummary, export_runs
from neptune_migrate.retry import RetryPolicy
from neptune_migrate.sources import load_source
from neptune_migrate.sources.base import RunSelection, SourceOptions
from neptune_migrate.sources.neptune3_api.errors import UnknownProjectError
from neptune_migrate.sources.neptune3_api.source import Neptune3ApiSource
from tests.support.fake_neptune.v3 import FakeNeptune3, Fault, Point

pytest.importorskip("neptune_query")

PROJECT = "my-ws/my-proj"
T0 = datetime(2025, 1, 2, 3, 4, 5, tzinfo=timezone.utc)
T0_MS = int(T0.timestamp() * 1000)
WEIGHTS = b"model weights v1\n"
PNG = b"\x89PNG\r\n\x1a\nfake-image-bytes"
TEST_POLICY = RetryPolicy(max_attempts=6, initial_wait=0.01, max_wait=60.0, max_total=30.0, max_outage=0.0)


def _fill(fake: FakeNeptune3) -> None:
    w = fake.add_blob("parent-run/model/weights.txt", WEIGHTS)
    img = fake.add_blob("parent-run/images/0/red.png", PNG)
    img["mime"] = "image/png"
    fake.add_run(
        "parent-run", created=datetime(2025, 1, 1, tzinfo=timezone.utc),
        modified=datetime(2025, 1, 5, 6, 7, 8, 123000, tzinfo=timezone.utc),
        name="exp-resnet", description="a baseline", tags={"baseline", "resnet"}, group_tags={"group-a"},
        fields={"parameters/lr": ("float", 0.001), "parameters/bs": ("int", 64), "parameters/opt": ("string", "adam"),
                "parameters/bn": ("bool", True), "parameters/layers": ("stringSet", {"64", "128"}),
                "info/start": ("datetime", datetime(2025, 1, 2, 3, 4, 5, 678000, tzinfo=timezone.utc)),
                "model/weights": ("fileRef", w)},
        series={
            "train/loss": ("floatSeries", [Point(float(s), T0_MS + 1000 * s, 1 / (s + 1)) for s in range(6)]
                           + [Point(6.5, T0_MS + 6500, 0.1, preview=True, completion=0.5)]),
            "train/log": ("stringSeries", [Point(float(s), T0_MS + 1000 * s + 1, f"epoch {s}") for s in range(5)]),
            "hist/w": ("histogramSeries", [Point(0.0, T0_MS, {"type": "COUNTING", "edges": [0.0, 1.0, 2.0, 3.0],
                                                              "values": [1.0, 5.0, 2.0]})]),
            "images/preds": ("fileRefSeries", [Point(0.0, T0_MS + 7, img)]),
            "monitoring/cpu": ("floatSeries", [Point(float(s), T0_MS + 1000 * s, 40.0 + s) for s in range(3)]),
        })
    fake.add_run("child-run", created=datetime(2025, 1, 3, tzinfo=timezone.utc), fork_parent="parent-run",
                 fork_step=3.0, fields={"parameters/lr": ("float", 0.0005)},
                 series={"train/loss": ("floatSeries", [Point(float(s), T0_MS + 1000 * s, 0.1 / s)
                                                        for s in (4, 5, 6)])})


@pytest.fixture(scope="module")
def server() -> Iterator[FakeNeptune3]:
    with FakeNeptune3() as fake:
        _fill(fake)
        yield fake


@pytest.fixture
def fake(server: FakeNeptune3) -> Iterator[FakeNeptune3]:
    server.counts.clear()
    server.requests.clear()
    server.searches.clear()
    server.faults.clear()
    yield server
    server.faults.clear()
    server.on_search = None
    server.series_page = 1000
    server.delay = 0.0
    server.max_offset = None
    server.shuffle_ties = False
    server.latency = 0.0
    server.max_in_flight = 0
    server.searches.clear()


def _source(fake: FakeNeptune3, project: str = PROJECT, **kw: Any) -> Neptune3ApiSource:
    options = SourceOptions(path=Path("."), project=project, api_token=fake.token(), **kw)
    source = load_source("neptune3-api", options)
    assert isinstance(source, Neptune3ApiSource)
    source.retry_policy = TEST_POLICY
    return source


def _export(source: Neptune3ApiSource, out: Path, selection: RunSelection | None = None) -> ExportSummary:
    with DumpWriter(out) as writer:
        return export_runs(source, writer, selection or RunSelection(), location="live")


def _series(reader: DumpReader, run_id: str, kind: str, path: str, project: str = PROJECT) -> list[dict[str, Any]]:
    run = reader.get_run(RunKey(project, SourceRunId(run_id)))
    assert run is not None
    return reader.read_series(run, kind, path).to_pylist()  # type: ignore[arg-type]


def test_every_field_and_series_kind_reaches_the_dump(fake: FakeNeptune3, tmp_path: Path) -> None:
    summary = _export(_source(fake), tmp_path / "dump")
    assert [(r.key, r.status) for r in summary.runs] == [
        ("my-ws/my-proj/parent-run", "exported"), ("my-ws/my-proj/child-run", "exported")]
    reader = DumpReader(tmp_path / "dump")
    parent = reader.get_run(RunKey(PROJECT, SourceRunId("parent-run")))
    assert parent is not None
    rec = parent.record
    assert {k: (f.type, f.value) for k, f in rec.fields.items()} == {
        "info/start": ("datetime", datetime(2025, 1, 2, 3, 4, 5, 678000, tzinfo=timezone.utc)),
        "parameters/bn": ("bool", True), "parameters/bs": ("int", 64),
        "parameters/layers": ("string_set", frozenset({"64", "128"})), "parameters/lr": ("float", 0.001),
        "parameters/opt": ("string", "adam")}
    sysi = rec.system
    assert (sysi.experiment_name, sysi.description, sysi.custom_run_id, sysi.owner) == (
        "exp-resnet", "a baseline", "parent-run", "tester")
    assert sysi.tags == {"baseline", "resnet"} and sysi.group_tags == {"group-a"}
    assert sysi.created_at == datetime(2025, 1, 1, tzinfo=timezone.utc)
    assert sysi.modified_at == datetime(2025, 1, 5, 6, 7, 8, 123000, tzinfo=timezone.utc)
    assert (sysi.failed, sysi.trashed) == (False, False)
    assert rec.provenance.details["sys_id"] == "MY-P-1"
    # Floats: steps, values and millisecond timestamps; the preview point is left out by default.
    loss = _series(reader, "parent-run", "float", "train/loss")
    assert [(p["step"], p["value"]) for p in loss] == [(float(s), 1 / (s + 1)) for s in range(6)]
    assert [p["timestamp"] for p in loss] == [T0 + timedelta(seconds=s) for s in range(6)]
    assert [p["value"] for p in _series(reader, "parent-run", "float", "monitoring/cpu")] == [40.0, 41.0, 42.0]
    logs = _series(reader, "parent-run", "string", "train/log")
    assert [(p["step"], p["value"], p["timestamp"]) for p in logs] == [
        (float(s), f"epoch {s}", T0 + timedelta(seconds=s, milliseconds=1)) for s in range(5)]
    hist = _series(reader, "parent-run", "histogram", "hist/w")
    assert [(h["type"], h["edges"], h["values"]) for h in hist] == [("COUNTING", [0.0, 1.0, 2.0, 3.0], [1.0, 5.0, 2.0])]
    images = _series(reader, "parent-run", "file", "images/preds")
    assert [(i["step"], i["name"], i["size"], i["sha256"], i["mime_type"]) for i in images] == [
        (0.0, "red.png", len(PNG), hashlib.sha256(PNG).hexdigest(), "image/png")]
    assert reader.verified_blob(images[0]["sha256"]).read_bytes() == PNG
    (weights,) = rec.files
    assert (weights.attribute_path, weights.name, weights.size, weights.sha256) == (
        "model/weights", "weights.txt", len(WEIGHTS), hashlib.sha256(WEIGHTS).hexdigest())
    # The fork: only the child's own points (lineage NONE), and the fork point recorded.
    child = reader.get_run(RunKey(PROJECT, SourceRunId("child-run")))
    assert child is not None
    assert child.record.fork == ForkPoint(RunKey(PROJECT, SourceRunId("parent-run")), 3.0)
    assert [p["step"] for p in _series(reader, "child-run", "float", "train/loss")] == [4.0, 5.0, 6.0]
    assert all(q["series"]["lineage"] == "NONE" for _, body in fake.requests for q in body["requests"])
    # Neither the token, its key nor a signed URL's signature is anywhere in the dump.
    from tests.support.fake_neptune.v3 import API_KEY

    for part in (tmp_path / "dump").rglob("*"):
        if part.is_file():
            data = part.read_bytes()
            assert fake.token().encode() not in data and API_KEY.encode() not in data
            assert b"s3cr3t-signature-value" not in data
    # Runs are read ahead together: each float series' first page is asked for once, and the three
    # share one request (two when the child's worker reaches the server first and reads ahead alone).
    floats = [b for r, b in fake.requests if r == "float"]
    assert sorted((q["series"]["holder"]["identifier"], q["series"]["attribute"]) for b in floats
                  for q in b["requests"] if "afterStep" not in q) == [
        (f"{PROJECT}/{fake.runs[0].sys_id}", "monitoring/cpu"), (f"{PROJECT}/{fake.runs[0].sys_id}", "train/loss"),
        (f"{PROJECT}/{fake.runs[1].sys_id}", "train/loss")]
    assert len(floats) <= 2


def test_previews_are_kept_when_asked(fake: FakeNeptune3, tmp_path: Path) -> None:
    _export(_source(fake, include_previews=True), tmp_path / "dump", RunSelection(run_ids=("parent-run",)))
    loss = _series(DumpReader(tmp_path / "dump"), "parent-run", "float", "train/loss")
    assert [(p["step"], p["preview_completion"]) for p in loss][-2:] == [(5.0, None), (6.5, 0.5)]


@pytest.mark.parametrize(("points", "requests"), [(12, 4), (13, 4), (3, 1)])
def test_float_pages_go_down_by_after_step_and_a_full_last_page_asks_once_more(
    fake: FakeNeptune3, tmp_path: Path, points: int, requests: int
) -> None:
    project = "my-ws/paging"
    fake.projects.add(project)
    name = f"long-{points}"
    fake.add_run(name, project=project, series={"m": ("floatSeries", [
        Point(float(s), T0_MS + s, float(s) * 2) for s in range(points)])})
    source = _source(fake, project=project)
    source.points_page = 4
    _export(source, tmp_path / "dump", RunSelection(run_ids=(name,)))
    got = _series(DumpReader(tmp_path / "dump"), name, "float", "m", project=project)
    assert [p["step"] for p in got] == [float(s) for s in range(points)]
    assert [p["value"] for p in got] == [float(s) * 2 for s in range(points)]
    floats = [body for route, body in fake.requests if route == "float"]
    assert len(floats) == requests
    assert [b["requests"][0].get("afterStep") for b in floats] == [None, *[
        float(points - 4 * k - 4) for k in range(requests - 1)]]
    assert all(b["order"] == "descending" and b["perSeriesPointsLimit"] == 4 for b in floats)


def test_string_series_pages_follow_search_after_tokens(fake: FakeNeptune3, tmp_path: Path) -> None:
    fake.series_page = 2
    _export(_source(fake), tmp_path / "dump", RunSelection(run_ids=("parent-run",)))
    logs = _series(DumpReader(tmp_path / "dump"), "parent-run", "string", "train/log")
    assert [p["value"] for p in logs] == [f"epoch {s}" for s in range(5)]
    tokens = [b["requests"][0].get("searchAfter", {}).get("token") for r, b in fake.requests
              if r == "series" and b["requests"][0]["series"]["attribute"] == "train/log"]
    assert tokens == [None, "2", "4"]


def test_listing_is_ascending_and_never_loses_or_repeats_a_run_created_meanwhile(
    fake: FakeNeptune3, tmp_path: Path
) -> None:
    project = "my-ws/listing"
    fake.projects.add(project)
    same = datetime(2025, 3, 1, tzinfo=timezone.utc)
    for i in range(5):  # five runs share one creation time, across the page boundary (pages of 2)
        fake.add_run(f"r{i}", project=project, created=same)

    def add_during(f: FakeNeptune3, offset: int) -> None:
        if offset == 2:
            f.add_run("late", project=project, created=datetime(2025, 3, 2, tzinfo=timezone.utc))

    fake.on_search = add_during
    source = _source(fake, project=project)
    source.list_page = 2
    summary = _export(source, tmp_path / "dump")
    assert sorted(r.key.rsplit("/", 1)[1] for r in summary.runs) == ["late", "r0", "r1", "r2", "r3", "r4"]
    assert len(summary.runs) == 6
    assert fake.counts["values"] == 1  # the six runs' values are read ahead in one request


def test_a_run_changed_on_the_server_is_read_again_and_an_unchanged_one_is_skipped_without_requests(
    fake: FakeNeptune3, tmp_path: Path
) -> None:
    project = "my-ws/live"
    fake.projects.add(project)
    created = datetime(2025, 6, 1, tzinfo=timezone.utc)
    changing = fake.add_run("changing", project=project, created=created, modified=created, series={
        "m": ("floatSeries", [Point(float(s), T0_MS + s, s / 2) for s in range(3)])})
    fake.add_run("still", project=project, created=created + timedelta(seconds=1), series={
        "m": ("floatSeries", [Point(0.0, T0_MS, 1.0)])})
    dump = tmp_path / "dump"
    source = _source(fake, project=project)
    assert source.location == fake.base_url
    assert fake.token() not in source.location
    assert [r.status for r in _export(source, dump).runs] == ["exported", "exported"]

    changing.series["m"][1].append(Point(3.0, T0_MS + 3, 9.0))  # a new point, a later modification time
    changing.modified = created + timedelta(hours=1)
    fake.counts.clear()
    fake.requests.clear()
    summary = _export(_source(fake, project=project), dump)
    outcome = {r.key.rsplit("/", 1)[1]: (r.status, r.message) for r in summary.runs}
    assert outcome["changing"][0] == "exported"
    assert "changed on the server" in outcome["changing"][1]
    assert outcome["still"] == ("skipped", "already complete in the dump")
    # Only the changed run was read: one attribute request, one float page, none for the other run.
    assert fake.counts["values"] == 1
    assert fake.counts["float"] == 1
    assert [b["requests"][0]["series"]["holder"]["identifier"] for _, b in fake.requests] == [
        f"{project}/{changing.sys_id}"]
    rows = _series(DumpReader(dump), "changing", "float", "m", project=project)
    assert [(r["step"], r["value"]) for r in rows] == [(0.0, 0.0), (1.0, 0.5), (2.0, 1.0), (3.0, 9.0)]


def test_filters_are_applied_on_the_server(fake: FakeNeptune3, tmp_path: Path) -> None:
    selection = RunSelection(tags=("group-a",), modified_after=datetime(2025, 1, 4, tzinfo=timezone.utc))
    summary = _export(_source(fake), tmp_path / "dump", selection)
    assert [r.key for r in summary.runs] == ["my-ws/my-proj/parent-run"]
    assert fake.counts["values"] == 1  # the child was never read
    est = _source(fake).estimate(RunSelection(run_ids=("child-run",)))
    assert (est.runs, est.points) == (1, 3)


def test_a_429_retry_after_of_12_is_honoured_exactly_and_503_and_resets_are_retried(
    fake: FakeNeptune3, tmp_path: Path
) -> None:
    source = _source(fake)
    source.retry_after_scale = 0.01
    fake.faults.extend([Fault("float", 429, {"Retry-After": "12"}), Fault("values", 503, times=2),
                        Fault("series", drop=True), Fault("blob", 503)])
    started = time.monotonic()
    summary = _export(source, tmp_path / "dump", RunSelection(run_ids=("parent-run",)))
    assert [r.status for r in summary.runs] == ["exported"]
    assert [w for _, w in source.retrier.waits] == [pytest.approx(0.12)]
    assert source.retrier.retries == 5
    assert time.monotonic() - started >= 0.12
    assert fake.faults == []
    loss = _series(DumpReader(tmp_path / "dump"), "parent-run", "float", "train/loss")
    assert len(loss) == 6


def _cli(fake: FakeNeptune3, tmp_path: Path, token: str, *args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "NEPTUNE_API_TOKEN": token, "PYTHONPATH": str(Path(__file__).parents[3])}
    return subprocess.run([sys.executable, "-m", "neptune_migrate", "export", "--from",
                           "neptune3-api", "--out", str(tmp_path / "dump"), *args],
                          capture_output=True, text=True, env=env, timeout=120, check=False)


def test_a_rejected_token_or_unknown_project_is_one_line_exit_2_and_the_token_is_never_printed(
    fake: FakeNeptune3, tmp_path: Path
) -> None:
    bad = fake.token(api_key="wrong-key-0123456789")
    done = _cli(fake, tmp_path, bad, "--project", PROJECT)
    assert done.returncode == 2, done.stderr
    out = done.stdout + done.stderr
    assert "rejected the Neptune API token" in out
    assert bad not in out and "wrong-key-0123456789" not in out
    assert "Traceback" not in out
    assert len([line for line in done.stderr.splitlines() if "error" in line]) == 1
    with pytest.raises(UnknownProjectError) as caught:
        _source(fake, project="my-ws/nope").describe()
    assert caught.value.exit_code == 2
    assert str(caught.value) == (f"project 'my-ws/nope' not found on {fake.base_url} (or the token cannot see it)")


@pytest.mark.slow
def test_the_cli_exports_a_live_project(fake: FakeNeptune3, tmp_path: Path) -> None:
    done = _cli(fake, tmp_path, fake.token(), "--project", PROJECT, "--run-id", "child-run")
    assert done.returncode == 0, done.stderr
    reader = DumpReader(tmp_path / "dump")
    assert [str(r.key) for r in reader.runs()] == ["my-ws/my-proj/child-run"]
    assert fake.token() not in (tmp_path / "dump" / "manifest.json").read_text()
    for report in (tmp_path / "dump").rglob("*.json"):
        assert fake.token() not in report.read_text()


_EXPORTER = """
import sys
from pathlib import Path
from neptune_migrate.dump.writer import DumpWriter
from neptune_migrate.pipeline.export import export_runs
from neptune_migrate.sources import load_source
from neptune_migrate.sources.base import RunSelection, SourceOptions
token, project, out, state = sys.argv[1:5]
source = load_source("neptune3-api", SourceOptions(path=Path("."), project=project, api_token=token,
                                                   state_dir=Path(state)))
source.points_page = 100
with DumpWriter(Path(out)) as writer:
    export_runs(source, writer, RunSelection(), location="live")
"""


def _long_run(fake: FakeNeptune3, project: str, points: int) -> None:
    fake.projects.add(project)
    fake.add_run("long", project=project, series={"m": ("floatSeries", [
        Point(float(s), T0_MS + s, s / 7) for s in range(points)])})


def test_kill_9_in_a_long_series_then_rerun_resumes_from_the_checkpoint(fake: FakeNeptune3, tmp_path: Path) -> None:
    project = "my-ws/resume"
    _long_run(fake, project, 2000)  # 20 pages of 100
    fake.delay = 0.05
    state = tmp_path / "state"
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).parents[3])}
    proc = subprocess.Popen([sys.executable, "-c", _EXPORTER, fake.token(), project, str(tmp_path / "dump"),
                             str(state)], env=env)
    deadline = time.monotonic() + 90
    while sum(1 for r, _ in fake.requests if r == "float") < 8 and time.monotonic() < deadline:
        time.sleep(0.02)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    checkpoints = list(state.rglob("checkpoint.json"))
    assert len(checkpoints) == 1
    saved = json.loads(checkpoints[0].read_text())
    assert not saved["done"] and 7 <= saved["pages"] < 20
    assert saved["cursor"] == 2000 - 100 * saved["pages"]
    assert not (tmp_path / "dump" / "runs").exists() or not any((tmp_path / "dump" / "runs").iterdir())
    fake.delay = 0.0
    fake.requests.clear()
    source = _source(fake, project=project, state_dir=state)
    source.points_page = 100
    _export(source, tmp_path / "dump")
    floats = [b for r, b in fake.requests if r == "float"]
    # Only the pages after the checkpoint (2000 points = 20 full pages, then one empty page).
    assert len(floats) == 21 - saved["pages"]
    assert floats[0]["requests"][0]["afterStep"] == saved["cursor"]
    got = _series(DumpReader(tmp_path / "dump"), "long", "float", "m", project=project)
    assert [(p["step"], p["value"]) for p in got] == [(float(s), s / 7) for s in range(2000)]
    assert not any(state.iterdir())  # the run's resume state is gone once it is read in full
    fresh = _source(fake, project=project)
    _export(fresh, tmp_path / "fresh")
    assert _series(DumpReader(tmp_path / "fresh"), "long", "float", "m", project=project) == got


@pytest.mark.slow
def test_a_series_of_a_million_points(fake: FakeNeptune3, tmp_path: Path) -> None:
    project = "my-ws/million"
    _long_run(fake, project, 1_000_000)
    source = _source(fake, project=project)
    _export(source, tmp_path / "dump")
    got = _series(DumpReader(tmp_path / "dump"), "long", "float", "m", project=project)
    assert len(got) == 1_000_000
    assert [p["step"] for p in got[:3]] == [0.0, 1.0, 2.0] and got[-1]["step"] == 999_999.0
    assert sum(1 for r, _ in fake.requests if r == "float") == 11  # 10 full pages of 100,000, one empty


@pytest.mark.parametrize("fixture", ["scale-offline", "exporter-neptune3"])
def test_the_same_content_served_live_gives_the_offline_dump_apart_from_documented_differences(
    tmp_path: Path, fixture: str
) -> None:
    """neptune-scale's offline fixture (written by the real client) or the official neptune-exporter's
    parquet of a 3.x project -> dump -> served by the fake -> live export -> the same dump."""
    from tests.conftest import export_fixture
    from tests.support.fake_neptune.v3_data import serve_dump

    offline = export_fixture(fixture, tmp_path / "offline")
    projects = sorted({r.key.project for r in DumpReader(offline).runs()})
    with FakeNeptune3(projects=()) as fake:
        serve_dump(fake, offline)
        source = _source(fake, project=",".join(projects), include_previews=True)
        assert [r.status for r in _export(source, tmp_path / "live").runs] == ["exported"] * len(
            list(DumpReader(offline).runs()))
        # The trap the source avoids: neptune-query's default lineage puts the parent's points into the fork.
        import neptune_query.runs as nq_runs
        from neptune_query import set_api_token

        set_api_token(fake.token())
        inherited = None
        if fixture == "scale-offline":
            inherited = nq_runs.fetch_metrics(project=PROJECT, runs=["child-run"], attributes="train/loss")
    off, live = DumpReader(offline), DumpReader(tmp_path / "live")
    assert sum(s.count for r in live.runs() for s in r.record.series) > 0
    assert sorted(str(r.key) for r in off.runs()) == sorted(str(r.key) for r in live.runs())
    for a in off.runs():
        b = live.get_run(a.key)
        assert b is not None
        ra, rb = a.record, b.record
        # Documented differences: datetimes are milliseconds on the server; owner, modification time,
        # failed and trashed come from the server; provenance differs.
        assert {k: f.value for k, f in rb.fields.items()} == {
            k: (f.value.replace(microsecond=f.value.microsecond // 1000 * 1000) if f.type == "datetime" else f.value)
            for k, f in ra.fields.items()} or _nan_equal(ra.fields, rb.fields)
        assert (rb.system.tags, rb.system.group_tags, rb.system.experiment_name, rb.system.description,
                rb.system.created_at) == (ra.system.tags, ra.system.group_tags, ra.system.experiment_name,
                                          ra.system.description, ra.system.created_at)
        assert rb.fork == ra.fork
        assert [(f.attribute_path, f.name, f.sha256, f.size) for f in rb.files] == [
            (f.attribute_path, f.name, f.sha256, f.size) for f in ra.files]
        assert [(s.path, s.kind, s.count, s.first_step, s.last_step) for s in rb.series] == [
            (s.path, s.kind, s.count, s.first_step, s.last_step) for s in ra.series]
        for s in ra.series:
            pa_rows = off.read_series(a, s.kind, s.path).to_pylist()
            pb_rows = live.read_series(b, s.kind, s.path).to_pylist()
            for x, y in zip(pa_rows, pb_rows, strict=True):
                x["timestamp"] = x["timestamp"].replace(microsecond=x["timestamp"].microsecond // 1000 * 1000)
                assert json.dumps(x, default=str, sort_keys=True) == json.dumps(y, default=str, sort_keys=True)
    if inherited is not None:
        child_points = len(_series(live, "child-run", "float", "train/loss"))
        assert len(inherited) > child_points == 3


def _nan_equal(a: Any, b: Any) -> bool:
    return all(a[k].same_as(b[k]) for k in a) and set(a) == set(b)


def test_the_selection_becomes_one_nql_query() -> None:
    from neptune_migrate.sources.neptune3_api.mapping import selection_nql

    assert selection_nql(RunSelection()) is None
    nql = selection_nql(RunSelection(run_ids=("a", 'b"c'), run_regex="^ch", tags=("t",),
                                     created_after=datetime(2025, 1, 1, tzinfo=timezone.utc),
                                     created_before=datetime(2025, 2, 1, 12, tzinfo=timezone.utc)))
    assert nql == ('((`sys/custom_run_id`:string == "a") OR (`sys/custom_run_id`:string == "b\\"c")) AND '
                   '(`sys/custom_run_id`:string MATCHES "^ch") AND '
                   '((`sys/tags`:stringSet CONTAINS "t") OR (`sys/group_tags`:stringSet CONTAINS "t")) AND '
                   '(`sys/creation_time`:datetime >= "2025-01-01T00:00:00Z") AND '
                   '(`sys/creation_time`:datetime < "2025-02-01T12:00:00Z")')


def test_a_server_that_does_not_answer_is_exit_3_after_the_retries(tmp_path: Path) -> None:
    import socket

    from neptune_migrate.sources.neptune3_api.errors import ServerUnreachableError
    from tests.support.fake_neptune.v3 import make_token

    with socket.socket() as s:  # a port nothing listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    token = make_token(f"http://127.0.0.1:{port}")
    source = load_source("neptune3-api", SourceOptions(path=Path("."), project=PROJECT, api_token=token))
    assert isinstance(source, Neptune3ApiSource)
    source.retry_policy = RetryPolicy(max_attempts=3, initial_wait=0.01, max_wait=0.05, max_total=5.0, max_outage=0.0)
    with pytest.raises(ServerUnreachableError) as caught:
        source.describe()
    assert caught.value.exit_code == 3
    assert source.retrier.retries == 2
    assert str(caught.value) == (f"http://127.0.0.1:{port} did not answer (listing runs of {PROJECT}) after the "
                                 "retries (ConnectError)")
    assert token not in str(caught.value)


def test_a_shared_first_page_then_each_long_series_goes_on_alone(fake: FakeNeptune3, tmp_path: Path) -> None:
    project = "my-ws/shared"
    fake.projects.add(project)
    fake.add_run("two", project=project, series={
        "a": ("floatSeries", [Point(float(s), T0_MS + s, s + 0.5) for s in range(9)]),
        "b": ("floatSeries", [Point(0.0, T0_MS, -1.0)])})
    source = _source(fake, project=project)
    source.points_page = 4
    _export(source, tmp_path / "dump")
    reader = DumpReader(tmp_path / "dump")
    assert [(p["step"], p["value"]) for p in _series(reader, "two", "float", "a", project)] == [
        (float(s), s + 0.5) for s in range(9)]
    assert [(p["step"], p["value"]) for p in _series(reader, "two", "float", "b", project)] == [(0.0, -1.0)]
    floats = [b for r, b in fake.requests if r == "float"]
    # Shared page: 2 points each (4 / 2 series); then `a` alone below step 7 in pages of 4: 4, 3 points.
    assert [(len(b["requests"]), b["perSeriesPointsLimit"], b["requests"][0].get("afterStep")) for b in floats] == [
        (2, 2, None), (1, 4, 7.0), (1, 4, 3.0)]


def test_the_request_budget_spaces_requests(fake: FakeNeptune3, tmp_path: Path) -> None:
    source = _source(fake, rate=2.0)
    started = time.monotonic()
    _export(source, tmp_path / "dump", RunSelection(run_ids=("child-run",)))
    took = time.monotonic() - started
    sent = sum(fake.counts[r] for r in ("search", "values", "float", "series", "signed"))
    assert source.requests == sent == 4  # describe, listing, attribute values, one float page
    # The shared budget is a token bucket holding one second of requests (2 here): the other 2 wait.
    assert took >= (sent - 2) / 2.0


def test_keyset_listing_never_needs_a_large_offset_and_keeps_every_tie(fake: FakeNeptune3, tmp_path: Path) -> None:
    project = "my-ws/keyset"
    fake.projects.add(project)
    day = datetime(2025, 4, 1, tzinfo=timezone.utc)
    # Pairs of runs sharing one millisecond, then three: every page boundary falls inside a tie (pages of 3).
    times = [day + timedelta(milliseconds=m) for m in (0, 0, 1, 1, 2, 2, 3, 3, 3)]
    for i, t in enumerate(times):
        fake.add_run(f"k{i}", project=project, created=t)
    fake.max_offset = 6  # refuses deep offsets (2.x does beyond 10,000); plain offset paging would need 12
    source = _source(fake, project=project)
    source.list_page = 3
    assert [k.run_id for k in source.list_runs()] == [f"k{i}" for i in range(9)]
    # Offset 0, but when one instant fills a whole page (k6-k8): that instant alone, by id, then after it.
    assert [(b["pagination"]["offset"], b["sorting"]["sortBy"]["name"]) for b in fake.searches] == [
        (0, "sys/creation_time"), (0, "sys/creation_time"), (0, "sys/creation_time"), (0, "sys/creation_time"),
        (0, "sys/id"), (3, "sys/id"), (0, "sys/creation_time")]


def test_keyset_listing_keeps_every_tie_when_the_server_orders_ties_differently_each_time(
    fake: FakeNeptune3,
) -> None:
    project = "my-ws/shuffled"
    fake.projects.add(project)
    day = datetime(2025, 4, 2, tzinfo=timezone.utc)
    # Groups of 4 runs sharing a millisecond, pages of 3: every boundary falls inside a tie.
    for i in range(12):
        fake.add_run(f"s{i:02d}", project=project, created=day + timedelta(milliseconds=i // 4))
    fake.shuffle_ties = True  # ties come in a new order in every answer
    source = _source(fake, project=project)
    source.list_page = 3
    keys = [k.run_id for k in source.list_runs()]
    assert sorted(keys) == [f"s{i:02d}" for i in range(12)]
    assert len(keys) == 12


@pytest.mark.slow
def test_25000_runs_cross_the_10000_boundary_with_ties_and_a_server_offset_limit(fake: FakeNeptune3) -> None:
    project = "my-ws/many"
    fake.projects.add(project)
    day = datetime(2025, 5, 1, tzinfo=timezone.utc)
    for i in range(25_000):  # runs in groups of 7 sharing a millisecond, across both page boundaries
        fake.add_run(f"m{i:05d}", project=project, created=day + timedelta(milliseconds=i // 7))
    fake.max_offset = 10_000
    source = _source(fake, project=project)
    keys = [k.run_id for k in source.list_runs()]
    assert keys == [f"m{i:05d}" for i in range(25_000)]
    assert len(fake.searches) == 3


# ---------------------------------------------------------------------------------------------------
# --workers bounds the whole export: several runs at once, requests in flight never above N


def _cheap_runs(fake: FakeNeptune3, project: str, n: int, *, rich: bool = True) -> None:
    fake.projects.add(project)
    created = datetime(2025, 7, 1, tzinfo=timezone.utc)
    for i in range(n):
        series: dict[str, tuple[str, list[Point]]] = {
            "loss": ("floatSeries", [Point(float(s), T0_MS + s, 1 / (s + 1 + i)) for s in range(3)])}
        fields: dict[str, tuple[str, Any]] = {"params/i": ("int", i)}
        if rich:
            series["log"] = ("stringSeries", [Point(0.0, T0_MS, f"run {i}")])
            fields["model/file"] = ("fileRef", fake.add_blob(f"{project}/{i}/file.bin", f"bytes of {i}".encode()))
        fake.add_run(f"cheap-{i}", project=project, created=created + timedelta(seconds=i), fields=fields,
                     series=series)


def _content(dump: Path) -> dict[str, Any]:
    """Per run: the record and every point of every series (commit times aside, the whole dump)."""
    reader = DumpReader(dump)
    out: dict[str, Any] = {}
    for run in reader.runs():
        tables = {(s.kind, s.path): reader.read_series(run, s.kind, s.path).to_pylist() for s in run.record.series}
        out[str(run.key)] = (run.record, tables)
    return out


def test_workers_read_several_runs_at_once_and_the_dump_is_the_same_for_any_n(fake: FakeNeptune3,
                                                                             tmp_path: Path) -> None:
    project = "my-ws/workers"
    _cheap_runs(fake, project, 12)
    fake.latency = 0.02
    one = _export(_source(fake, project=project, workers=1), tmp_path / "one")
    assert fake.max_in_flight == 1
    fake.max_in_flight = 0
    source = _source(fake, project=project, workers=4)
    source.runs_per_batch = 1  # runs read one by one: the read-ahead's shared requests would hide the workers
    four = _export(source, tmp_path / "four")
    assert source.run_workers == 4
    assert fake.max_in_flight == 4  # 4 runs at once, every request through one budget: never 5
    assert [r.key for r in four.runs] == [r.key for r in one.runs]
    assert [r.status for r in four.runs] == ["exported"] * 12
    content = _content(tmp_path / "four")
    assert content == _content(tmp_path / "one")
    assert len(content) == 12
    assert all(len(rec.files) == 1 and rec.files[0].sha256 for rec, _ in content.values())


def test_small_runs_are_read_ahead_in_shared_requests_and_the_dump_equals_run_by_run(
    fake: FakeNeptune3, tmp_path: Path
) -> None:
    project = "my-ws/batched"
    _cheap_runs(fake, project, 30)
    fake.add_run("no-series", project=project, created=datetime(2025, 8, 1, tzinfo=timezone.utc),
                 fields={"params/only": ("float", 0.5)})
    single = _source(fake, project=project, workers=2)
    single.runs_per_batch = 1
    _export(single, tmp_path / "single")
    fake.counts.clear()
    shared = _source(fake, project=project, workers=2)
    shared.runs_per_batch = 8
    summary = _export(shared, tmp_path / "shared")
    assert [r.status for r in summary.runs] == ["exported"] * 31
    assert _content(tmp_path / "shared") == _content(tmp_path / "single")
    # 31 runs in groups of 8 (fewer when a worker starts a group before its neighbour is handed out):
    # about 4 values and 4 float requests instead of 31 + 30; the string series and files stay per run.
    assert 4 <= fake.counts["values"] <= 8 and 4 <= fake.counts["float"] <= 8, fake.counts


def test_a_run_left_out_of_a_shared_answer_is_read_on_its_own(fake: FakeNeptune3, tmp_path: Path) -> None:
    project = "my-ws/left-out"
    _cheap_runs(fake, project, 6, rich=False)
    _export(_source(fake, project=project, workers=1), tmp_path / "expected")
    left_out = fake.runs[-3].sys_id
    fake.left_out_of_shared = {left_out}
    fake.counts.clear()
    fake.requests.clear()
    summary = _export(_source(fake, project=project, workers=1), tmp_path / "dump")
    assert [r.status for r in summary.runs] == ["exported"] * 6
    assert _content(tmp_path / "dump") == _content(tmp_path / "expected")
    # One shared read of the six runs, then the left-out run's own values and float request.
    assert fake.counts["values"] == 2 and fake.counts["float"] == 2
    own = [b for r, b in fake.requests if r == "float" and len(b["requests"]) == 1]
    assert [q["series"]["holder"]["identifier"] for b in own for q in b["requests"]] == [f"{project}/{left_out}"]


def test_four_workers_export_runs_faster_than_one(fake: FakeNeptune3, tmp_path: Path) -> None:
    project = "my-ws/rate"
    _cheap_runs(fake, project, 16, rich=False)
    fake.latency = 0.1  # every request waits 0.1 s on the server: the run rate is bound by the requests
    rates = {}
    for workers in (1, 4):
        fake.counts.clear()
        started = time.monotonic()
        source = _source(fake, project=project, workers=workers)
        source.runs_per_batch = 1  # each run with its own requests: the rate is the workers'
        summary = _export(source, tmp_path / f"w{workers}")
        rates[workers] = len(summary.runs) / (time.monotonic() - started)
        assert [r.status for r in summary.runs] == ["exported"] * 16
        assert fake.counts["float"] == 16
    # 2 requests per run one after another: 1 worker ~ 5 runs/s; 4 workers ~ 4x that (listing aside).
    assert rates[4] / rates[1] >= 2.0, rates


def test_since_last_fetches_only_new_and_changed_runs_and_the_dump_equals_a_full_export(
        fake: FakeNeptune3, tmp_path: Path) -> None:
    project = "my-ws/since"
    _cheap_runs(fake, project, 3, rich=False)
    first = _cli(fake, tmp_path, fake.token(), "--project", project, "--since-last")
    assert first.returncode == 0, first.stderr
    assert "no watermark for this source in the dump yet: full export" in first.stderr
    now = datetime.now(timezone.utc)
    changed = fake.find(project, f"{project}/SINC-2")
    assert changed is not None
    changed.series["loss"][1].append(Point(3.0, T0_MS + 3, 0.125))  # a new point on the server
    changed.modified = now
    fake.add_run("fresh", project=project, created=now, modified=now,
                 series={"loss": ("floatSeries", [Point(0.0, T0_MS, 7.0)])})
    fake.counts.clear()
    fake.requests.clear()
    again = _cli(fake, tmp_path, fake.token(), "--project", project, "--since-last")
    assert again.returncode == 0, again.stderr
    assert "since-last: runs created or modified since" in again.stderr
    # Only the changed and the new run were listed and read: one attribute request and one float page each.
    # (the two runs are read ahead together: one shared values request, first pages in shared requests)
    assert fake.counts["values"] == 1
    assert sorted(q["series"]["holder"]["identifier"] for r, b in fake.requests if r == "float"
                  for q in b["requests"]) == [f"{project}/SINC-2", f"{project}/SINC-4"]
    assert "my-ws/since/fresh" in again.stderr
    # The dump equals a full export of the server as it is now.
    full = _export(_source(fake, project=project), tmp_path / "full")
    assert [r.status for r in full.runs] == ["exported"] * 4
    got, want = _content(tmp_path / "dump"), _content(tmp_path / "full")
    assert {k: v[1] for k, v in got.items()} == {k: v[1] for k, v in want.items()}
    assert {k: (v[0].fields, v[0].system, v[0].files) for k, v in got.items()} == {
        k: (v[0].fields, v[0].system, v[0].files) for k, v in want.items()}
    assert [r["value"] for r in _series(DumpReader(tmp_path / "dump"), "cheap-1", "float", "loss", project)] == [
        1 / 2, 1 / 3, 1 / 4, 0.125]


def test_a_token_without_access_is_one_line_exit_2(fake: FakeNeptune3, tmp_path: Path) -> None:
    with fake.fault(Fault("search", 403)):
        done = _cli(fake, tmp_path, fake.token(), "--project", PROJECT)
    assert done.returncode == 2, done.stderr
    assert "refused listing runs of my-ws/my-proj (HTTP 403): the API token lacks access" in done.stderr
    assert "Traceback" not in done.stderr + done.stdout
    assert fake.token() not in done.stderr + done.stdout
    assert fake.counts["search"] == 1  # not retried


@pytest.mark.slow  # ~20 s (two CLI subprocesses); test_kill_9_in_a_long_series_... is the default-run case
def test_kill_9_while_4_runs_are_read_then_the_same_command_resumes_to_an_uninterrupted_dump(
        fake: FakeNeptune3, tmp_path: Path) -> None:
    project = "my-ws/kill"
    _cheap_runs(fake, project, 6, rich=False)
    fake.add_run("long", project=project, created=datetime(2025, 6, 1, tzinfo=timezone.utc), series={
        "log": ("stringSeries", [Point(float(s), T0_MS + s, f"line {s}") for s in range(20_000)])})  # 20 pages
    fake.delay = 0.1
    env = {**os.environ, "NEPTUNE_API_TOKEN": fake.token(), "PYTHONPATH": str(Path(__file__).parents[3])}
    args = [sys.executable, "-m", "neptune_migrate", "export", "--from", "neptune3-api", "--project", project,
            "--out", str(tmp_path / "dump"), "--workers", "4"]
    proc = subprocess.Popen(args, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 90
    while fake.counts["series"] < 8 and time.monotonic() < deadline and proc.poll() is None:
        time.sleep(0.02)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    fake.delay = 0.0
    fake.counts.clear()
    again = subprocess.run(args, env=env, capture_output=True, text=True, timeout=120, check=False)
    assert again.returncode == 0, again.stderr
    # The long series resumes from its checkpoint (at least 7 pages kept), not from its first page.
    assert fake.counts["series"] <= 20 - 7 + 1
    full = _export(_source(fake, project=project), tmp_path / "full")
    assert [r.status for r in full.runs] == ["exported"] * 7
    assert _content(tmp_path / "dump") == _content(tmp_path / "full")


def test_dry_run_counts_from_the_servers_own_counters_without_any_series_or_file_request(
        fake: FakeNeptune3, tmp_path: Path) -> None:
    done = _cli(fake, tmp_path, fake.token(), "--project", PROJECT, "--dry-run", "--json")
    assert done.returncode == 0, done.stderr
    doc = json.loads(done.stdout)
    runs = [run for run in fake.runs if run.project == PROJECT and not run.trashed]
    assert len(runs) >= 2
    points = sum(len(pts) for run in runs for _, pts in run.series.values())
    assert (doc["runs"], doc["points"]) == (len(runs), points)
    assert doc["bytes"] == sum(run.size_bytes() for run in runs)
    assert not (tmp_path / "dump").exists()
    assert (fake.counts["values"], fake.counts["float"], fake.counts["series"], fake.counts["signed"],
            fake.counts["blob"]) == (0, 0, 0, 0, 0)
