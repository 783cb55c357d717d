"""Live export benchmark: `export --from neptune2-api | neptune3-api` against the fake servers on 127.0.0.1.

    python benchmarks/export_live.py --server 2          # 10,000 small runs; 1 run of 100k and of 1M points
    python benchmarks/export_live.py --server 3          # the same sizes on the 3.x fake
    python benchmarks/export_live.py --server 2 --runs 500 --points 20000 100000   # small
    python benchmarks/export_live.py --server 3 --workers 1                        # runs one at a time

For each case, two phases, each in its own subprocess (so its peak RSS, `VmHWM`, is its own; the
fake server and its data stay in this process), both reading the same data from the same server:

  (a) raw: the vendor client's own fetch of the same data, nothing written:
      - 2.x: the real neptune 1.x client's session (listing pages, one attributes request per run,
        every float series page by `skipToStep`; JSON parsed, nothing kept), one request at a time;
      - 3.x: neptune-query's `fetch_runs_table` + `fetch_metrics` (pandas frames, held in memory);
  (b) ours: `export_runs` of the live source into a fresh dump (paging, mapping, Parquet, files,
      checksums, commit), `--workers` runs/requests at once (default 4), no rate limit.

Times start after the imports (and, for 2.x, the client's bootstrap). Cases: "runs" (N small runs)
gives runs/s; "points" (one run with P points in one float series) gives points/s and the peak RSS
per size, which must stay flat as P grows (series stream page by page into bounded row groups).

The fake servers are pure Python and share the machine's cores with both readers: the figures
compare the two readers, not a real server. Say how loaded the machine was (`uptime`) with them.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

T0_MS = 1_735_689_600_000


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


# -- the measured phases (each in a subprocess) ---------------------------------------------------------
def _raw2(token: str, project: str) -> tuple[int, int, float]:
    from bravado.client import construct_request
    from bravado.config import RequestConfig

    from neptune_migrate.sources.base import SourceOptions
    from neptune_migrate.sources.neptune2_api import mapping
    from neptune_migrate.sources.neptune2_api.source import Neptune2ApiSource

    src = Neptune2ApiSource(SourceOptions(path=Path(), api_token=token))
    lb = src._connect().leaderboard_client  # the raw client, bootstrapped as the source does it
    started = time.perf_counter()

    def call(op: str, **params: Any) -> Any:
        req = construct_request(getattr(lb.api, op), {}, **params)  # type: ignore[no-untyped-call]
        return lb.swagger_spec.http_client.request(req, operation=None, request_config=RequestConfig({}, True)) \
            .response().incoming_response.json()

    runs = points = 0
    uuids: list[str] = []
    after: str | None = None
    while True:  # ascending creation time, offset pages, a new window before the 10,000-offset limit
        offset = 0
        query = "" if after is None else f'(`sys/creation_time`:datetime > "{after}")'
        page_entries: list[dict[str, Any]] = []
        while True:
            page = call("searchLeaderboardEntries", projectIdentifier=project, type=["run"],
                        params={"pagination": {"limit": 100, "offset": offset}, "query": {"query": query},
                                "attributeFilters": [{"path": "sys/creation_time"}],
                                "sorting": {"dir": "ascending", "aggregationMode": "none",
                                            "sortBy": {"name": "sys/creation_time", "type": "datetime"}}})
            page_entries += page["entries"]
            if len(page["entries"]) < 100 or offset + 200 > 10_000:
                break
            offset += 100
        uuids += [e["experimentId"] for e in page_entries]
        if len(page_entries) < 10_000 or not page_entries:
            break
        last = page_entries[-1]
        after = str(mapping.entry_value(last, "sys/creation_time"))
    for uuid in uuids:
        attrs = call("getExperimentAttributes", experimentId=uuid)["attributes"]
        runs += 1
        for a in attrs:
            if a["type"] != "floatSeries":
                continue
            last_step: float | None = None
            while True:
                params: dict[str, Any] = {"experimentId": uuid, "attribute": a["name"], "limit": 1000}
                if last_step is not None:
                    params["skipToStep"] = last_step
                values = call("getFloatSeriesValues", **params)["values"]
                points += len(values)
                if len(values) < 1000:
                    break
                last_step = values[-1]["step"]
    return runs, points, started


def _raw3(token: str, project: str) -> tuple[int, int, float]:
    import neptune_query.runs as nq_runs
    from neptune_query import set_api_token

    started = time.perf_counter()
    set_api_token(token)
    table = nq_runs.fetch_runs_table(project=project, attributes=r"parameters/.*")
    metrics = nq_runs.fetch_metrics(project=project, runs=".*", attributes=r"train/.*")
    return len(table), int(metrics.count().sum()), started


def _ours(server: str, token: str, project: str, out: str, workers: int) -> tuple[int, int, float]:
    from neptune_migrate.dump.writer import DumpWriter
    from neptune_migrate.pipeline.export import export_runs
    from neptune_migrate.sources import load_source
    from neptune_migrate.sources.base import RunSelection, SourceOptions

    options = SourceOptions(path=Path(), project=project, api_token=token, workers=workers,
                            state_dir=Path(out) / "_state")
    source = load_source(f"neptune{server}-api", options)
    connect = getattr(source, "_connect", None)
    if connect is not None:
        connect()  # 2.x: the client's bootstrap, outside the timing as in the raw phase
    started = time.perf_counter()
    with DumpWriter(Path(out)) as writer:
        summary = export_runs(source, writer, RunSelection(projects=(project,)), location="bench")
    failed = [r for r in summary.runs if r.status != "exported"]
    if failed:
        msg = f"{len(failed)} run(s) not exported, e.g. {failed[0].key}: {failed[0].message}"
        raise RuntimeError(msg)
    return summary.count("exported"), sum(r.points for r in summary.runs), started


def phase(server: str, kind: str, token: str, project: str, out: str, workers: int) -> dict[str, Any]:
    os.environ["OAUTHLIB_INSECURE_TRANSPORT"] = "1"
    if kind == "raw":
        runs, points, started = _raw2(token, project) if server == "2" else _raw3(token, project)
    else:
        runs, points, started = _ours(server, token, project, out, workers)
    seconds = time.perf_counter() - started
    return {"phase": kind, "runs": runs, "points": points, "seconds": round(seconds, 2),
            "runs_per_s": round(runs / seconds, 1), "points_per_s": round(points / seconds),
            "peak_rss_mb": round(peak_rss_mb(), 1)}


def run_phase(server: str, kind: str, token: str, project: str, out: Path, workers: int) -> dict[str, Any]:
    env = {**os.environ, "PYTHONPATH": str(REPO), "OAUTHLIB_INSECURE_TRANSPORT": "1"}
    proc = subprocess.run([sys.executable, __file__, "--server", server, "--phase", kind, "--token", token,
                           "--project", project, "--out", str(out), "--workers", str(workers)],
                          capture_output=True, text=True, env=env, check=False)
    if proc.returncode != 0:
        raise RuntimeError(proc.stderr[-2000:])
    result: dict[str, Any] = json.loads(proc.stdout.strip().splitlines()[-1])
    return result


# -- the data -------------------------------------------------------------------------------------------
def _serve2(runs: int, sizes: list[int]) -> tuple[Any, str, list[tuple[str, str]]]:
    from tests.support.fake_neptune.v2 import FakeNeptune2

    fake = FakeNeptune2().start()
    t0 = datetime(2024, 1, 1, tzinfo=timezone.utc)
    for i in range(runs):  # small runs: 2 fields, one 3-point float series
        run = fake.add_run("bench/runs", t0 + timedelta(seconds=i))
        run.fields.update({"params/lr": ("float", 0.1), "params/name": ("string", f"r{i}")})
        run.float_series["loss"] = [(0.0, 1.0, 0), (1.0, 0.5, 1), (2.0, 0.25, 2)]
    cases = [(f"{runs:,} small runs", "bench/runs")]
    for n in sizes:
        fake.add_run(f"bench/points{n}", t0).float_series["train/loss"] = [
            (float(s), s * 0.001, 1_700_000_000_000 + s) for s in range(n)]
        cases.append((f"1 run of {n:,} points", f"bench/points{n}"))
    return fake, fake.api_token(), cases


def _serve3(runs: int, sizes: list[int]) -> tuple[Any, str, list[tuple[str, str]]]:
    from tests.support.fake_neptune.v3 import FakeNeptune3, Point

    fake = FakeNeptune3(projects=())
    fake.start()
    fake.projects.add("bench/runs")
    t0 = datetime(2025, 1, 1, tzinfo=timezone.utc)
    for i in range(runs):  # small runs: 5 params, 2 float series of 10 points
        fake.add_run(f"run-{i:05d}", project="bench/runs", created=t0 + timedelta(seconds=i),
                     fields={f"parameters/p{j}": ("float", float(j)) for j in range(5)},
                     series={f"train/m{k}": ("floatSeries", [Point(float(s), T0_MS + s, s * 0.5) for s in range(10)])
                             for k in range(2)})
    cases = [(f"{runs:,} small runs", "bench/runs")]
    for n in sizes:
        project = f"bench/points{n}"
        fake.projects.add(project)
        fake.add_run("long", project=project, created=t0, series={
            "train/loss": ("floatSeries", [Point(float(s), T0_MS + s, s * 1e-6) for s in range(n)])})
        cases.append((f"1 run of {n:,} points", project))
    return fake, fake.token(), cases


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--server", choices=["2", "3"], required=True, help="which fake server (Neptune 2.x / 3.x)")
    parser.add_argument("--runs", type=int, default=10_000, help="small runs in the runs case")
    parser.add_argument("--points", type=int, nargs="+", default=[100_000, 1_000_000],
                        help="points of the one long run, one case per size")
    parser.add_argument("--workers", type=int, default=4, help="--workers of our export")
    parser.add_argument("--only", choices=["raw", "ours"], help="measure one reader only")
    parser.add_argument("--phase", choices=["raw", "ours"], help=argparse.SUPPRESS)
    parser.add_argument("--token", help=argparse.SUPPRESS)
    parser.add_argument("--project", help=argparse.SUPPRESS)
    parser.add_argument("--out", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.phase:
        print(json.dumps(phase(args.server, args.phase, args.token, args.project, args.out, args.workers)))
        return

    os.environ["OAUTHLIB_INSECURE_TRANSPORT"] = "1"
    load = Path("/proc/loadavg").read_text().split()[:3] if Path("/proc/loadavg").exists() else ["?"]
    print(f"# load average before: {' '.join(load)} (cores: {os.cpu_count()})", file=sys.stderr, flush=True)
    fake, token, cases = (_serve2 if args.server == "2" else _serve3)(args.runs, args.points)
    kinds = [args.only] if args.only else ["raw", "ours"]
    rows = []
    try:
        with tempfile.TemporaryDirectory(prefix="nm-live-bench-") as tmp:
            for label, project in cases:
                for kind in kinds:
                    out = Path(tmp) / f"{kind}-{project.replace('/', '_')}"
                    result = run_phase(args.server, kind, token, project, out, args.workers)
                    result["case"] = label
                    rows.append(result)
                    print(json.dumps(result), flush=True)
    finally:
        fake.stop()
    load = Path("/proc/loadavg").read_text().split()[:3] if Path("/proc/loadavg").exists() else ["?"]
    print(f"\n# Neptune {args.server}.x fake; our export with --workers {args.workers}; "
          f"load average after: {' '.join(load)}")
    print("| case | reader | runs | points | s | runs/s | points/s | peak RSS MB |")
    print("|---|---|---|---|---|---|---|---|")
    for r in rows:
        reader = "ours" if r["phase"] == "ours" else ("neptune 1.x session" if args.server == "2" else "neptune-query")
        print(f"| {r['case']} | {reader} | {r['runs']:,} | {r['points']:,} | {r['seconds']} | {r['runs_per_s']} | "
              f"{r['points_per_s']:,} | {r['peak_rss_mb']} |")


if __name__ == "__main__":
    main()
