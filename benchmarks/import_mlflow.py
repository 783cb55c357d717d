"""MLflow import benchmark: 1M float points through `import_runs` into a fresh SQLite store, a fresh
PostgreSQL database and a real `mlflow server`, next to the raw `MlflowClient.log_batch` ceiling and
(on the databases) the raw insert floor on the same backend.

    python benchmarks/import_mlflow.py                              # 1M points, wide, sqlite + server
    python benchmarks/import_mlflow.py --backend sqlite,postgresql --lines raw,api,bulk,floor
    python benchmarks/import_mlflow.py --backend sqlite,postgresql --lines bulk,floor --points 10000000
    python benchmarks/import_mlflow.py --backend sqlite
    python benchmarks/import_mlflow.py --backend server --points 200000 --server-workers 4
    python benchmarks/import_mlflow.py --json                       # one JSON line, for scripts

Shapes: wide = 1,000 series x 1,000 steps, narrow = 10 series x 100,000 steps (`--points` scales the
steps down). Every point has its own step and a microsecond timestamp (stored as ms by MLflow).

Lines, each in its own subprocess (so each peak RSS, `getrusage(RUSAGE_SELF).ru_maxrss`, is its
own) and each against a fresh store (a new SQLite file; for the server a new server process with a
new SQLite backend, so neither line writes into a database the other one filled):

- raw: `MlflowClient.create_run`, then the same points, in series order (each series' points
  together, by step: the order the dump holds them in and the one MLflow prefers), as plain
  `Metric(key, value, timestamp_ms, step)` objects built from Python lists, `client.log_batch` of
  1,000 per call. Only the `log_batch` calls are timed.
- ours: `import_runs(DumpReader(dump), MlflowDestination(uri), ImportOptions())`, timing the whole
  import: find, create (tags, the three `neptune/*.json` artifacts), step plans, reading the dump,
  conversion, `log_batch` per 1,000-row request, completion. The dump is written by the parent
  process beforehand (not timed, not in the child's RSS). Not timed either: importing mlflow and
  creating the store's schema (both happen before the clock starts, for both lines).

- api: `ours` (the same; the name used with the lines below).
- bulk: `import_runs` with `MlflowDestination(uri, bulk_mode="always")`: float points straight into
  `metrics` + `latest_metrics` (SQLite executemany, PostgreSQL COPY), one transaction per 65,536;
  then `verify_runs` of the same run (SQL read path), timed separately (`verify points/s`).
- floor: `create_run`, then the same rows inserted straight into `metrics` by the driver from
  data built before the clock starts (ready tuples for SQLite `executemany` of `INSERT OR IGNORE`,
  which SQLite runs without a per-row statement journal, a ready CSV buffer
  for PostgreSQL `COPY metrics FROM STDIN (FORMAT csv)`), one transaction per 65,536 rows, no
  `latest_metrics`, no dedup, the foreign key handled as the bulk path handles it. Only the
  inserts are timed: the fastest the database takes these rows into MLflow's table (its primary
  key, two indexes and foreign key included).
- floor_fk (PostgreSQL): the same COPY with the foreign key checked by its own trigger, once per
  row (what a role that may not set `session_replication_role` gets).

PostgreSQL (`--backend postgresql`): a throw-away cluster (`initdb`, see tests/support/postgres.py)
with PostgreSQL's default durability (fsync on), one fresh database per line.

Afterwards each child reads its run back with SQL (count, sums of value/step/timestamp) and the
parent checks that both lines stored exactly the same points.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import platform
import resource
import shutil
import signal
import socket
import sqlite3
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Iterator
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa

REPO = Path(__file__).resolve().parent.parent
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

SHAPES = {"wide": 1000, "narrow": 10}
"""Shape -> series count; steps = points // series."""
T0_US = int(datetime(2025, 3, 1, tzinfo=timezone.utc).timestamp() * 1_000_000)
BATCH = 100_000
"""Rows per `add_points` call when writing the dump (and per array slice in the raw line)."""
LOG_BATCH = 1000
PROJECT = "bench/mlflow"
SERVER_START_TIMEOUT = 180.0


def series_key(i: int) -> str:
    return f"train/metric_{i:04d}"


def point_arrays(points: int, series: int, start: int, stop: int) -> dict[str, np.ndarray]:
    """Points `start..stop` in series order: point g is series g // steps at step g % steps."""
    steps = points // series
    g = np.arange(start, stop, dtype=np.int64)
    idx, step = g // steps, g % steps
    return {
        "series": idx,
        "step": step,
        "timestamp_us": T0_US + step * 250_000 + (g % 997),
        "value": np.sin(g / 1000.0) * (1.0 + idx),
    }


def build_dump(root: Path, points: int, series: int) -> None:
    from neptune_migrate.dump.writer import DumpWriter
    from neptune_migrate.model import Provenance, RunKey, RunRecord, SourceRunId, SystemInfo

    key = RunKey(PROJECT, SourceRunId("BENCH-1"))
    paths = pa.array([series_key(i) for i in range(series)], pa.string())
    with DumpWriter(root) as dump, dump.begin_run(key) as run:
        for start in range(0, points, BATCH):
            a = point_arrays(points, series, start, min(start + BATCH, points))
            run.add_points("float", pa.table({
                "path": pa.DictionaryArray.from_arrays(pa.array(a["series"], pa.int32()), paths).cast(pa.string()),
                "step": pa.array(a["step"].astype(np.float64)),
                "timestamp": pa.array(a["timestamp_us"], pa.int64()).cast(pa.timestamp("us", tz="UTC")),
                "value": pa.array(a["value"]),
            }))
        run.commit(RunRecord(key=key, system=SystemInfo(name="bench"), fields={},
                             provenance=Provenance("bench", "benchmarks/import_mlflow.py")))


def stored(db: Path, run_id: str, uri: str = "") -> dict[str, Any]:
    """What the store holds for the run: row count and sums (to check both lines wrote the same)."""
    # timestamps summed relative to T0: 10M epoch-ms values overflow SQLite's 64-bit sum
    query = (f"select count(*), sum(value), sum(step), sum(timestamp - {T0_US // 1000}), count(distinct key) "
             "from metrics where run_uuid = ?")
    if uri.startswith("postgresql"):
        from sqlalchemy import text

        from neptune_migrate.destinations.mlflow.bulk import BulkStore

        store = BulkStore.open(uri)
        with store.engine.connect() as conn:
            rows, values, steps, stamps, keys = conn.execute(text(query.replace("?", ":r")), {"r": run_id}).one()
        store.close()
        values = round(float(values), 3)
    else:
        with contextlib.closing(sqlite3.connect(f"file:{db}?mode=ro", uri=True)) as con:
            rows, values, steps, stamps, keys = con.execute(query, (run_id,)).fetchone()
            values = round(float(values), 3)
    return {"rows": rows, "value_sum": values, "step_sum": int(steps), "timestamp_sum": int(stamps), "keys": keys}


# ---------------------------------------------------------------------------------------------
# children: one measurement each


def child_raw(uri: str, work: Path, points: int, series: int) -> dict[str, Any]:
    from mlflow import MlflowClient
    from mlflow.entities import Metric

    client = MlflowClient(tracking_uri=uri)
    exp_id = client.create_experiment("bench-raw", artifact_location=(work / "artifacts").as_uri())
    run_id = client.create_run(exp_id).info.run_id
    keys = [series_key(i) for i in range(series)]
    seconds = cpu = 0.0
    for start in range(0, points, BATCH):
        a = point_arrays(points, series, start, min(start + BATCH, points))
        idx = a["series"].tolist()
        values = a["value"].tolist()
        stamps = (a["timestamp_us"] // 1000).tolist()
        steps = a["step"].tolist()
        for lo in range(0, len(idx), LOG_BATCH):
            hi = lo + LOG_BATCH
            batch = [Metric(keys[i], v, t, s)
                     for i, v, t, s in zip(idx[lo:hi], values[lo:hi], stamps[lo:hi], steps[lo:hi], strict=True)]
            t0, c0 = time.perf_counter(), time.process_time()
            client.log_batch(run_id, metrics=batch)
            seconds += time.perf_counter() - t0
            cpu += time.process_time() - c0
    return {"seconds": seconds, "cpu_seconds": cpu, "run_id": run_id}


def child_floor(uri: str, work: Path, points: int, series: int, *, row_checks: bool = False) -> dict[str, Any]:
    """The same rows straight into `metrics` by the driver, everything built before the clock
    starts: the fastest the database takes them. SQLite: `executemany` of ready tuples
    (`INSERT OR IGNORE`, as the bulk path: measured faster than a plain INSERT). PostgreSQL:
    `COPY metrics FROM STDIN (FORMAT csv)` of a ready buffer, written to the socket in 1 MiB
    pieces, with the foreign key handled as the bulk path handles it (one run lock per
    transaction where the role may, see `BulkStore._lock_run_instead_of_row_checks`), or with
    `row_checks` the foreign key's own per-row trigger. One transaction per
    `POINTS_PER_TRANSACTION` rows, no `latest_metrics`, no dedup."""
    from neptune_migrate.destinations.mlflow.bulk import POINTS_PER_TRANSACTION, BulkStore, _csv, rows_of

    client = _client(uri)
    exp_id = client.create_experiment("bench-floor", artifact_location=(work / "artifacts").as_uri())
    run_id = client.create_run(exp_id).info.run_id
    store = BulkStore(client._tracking_client.store.engine, owned=False)
    if row_checks:
        store._run_lock = False
    keys = [series_key(i) for i in range(series)]
    seconds = cpu = 0.0
    for start in range(0, points, POINTS_PER_TRANSACTION):
        a = point_arrays(points, series, start, min(start + POINTS_PER_TRANSACTION, points))
        n = len(a["step"])
        payload: Any
        if store.dialect == "postgresql":
            chunk = pa.table({"key": pa.array([keys[i] for i in a["series"].tolist()], pa.string()),
                              "value": a["value"], "timestamp": pa.array(a["timestamp_us"]).cast(pa.timestamp("us")),
                              "dest_step": a["step"]})
            payload = memoryview(_csv(run_id, rows_of(chunk)))
        else:
            payload = list(zip([keys[i] for i in a["series"].tolist()], a["value"].tolist(),
                               (a["timestamp_us"] // 1000).tolist(), [run_id] * n, a["step"].tolist(),
                               [False] * n, strict=True))
        t0, c0 = time.perf_counter(), time.process_time()
        with store.engine.begin() as conn:
            raw = conn.connection.driver_connection
            if store.dialect == "postgresql":
                store._lock_run_instead_of_row_checks(raw, run_id)
                with raw.cursor() as cur, cur.copy("COPY metrics (key, value, timestamp, run_uuid, step, is_nan) "
                                                   "FROM STDIN (FORMAT csv)") as copy:
                    for lo in range(0, len(payload), 1 << 20):
                        copy.write(payload[lo:lo + (1 << 20)])
            else:
                # OR IGNORE: without it SQLite opens a statement journal for every row (the
                # statement must be undoable alone), ~15 % more CPU (measured)
                raw.executemany("INSERT OR IGNORE INTO metrics (key, value, timestamp, run_uuid, step, is_nan) "
                                "VALUES (?, ?, ?, ?, ?, ?)", payload)
        seconds += time.perf_counter() - t0
        cpu += time.process_time() - c0
    return {"seconds": seconds, "cpu_seconds": cpu, "run_id": run_id, "fk_checks": store.fk_checks}


def _client(uri: str) -> Any:
    from neptune_migrate.destinations.mlflow.destination import MlflowDestination

    return MlflowDestination(uri).client


def child_ours(uri: str, work: Path, dump: Path, bulk: str = "never") -> dict[str, Any]:
    from neptune_migrate.destinations.mlflow.destination import MlflowDestination
    from neptune_migrate.dump.reader import DumpReader
    from neptune_migrate.pipeline.import_ import ImportOptions, import_runs

    location = (work / "artifacts").as_uri() if not uri.startswith("http") else None
    dest = MlflowDestination(uri, artifact_location=location, bulk_mode=bulk)
    dest.client.search_experiments(max_results=1)  # import mlflow, create the schema: not timed
    reader = DumpReader(dump)
    started, cpu = time.perf_counter(), time.process_time()
    report = import_runs(reader, dest, ImportOptions())
    seconds, cpu = time.perf_counter() - started, time.process_time() - cpu
    fk_checks = dest._sql.fk_checks if dest._sql is not None and dest.bulk_active else ""
    dest.close()
    [result] = report.runs
    if result.status != "created":
        msg = f"import failed: {result.status} {result.message}"
        raise RuntimeError(msg)
    out: dict[str, Any] = {"seconds": seconds, "cpu_seconds": cpu, "run_id": result.destination_run_id,
                           "requests": result.requests}
    if bulk == "always":
        from neptune_migrate.verify.verifier import VerifyOptions, verify_runs

        check = MlflowDestination(uri)
        started = time.perf_counter()
        verified = verify_runs(reader, check, VerifyOptions(import_options=ImportOptions()))
        out["verify_seconds"] = time.perf_counter() - started
        out["verify_ok"] = verified.ok
        out["verify_points"] = verified.to_json()["totals"]["points_compared"]
        out["fk_checks"] = fk_checks
        check.close()
    return out


def child(which: str, uri: str, db: Path, points: int, series: int, dump: Path | None) -> None:
    os.environ.setdefault("MLFLOW_SUPPRESS_PRINTING_URL_TO_STDOUT", "true")
    os.environ.setdefault("MLFLOW_LOGGING_LEVEL", "WARNING")
    work = Path(tempfile.mkdtemp(prefix=f"bench-mlflow-{which}-"))
    try:
        if which == "raw":
            out = child_raw(uri, work, points, series)
        elif which in ("floor", "floor_fk"):
            out = child_floor(uri, work, points, series, row_checks=which == "floor_fk")
        else:
            assert dump is not None
            out = child_ours(uri, work, dump, "always" if which == "bulk" else "never")
    finally:
        shutil.rmtree(work, ignore_errors=True)
    out["peak_rss_mib"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    out["stored"] = stored(db, out["run_id"], uri)
    print(json.dumps(out))


# ---------------------------------------------------------------------------------------------
# the parent: dump, stores, servers


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@contextlib.contextmanager
def mlflow_server(root: Path, workers: int) -> Iterator[str]:
    """A `mlflow server` on 127.0.0.1 with a fresh SQLite backend under `root`; its whole process
    group is killed on exit."""
    port = free_port()
    db = root / "mlflow.db"
    env = {**os.environ, "MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false"}
    mlflow_bin = Path(sys.executable).with_name("mlflow")
    cmd = [str(mlflow_bin) if mlflow_bin.exists() else "mlflow", "server",
           "--backend-store-uri", f"sqlite:///{db}", "--artifacts-destination", str(root / "artifacts"),
           "--host", "127.0.0.1", "--port", str(port), "--workers", str(workers)]
    log = (root / "server.log").open("wb")
    proc = subprocess.Popen(cmd, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + SERVER_START_TIMEOUT
        while True:
            if proc.poll() is not None:
                msg = f"mlflow server exited with {proc.returncode}; see {root / 'server.log'}"
                raise RuntimeError(msg)
            try:
                with urllib.request.urlopen(f"{url}/health", timeout=2) as resp:
                    if resp.status == 200:
                        break
            except OSError:
                pass
            if time.monotonic() > deadline:
                msg = f"mlflow server did not answer /health within {SERVER_START_TIMEOUT:.0f} s"
                raise RuntimeError(msg)
            time.sleep(0.5)
        yield url
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
        log.close()


_pg_count = iter(range(10**6))


def measure(which: str, backend: str, points: int, series: int, dump: Path, work: Path,
            workers: int, pg: Any = None) -> dict[str, Any]:
    root = Path(tempfile.mkdtemp(prefix=f"{backend}-{which}-", dir=work))
    db = root / "mlflow.db"
    with contextlib.ExitStack() as stack:
        if backend == "sqlite":
            uri = f"sqlite:///{db}"
        elif backend == "postgresql":
            uri = pg.create_db(f"bench_{which}_{next(_pg_count)}")
        else:
            uri = stack.enter_context(mlflow_server(root, workers))
        cmd = [sys.executable, __file__, "--child", which, uri, str(db), str(points), str(series), str(dump)]
        proc = subprocess.run(cmd, capture_output=True, text=True)
    if proc.returncode != 0:
        msg = f"{which} on {backend} failed:\n{proc.stderr[-3000:]}"
        raise RuntimeError(msg)
    res: dict[str, Any] = json.loads(proc.stdout.strip().splitlines()[-1])
    if res["stored"]["rows"] != points:
        msg = f"{which} on {backend}: {res['stored']['rows']} rows stored, expected {points}"
        raise RuntimeError(msg)
    res.update(line=which, backend=backend, points=points, points_per_second=points / res["seconds"])
    if "verify_seconds" in res:
        res["verify_points_per_second"] = res["verify_points"] / res["verify_seconds"]
    return res


LABELS = {"raw": "raw `MlflowClient.log_batch` (ceiling)", "ours": "ours (`import_runs`)",
          "api": "ours, API path (`--bulk never`)", "bulk": "ours, bulk path (`--bulk always`)",
          "floor": "raw driver insert (floor: executemany / COPY)",
          "floor_fk": "raw COPY, foreign key checked per row"}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--points", type=int, default=1_000_000)
    parser.add_argument("--server-points", type=int, default=None,
                        help="points for the server backend (default: --points)")
    parser.add_argument("--shape", choices=list(SHAPES), default="wide")
    parser.add_argument("--backend", default="both",
                        help="comma-separated: sqlite, postgresql, server (both = sqlite,server)")
    parser.add_argument("--server-workers", type=int, choices=[1, 4], default=1)
    parser.add_argument("--lines", default="raw,ours", help="which lines, in order (default raw,ours)")
    parser.add_argument("--repeat", type=int, default=1,
                        help="run the lines this many times, alternating; the ratio uses the best of each")
    parser.add_argument("--dir", type=Path, default=None, help="where the temporary work folder goes")
    parser.add_argument("--json", action="store_true", help="print one JSON line instead of the table")
    parser.add_argument("--child", nargs=6, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        which, uri, db, points, series, dump = args.child
        child(which, uri, Path(db), int(points), int(series), Path(dump) if dump else None)
        return

    series = SHAPES[args.shape]
    backends = ["sqlite", "server"] if args.backend == "both" else args.backend.split(",")
    lines = [w.strip() for w in args.lines.split(",") if w.strip()]
    work = Path(tempfile.mkdtemp(prefix="bench-mlflow-", dir=args.dir))
    results: list[dict[str, Any]] = []
    header = {"python": platform.python_version(), "shape": args.shape, "series": series,
              "server_workers": args.server_workers, "date": datetime.now(timezone.utc).date().isoformat()}
    stack = contextlib.ExitStack()
    try:
        import mlflow

        header["mlflow"] = mlflow.__version__
        if not args.json:
            print(f"shape={args.shape} ({series} series) mlflow={mlflow.__version__} "
                  f"python={header['python']} server workers={args.server_workers}", flush=True)
            print("On a loaded 2-core machine the figures vary from run to run; compare lines of one run.")
            print("| backend | line | points | points/s | seconds | client CPU s | peak RSS MiB | verify points/s |")
            print("|---|---|---|---|---|---|---|---|", flush=True)
        dumps: dict[int, Path] = {}
        pg = None
        if "postgresql" in backends:
            from tests.support.postgres import running_postgres

            pg_root = Path(tempfile.mkdtemp(prefix="bench-pg-"))  # outside `work`: the cluster may run as nobody
            stack.callback(shutil.rmtree, pg_root, True)  # after the cluster stopped (last in, first out)
            pg = stack.enter_context(running_postgres(pg_root, durable=True))
        for backend in backends:
            points = args.server_points if backend == "server" and args.server_points else args.points
            points -= points % series
            if points not in dumps:
                dumps[points] = work / f"dump-{points}"
                build_dump(dumps[points], points, series)
            for which in lines * args.repeat:
                if which == "floor_fk" and backend != "postgresql":
                    continue  # SQLite's foreign keys are checked the same way in both floors
                res = measure(which, backend, points, series, dumps[points], work, args.server_workers, pg)
                results.append(res)
                if not args.json:
                    vps = f"{res['verify_points_per_second']:,.0f}" if "verify_points_per_second" in res else ""
                    label = LABELS[which] + (f" (FK: {res['fk_checks']})" if backend == "postgresql"
                                             and res.get("fk_checks") else "")
                    print(f"| {backend} | {label} | {points:,} | {res['points_per_second']:,.0f} | "
                          f"{res['seconds']:.1f} | {res['cpu_seconds']:.1f} | {res['peak_rss_mib']:.0f} | {vps} |",
                          flush=True)
            best: dict[str, dict[str, Any]] = {}
            for r in results:
                if r["backend"] == backend and (r["line"] not in best or r["seconds"] < best[r["line"]]["seconds"]):
                    best[r["line"]] = r
            for a, b in (("bulk", "floor"), ("bulk", "floor_fk"), ("bulk", "raw"), ("bulk", "api")):
                if a in best and b in best and not args.json:
                    ratio = best[a]["points_per_second"] / best[b]["points_per_second"]
                    print(f"| {backend} | {a} / {b} | | {ratio:.2f}x | | | | |", flush=True)
            if "bulk" in best:
                same = all(r["stored"] == best["bulk"]["stored"] for r in results if r["backend"] == backend)
                header[f"{backend}_same_points"] = same
                if not same and not args.json:
                    print(f"| {backend} | stored points DIFFER between lines | | | | | | |", flush=True)
            if "raw" in best and "ours" in best:
                raw, ours = best["raw"], best["ours"]
                same = all(r["stored"] == raw["stored"] for r in results if r["backend"] == backend)
                ratio = ours["points_per_second"] / raw["points_per_second"]
                header[f"{backend}_ratio"] = ratio
                header[f"{backend}_same_points"] = same
                if not args.json:
                    print(f"| {backend} | ours / raw | | {ratio:.2f}x | | | | |"
                          f"{'' if same else ' (stored points DIFFER)'}", flush=True)
    finally:
        stack.close()
        shutil.rmtree(work, ignore_errors=True)
    if args.json:
        print(json.dumps({**header, "results": results}))


if __name__ == "__main__":
    main()
