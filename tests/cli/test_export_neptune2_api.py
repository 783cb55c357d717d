"""`export --from neptune2-api`: the real neptune 1.x client against a fake 2.x server on 127.0.0.1."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import threading
import time
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import pytest

from neptune_migrate.dump.reader import DumpReader
from neptune_migrate.dump.writer import DumpWriter
from neptune_migrate.pipeline.export import ExportSummary, export_runs
from neptune_migrate.sources.base import RunSelection, SourceOptions
from neptune_migrate.sources.neptune2_api.source import Neptune2ApiSource
from tests.support.fake_neptune import v2_fixtures
from tests.support.fake_neptune.v2 import FakeNeptune2, small_project
from tests.support.inprocess import run_cli

insecure_oauth = v2_fixtures.insecure_oauth  # autouse: plain http to the fake, no token from the environment
server = v2_fixtures.server

T0 = datetime(2024, 3, 1, 12, 0, tzinfo=timezone.utc)


def export(server: FakeNeptune2, dump: Path, selection: RunSelection | None = None, slept: list[float] | None = None,
           **options: Any) -> tuple[ExportSummary, Neptune2ApiSource]:
    opts = SourceOptions(path=Path(), api_token=server.api_token(), state_dir=dump / "_state", **options)
    source = Neptune2ApiSource(opts)
    record = slept if slept is not None else []

    def sleep(seconds: float) -> None:  # the retrier's waits, recorded and shortened
        record.append(seconds)
        time.sleep(min(seconds, 0.01))

    source.retrier.sleep = sleep
    with DumpWriter(dump) as writer:
        summary = export_runs(source, writer, selection or RunSelection(projects=("ws/proj",)), location="fake")
    return summary, source


def points(dump: Path) -> dict[str, list[tuple[str, float, Any, Any]]]:
    """Every point of every run: run id -> sorted (path, step, value, timestamp)."""
    reader = DumpReader(dump)
    out: dict[str, list[tuple[str, float, Any, Any]]] = {}
    for run in reader.runs():
        rows: list[tuple[str, float, Any, Any]] = []
        for kind in ("float", "string"):
            for s in run.record.series:
                if s.kind == kind:
                    t = reader.read_series(run, kind, s.path)
                    rows += zip(t["path"].to_pylist(), t["step"].to_pylist(), t["value"].to_pylist(),
                                t["timestamp"].to_pylist(), strict=True)
        out[run.key.run_id] = sorted(rows)
    return out


def records(dump: Path) -> dict[str, Any]:
    return {run.key.run_id: run.record for run in DumpReader(dump).runs()}


# ---------------------------------------------------------------------------------------------------
# A small project, every field kind, through the real console entry point


def test_small_project_every_kind_through_the_cli(server: FakeNeptune2, capsys, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    small_project(server)
    token = server.api_token()
    dump = tmp_path / "dump"
    _, out, err = run_cli(capsys, "export", "--from", "neptune2-api", "--api-token", token, "--project", "ws/proj",
                          "--out", str(dump), "--json", check_rc=0)
    assert "exported 3, skipped 0" in err
    assert json.loads(out)["counts"]["exported"] == 3
    recs = records(dump)
    r1 = recs["PROJ-1"]
    assert r1.system.name == "baseline" and r1.system.description == "first try"
    assert r1.system.tags == {"a", "b"} and r1.system.group_tags == {"g1"}
    assert r1.system.created_at == T0 and r1.system.state == "idle" and r1.system.failed is False
    assert {k: (f.type, f.value) for k, f in r1.fields.items() if k.startswith("params/")} == {
        "params/lr": ("float", 0.01), "params/epochs": ("int", 10), "params/use_bn": ("bool", True),
        "params/optimizer": ("string", "adam"), "params/started": ("datetime", T0 + timedelta(seconds=5)),
        "params/labels": ("string_set", frozenset({"cat", "dog"})),
    }
    assert recs["PROJ-2"].system.failed is True and recs["PROJ-3"].system.custom_run_id == "custom-3"
    pts = points(dump)
    loss = [p for p in pts["PROJ-1"] if p[0] == "train/loss"]
    ts0 = T0
    assert [(p[1], p[2]) for p in loss] == [(float(s), 1.0 / (s + 1)) for s in range(25)]
    assert loss[3][3] == ts0 + timedelta(seconds=3)
    assert [p[2] for p in pts["PROJ-1"] if p[0] == "logs/stdout"] == [f"line {s}" for s in range(4)]
    assert [p[2] for p in pts["PROJ-1"] if p[0] == "monitoring/cpu"] == [10.0 + s for s in range(5)]
    files = {(f.attribute_path, f.name): f for f in r1.files}
    assert files[("model/weights", "weights.bin")].size == len(b"\x00\x01weights" * 10)
    assert files[("source_code/files", "train.py")].size == len(b"print('hi')\n")
    assert files[("source_code/files", "cfg/a.yaml")].size == len(b"a: 1\n")
    blob = DumpReader(dump).verified_blob(files[("model/weights", "weights.bin")].sha256 or "")
    assert blob.read_bytes() == b"\x00\x01weights" * 10
    # The token never appears in the output, the dump or the report.
    assert token not in out + err
    api_key = next(iter(server.api_keys))
    for p in dump.rglob("*"):
        if p.is_file():
            data = p.read_bytes()
            assert token.encode() not in data and api_key.encode() not in data, p
    # The dump reads back clean (the empty `_state/` folder is tool state, not data).
    _, out, _ = run_cli(capsys, "inspect", str(dump), "--json", check_rc=0)
    doc = json.loads(out)
    assert doc["runs"] == 3 and doc["problems"] == [] and doc["missing_files"] == 0
    assert doc["points"]["float"] == 25 + 5 + 7 and doc["points"]["string"] == 4
    # Run again: nothing changed on the server, nothing re-read.
    server.reset_counts()
    summary, _ = export(server, dump)
    assert [r.status for r in summary.runs] == ["skipped"] * 3
    assert server.count("/v1/attributes$") == 0


def test_bad_token_and_unknown_project_are_one_line_errors(server: FakeNeptune2, capsys, monkeypatch,  # type: ignore[no-untyped-def]
                                                            tmp_path: Path) -> None:
    small_project(server)
    bad = server.api_token("not-a-key")
    _, out, err = run_cli(capsys, "export", "--from", "neptune2-api", "--api-token", bad, "--project", "ws/proj",
                          "--out", str(tmp_path / "d1"), check_rc=2)
    assert "refused the API token (401)" in err
    assert bad not in out + err and "Traceback" not in err
    assert len(err.strip().splitlines()) <= 3
    monkeypatch.setenv("NEPTUNE_API_TOKEN", server.api_token())
    _, out, err = run_cli(capsys, "export", "--from", "neptune2-api", "--project", "ws/nope",
                          "--out", str(tmp_path / "d2"), check_rc=2)
    assert "project 'ws/nope' not found" in err
    _, _, err = run_cli(capsys, "export", "--from", "neptune-offline", "--out", str(tmp_path / "d3"), check_rc=2)
    assert "needs PATH" in err
    server.fault("/entries/search", "403")
    _, _, err = run_cli(capsys, "export", "--from", "neptune2-api", "--project", "ws/proj",
                        "--out", str(tmp_path / "d5"), check_rc=2)
    assert "no access (403) while listing the runs of ws/proj" in err
    assert server.count("/entries/search") == 1  # not retried
    monkeypatch.delenv("NEPTUNE_API_TOKEN")
    _, _, err = run_cli(capsys, "export", "--from", "neptune2-api", "--project", "ws/proj",
                        "--out", str(tmp_path / "d4"), check_rc=2)
    assert "no API token" in err


def test_workspace_takes_every_project_and_filters_run_on_the_server(server: FakeNeptune2) -> None:
    server.project("ws/a", "A")
    server.project("ws/b", "B")
    server.project("other/c", "C")
    for q in ("ws/a", "ws/a", "ws/b", "other/c"):
        server.add_run(q, tags={"keep"} if q != "ws/b" else set())
    source = Neptune2ApiSource(SourceOptions(path=Path(), api_token=server.api_token(), workspace="ws"))
    source.select(RunSelection())
    assert [str(k) for k in source.list_runs()] == ["ws/a/A-1", "ws/a/A-2", "ws/b/B-1"]
    source.select(RunSelection(tags=("keep",), run_ids=("A-2",)))
    server.reset_counts()
    assert [str(k) for k in source.list_runs()] == ["ws/a/A-2"]
    queries = [q for m, p, q in server.log if p.endswith("/entries/search") and json.loads(q)["type"] == ["run"]]
    assert len(queries) == 2  # one page of runs per project, the filter applied by the server


# ---------------------------------------------------------------------------------------------------
# Paging traps


def test_listing_crosses_the_offset_limit_with_ties_at_the_boundary(server: FakeNeptune2, tmp_path: Path,
                                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    # 20 runs, pages of 3, offset limit 6: windows end at runs 6, 12, 18; runs 5-9 share one creation time,
    # so the first window ends inside the tie (neptune 1.x's own `>` search-after would lose runs 7-9).
    server.max_offset = 6
    monkeypatch.setattr(Neptune2ApiSource, "LIST_PAGE", 3)
    monkeypatch.setattr(Neptune2ApiSource, "MAX_OFFSET", 6)
    for i in range(20):
        created = T0 + timedelta(minutes=5 if 4 <= i <= 8 else i)
        server.add_run("ws/proj", created)
    summary, _ = export(server, tmp_path / "dump")
    ids = [r.key for r in summary.runs]
    assert len(ids) == 20 and len(set(ids)) == 20
    assert {r.status for r in summary.runs} == {"exported"}

    # The client's own paging, same server: runs sharing the boundary time are lost.
    from neptune.api.searching_entries import iter_over_pages
    from neptune.internal.backends.hosted_neptune_backend import HostedNeptuneBackend
    from neptune.internal.credentials import Credentials

    backend = HostedNeptuneBackend(Credentials.from_token(server.api_token()))
    seen = [e.id for e in iter_over_pages(client=backend.leaderboard_client, project_id="ws/proj", types=["run"],
                                          query=None, attributes_filter={}, step_size=3, limit=None,
                                          sort_by="sys/creation_time", sort_by_column_type="datetime",
                                          ascending=True, progress_bar=False, max_offset=6)]
    assert len(set(seen)) < 20


def test_runs_created_while_listing_are_neither_lost_nor_repeated(server: FakeNeptune2, tmp_path: Path,
                                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(Neptune2ApiSource, "LIST_PAGE", 2)
    for _ in range(7):
        server.add_run("ws/proj")

    def add(page: int) -> None:
        if page == 2:
            server.add_run("ws/proj", datetime.now(timezone.utc))

    server.on_list_page = add
    summary, _ = export(server, tmp_path / "dump")
    ids = [str(r.key) for r in summary.runs]
    assert len(ids) == len(set(ids))
    assert {f"ws/proj/PROJ-{i}" for i in range(1, 8)} <= set(ids)


def test_series_pages_with_exclusive_skip_to_step(server: FakeNeptune2, tmp_path: Path,
                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(Neptune2ApiSource, "SERIES_PAGE", 10)
    run = server.add_run("ws/proj")
    run.float_series["m"] = [(float(s * 2), s / 3, 1_700_000_000_000 + s) for s in range(95)]
    export(server, tmp_path / "dump")
    got = points(tmp_path / "dump")["PROJ-1"]
    assert [(p[1], p[2]) for p in got] == [(float(s * 2), s / 3) for s in range(95)]
    assert server.count("/series/float") == 10
    assert not list((tmp_path / "dump" / "_state").glob("*"))  # checkpoints removed once the run is read


# ---------------------------------------------------------------------------------------------------
# Robustness and politeness


def test_a_write_that_fails_mid_series_ends_the_run_instead_of_hanging(server: FakeNeptune2, tmp_path: Path,
                                                                       monkeypatch: pytest.MonkeyPatch) -> None:
    # Fetching threads fill the bounded page queue (2 x workers) while the writing thread is gone:
    # without a cancel they would wait on it forever, and so would the end of the thread pool.
    import threading

    from neptune_migrate.dump.writer import RunWriter

    monkeypatch.setattr(Neptune2ApiSource, "SERIES_PAGE", 5)
    run = server.add_run("ws/proj")
    for name in ("a", "b", "c", "d"):
        run.float_series[name] = [(float(s), s / 3, 1_700_000_000_000 + s) for s in range(40)]
    written: list[int] = []
    original = RunWriter.add_points

    def add_points(self: RunWriter, *args: Any, **kwargs: Any) -> Any:
        if written:
            raise OSError("disk full")
        written.append(1)
        return original(self, *args, **kwargs)

    monkeypatch.setattr(RunWriter, "add_points", add_points)
    result: list[ExportSummary] = []
    worker = threading.Thread(target=lambda: result.append(export(server, tmp_path / "dump", workers=2)[0]),
                              daemon=True)
    worker.start()
    worker.join(timeout=10)
    assert not worker.is_alive(), "export_run hangs after a failed write"
    assert [(r.status, r.message) for r in result[0].runs] == [("failed", "OSError: disk full")]
    assert server.count("/series/float") < 4 * 8  # the fetching threads stopped early



def test_429_retry_after_12_is_honoured_exactly_and_faults_are_retried(server: FakeNeptune2, tmp_path: Path) -> None:
    small_project(server)
    server.fault("/series/float", "429", retry_after="12")
    server.fault("/v1/attributes$", "503", times=2)
    server.fault("/attributes/download", "drop")
    slept: list[float] = []
    summary, source = export(server, tmp_path / "dump", slept=slept)
    assert [r.status for r in summary.runs] == ["exported"] * 3
    # Retry-After: 12 waited 12 s (neptune 1.x would have waited 1 s: it reads the first digit only).
    # Which float series meets the 429 depends on which worker asks first (runs are read at once too).
    [(what, _)] = [w for w in source.retrier.waits if w[1] == 12.0]
    assert what in ("ws/proj/PROJ-1: train/loss", "ws/proj/PROJ-1: monitoring/cpu", "ws/proj/PROJ-2: train/loss")
    assert 12.0 in slept
    assert source.retrier.retries >= 3
    assert len(points(tmp_path / "dump")["PROJ-1"]) == 25 + 5 + 4


def test_workers_bound_concurrency_and_rate_spreads_requests(server: FakeNeptune2, tmp_path: Path) -> None:
    run = server.add_run("ws/proj")
    for i in range(6):
        run.float_series[f"m{i}"] = [(0.0, 1.0, 0)]
    server.latency = 0.05
    server.reset_counts()
    summary, source = export(server, tmp_path / "dump", workers=2, rate=5.0, models=False)  # runs only
    assert summary.runs[0].status == "exported"
    assert source.budget.requests == 3 + 6  # project, listing, attributes, 6 series
    assert server.max_in_flight == 2  # the 6 series were fetched 2 at a time, never more
    # 9 budgeted requests at 5/s with a burst of 5: the 9th starts 0.8 s after the 1st at the earliest.
    first = [p for _, p, _ in server.log].index("/api/backend/v1/projects/get")
    budgeted = server.times[first:]
    assert len(budgeted) == 9
    # Times are arrivals at the server: the first request's also carries the connection set-up, so
    # allow 50 ms of it (unbudgeted, 9 requests 2 at a time at 50 ms each would span ~0.25 s).
    assert budgeted[-1] - budgeted[0] >= 0.8 - 0.05


def test_dry_run_counts_from_the_server_without_series_downloads(server: FakeNeptune2, capsys, monkeypatch,  # type: ignore[no-untyped-def]
                                                                 tmp_path: Path) -> None:
    small_project(server)
    monkeypatch.setenv("NEPTUNE_API_TOKEN", server.api_token())
    dump = tmp_path / "dump"
    _, out, _ = run_cli(capsys, "export", "--from", "neptune2-api", "--project", "ws/proj", "--out", str(dump),
                        "--dry-run", "--json", check_rc=0)
    doc = json.loads(out)
    assert (doc["runs"], doc["points"]) == (3, 25 + 5 + 4 + 7)
    assert doc["details"]["files"] == 2 and doc["details"]["string_points"] == 4
    assert not dump.exists()
    series_requests = [q for m, p, q in server.log if "/series/" in p]
    assert len(series_requests) == 4 and all(json.loads(q)["limit"] == ["1"] for q in series_requests)
    assert server.count("/download") == 0


# ---------------------------------------------------------------------------------------------------
# Incremental and resumable


def test_since_last_fetches_only_new_and_changed_runs(server: FakeNeptune2, capsys, monkeypatch,  # type: ignore[no-untyped-def]
                                                      tmp_path: Path) -> None:
    runs = small_project(server)
    monkeypatch.setenv("NEPTUNE_API_TOKEN", server.api_token())
    dump = tmp_path / "dump"
    args = ("export", "--from", "neptune2-api", "--project", "ws/proj", "--out", str(dump))
    run_cli(capsys, *args, "--since-last", check_rc=0)
    manifest = json.loads((dump / "manifest.json").read_text())
    assert len(manifest["live_watermarks"]) == 1
    # People keep training: one run gets more points, one run is new.
    now = datetime.now(timezone.utc)
    runs[1].float_series["train/loss"] += [(float(s), 0.5, int(now.timestamp() * 1000)) for s in range(7, 10)]
    runs[1].touch(now)
    new = server.add_run("ws/proj", now, name="late")
    new.float_series["train/loss"] = [(0.0, 3.0, int(now.timestamp() * 1000))]
    server.reset_counts()
    _, _, err = run_cli(capsys, *args, "--since-last", check_rc=0)
    assert "exported 2, skipped 0" in err
    assert "since-last: runs created or modified since" in err
    assert server.count("/v1/attributes$") == 2  # only the changed and the new run were read
    assert server.count("/series/float") == 2
    query = json.loads(server.log[[p for _, p, _ in server.log].index(
        "/api/leaderboard/v1/leaderboard/entries/search")][2])
    assert query["projectIdentifier"] == ["ws/proj"]
    # The dump equals a full export of the same server.
    run_cli(capsys, *args[:-1], str(tmp_path / "full"), check_rc=0)
    assert points(dump) == points(tmp_path / "full")
    assert len(points(dump)["PROJ-2"]) == 10
    # A filtered export keeps its own watermark: an unfiltered --since-last after it is a full export.
    other = tmp_path / "filtered"
    run_cli(capsys, *args[:-1], str(other), "--tag", "a", check_rc=0)
    _, _, err = run_cli(capsys, *args[:-1], str(other), "--since-last", check_rc=0)
    assert "no watermark for this source in the dump yet: full export" in err
    assert "exported 3, skipped 1" in err


def _kill_then_rerun(server: FakeNeptune2, cli_env: dict[str, str], capsys: pytest.CaptureFixture[str],
                     tmp_path: Path, path_regex: str, after: int, query_has: str = "") -> tuple[Path, int]:
    """Start a real export subprocess, kill -9 it once the server saw `after` requests matching `path_regex`
    (and whose query holds `query_has`), re-run in this process; return the dump and the float-series
    requests of the re-run."""
    cli_env["OAUTHLIB_INSECURE_TRANSPORT"] = "1"
    cli_env["NEPTUNE_API_TOKEN"] = server.api_token()
    dump = tmp_path / "dump"
    args = ["export", "--from", "neptune2-api", "--project", "ws/proj", "--out", str(dump)]
    proc = subprocess.Popen([sys.executable, "-m", "neptune_migrate", *args], env=cli_env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 120
    def seen() -> int:
        rx = re.compile(path_regex)
        return sum(1 for _, path, query in list(server.log) if rx.search(path) and query_has in query)

    while seen() < after and time.monotonic() < deadline and proc.poll() is None:
        time.sleep(0.01)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    server.reset_counts()
    latency, server.latency = server.latency, 0.0
    os.environ["NEPTUNE_API_TOKEN"] = server.api_token()
    try:
        run_cli(capsys, *args, check_rc=0)
    finally:
        del os.environ["NEPTUNE_API_TOKEN"]
    server.latency = latency
    return dump, server.count("/series/float")


def _kill_fixture(server: FakeNeptune2) -> None:
    small_project(server)
    long = server.add_run("ws/proj")
    long.float_series["long"] = [(float(s), s * 0.5, 1_700_000_000_000 + s) for s in range(15_000)]
    server.add_run("ws/proj").float_series["short"] = [(0.0, 1.0, 0)]
    server.latency = 0.1


def test_kill_9_mid_export_then_rerun_equals_an_uninterrupted_export(server: FakeNeptune2, cli_env, capsys,  # type: ignore[no-untyped-def]
                                                                     tmp_path: Path) -> None:
    _kill_fixture(server)
    # Killed after the 11th page of PROJ-4's 15-page series, so after the checkpoint of page 10 (the other
    # runs are read at the same time, 4 at once). An uninterrupted export asks for 16 + 1 + 3 float pages;
    # the re-run at most 6 (pages 11-15 and the empty one after) + 1 + 3.
    dump, rerun_pages = _kill_then_rerun(server, cli_env, capsys, tmp_path, "/series/float", 11,
                                         query_has='"attribute": ["long"]')
    assert rerun_pages <= 6 + 1 + 3
    full = tmp_path / "full"
    export(server, full)
    assert points(dump) == points(full)
    assert len(points(dump)["PROJ-4"]) == 15_000
    assert {k: (r.fields, r.files, r.system) for k, r in records(dump).items()} == \
        {k: (r.fields, r.files, r.system) for k, r in records(full).items()}


@pytest.mark.slow
@pytest.mark.parametrize(("path_regex", "after"), [
    ("/entries/search", 1), ("/v1/attributes$", 2), ("/attributes/download", 1), ("/downloadFileSetZip", 1),
    ("/series/float", 5), ("/series/float", 15),
])
def test_kill_9_matrix(server: FakeNeptune2, cli_env, capsys, tmp_path: Path, path_regex: str,  # type: ignore[no-untyped-def]
                       after: int) -> None:
    _kill_fixture(server)
    dump, _ = _kill_then_rerun(server, cli_env, capsys, tmp_path, path_regex, after)
    full = tmp_path / "full"
    export(server, full)
    assert points(dump) == points(full)
    assert {k: (r.fields, r.files, r.system) for k, r in records(dump).items()} == \
        {k: (r.fields, r.files, r.system) for k, r in records(full).items()}


def test_estimate_and_budget_types() -> None:
    # The shared budget refuses nonsense, so a typo on the command line is not a silent no-limit.
    from neptune_migrate.sources.live_budget import RequestBudget

    with pytest.raises(ValueError, match="workers"):
        RequestBudget(0)
    clock = [0.0]
    slept: list[float] = []

    def sleep(s: float) -> None:
        slept.append(s)
        clock[0] += s

    budget = RequestBudget(1, rate=2.0, clock=lambda: clock[0], sleep=sleep)
    for _ in range(6):
        with budget.request():
            pass
    # A burst of 2 (one second's worth), then one request every 0.5 s.
    assert budget.requests == 6 and sum(slept) == pytest.approx(2.0)



# ---------------------------------------------------------------------------------------------------
# Equality with the offline source


_BACKEND_TYPE = {"float": "float", "int": "int", "bool": "bool", "string": "string", "datetime": "datetime",
                 "string_set": "stringSet"}


@pytest.mark.parametrize("fixture", ["offline-neptune1", "exporter-neptune2"])
def test_content_written_offline_and_served_live_gives_equal_dumps(server: FakeNeptune2, tmp_path: Path,
                                                                   fixture: str) -> None:
    """The real neptune 1.x client's offline runs (the `offline-neptune1` fixture, `--from neptune-offline`)
    and the official neptune-exporter's parquet of a 2.x project (`exporter-neptune2`, `--from
    neptune-exporter`), each exported, then the same content held by the fake 2.x server and exported
    live: equal fields, tags, points and files. Documented differences: the run key (the server's
    `sys/id`), server-computed `sys/*`, and timestamps in milliseconds (what a 2.x server stores)."""
    from tests.conftest import export_fixture

    offline = export_fixture(fixture, tmp_path / "offline")
    reader = DumpReader(offline)
    expected: dict[str, Any] = {}
    for i, run in enumerate(sorted(reader.runs(), key=lambda r: str(r.key))):
        rec = run.record
        live = server.add_run("my-ws/my-proj", T0 + timedelta(minutes=i), name=rec.system.name or "",
                              tags=set(rec.system.tags))
        for path, f in rec.fields.items():
            if not path.startswith("sys/"):
                live.fields[path] = (_BACKEND_TYPE[f.type], sorted(f.value) if isinstance(f.value, frozenset)
                                     else f.value)
        for s in rec.series:
            if s.kind in ("float", "string"):
                t = reader.read_series(run, s.kind, s.path)
                pts = [(step, value, int(ts.timestamp() * 1000)) for step, value, ts in zip(
                    t["step"].to_pylist(), t["value"].to_pylist(), t["timestamp"].to_pylist(), strict=True)]
                (live.float_series if s.kind == "float" else live.string_series)[s.path] = pts  # type: ignore[index]
        for fe in rec.files:
            if fe.sha256 is None:
                continue
            content = reader.verified_blob(fe.sha256).read_bytes()
            if fe.kind == "file":
                stem, _, ext = fe.name.rpartition(".")
                live.files[fe.attribute_path] = (content, ext if stem else "")
                live.file_names[fe.attribute_path] = stem or fe.name
            elif fe.kind == "file_set":
                live.file_sets.setdefault(fe.attribute_path, {})[fe.name] = content
        expected[live.sys_id] = rec
    summary, _ = export(server, tmp_path / "live", RunSelection(projects=("my-ws/my-proj",)))
    assert {r.status for r in summary.runs} == {"exported"}
    got = records(tmp_path / "live")
    live_points = points(tmp_path / "live")
    assert len(got) == len(expected) >= (2 if fixture == "offline-neptune1" else 1)
    compared_points = 0
    for run_id, rec in expected.items():
        live_rec = got[run_id]
        assert {k: f for k, f in live_rec.fields.items() if not k.startswith("sys/")} == \
            {k: f for k, f in rec.fields.items() if not k.startswith("sys/")}
        assert live_rec.system.tags == rec.system.tags
        want = []
        off_run = reader.get_run(rec.key)
        assert off_run is not None
        for s in rec.series:
            if s.kind in ("float", "string"):
                t = reader.read_series(off_run, s.kind, s.path)
                want += [(s.path, step, value, ts.replace(microsecond=ts.microsecond // 1000 * 1000))
                         for step, value, ts in zip(t["step"].to_pylist(), t["value"].to_pylist(),
                                                    t["timestamp"].to_pylist(), strict=True)]
        assert live_points[run_id] == sorted(want)
        compared_points += len(want)
        assert {(f.attribute_path, f.kind, f.name, f.sha256) for f in live_rec.files} == \
            {(f.attribute_path, f.kind, f.name, f.sha256) for f in rec.files if f.sha256 and f.kind != "artifact"}
    assert compared_points > 0


@pytest.mark.slow
def test_a_series_of_a_million_points_across_a_thousand_pages(server: FakeNeptune2, tmp_path: Path) -> None:
    n = 1_000_000
    server.add_run("ws/proj", T0).float_series["m"] = [(float(s), s * 0.5, 1_700_000_000_000 + s) for s in range(n)]
    summary, _ = export(server, tmp_path / "dump")
    assert [(r.status, r.points) for r in summary.runs] == [("exported", n)]
    assert server.count("/series/float") == n // 1000 + 1  # 1,000 full pages by skipToStep, then an empty one
    reader = DumpReader(tmp_path / "dump")
    [run] = list(reader.runs())
    table = reader.read_series(run, "float", "m")
    steps, values = table["step"].to_pylist(), table["value"].to_pylist()
    assert steps == [float(s) for s in range(n)]
    assert values[::99_999] == [s * 0.5 for s in range(0, n, 99_999)]
    stamps = table["timestamp"].to_pylist()
    assert (stamps[0], stamps[-1]) == (datetime.fromtimestamp(1_700_000_000, timezone.utc),
                                      datetime.fromtimestamp(1_700_000_000 + (n - 1) / 1000, timezone.utc))


@pytest.mark.slow
@pytest.mark.timeout(3600)
def test_25000_runs_cross_the_real_10000_offset_limit(server: FakeNeptune2) -> None:
    # The real limits (pages of 100, offset 10,000), 25,000 cheap runs, 30 of them sharing the creation time
    # at the first window's boundary (runs 9,985-10,014).
    for i in range(25_000):
        created = T0 + timedelta(seconds=9_985 if 9_985 <= i < 10_015 else i)
        server.add_run("ws/proj", created)
    source = Neptune2ApiSource(SourceOptions(path=Path(), api_token=server.api_token()))
    source.select(RunSelection(projects=("ws/proj",)))
    keys = list(source.list_runs())
    assert len(keys) == 25_000 and len(set(keys)) == 25_000
    # Windows: runs 0-9,999 (100 pages), from 9,985 on: 10,000 more (100 pages), then 5,016 (51 pages).
    assert server.count("/entries/search") == 251


def test_run_moves_a_live_project_into_mlflow_and_verifies(server: FakeNeptune2, capsys, monkeypatch,  # type: ignore[no-untyped-def]
                                                           tmp_path: Path) -> None:
    pytest.importorskip("mlflow")
    small_project(server)
    monkeypatch.setenv("NEPTUNE_API_TOKEN", server.api_token())
    store = f"sqlite:///{tmp_path / 'mlflow.db'}"
    base = ("run", "--from", "neptune2-api", "--to", "mlflow", "--tracking-uri", store)
    # A live source names no SOURCE and needs --dump and --project.
    _, _, err = run_cli(capsys, *base, "--project", "ws/proj", check_rc=2)
    assert "--from neptune2-api needs --dump" in err
    _, _, err = run_cli(capsys, *base, "--dump", str(tmp_path / "dump"), check_rc=2)
    assert "--from neptune2-api needs --project WORKSPACE/PROJECT" in err
    _, out, err = run_cli(capsys, *base, "--project", "ws/proj", "--dump", str(tmp_path / "dump"), "--json",
                          check_rc=0)
    doc = json.loads(out.strip().splitlines()[-1])
    phases = {p["phase"]: p for p in doc["phases"]}
    assert phases["export"]["counts"]["exported"] == 3
    assert phases["import"]["counts"] == {"created": 3}
    assert phases["verify"]["counts"] == {"runs": 3, "matching": 3, "findings": 0}
    import mlflow

    client = mlflow.tracking.MlflowClient(store)
    [run] = client.search_runs([e.experiment_id for e in client.search_experiments()],
                               "tags.`neptune.run_id` = 'PROJ-1'")
    loss = sorted(client.get_metric_history(run.info.run_id, "train/loss"), key=lambda m: m.step)
    assert [(m.step, m.value) for m in loss] == [(s, 1.0 / (s + 1)) for s in range(25)]
    assert server.api_token() not in out + err


# ---------------------------------------------------------------------------------------------------
# --workers bounds the whole export: several runs at once, requests in flight never above N


def _many_runs(server: FakeNeptune2, n: int) -> None:
    """`small_project` (every kind) plus `n` cheap runs of two short series each."""
    small_project(server)
    base = T0 + timedelta(days=1)
    for i in range(n):
        run = server.add_run("ws/proj", base + timedelta(seconds=i), name=f"cheap-{i}")
        run.fields["params/i"] = ("int", i)
        run.float_series["loss"] = [(float(s), 1.0 / (s + 1 + i), 1_700_000_000_000 + s) for s in range(3)]
        run.string_series["log"] = [(0.0, f"run {i}", 1_700_000_000_000)]


def _content(dump: Path) -> dict[str, Any]:
    """Everything a dump holds per run: the record (fields, system, files, series counts and steps) and
    every point; only the commit times differ between two exports of the same data."""
    reader = DumpReader(dump)
    return {run.key.run_id: (run.record, points(dump)[run.key.run_id]) for run in reader.runs()}


def test_workers_read_several_runs_at_once_and_the_dump_is_the_same_for_any_n(server: FakeNeptune2,
                                                                             tmp_path: Path) -> None:
    _many_runs(server, 9)
    server.latency = 0.02
    server.max_in_flight = 0
    one, _ = export(server, tmp_path / "one", workers=1)
    assert server.max_in_flight == 1
    server.max_in_flight = 0
    four, source = export(server, tmp_path / "four", workers=4)
    assert source.run_workers == 4
    # 12 runs, 4 at a time, every request of every run through one budget: 4 in flight, never 5.
    assert server.max_in_flight == 4
    assert [r.key for r in four.runs] == [r.key for r in one.runs]  # the report keeps the listing order
    assert [r.status for r in four.runs] == ["exported"] * 12
    assert [(r.points, r.files) for r in four.runs] == [(r.points, r.files) for r in one.runs]
    assert _content(tmp_path / "four") == _content(tmp_path / "one")
    assert len(_content(tmp_path / "four")) == 12


def test_four_workers_export_runs_faster_than_one(server: FakeNeptune2, tmp_path: Path) -> None:
    for i in range(16):
        server.add_run("ws/proj", T0 + timedelta(seconds=i)).float_series["loss"] = [(0.0, float(i), 0)]
    server.latency = 0.1  # every request waits 0.1 s on the server: the run rate is bound by the requests
    rates = {}
    for workers in (1, 4):
        server.reset_counts()
        started = time.monotonic()
        summary, _ = export(server, tmp_path / f"w{workers}", workers=workers)
        rates[workers] = len(summary.runs) / (time.monotonic() - started)
        assert [r.status for r in summary.runs] == ["exported"] * 16
        assert server.count("/series/float") == 16
    # 2 requests per run one after another: 1 worker ~ 5 runs/s; 4 workers ~ 4x that (listing aside).
    assert rates[4] / rates[1] >= 2.0, rates


def test_ctrl_c_while_runs_are_read_at_once_leaves_only_complete_runs(server: FakeNeptune2,
                                                                      tmp_path: Path) -> None:
    _many_runs(server, 9)
    server.latency = 0.05
    dump = tmp_path / "dump"
    opts = SourceOptions(path=Path(), api_token=server.api_token(), state_dir=dump / "_state", workers=4)
    source = Neptune2ApiSource(opts)
    done: list[str] = []

    def on_run(outcome: Any) -> None:  # a Ctrl-C arriving in the export's thread after two runs
        done.append(outcome.key)
        if len(done) == 2:
            raise KeyboardInterrupt

    with DumpWriter(dump) as writer, pytest.raises(KeyboardInterrupt):
        export_runs(source, writer, RunSelection(projects=("ws/proj",)), location="fake", on_run=on_run)
    assert source.budget.cancelled
    after = server.count("")
    time.sleep(0.3)
    assert server.count("") == after  # no thread is still sending requests
    committed = {run.key.run_id for run in DumpReader(dump).runs()}
    assert 2 <= len(committed) < 12
    assert not list((dump / ".staging").glob("*")) or all(p.name == "blobs" for p in (dump / ".staging").iterdir())
    full = tmp_path / "full"
    export(server, full)
    export(server, dump)  # the same export again: resumes
    assert _content(dump) == _content(full)


@pytest.mark.slow  # ~25 s (a subprocess importing neptune 1.x); the in-process Ctrl-C test above runs by default
def test_sigint_while_4_runs_are_read_exits_130_at_once_and_the_same_command_resumes(  # type: ignore[no-untyped-def]
        server: FakeNeptune2, cli_env, capsys, tmp_path: Path) -> None:
    _kill_fixture(server)
    server.latency = 0.5  # the long series alone would take 8 s more
    cli_env["OAUTHLIB_INSECURE_TRANSPORT"] = "1"
    cli_env["NEPTUNE_API_TOKEN"] = server.api_token()
    dump = tmp_path / "dump"
    args = ["export", "--from", "neptune2-api", "--project", "ws/proj", "--out", str(dump), "--workers", "4"]
    proc = subprocess.Popen([sys.executable, "-m", "neptune_migrate", *args], env=cli_env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 120
    while server.count("/series/float") < 4 and time.monotonic() < deadline and proc.poll() is None:
        time.sleep(0.01)
    proc.send_signal(signal.SIGINT)
    sent = time.monotonic()
    before = server.count("")
    _, err = proc.communicate(timeout=60)
    took = time.monotonic() - sent
    assert proc.returncode == 130, err
    assert "Traceback" not in err
    # Every thread stopped after the request it was in: at most one more request each (one that had
    # passed the budget just before the cancel), and the process ended long before the series would have.
    assert server.count("") - before <= 4
    assert took < 5.0, took
    staged = [p for p in (dump / ".staging").iterdir() if p.name != "blobs"] if (dump / ".staging").exists() else []
    assert staged == []
    server.latency = 0.0
    os.environ["NEPTUNE_API_TOKEN"] = server.api_token()
    try:
        run_cli(capsys, *args, check_rc=0)
    finally:
        del os.environ["NEPTUNE_API_TOKEN"]
    full = tmp_path / "full"
    export(server, full)
    assert _content(dump) == _content(full)


def test_the_rate_holds_for_the_whole_export_when_runs_are_read_at_once(server: FakeNeptune2,
                                                                        tmp_path: Path) -> None:
    for i in range(8):
        server.add_run("ws/proj", T0 + timedelta(seconds=i)).float_series["loss"] = [(0.0, float(i), 0)]
    server.reset_counts()
    server.max_in_flight = 0
    summary, source = export(server, tmp_path / "dump", workers=4, rate=10.0, models=False)  # runs only
    assert [r.status for r in summary.runs] == ["exported"] * 8
    assert source.budget.requests == 2 + 8 * 2  # project, listing; attributes and one page per run
    first = [p for _, p, _ in server.log].index("/api/backend/v1/projects/get")
    budgeted = sorted(server.times[first:])
    assert len(budgeted) == source.budget.requests
    # 10 requests/s with a burst of 10, for all 4 runs together: the k-th request (k > 10) arrives at
    # least (k - 10) / 10 s after the first.
    for k, at in enumerate(budgeted, start=1):
        assert at - budgeted[0] >= (k - 10) / 10 - 0.05, (k, at - budgeted[0])
    assert server.max_in_flight <= 4


def test_ctrl_c_during_a_long_retry_after_wait_stops_the_export_within_seconds(server: FakeNeptune2,
                                                                               tmp_path: Path) -> None:
    # A 429 with Retry-After: 300 on the first series page, waited for real (the source's own sleep):
    # cancel() (what Ctrl-C calls) must end that wait at once, not after five minutes.
    from neptune_migrate.sources.live_budget import ExportCancelled

    small_project(server)
    server.fault("/series/float", "429", retry_after="300")
    opts = SourceOptions(path=Path(), api_token=server.api_token(), state_dir=tmp_path / "dump" / "_state",
                         workers=2, models=False)
    source = Neptune2ApiSource(opts)
    outcome: list[BaseException] = []

    def run() -> None:
        try:
            with DumpWriter(tmp_path / "dump") as writer:
                export_runs(source, writer, RunSelection(projects=("ws/proj",)), location="fake")
        except BaseException as exc:  # noqa: BLE001 - the test inspects what ended the export
            outcome.append(exc)

    thread = threading.Thread(target=run)
    thread.start()
    deadline = time.monotonic() + 30
    while server.count("/series/float") == 0 and time.monotonic() < deadline:
        time.sleep(0.05)
    time.sleep(0.3)  # the retrier is now asleep on the 300 s Retry-After
    assert thread.is_alive()
    cancelled_at = time.monotonic()
    source.cancel()
    thread.join(10)
    assert not thread.is_alive(), "the export still waits out the Retry-After after cancel()"
    assert time.monotonic() - cancelled_at < 5
    assert len(outcome) == 1 and isinstance(outcome[0], ExportCancelled)
