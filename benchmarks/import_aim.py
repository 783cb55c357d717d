"""Aim import benchmark: N float points (default 1M) through `import_runs` into a fresh local Aim
repository, next to plain `run.track` of the same points into another fresh repository.

    python benchmarks/import_aim.py                         # 1M points, 10 series x 100,000 steps
    python benchmarks/import_aim.py --points 100000 --series 100
    python benchmarks/import_aim.py --json                  # one JSON line, for scripts

Each line runs in its own subprocess (so each peak RSS, `getrusage(RUSAGE_SELF).ru_maxrss`, is its
own) against its own fresh repository:

- track: `aim.Run(repo, system_tracking_interval=None, capture_terminal_logs=False)`, then
  `run.track(value, name=path, step=step)` for every point, series after series (the order the
  dump holds them in), from Python lists; `run.close()`. Only the track calls and close are timed.
- ours: `import_runs(DumpReader(dump), AimDestination(repo), ImportOptions())`: find, create (params,
  identity), step plans, reading the dump, conversion, `RunTracker._track` with the original
  timestamps, the completion marker, close and index refresh.

The dump is written by the parent beforehand (not timed, not in a child's RSS); importing aim and
initialising the repository happen before the clock starts in both lines. Afterwards each child
reads its run back through Aim's SDK (count and sum of values) and the parent checks both agree.
"""

from __future__ import annotations

import argparse
import json
import platform
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

from neptune_migrate.dump.reader import DumpReader  # noqa: E402
from neptune_migrate.dump.schema import SERIES_SCHEMAS  # noqa: E402
from neptune_migrate.dump.writer import DumpWriter  # noqa: E402
from neptune_migrate.model import Provenance, RunKey, RunRecord, SourceRunId, SystemInfo  # noqa: E402

KEY = RunKey("bench/aim", SourceRunId("BENCH-1"))
T0_US = int(datetime(2025, 3, 1, tzinfo=timezone.utc).timestamp() * 1_000_000)
BATCH = 100_000


def _peak_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def series_batches(points: int, series: int) -> Any:
    """Series after series; point i of series s: step i, value sin(i/1000)/(1+s), 1 s apart."""
    steps = points // series
    schema = SERIES_SCHEMAS["float"]
    for s in range(series):
        for start in range(0, steps, BATCH):
            i = np.arange(start, min(start + BATCH, steps), dtype=np.int64)
            yield pa.Table.from_arrays([
                pa.array([f"train/metric_{s:03d}"] * len(i), pa.string()),
                pa.array(i.astype(np.float64)),
                pa.array(T0_US + i * 1_000_000, pa.int64()).cast(schema.field("timestamp").type),
                pa.array(np.sin(i * 1e-3) / (1.0 + s)),
                pa.nulls(len(i), pa.float64()),
            ], schema=schema)


def write_dump(root: Path, points: int, series: int) -> None:
    with DumpWriter(root) as dump, dump.begin_run(KEY) as run:
        for table in series_batches(points, series):
            run.add_points("float", table)
        run.commit(RunRecord(key=KEY, system=SystemInfo(name="bench"), fields={},
                             provenance=Provenance("benchmark", str(root))))


def _read_back(repo_path: Path, run_hash: str) -> dict[str, float]:
    from aim import Repo
    from aim.sdk.index_manager import RepoIndexManager

    repo = Repo.from_path(str(repo_path))
    RepoIndexManager.get_index_manager(repo).index(run_hash)
    repo.container_pool.clear()
    run = repo.get_run(run_hash)
    count, total = 0, 0.0
    for seq in run.metrics():
        _, (values,) = seq.data.view(["val"]).numpy()
        count += len(values)
        total += float(np.sum(values))
    return {"count": count, "sum": total}


def child_track(dump: Path, repo_path: Path) -> dict[str, Any]:
    import aim
    from aim import Repo

    repo = Repo.from_path(str(repo_path), init=True)
    reader = DumpReader(dump)
    run_dump = reader.get_run(KEY)
    assert run_dump is not None
    tables = list(reader.iter_points(run_dump, "float", columns=["path", "step", "value"]))
    lists = [(t.column("path").to_pylist(), t.column("step").to_pylist(), t.column("value").to_pylist())
             for t in tables]
    run = aim.Run(repo=repo, system_tracking_interval=None, capture_terminal_logs=False, log_system_params=False)
    start = time.perf_counter()
    points = 0
    for paths, steps, values in lists:
        for p, s, v in zip(paths, steps, values, strict=True):
            run.track(v, name=p, step=int(s))
        points += len(paths)
    run.close()
    seconds = time.perf_counter() - start
    return {"line": "track", "points": points, "seconds": seconds, "peak_rss_mib": _peak_mib(),
            "read_back": _read_back(repo_path, run.hash)}


def child_ours(dump: Path, repo_path: Path) -> dict[str, Any]:
    from neptune_migrate.destinations.aim import mapping
    from neptune_migrate.destinations.aim.destination import AimDestination
    from neptune_migrate.pipeline.import_ import ImportOptions, import_runs

    dest = AimDestination(str(repo_path))
    _ = dest.repo  # import aim and initialise the repository before the clock starts
    reader = DumpReader(dump)
    start = time.perf_counter()
    report = import_runs(reader, dest, ImportOptions())
    dest.close()
    seconds = time.perf_counter() - start
    [result] = report.runs
    assert result.status == "created", result.message
    return {"line": "ours", "points": result.points, "seconds": seconds, "peak_rss_mib": _peak_mib(),
            "read_back": _read_back(repo_path, mapping.run_hash(KEY))}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--points", type=int, default=1_000_000)
    parser.add_argument("--series", type=int, default=10)
    parser.add_argument("--json", action="store_true")
    parser.add_argument("--child", choices=["track", "ours"], help=argparse.SUPPRESS)
    parser.add_argument("--dump", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--repo", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        fn = child_track if args.child == "track" else child_ours
        print(json.dumps(fn(args.dump, args.repo)))
        return
    work = Path(tempfile.mkdtemp(prefix="bench-aim-"))
    try:
        write_dump(work / "dump", args.points, args.series)
        results = []
        for line in ("track", "ours"):
            proc = subprocess.run([sys.executable, __file__, "--child", line, "--dump", str(work / "dump"),
                                   "--repo", str(work / f"repo-{line}")], capture_output=True, text=True, check=True)
            results.append(json.loads(proc.stdout.strip().splitlines()[-1]))
    finally:
        shutil.rmtree(work, ignore_errors=True)
    track, ours = results
    same = track["read_back"]["count"] == ours["read_back"]["count"] and np.isclose(
        track["read_back"]["sum"], ours["read_back"]["sum"])
    summary = {"points": args.points, "series": args.series, "python": platform.python_version(),
               "lines": results, "same_points": bool(same)}
    if args.json:
        print(json.dumps(summary))
        return
    from aim.__version__ import __version__ as aim_version

    print(f"points={args.points:,} series={args.series} python={platform.python_version()} aim={aim_version}")
    for r in results:
        label = {"track": "plain run.track", "ours": "neptune-migrate import_runs"}[r["line"]]
        print(f"  {label:<32} {r['points'] / r['seconds']:>9,.0f} points/s {r['seconds']:>8.1f} s"
              f"  peak RSS {r['peak_rss_mib']:>5.0f} MiB")
    print(f"  ours takes {ours['seconds'] / track['seconds']:.2f}x the time of plain run.track; "
          f"both stored the same points: {same}")


if __name__ == "__main__":
    main()
