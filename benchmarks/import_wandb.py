"""W&B import benchmark: 1M float points through `import_runs` into offline W&B runs, next to the
SDK's own ceiling (`run.log(row, step=s)` with the same rows, pre-built) measured in the same run.

    python benchmarks/import_wandb.py                     # 1M points, wide and narrow
    python benchmarks/import_wandb.py --points 100000     # quicker
    python benchmarks/import_wandb.py --shape narrow

Shapes: wide = 1,000 series x 1,000 steps (one row of 1,000 keys per step), narrow = 10 series x
100,000 steps. Each line runs in its own subprocess, so its peak RSS
(`getrusage(RUSAGE_SELF).ru_maxrss`) is its own. Times exclude building the dump (ours) and
building the rows (SDK), and include `wandb.init`/`finish`. Next to wall-clock time, each line
reports the CPU seconds of its Python process (`time.process_time`, wandb-core excluded for both):
on a shared, loaded machine the wall-clock ratio swings with other people's load, the CPU ratio
much less.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import subprocess
import sys
import tempfile
import time
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


def _env() -> None:
    os.environ.setdefault("WANDB_SILENT", "true")
    os.environ.setdefault("WANDB_MODE", "offline")
    os.environ.setdefault("WANDB_DISABLE_GIT", "true")


def build_dump(root: Path, points: int, series: int) -> None:
    from neptune_migrate.dump.writer import DumpWriter
    from neptune_migrate.model import Provenance, RunKey, RunRecord, SourceRunId, SystemInfo

    key = RunKey("bench/wandb", SourceRunId("BENCH-1"))
    paths = pa.array([f"train/metric_{i:04d}" for i in range(series)], pa.string())
    with DumpWriter(root) as dump, dump.begin_run(key) as run:
        for start in range(0, points, BATCH):
            g = np.arange(start, min(start + BATCH, points), dtype=np.int64)
            path = pa.DictionaryArray.from_arrays(pa.array(g % series, pa.int32()), paths).cast(pa.string())
            step = g // series
            run.add_points("float", pa.table({
                "path": path,
                "step": pa.array(step.astype(np.float64)),
                "timestamp": pa.array(T0_US + step * 1000, pa.int64()).cast(pa.timestamp("us", tz="UTC")),
                "value": pa.array(np.sin(g / 1000.0)),
            }))
        run.commit(RunRecord(key=key, system=SystemInfo(name="bench"), fields={},
                             provenance=Provenance("bench", "benchmarks/import_wandb.py")))


def child_ours(points: int, series: int, work: Path) -> dict[str, Any]:
    from neptune_migrate.destinations import DestinationOptions, load_destination
    from neptune_migrate.dump.reader import DumpReader
    from neptune_migrate.pipeline.import_ import ImportOptions, import_runs

    build_dump(work / "dump", points, series)
    import wandb  # noqa: F401 - imported before the clock starts, as in the SDK line

    reader = DumpReader(work / "dump")
    dest = load_destination("wandb", DestinationOptions(wandb_mode="offline", wandb_dir=work / "out"))
    started, cpu = time.perf_counter(), time.process_time()
    report = import_runs(reader, dest, ImportOptions())
    seconds, cpu = time.perf_counter() - started, time.process_time() - cpu
    dest.close()
    [result] = report.runs
    assert result.status == "created", result.message
    size = sum(p.stat().st_size for p in (work / "out").rglob("*.wandb"))
    return {"seconds": seconds, "cpu_seconds": cpu, "file_bytes": size}


def child_sdk(points: int, series: int, work: Path) -> dict[str, Any]:
    import wandb

    steps = points // series
    keys = [f"train/metric_{i:04d}" for i in range(series)]
    rows = []
    for s in range(steps):
        row: dict[str, Any] = {k: float(np.sin((s * series + i) / 1000.0)) for i, k in enumerate(keys)}
        row["_timestamp"] = (T0_US + s * 1000) / 1e6
        rows.append(row)
    settings = wandb.Settings(mode="offline", silent=True, console="off", save_code=False, disable_git=True,
                              x_disable_stats=True, x_disable_meta=True, x_disable_machine_info=True,
                              x_save_requirements=False)
    started, cpu = time.perf_counter(), time.process_time()
    run = wandb.init(id="sdkceiling", project="bench", dir=str(work), settings=settings)
    for s, row in enumerate(rows):
        run.log(row, step=s, commit=True)
    run.finish()
    return {"seconds": time.perf_counter() - started, "cpu_seconds": time.process_time() - cpu}


def child(which: str, points: int, shape: str) -> None:
    _env()
    work = Path(tempfile.mkdtemp(prefix=f"bench-wandb-{which}-"))
    try:
        fn = child_ours if which == "ours" else child_sdk
        out = fn(points, SHAPES[shape], work)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    out["peak_rss_mib"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(json.dumps(out))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--points", type=int, default=1_000_000)
    parser.add_argument("--shape", choices=[*SHAPES, "both"], default="both")
    parser.add_argument("--child", nargs=3, metavar=("WHICH", "POINTS", "SHAPE"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        which, points, shape = args.child
        child(which, int(points), shape)
        return
    shapes = list(SHAPES) if args.shape == "both" else [args.shape]
    results = []
    print("| shape | line | points/s | seconds | CPU s (Python process) | peak RSS MiB | .wandb MiB |")
    print("|---|---|---|---|---|---|---|")
    for shape in shapes:
        for which in ("sdk", "ours"):
            proc = subprocess.run([sys.executable, __file__, "--child", which, str(args.points), shape],
                                  capture_output=True, text=True, check=True)
            res = json.loads(proc.stdout.strip().splitlines()[-1])
            res.update(shape=shape, line=which, points=args.points,
                       points_per_second=args.points / res["seconds"])
            results.append(res)
            size = f"{res['file_bytes'] / 2**20:.1f}" if "file_bytes" in res else ""
            label = "SDK `run.log` ceiling" if which == "sdk" else "ours (`import_runs`)"
            cpu = f"{res['cpu_seconds']:.1f}" if "cpu_seconds" in res else ""
            print(f"| {shape} | {label} | {res['points_per_second']:,.0f} | {res['seconds']:.1f} | {cpu} | "
                  f"{res['peak_rss_mib']:.0f} | {size} |", flush=True)
    for shape in shapes:
        sdk, ours = (next(r for r in results if r["shape"] == shape and r["line"] == w) for w in ("sdk", "ours"))
        ratio = ours["points_per_second"] / sdk["points_per_second"]
        cpu_ratio = (sdk.get("cpu_seconds", 0) / ours["cpu_seconds"]) if ours.get("cpu_seconds") else float("nan")
        print(f"{shape}: ours = {ratio:.2f}x the SDK ceiling in points/s (wall clock), {cpu_ratio:.2f}x in "
              "CPU time of the Python process (less sensitive to other load on the machine)")
    print(json.dumps(results))


if __name__ == "__main__":
    main()
