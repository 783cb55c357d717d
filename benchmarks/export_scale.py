"""neptune-scale export benchmark: a 1M-point run written by the real client in offline mode, then

  (a) raw:  copy the DB, read every `run_operations` row with sqlite3 and `ParseFromString` it;
      and the same plus reading every appended value into a Python object (the floor of any
      Python reader that looks at the values);
  (b) ours: `export --from neptune-scale` of the same log into a fresh dump (copy, decode, replay,
            Parquet, commit).

    python benchmarks/export_scale.py                         # 100k steps x 10 metrics = 1M points
    python benchmarks/export_scale.py --steps 10000           # smaller
    python benchmarks/export_scale.py --keep /tmp/scale-bench # keep the generated log for reuse
    python benchmarks/export_scale.py --log /tmp/scale-bench  # reuse it

Each phase runs in its own subprocess, so its peak RSS (`ru_maxrss`) is its own.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import sqlite3
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

PROJECT = "bench-ws/bench-proj"


def produce(log_dir: str, steps: int, metrics: int) -> None:
    """Runs inside a subprocess: the real neptune-scale client, offline."""
    from datetime import datetime, timedelta, timezone

    from neptune_scale import Run

    t0 = datetime(2025, 1, 1, tzinfo=timezone.utc)
    run = Run(run_id="bench-run", project=PROJECT, mode="offline", log_directory=log_dir,
              enable_console_log_capture=False, source_tracking_config=None, creation_time=t0)
    run.log_configs({"parameters/steps": steps, "parameters/metrics": metrics})
    names = [f"train/metric_{i:02d}" for i in range(metrics)]
    for s in range(steps):
        run.log_metrics({n: s * 0.001 + i for i, n in enumerate(names)}, step=s,
                        timestamp=t0 + timedelta(milliseconds=s))
    run.close()


def generate(log_dir: Path, steps: int, metrics: int) -> float:
    env = dict(os.environ, TZ="UTC")
    for k in ("NEPTUNE_API_TOKEN", "NEPTUNE_MODE", "NEPTUNE_LOG_DIRECTORY"):
        env.pop(k, None)
    started = time.perf_counter()
    subprocess.run([sys.executable, __file__, "--produce", str(log_dir), str(steps), str(metrics)],
                   check=True, env=env, cwd=tempfile.gettempdir())
    return time.perf_counter() - started


def phase_raw(db: Path, *, visit: bool = False) -> dict[str, Any]:
    """Copy + read + decode; with `visit`, also read every appended value into a Python float."""
    from neptune_api.proto.neptune_pb.ingest.v1.common_pb2 import Run, UpdateRunSnapshot

    started = time.perf_counter()
    points = rows = 0
    with tempfile.TemporaryDirectory() as tmp:
        for sfx in ("", "-wal", "-shm"):
            src = db.with_name(db.name + sfx)
            if src.exists():
                shutil.copyfile(src, Path(tmp) / src.name)
        con = sqlite3.connect(Path(tmp) / db.name)
        cur = con.execute("select operation_type, operation from run_operations order by sequence_id")
        while batch := cur.fetchmany(10_000):
            for op_type, blob in batch:
                if op_type == 0:
                    msg = UpdateRunSnapshot()
                    msg.ParseFromString(blob)
                    if visit:
                        for value in msg.append.values():
                            _ = value.float64
                            points += 1
                    else:
                        points += len(msg.append)
                else:
                    Run().ParseFromString(blob)
                rows += 1
        con.close()
    seconds = time.perf_counter() - started
    return {"phase": "raw+visit" if visit else "raw", "rows": rows, "points": points, "seconds": seconds,
            "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}


def phase_export(log: Path) -> dict[str, Any]:
    from neptune_migrate.dump.writer import DumpWriter
    from neptune_migrate.pipeline.export import export_runs
    from neptune_migrate.sources import load_source
    from neptune_migrate.sources.base import RunSelection, SourceOptions

    with tempfile.TemporaryDirectory() as tmp:
        started = time.perf_counter()
        source = load_source("neptune-scale", SourceOptions(path=log))
        with DumpWriter(Path(tmp) / "dump") as writer:
            summary = export_runs(source, writer, RunSelection(), location=str(log))
        seconds = time.perf_counter() - started
        dump_bytes = sum(p.stat().st_size for p in (Path(tmp) / "dump").rglob("*") if p.is_file())
    [run] = summary.runs
    assert run.status == "exported", run
    return {"phase": "export", "points": run.points, "seconds": seconds, "dump_mb": dump_bytes / 2**20,
            "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}


def run_phase(name: str, target: Path) -> dict[str, Any]:
    proc = subprocess.run([sys.executable, __file__, "--phase", name, str(target)],
                          check=True, capture_output=True, text=True)
    return dict(json.loads(proc.stdout.strip().splitlines()[-1]))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--steps", type=int, default=100_000)
    parser.add_argument("--metrics", type=int, default=10)
    parser.add_argument("--keep", type=Path, help="generate the log here and keep it")
    parser.add_argument("--log", type=Path, help="reuse a log generated earlier with --keep")
    args = parser.parse_args()

    scratch = None
    if args.log is not None:
        log = args.log
        gen_seconds = None
    else:
        if args.keep is not None:
            log = args.keep
            shutil.rmtree(log, ignore_errors=True)
        else:
            scratch = tempfile.mkdtemp(prefix="scale-bench-")
            log = Path(scratch) / "logs"
        gen_seconds = generate(log, args.steps, args.metrics)
    try:
        [db] = sorted(log.rglob("run_operations.sqlite3"))
        db_mb = db.stat().st_size / 2**20
        raw = run_phase("raw", db)
        visit = run_phase("visit", db)
        ours = run_phase("export", log)
    finally:
        if scratch is not None:
            shutil.rmtree(scratch, ignore_errors=True)
    raw_rate = raw["points"] / raw["seconds"]
    our_rate = ours["points"] / ours["seconds"]
    if gen_seconds is not None:
        print(f"generated {args.steps} steps x {args.metrics} metrics with neptune-scale offline "
              f"in {gen_seconds:.1f} s")
    print(f"log: {raw['rows']} operations, {db_mb:.1f} MiB")
    print(f"raw  (sqlite read + ParseFromString): {raw['points']:>9} points in {raw['seconds']:6.2f} s = "
          f"{raw_rate / 1e6:5.2f} M points/s, peak RSS {raw['peak_rss_mb']:.0f} MiB")
    print(f"raw + read every value into Python:   {visit['points']:>9} points in {visit['seconds']:6.2f} s = "
          f"{visit['points'] / visit['seconds'] / 1e6:5.2f} M points/s, peak RSS {visit['peak_rss_mb']:.0f} MiB")
    print(f"ours (export into a dump):            {ours['points']:>9} points in {ours['seconds']:6.2f} s = "
          f"{our_rate / 1e6:5.2f} M points/s, peak RSS {ours['peak_rss_mb']:.0f} MiB, dump {ours['dump_mb']:.1f} MiB")
    print(f"ratio ours/raw: {our_rate / raw_rate:.2f} "
          f"(export takes {ours['seconds'] / raw['seconds']:.1f}x the raw time)")


if __name__ == "__main__":
    if len(sys.argv) >= 5 and sys.argv[1] == "--produce":
        produce(sys.argv[2], int(sys.argv[3]), int(sys.argv[4]))
    elif len(sys.argv) >= 4 and sys.argv[1] == "--phase":
        target = Path(sys.argv[3])
        phase = sys.argv[2]
        print(json.dumps(phase_export(target) if phase == "export" else phase_raw(target, visit=phase == "visit")))
    else:
        main()
