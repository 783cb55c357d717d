"""Live Neptune 3.x export benchmark, against the fake 3.x server on 127.0.0.1.

Two data sets, each read twice in the same run:

  (a) raw:  neptune-query's own fetch of the same data (`fetch_runs_table` + `fetch_metrics`, which
            return pandas frames) -- the floor for any reader built on the client;
  (b) ours: `export --from neptune3-api` into a fresh dump (listing, values, paged series, Parquet,
            commit).

    python benchmarks/export_live_v3.py                        # 1,000 small runs; 100k and 1M points
    python benchmarks/export_live_v3.py --runs 10000 --points 100000,1000000

Each measured phase runs in its own subprocess, so its peak RSS (`VmHWM`) is its own; the fake
server runs in the parent. Figures in docs were taken on a loaded 2-core machine shared with other
jobs: compare the two columns of one run, not absolute numbers across machines.
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import tempfile
import time
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

T0_MS = 1735689600000


def peak_rss_mb() -> float:
    """This process's peak RSS: `VmHWM` (reset by exec), not `ru_maxrss`, which a child inherits from the
    parent it was forked from (here the parent holds the fake server's data)."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def phase(kind: str, token: str, project: str, out: str) -> dict[str, Any]:
    """Runs inside a subprocess: one measured read (peak RSS also given after the imports alone)."""
    import neptune_query.runs as nq_runs
    from neptune_query import set_api_token

    from neptune_migrate.dump.writer import DumpWriter
    from neptune_migrate.pipeline.export import export_runs
    from neptune_migrate.sources import load_source
    from neptune_migrate.sources.base import RunSelection, SourceOptions

    base_rss = peak_rss_mb()
    started = time.perf_counter()
    points = runs = 0
    if kind == "raw":

        set_api_token(token)
        table = nq_runs.fetch_runs_table(project=project, attributes=r"parameters/.*")
        runs = len(table)
        metrics = nq_runs.fetch_metrics(project=project, runs=".*", attributes=r"train/.*")
        points = int(metrics.count().sum())
    else:
        source = load_source("neptune3-api", SourceOptions(path=Path("."), project=project, api_token=token))
        with DumpWriter(Path(out)) as writer:
            summary = export_runs(source, writer, RunSelection(), location="bench")
        runs = summary.count("exported")
        points = sum(r.points for r in summary.runs)
    seconds = time.perf_counter() - started
    return {"phase": kind, "runs": runs, "points": points, "seconds": round(seconds, 2),
            "runs_per_s": round(runs / seconds, 1), "points_per_s": round(points / seconds),
            "peak_rss_mb": round(peak_rss_mb(), 1),
            "rss_after_imports_mb": round(base_rss, 1)}


def run_phase(kind: str, token: str, project: str, out: Path) -> dict[str, Any]:
    done = subprocess.run([sys.executable, __file__, "--phase", kind, "--token", token, "--project", project,
                           "--out", str(out)], capture_output=True, text=True, check=True)
    result: dict[str, Any] = json.loads(done.stdout.strip().splitlines()[-1])
    return result


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--runs", type=int, default=1000, help="small runs (5 params, 2 metrics x 10 points)")
    ap.add_argument("--points", default="100000,1000000", help="points of the one long run, comma-separated")
    ap.add_argument("--phase", choices=("raw", "ours"), help=argparse.SUPPRESS)
    ap.add_argument("--token", help=argparse.SUPPRESS)
    ap.add_argument("--project", help=argparse.SUPPRESS)
    ap.add_argument("--out", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.phase:
        print(json.dumps(phase(args.phase, args.token, args.project, args.out)))
        return

    from tests.support.fake_neptune.v3 import FakeNeptune3, Point

    rows = []
    with FakeNeptune3(projects=()) as fake, tempfile.TemporaryDirectory() as tmp:
        project = "bench/small"
        fake.projects.add(project)
        for i in range(args.runs):
            fake.add_run(f"run-{i:05d}", project=project, created=datetime(2025, 1, 1, tzinfo=timezone.utc),
                         fields={f"parameters/p{j}": ("float", float(j)) for j in range(5)},
                         series={f"train/m{k}": ("floatSeries", [Point(float(s), T0_MS + s, s * 0.5)
                                                                 for s in range(10)]) for k in range(2)})
        sets = [(f"{args.runs} small runs", project)]
        for n in (int(x) for x in args.points.split(",") if x):
            long_project = f"bench/long-{n}"
            fake.projects.add(long_project)
            fake.add_run("long", project=long_project,
                         series={"train/loss": ("floatSeries", [Point(float(s), T0_MS + s, s * 1e-6)
                                                                for s in range(n)])})
            sets.append((f"1 run of {n:,} points", long_project))
        for label, proj in sets:
            for kind in ("raw", "ours"):
                out = Path(tmp) / f"{kind}-{proj.replace('/', '_')}"
                result = run_phase(kind, fake.token(), proj, out)
                result["set"] = label
                rows.append(result)
                print(json.dumps(result), flush=True)
    print("\n| data | reader | runs | points | s | runs/s | points/s | peak RSS MB (after imports) |")
    print("|---|---|---|---|---|---|---|---|")
    for r in rows:
        print(f"| {r['set']} | {r['phase']} | {r['runs']} | {r['points']:,} | {r['seconds']} | {r['runs_per_s']} | "
              f"{r['points_per_s']:,} | {r['peak_rss_mb']} ({r['rss_after_imports_mb']}) |")
    print("\n(fake server on 127.0.0.1; loaded 2-core machine shared with other jobs)")


if __name__ == "__main__":
    main()
