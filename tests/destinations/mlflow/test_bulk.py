"""The MLflow bulk path against real stores: SQLite files and a throw-away PostgreSQL cluster.

Each dump is imported twice into fresh stores, once through `log_batch` (`--bulk never`) and once
through the bulk path (`--bulk always`); the two stores are then read back through `MlflowClient`
and compared run by run: every metric point (step, timestamp, value, NaN), `latest_metrics`,
params and tags. PostgreSQL tests skip when `initdb` is absent (see tests/support/postgres.py).
"""

from __future__ import annotations

import json
import math
import os
import shutil
import signal
import sqlite3
import subprocess
import sys
import time
from collections.abc import Callable
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import pyarrow as pa
import pytest

from neptune_migrate.destinations.mlflow import bulk
from neptune_migrate.destinations.mlflow import mapping as m
from neptune_migrate.destinations.mlflow.destination import MlflowDestination
from neptune_migrate.dump.reader import DumpReader
from neptune_migrate.dump.writer import DumpWriter
from neptune_migrate.errors import UsageError
from neptune_migrate.model import Field
from neptune_migrate.pipeline.import_ import ImportOptions, import_runs
from neptune_migrate.retry import FAST
from neptune_migrate.verify.verifier import VerifyOptions, verify_runs
from tests.conftest import FIXTURE_SOURCES, REPO
from tests.factories import float_points, key, make_record
from tests.support.postgres import Postgres

pytest.importorskip("mlflow")
OPTS = ImportOptions(retry=FAST)
T0 = datetime(2024, 5, 1, 12, 0, tzinfo=timezone.utc)


@pytest.fixture(autouse=True)
def _in_tmp(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Experiments created without an artifact location put artifacts in MLflow's default
    `./mlruns`: keep that inside the test's folder."""
    monkeypatch.chdir(tmp_path)


_db_counter = iter(range(10**6))
_templates: dict[str, str] = {}


def _store(kind: str, tmp: Path, pg: Postgres | None) -> str:
    """A fresh tracking store URI: a copy of a store MLflow migrated once per session (a fresh
    migration takes seconds)."""
    n = next(_db_counter)
    if kind == "sqlite":
        if "sqlite" not in _templates:
            template = tmp / "template.db"
            MlflowDestination(f"sqlite:///{template}").prepare_store()
            _templates["sqlite"] = str(template)
        target = tmp / f"store-{n}.db"
        shutil.copyfile(_templates["sqlite"], target)
        return f"sqlite:///{target}"
    assert pg is not None
    if "postgresql" not in _templates:
        uri = pg.create_db("template_store")
        dest = MlflowDestination(uri)
        dest.client.search_experiments(max_results=1)  # MLflow migrates the new database here
        dest.client._tracking_client.store.engine.dispose()
        _templates["postgresql"] = "template_store"
    return pg.create_db(f"store_{n}", template=_templates["postgresql"])


def _edge_points() -> pa.Table:
    """NaN, +-inf, a duplicate step with another value, an exact duplicate point, the greatest
    step before the last row, and a NaN/0.0 tie on (step, timestamp) where MLflow keeps the first."""
    rows = [  # (step, seconds after T0, value)
        (0, 0, float("nan")), (1, 1, float("inf")), (1, 2, float("-inf")), (2, 3, 1.0), (2, 3, 1.0),
        (3, 4, 2.0), (3, 4, 2.5), (9, 9, float("nan")), (9, 9, 0.0), (4, 10, 7.0), (5, 11, -0.0),
    ]
    return pa.table({
        "path": ["edge/x"] * len(rows),
        "step": pa.array([float(s) for s, _, _ in rows], pa.float64()),
        "timestamp": pa.array([T0 + timedelta(seconds=t) for _, t, _ in rows], pa.timestamp("us", tz="UTC")),
        "value": pa.array([v for _, _, v in rows], pa.float64()),
    })


def _edge_dump(root: Path) -> DumpReader:
    with DumpWriter(root) as dump:
        with dump.begin_run(key("EDGE-1")) as run:
            run.add_points("float", _edge_points())
            steps = list(range(40))
            run.add_points("float", float_points("train/loss", steps, [1 / (s + 1) for s in steps], T0))
            run.add_points("float", float_points("train/loss", [39, 38], [5.0, 6.0], T0 + timedelta(hours=1)))
            run.commit(make_record(key("EDGE-1"), fields={"p": Field("int", 3)}))
        with dump.begin_run(key("EDGE-2")) as run:
            run.add_points("float", float_points("a", [0, 1, 2], [1.0, 2.0, 3.0], T0))
            run.commit(make_record(key("EDGE-2")))
    return DumpReader(root)


def _value(v: float) -> str:
    return "nan" if math.isnan(v) else repr(v)


def store_contents(uri: str, *, times: bool = True, prefix: str = "") -> dict[str, Any]:
    """Every imported run of a store through `MlflowClient`, keyed by its Neptune key (`times`:
    with start and end times; a run whose source has no creation time starts at its import)."""
    dest = MlflowDestination(uri, bulk_mode="never", read="api")
    client = dest.client
    out: dict[str, Any] = {}
    for exp in client.search_experiments():
        if not exp.name.startswith(prefix):
            continue
        for run in client.search_runs([exp.experiment_id], max_results=1000):
            tags = run.data.tags
            ident = f"{exp.name.removeprefix(prefix)}|{tags.get(m.TAG_PROJECT)}|{tags.get(m.TAG_RUN_ID)}"
            assert ident not in out, f"two active runs for {ident}"
            history = {}
            for k in run.data.metrics:
                points = client.get_metric_history(run.info.run_id, k)
                history[k] = sorted((p.step, p.timestamp, _value(p.value)) for p in points)
            latest = {mo.key: (mo.step, mo.timestamp, _value(mo.value)) for mo in run.data._metric_objs}
            out[ident] = {
                "history": history,
                "latest": latest,
                "params": dict(run.data.params),
                "tags": {k: v for k, v in tags.items() if k not in m.VOLATILE_TAGS and not k.startswith("mlflow.")},
                "status": run.info.status,
                "times": (run.info.start_time, run.info.end_time) if times else None,
            }
    dest.close()
    return out


def _import(reader: DumpReader, uri: str, mode: str) -> MlflowDestination:
    dest = MlflowDestination(uri, bulk_mode=mode)
    try:
        report = import_runs(reader, dest, OPTS)
    finally:
        dest.close()
    assert {r.status for r in report.runs} == {"created"}, [(r.key, r.message) for r in report.runs]
    assert dest.bulk_active is (mode == "always")
    assert report.store is None
    return dest


def _compare_paths(reader: DumpReader, tmp: Path, kind: str, pg: Postgres | None) -> dict[str, Any]:
    api_uri, bulk_uri = _store(kind, tmp, pg), _store(kind, tmp, pg)
    _import(reader, api_uri, "never")
    _import(reader, bulk_uri, "always")
    api, blk = store_contents(api_uri), store_contents(bulk_uri)
    assert api == blk
    assert api, "nothing was imported"
    return api


@pytest.fixture(params=["sqlite", "postgresql"])
def store_kind(request: pytest.FixtureRequest) -> tuple[str, Postgres | None]:
    if request.param == "sqlite":
        return "sqlite", None
    return "postgresql", request.getfixturevalue("postgres")


def test_bulk_equals_log_batch_on_nan_inf_and_duplicate_steps(
    tmp_path: Path, store_kind: tuple[str, Postgres | None], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(bulk, "POINTS_PER_TRANSACTION", 4)  # many transactions: duplicates and latest across them
    kind, pg = store_kind
    reader = _edge_dump(tmp_path / "dump")
    stores = _compare_paths(reader, tmp_path, kind, pg)
    [run] = [v for k, v in stores.items() if k.endswith("|EDGE-1")]
    big = 1.7976931348623157e308
    assert run["history"]["edge/x"] == sorted([
        (0, 1714564800000, "nan"), (1, 1714564801000, repr(big)), (1, 1714564802000, repr(-big)),
        (2, 1714564803000, "1.0"), (3, 1714564804000, "2.0"), (3, 1714564804000, "2.5"),
        (9, 1714564809000, "nan"), (9, 1714564809000, "0.0"), (4, 1714564810000, "7.0"),
        (5, 1714564811000, "-0.0" if kind == "postgresql" else "0.0"),  # SQLite stores -0.0 as 0.0
    ])
    # MLflow's rule: greatest (step, timestamp, stored value); NaN is stored as 0 and came first.
    assert run["latest"]["edge/x"] == (9, 1714564809000, "nan")
    assert run["latest"]["train/loss"] == (39, 1714568400000, "5.0")
    assert len(run["history"]["train/loss"]) == 42


def _latest_by_mlflows_loop(rows: bulk.Rows) -> dict[str, tuple[int, int, float, bool]]:
    """MLflow's rule, point by point as `_update_latest_metrics_if_necessary` applies it."""
    best: dict[str, tuple[int, int, float, bool]] = {}
    keys = pa.array(rows.keys).to_pylist()
    for k, v, t, s, n in zip(keys, rows.values.tolist(), rows.timestamps.tolist(), rows.steps.tolist(),
                             rows.is_nan.tolist(), strict=True):
        cur = best.get(k)
        if cur is None or (s, t, v) > cur[:3]:
            best[k] = (s, t, v, n)
    return best


def test_latest_of_one_sort_agrees_with_mlflows_point_by_point_rule() -> None:
    """Random chunks full of ties (few steps, timestamps and values; NaN stored as 0.0 next to a
    real 0.0; -0.0): the column-wise latest equals MLflow's loop, is_nan included."""
    import numpy as np

    rng = np.random.default_rng(16)
    for _ in range(50):
        n = int(rng.integers(1, 400))
        values = rng.choice([0.0, -0.0, 1.0, 2.5, float("nan"), float("inf")], n)
        chunk = pa.table({
            "key": pa.array(rng.choice(["a", "b", "c/d", "é"], n), pa.string()),
            "value": pa.array(values, pa.float64()),
            "timestamp": pa.array(rng.integers(0, 3, n) * 1000, pa.int64()).cast(pa.timestamp("us", tz="UTC")),
            "dest_step": pa.array(rng.integers(0, 4, n), pa.int64()),
        })
        rows = bulk.rows_of(chunk)
        got, want = bulk.latest_of(rows), _latest_by_mlflows_loop(rows)
        assert got == want
        assert {k: v[3] for k, v in got.items()} == {k: v[3] for k, v in want.items()}


def _points(path: str, rows: list[tuple[int, int, float]]) -> pa.Table:
    """(step, seconds after T0, value) rows of one float series."""
    return pa.table({
        "path": [path] * len(rows),
        "step": pa.array([float(st) for st, _, _ in rows], pa.float64()),
        "timestamp": pa.array([T0 + timedelta(seconds=t) for _, t, _ in rows], pa.timestamp("us", tz="UTC")),
        "value": pa.array([v for _, _, v in rows], pa.float64()),
    })


def _boundary_dump(root: Path) -> DumpReader:
    """With 5 points per transaction: a series cut by two chunk boundaries whose latest point
    (step 8, the latest timestamp) is in the second chunk and is followed, in the third, by later
    points of the same step with earlier timestamps and by an exact duplicate of it (on
    PostgreSQL: a COPY that meets a committed row)."""
    with DumpWriter(root) as dump, dump.begin_run(key("CUT-1")) as run:
        run.add_points("float", _points("cut/x", [(s, s, float(s)) for s in range(8)]
                                        + [(8, 36_000, 0.5), (8, 1, 9.0)]))
        run.add_points("float", _points("cut/x", [(8, 2, 9.5), (8, 36_000, 0.5)]))
        run.commit(make_record(key("CUT-1")))
    return DumpReader(root)


def test_chunk_boundaries_inside_a_series_and_a_latest_point_in_an_earlier_chunk(
    tmp_path: Path, store_kind: tuple[str, Postgres | None], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(bulk, "POINTS_PER_TRANSACTION", 5)
    kind, pg = store_kind
    reader = _boundary_dump(tmp_path / "dump")
    [run_in_dump] = reader.runs()
    order = [(s, t.timestamp()) for t in reader.iter_points(run_in_dump, "float")
             for s, t in zip(t.column("step").to_pylist(), t.column("timestamp").to_pylist(), strict=True)]
    t0 = T0.timestamp()
    assert order[5:] == [(5, t0 + 5), (6, t0 + 6), (7, t0 + 7), (8, t0 + 36_000), (8, t0 + 1),
                         (8, t0 + 2), (8, t0 + 36_000)]  # chunks [0-4] [5..8@10h, 8@1s] [8@2s, 8@10h]
    stores = _compare_paths(reader, tmp_path, kind, pg)
    [run] = stores.values()
    ms = 1714564800000
    assert run["history"]["cut/x"] == sorted([(s, ms + 1000 * s, repr(float(s))) for s in range(8)]
                                             + [(8, ms + 36_000_000, "0.5"), (8, ms + 1000, "9.0"),
                                                (8, ms + 2000, "9.5")])
    assert run["latest"]["cut/x"] == (8, ms + 36_000_000, "0.5")  # from the second chunk, never replaced


def test_postgresql_foreign_key_one_run_lock_only_where_allowed_and_nothing_else_skipped(
    tmp_path: Path, postgres: Postgres
) -> None:
    """A superuser's chunk locks the run once instead of a foreign-key check per row; a role that
    may not set `session_replication_role`, or a `metrics` table with a trigger of its own (which
    replica mode would skip), keeps the per-row checks. All three stores equal the API's."""
    import psycopg

    reader = _edge_dump(tmp_path / "dump")
    api_uri = _store("postgresql", tmp_path, postgres)
    _import(reader, api_uri, "never")
    expected = store_contents(api_uri)
    admin = f"host={postgres.host} port={postgres.port} user={postgres.user}"
    plain_uri, trigger_uri, super_uri = (_store("postgresql", tmp_path, postgres) for _ in range(3))
    with psycopg.connect(f"{admin} dbname=postgres", autocommit=True) as conn:
        conn.execute("CREATE ROLE nm_plain LOGIN")
    with psycopg.connect(f"{admin} dbname={plain_uri.rsplit('/', 1)[1]}", autocommit=True) as conn:
        conn.execute("GRANT ALL ON ALL TABLES IN SCHEMA public TO nm_plain")
        conn.execute("GRANT ALL ON ALL SEQUENCES IN SCHEMA public TO nm_plain")
    plain_uri = plain_uri.replace(f"//{postgres.user}@", "//nm_plain@")
    with psycopg.connect(f"{admin} dbname={trigger_uri.rsplit('/', 1)[1]}", autocommit=True) as conn:
        conn.execute("CREATE TABLE audit (n INT)")
        conn.execute("CREATE FUNCTION count_row() RETURNS trigger LANGUAGE plpgsql AS "
                     "$$ BEGIN INSERT INTO audit VALUES (1); RETURN NEW; END $$")
        conn.execute("CREATE TRIGGER metrics_audit AFTER INSERT ON metrics FOR EACH ROW EXECUTE FUNCTION count_row()")
    for uri, how in ((super_uri, "one run lock per chunk"), (plain_uri, "per row"), (trigger_uri, "per row")):
        dest = MlflowDestination(uri, bulk_mode="always")
        report = import_runs(reader, dest, OPTS)
        assert {r.status for r in report.runs} == {"created"}
        assert dest._sql is not None
        assert dest._sql.fk_checks == how, uri
        dest.close()
        assert store_contents(uri) == expected
    with psycopg.connect(f"{admin} dbname={trigger_uri.rsplit('/', 1)[1]}") as conn:
        [(audited,)] = conn.execute("SELECT count(*) FROM audit").fetchall()
    assert audited == 10 + 42 + 3  # the user's trigger saw every row (the exact duplicate once)


DEFAULT_FIXTURE = {"sqlite": "exporter-neptune3", "postgresql": "offline-neptune1"}
"""The one fixture per store the default run compares; every other (store, fixture) pair is `slow`."""


@pytest.mark.parametrize(("kind", "name"), [
    pytest.param(kind, name, id=f"{kind}-{name}",
                 marks=() if DEFAULT_FIXTURE[kind] == name else pytest.mark.slow)
    for kind in ("sqlite", "postgresql") for name, *_ in FIXTURE_SOURCES
])
def test_bulk_equals_log_batch_on_every_fixture(
    tmp_path: Path, exported_fixture: Callable[[str], Path], kind: str, name: str, request: pytest.FixtureRequest
) -> None:
    """Each bundled fixture through both paths into fresh stores: equal through `MlflowClient`."""
    pg = request.getfixturevalue("postgres") if kind == "postgresql" else None
    reader = DumpReader(exported_fixture(name))
    api_uri, bulk_uri = _store(kind, tmp_path, pg), _store(kind, tmp_path, pg)
    for uri, mode in ((api_uri, "never"), (bulk_uri, "always")):
        dest = MlflowDestination(uri, f"{name}-{{project}}", bulk_mode=mode)
        report = import_runs(reader, dest, OPTS)
        dest.close()
        assert dest.bulk_active is (mode == "always")
        assert {r.status for r in report.runs} <= {"created"}, (name, [r.message for r in report.runs])
    api, blk = store_contents(api_uri, times=False), store_contents(bulk_uri, times=False)
    assert api == blk
    assert len(api) == len(list(reader.runs()))
    dest = MlflowDestination(bulk_uri, f"{name}-{{project}}")
    assert [str(f) for f in verify_runs(reader, dest, VerifyOptions(import_options=OPTS)).findings] == []
    dest.close()


def test_verify_reads_by_sql_and_by_api_alike(tmp_path: Path, store_kind: tuple[str, Postgres | None]) -> None:
    kind, pg = store_kind
    reader = _edge_dump(tmp_path / "dump")
    uri = _store(kind, tmp_path, pg)
    _import(reader, uri, "always")
    for read in ("sql", "api"):
        dest = MlflowDestination(uri, read=read)
        result = verify_runs(reader, dest, VerifyOptions(import_options=OPTS))
        assert [str(f) for f in result.findings] == [], read
        assert result.to_json()["totals"]["points_compared"] == 10 + 42 + 3  # the exact duplicate once
        run = dest.find_run(key("EDGE-1"))
        assert run is not None
        table = dest.read_series(run.run_id, "float", "edge/x")
        assert table.num_rows == 10
        assert table.column("step").to_pylist()[-1] == 9
        dest.close()


def test_unknown_schema_revision_falls_back_to_the_api_and_says_so(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # MLflow refuses a store whose revision is not its own head, so an untested revision means an
    # MLflow newer (or older) than the tested ones: the store's revision left out of the allow-list.
    uri = _store("sqlite", tmp_path, None)
    with sqlite3.connect(uri.removeprefix("sqlite:///")) as conn:
        [(revision,)] = conn.execute("SELECT version_num FROM alembic_version").fetchall()
    monkeypatch.setattr(bulk, "TESTED_REVISIONS", {"0123456789ab": "mlflow 9.0"})
    reader = _edge_dump(tmp_path / "dump")
    dest = MlflowDestination(uri)
    report = import_runs(reader, dest, OPTS)
    dest.close()
    assert report.store == (f"bulk path not used (MLflow schema revision {revision} is not one the bulk path "
                            "was tested with (0123456789ab (mlflow 9.0))): float points go through log_batch")
    assert not dest.bulk_active
    assert {r.status for r in report.runs} == {"created"}
    contents = store_contents(uri)
    assert len(contents) == 2
    with pytest.raises(UsageError, match=rf"^--bulk always: MLflow schema revision {revision} is not one"):
        MlflowDestination(uri, bulk_mode="always").prepare_store()


def test_mlflow_db_next_to_a_server_must_be_its_backend(tmp_path: Path) -> None:
    other = _store("sqlite", tmp_path, None)
    dest = MlflowDestination(_store("sqlite", tmp_path, None), mlflow_db=other, bulk_mode="always")
    reader = _edge_dump(tmp_path / "dump")
    report = import_runs(reader, dest, OPTS)
    dest.close()
    assert {r.status for r in report.runs} == {"failed"}
    why = "is not in the bulk database: --mlflow-db must be the database behind --tracking-uri"
    assert all(why in (r.message or "") for r in report.runs)
    with pytest.raises(UsageError, match="expected a database URI"):
        MlflowDestination("http://127.0.0.1:1", mlflow_db="http://127.0.0.1:2")


def _big_dump(root: Path, points: int, per_chunk: int = 20_000) -> DumpReader:
    with DumpWriter(root) as dump, dump.begin_run(key("BULK-1")) as run:
        for start in range(0, points, per_chunk):
            steps = list(range(start, start + per_chunk))
            run.add_points("float", float_points("train/loss", steps, [s / 7 for s in steps], T0))
        run.commit(make_record(key("BULK-1"), fields={"p": Field("int", 1)}))
    return DumpReader(root)


def _rows(db: Path) -> int:
    try:
        with sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=0.2) as conn:
            return int(conn.execute("SELECT count(*) FROM metrics").fetchone()[0])
    except sqlite3.Error:
        return -1


def test_sigkill_inside_a_bulk_transaction_then_rerun_gives_one_complete_equal_run(tmp_path: Path) -> None:
    total, chunk = 2 * bulk.POINTS_PER_TRANSACTION, bulk.POINTS_PER_TRANSACTION
    reader = _big_dump(tmp_path / "dump", total, chunk)
    db = tmp_path / "mlflow.db"
    uri = f"sqlite:///{db}"
    MlflowDestination(uri).prepare_store()
    env = dict(os.environ, PYTHONPATH=str(REPO))
    cmd = [sys.executable, "-m", "neptune_migrate", "import", str(tmp_path / "dump"), "--to", "mlflow",
           "--tracking-uri", uri, "--bulk", "always"]
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    journal = db.with_name(db.name + "-journal")
    deadline = time.monotonic() + 120
    while _rows(db) <= 0 or not journal.exists():  # a chunk committed, and a write transaction open now
        assert proc.poll() is None, "the import ended before it could be killed: " + proc.stderr.read().decode()
        assert time.monotonic() < deadline
        time.sleep(0.005)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    proc.stderr.close()
    left = _rows(db)
    assert 0 < left < total
    assert left % chunk == 0, f"{left} rows: a half chunk was left behind"
    with sqlite3.connect(db) as conn:
        steps = [s for (s,) in conn.execute("SELECT step FROM metrics ORDER BY step")]
    assert steps == list(range(left))  # whole transactions, in order
    rerun = subprocess.run([*cmd, "--report", str(tmp_path / "report.json")], env=env,
                           capture_output=True, text=True, check=False)
    assert rerun.returncode == 0, rerun.stderr
    doc = json.loads((tmp_path / "report.json").read_text())
    assert [r["status"] for r in doc["runs"]] == ["repaired"]
    dest = MlflowDestination(uri)
    exp = dest.client.get_experiment_by_name("my-ws/my-proj")
    [run] = dest.client.search_runs([exp.experiment_id])
    assert run.data.tags[m.TAG_STATUS] == m.STATUS_COMPLETE
    assert {mo.key: (mo.step, mo.value) for mo in run.data._metric_objs} == {"train/loss": (total - 1, (total - 1) / 7)}
    assert dest.read_series(run.info.run_id, "float", "train/loss").column("step").to_pylist() == list(range(total))
    assert [str(f) for f in verify_runs(reader, dest, VerifyOptions(import_options=OPTS)).findings] == []
    dest.close()


@pytest.mark.slow
@pytest.mark.parametrize("kind", ["sqlite", "postgresql"])
def test_a_million_points_bulk_equals_the_dump(tmp_path: Path, kind: str, request: pytest.FixtureRequest) -> None:
    pg = request.getfixturevalue("postgres") if kind == "postgresql" else None
    reader = _big_dump(tmp_path / "dump", 1_000_000, 100_000)
    uri = _store(kind, tmp_path, pg)
    started = time.monotonic()
    _import(reader, uri, "always")
    seconds = time.monotonic() - started
    dest = MlflowDestination(uri)
    result = verify_runs(reader, dest, VerifyOptions(import_options=OPTS))
    assert [str(f) for f in result.findings] == []
    assert result.to_json()["totals"]["points_compared"] == 1_000_000
    run = dest.find_run(key("BULK-1"))
    assert run is not None
    latest = {mo.key: (mo.step, mo.value) for mo in dest.client.get_run(run.run_id).data._metric_objs}
    assert latest == {"train/loss": (999_999, 999_999 / 7)}
    dest.close()
    print(f"{kind}: 1M points imported in {seconds:.1f} s")


@pytest.mark.server
def test_parallel_log_batch_gives_the_same_run_for_any_worker_count(tmp_path: Path, mlflow_server: Any) -> None:
    """One run over HTTP with 4 `log_batch` requests in flight equals the one written with 1."""
    reader = _edge_dump(tmp_path / "dump")
    big = _big_dump(tmp_path / "big", 8_000, 8_000)
    for workers in (1, 4):
        for r in (reader, big):
            dest = MlflowDestination(mlflow_server.tracking_uri, f"w{workers}-{{project}}", write_workers=workers)
            report = import_runs(r, dest, OPTS)
            assert (dest._pool is not None) is (workers > 1 and r is big)  # 8 requests of 1000 points
            dest.close()
            assert {x.status for x in report.runs} == {"created"}
    one = store_contents(mlflow_server.tracking_uri, prefix="w1-")
    four = store_contents(mlflow_server.tracking_uri, prefix="w4-")
    assert one == four
    [run] = [v for k, v in one.items() if k.endswith("|BULK-1")]
    assert len(run["history"]["train/loss"]) == 8_000
    assert run["latest"]["train/loss"] == (7_999, 1714564800000 + 7_999_000, repr(7_999 / 7))


def test_postgresql_replica_mode_covers_the_metrics_rows_only_a_trigger_on_latest_metrics_still_runs(
    tmp_path: Path, postgres: Postgres
) -> None:
    """The run lock replaces the per-row foreign-key checks of `metrics` only: a user's trigger on
    `latest_metrics`, written in the same transaction, sees every insert and update."""
    import psycopg

    reader = _edge_dump(tmp_path / "dump")
    uri = _store("postgresql", tmp_path, postgres)
    admin = f"host={postgres.host} port={postgres.port} user={postgres.user} dbname={uri.rsplit('/', 1)[1]}"
    with psycopg.connect(admin, autocommit=True) as conn:
        conn.execute("CREATE TABLE audit (k TEXT)")
        conn.execute("CREATE FUNCTION audit_latest() RETURNS trigger LANGUAGE plpgsql AS "
                     "$$ BEGIN INSERT INTO audit VALUES (NEW.key); RETURN NEW; END $$")
        conn.execute("CREATE TRIGGER latest_audit AFTER INSERT OR UPDATE ON latest_metrics "
                     "FOR EACH ROW EXECUTE FUNCTION audit_latest()")
    dest = MlflowDestination(uri, bulk_mode="always")
    report = import_runs(reader, dest, OPTS)
    assert {r.status for r in report.runs} == {"created"}
    assert dest._sql is not None and dest._sql.fk_checks == "one run lock per chunk"
    dest.close()
    with psycopg.connect(admin) as conn:
        audited = {k for (k,) in conn.execute("SELECT k FROM audit").fetchall()}
        latest = {k for (k,) in conn.execute("SELECT key FROM latest_metrics").fetchall()}
    assert latest and audited == latest


def test_the_bulk_path_refuses_a_deleted_run_as_log_batch_does(tmp_path: Path) -> None:
    from mlflow import MlflowClient

    from neptune_migrate.errors import PermanentError

    uri = _store("sqlite", tmp_path, None)
    client = MlflowClient(uri)
    run = client.create_run(client.create_experiment("gone"))
    client.delete_run(run.info.run_id)
    store = bulk.BulkStore.open(uri)
    try:
        chunk = pa.table({"key": pa.array(["x"]), "value": pa.array([1.0]),
                          "timestamp": pa.array([T0], pa.timestamp("us", tz="UTC")),
                          "dest_step": pa.array([0], pa.int64())})
        with pytest.raises(PermanentError, match="deleted"):
            store.write(run.info.run_id, chunk)
    finally:
        store.close()
    assert client.get_metric_history(run.info.run_id, "x") == []
