"""Peak memory of export, import and verify by run size: one run of N float points, each verb in its
own subprocess, peak RSS from `ru_maxrss` of that process (`os.wait4`).

    python benchmarks/memory.py                          # 1M and 5M points
    python benchmarks/memory.py --points 1000000         # one size
    python benchmarks/memory.py --ten-million            # 1M, 5M and 10M
    python benchmarks/memory.py --baseline /work/main    # also measure another checkout, same inputs
    python benchmarks/memory.py --json                   # one JSON line per size

Input: a neptune-exporter data file (the official exporter's 14-column schema) holding one run with
a few scalar attributes and N float points over `--series` paths (point g goes to path g mod S at
step g div S; a timestamp per point), written in row groups of 100,000 rows. Then, with the CLI as a
user runs it (`python -m neptune_migrate`):

- export: `export FILE_DIR --from neptune-exporter --out DUMP`
- import: `import DUMP --to mlflow --tracking-uri sqlite:///DB` (MLflow's `log_batch` path)
- verify: `verify DUMP --to mlflow --tracking-uri sqlite:///DB` (every point compared)

A flat reader/writer shows (nearly) the same peak at every size. Throughput is printed too, but
this machine is shared: figures were taken on a loaded 2-core VM, so points/s vary by +-30 %.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import time
from datetime import datetime, timezone
from decimal import Decimal
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

REPO = Path(__file__).resolve().parent.parent
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from neptune_migrate.sources.exporter_dump.mapping import EXPORTER_SCHEMA  # noqa: E402

PROJECT = "bench-ws/bench-proj"
RUN_ID = "BENCH-1"
GROUP_ROWS = 100_000
T0_MS = int(datetime(2025, 1, 2, tzinfo=timezone.utc).timestamp() * 1000)


def _rows(columns: dict[str, pa.Array], n: int) -> pa.Table:
    out = {}
    for f in EXPORTER_SCHEMA:
        out[f.name] = columns.get(f.name, pa.nulls(n, f.type))
    return pa.table(out, schema=EXPORTER_SCHEMA)


def build_exporter_file(root: Path, points: int, series: int) -> Path:
    """`root/data/<project dir>/<run>_part_0.parquet`, as the exporter names a finished run."""
    folder = root / "data" / "bench-ws_bench-proj"
    folder.mkdir(parents=True)
    path = folder / f"{RUN_ID}_part_0.parquet"
    scalars = _rows({
        "project_id": pa.array([PROJECT] * 3), "run_id": pa.array([RUN_ID] * 3),
        "attribute_path": pa.array(["sys/id", "sys/name", "sys/creation_time"]),
        "attribute_type": pa.array(["string", "string", "datetime"]),
        "string_value": pa.array([RUN_ID, "memory-bench", None]),
        "datetime_value": pa.array([None, None, T0_MS], pa.int64()).cast(pa.timestamp("ms", tz="UTC")),
    }, 3)
    names = np.array([f"train/metric_{i:04d}" for i in range(series)], dtype=object)
    with pq.ParquetWriter(path, EXPORTER_SCHEMA, compression="zstd") as writer:
        writer.write_table(scalars)
        for start in range(0, points, GROUP_ROWS):
            g = np.arange(start, min(points, start + GROUP_ROWS), dtype=np.int64)
            n = len(g)
            steps = g // series
            writer.write_table(_rows({
                "project_id": pa.array([PROJECT] * n), "run_id": pa.array([RUN_ID] * n),
                "attribute_path": pa.array(names[g % series].tolist(), pa.string()),
                "attribute_type": pa.array(["float_series"] * n),
                "step": pa.array([Decimal(int(s)) for s in steps], pa.decimal128(18, 6)),
                "timestamp": pa.array(T0_MS + steps, pa.int64()).cast(pa.timestamp("ms", tz="UTC")),
                "float_value": pa.array(np.sin(g / 1000.0) + g * 1e-6, pa.float64()),
            }, n))
    return root / "data"


def run_verb(code: Path, args: list[str], cwd: Path) -> dict[str, Any]:
    """One CLI call in its own process: exit code, seconds, peak RSS (MiB)."""
    env = dict(os.environ, PYTHONPATH=str(code), NO_COLOR="1")
    start = time.perf_counter()
    proc = subprocess.Popen([sys.executable, "-m", "neptune_migrate", *args], env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, cwd=cwd)
    assert proc.stderr is not None
    err = proc.stderr.read()
    _, status, usage = os.wait4(proc.pid, 0)
    proc.returncode = os.waitstatus_to_exitcode(status)
    seconds = time.perf_counter() - start
    out: dict[str, Any] = {"rc": proc.returncode, "seconds": round(seconds, 2),
                           "peak_rss_mib": round(usage.ru_maxrss / 1024)}
    if proc.returncode != 0:
        out["stderr_tail"] = err.decode(errors="replace").strip().splitlines()[-3:]
    return out


SEED_SCRIPT = r"""
import sqlite3, sys
from pathlib import Path
from neptune_migrate.destinations.mlflow.destination import MlflowDestination
from neptune_migrate.dump.reader import DumpReader
from neptune_migrate.pipeline.import_ import ImportOptions, import_runs

dump, uri = Path(sys.argv[1]), sys.argv[2]
db = sqlite3.connect(uri[len("sqlite:///"):], timeout=60)
dest = MlflowDestination(uri, "{project}")
client = dest.client
real = client.log_batch

def log_batch(run_id, metrics=(), params=(), tags=(), **kw):
    if metrics:  # the rows MlflowClient.log_batch would insert, by one executemany
        db.executemany("INSERT OR IGNORE INTO metrics (key, value, timestamp, run_uuid, step, is_nan) "
                       "VALUES (?, ?, ?, ?, ?, ?)",
                       [(m.key, 0.0 if m.value != m.value else m.value, m.timestamp, run_id, m.step,
                         m.value != m.value) for m in metrics])
        db.commit()
    if params or tags:
        real(run_id, params=params, tags=tags, **kw)

client.log_batch = log_batch
report = import_runs(DumpReader(dump), dest, ImportOptions())
assert all(r.status == "created" for r in report.runs), [(r.key, r.status, r.message) for r in report.runs]
# latest_metrics as MLflow keeps it: the point with the greatest (step, timestamp, value) per key.
db.execute("INSERT OR REPLACE INTO latest_metrics (key, value, timestamp, step, is_nan, run_uuid) "
           "SELECT key, value, timestamp, step, is_nan, run_uuid FROM (SELECT *, ROW_NUMBER() OVER ("
           "PARTITION BY run_uuid, key ORDER BY step DESC, timestamp DESC, value DESC) AS n FROM metrics) "
           "WHERE n = 1")
db.commit()
"""
"""`--import-mode seeded`: our import, with float points inserted into MLflow's `metrics` table by
one `executemany` per 1,000-point batch instead of `log_batch` (params, tags, artifacts and the
completion marker still go through MLflow). `log_batch` ran at ~200 points/s on the loaded machine
the figures were taken on (1M points: 75+ minutes); the seeded store holds the same rows, so
verify, which reads it through MLflow's API, measures the same."""


def seed_import(code: Path, dump: Path, db: str, cwd: Path) -> dict[str, Any]:
    env = dict(os.environ, PYTHONPATH=str(code))
    start = time.perf_counter()
    proc = subprocess.Popen([sys.executable, "-c", SEED_SCRIPT, str(dump), db], env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, cwd=cwd)
    assert proc.stderr is not None
    err = proc.stderr.read()
    _, status, usage = os.wait4(proc.pid, 0)
    rc = os.waitstatus_to_exitcode(status)
    out: dict[str, Any] = {"rc": rc, "seconds": round(time.perf_counter() - start, 2),
                           "peak_rss_mib": round(usage.ru_maxrss / 1024),
                           "seeded": True}
    if rc != 0:
        out["stderr_tail"] = err.decode(errors="replace").strip().splitlines()[-3:]
    return out


def measure(code: Path, source: Path, work: Path, phases: list[str], label: str, mode: str) -> dict[str, Any]:
    dump = work / "dump"
    db = f"sqlite:///{work / 'mlflow.db'}"
    results: dict[str, Any] = {}
    for phase in phases:
        if phase == "export":
            out = dump if label == "this" else work / f"dump-{label}"  # a fresh dump: no resume skip
            args = ["export", str(source), "--from", "neptune-exporter", "--out", str(out)]
            results[phase] = run_verb(code, args, work)
        elif phase == "import" and mode == "seeded":
            results[phase] = seed_import(code, dump, db, work)
        elif phase == "import":
            results[phase] = run_verb(code, ["import", str(dump), "--to", "mlflow", "--tracking-uri", db], work)
        else:
            report = work / f"verify-{label}.json"
            results[phase] = run_verb(code, ["verify", str(dump), "--to", "mlflow", "--tracking-uri", db,
                                             "--report", str(report)], work)
            if report.is_file():
                doc = json.loads(report.read_text())
                results[phase]["ok"] = doc["ok"]
                results[phase]["points_compared"] = doc["totals"]["points_compared"]
    return results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--points", default="1000000,5000000", help="comma-separated run sizes")
    parser.add_argument("--ten-million", action="store_true", help="add a 10,000,000-point run")
    parser.add_argument("--series", type=int, default=10)
    parser.add_argument("--phases", default="export,import,verify")
    parser.add_argument("--baseline", type=Path, help="another checkout of neptune-migrate to measure too")
    parser.add_argument("--baseline-phases", default="export,verify",
                        help="phases the baseline runs, on this checkout's dump and store (default export,verify)")
    parser.add_argument("--import-mode", choices=["cli", "seeded"], default="cli",
                        help="seeded: float points by SQL instead of log_batch (see SEED_SCRIPT)")
    parser.add_argument("--dir", type=Path, default=None, help="where the temporary work folder goes")
    parser.add_argument("--keep", action="store_true")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    sizes = [int(p) for p in args.points.split(",") if p.strip()]
    if args.ten_million and 10_000_000 not in sizes:
        sizes.append(10_000_000)
    phases = [p.strip() for p in args.phases.split(",") if p.strip()]
    codes = {"this": REPO} | ({"baseline": args.baseline.resolve()} if args.baseline else {})
    work = Path(tempfile.mkdtemp(prefix="bench-memory-", dir=args.dir))
    table: list[dict[str, Any]] = []
    try:
        for points in sizes:
            source = build_exporter_file(work / f"src-{points}", points, args.series)
            target = work / f"this-{points}"
            target.mkdir()
            for label, code in codes.items():
                # The baseline re-reads this checkout's dump and store (same inputs, fewer hours):
                # with --baseline-phases verify it only runs verify against them.
                todo = phases if label == "this" else [p for p in phases if p in args.baseline_phases.split(",")]
                res = measure(code, source, target, todo, label, args.import_mode)
                row = {"points": points, "series": args.series, "code": label, **res}
                table.append(row)
                if args.json:
                    print(json.dumps(row), flush=True)
                else:
                    cells = "  ".join(
                        f"{p} {r['peak_rss_mib']:>5} MiB {points / r['seconds'] / 1000:>7.1f}k pts/s"
                        + ("" if r["rc"] == 0 else f" (exit {r['rc']})")
                        for p, r in res.items())
                    print(f"{points:>11,} points  {label:<8}  {cells}", flush=True)
                    for p, r in res.items():
                        if r["rc"] != 0:
                            print(f"    {p} failed: {' / '.join(r.get('stderr_tail', []))}", flush=True)
            if not args.keep:
                shutil.rmtree(work / f"src-{points}", ignore_errors=True)
                shutil.rmtree(target, ignore_errors=True)
    finally:
        if not args.keep:
            shutil.rmtree(work, ignore_errors=True)
    if not args.json:
        print(f"python {platform.python_version()}, pyarrow {pa.__version__}, {os.cpu_count()} cores "
              "(shared, loaded machine: points/s are indicative only; peak RSS is stable)")


if __name__ == "__main__":
    main()
