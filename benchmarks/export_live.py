"""Live export benchmark: `export --from neptune2-api` against the fake 2.x server on 127.0.0.1.

    python benchmarks/export_live.py --server 2                       # 10k runs; 1 run of 1M points
    python benchmarks/export_live.py --server 2 --runs 500 --points 20000 100000   # small

For each case, two phases, each in its own subprocess (so its peak RSS, `ru_maxrss`, is its own),
both talking to the same fake server in this process:

  (a) raw:  the real neptune 1.x client's own session fetching the same data (listing pages, one
            attributes request per run, every series page by `skipToStep`), JSON parsed, nothing kept;
  (b) ours: `export_runs` of `Neptune2ApiSource` into a fresh dump (paging, mapping, Parquet, files,
            commit), with the default 4 workers and no rate limit.

Times start after the imports and the client's bootstrap (importing neptune 1.x takes seconds).
Cases: "runs" (N cheap runs: a few fields and a 3-point series each) gives runs/s; "points" (one run
with P points in one float series) gives points/s and the peak RSS per size (it must stay flat as P
grows: series stream page by page into bounded Parquet row groups).

The fake server is pure Python and shares the machine: it is the bottleneck of both phases, so the
figures compare the two readers, not a real server. A live3 part (`--server 3`) may be added beside.
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
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))


def _phase(kind: str, token: str, project: str, out: str) -> dict[str, Any]:
    """Run in a subprocess: one phase, print its JSON result."""
    os.environ["OAUTHLIB_INSECURE_TRANSPORT"] = "1"
    runs = points = 0
    if kind == "raw":
        from neptune_migrate.sources.base import SourceOptions
        from neptune_migrate.sources.neptune2_api.source import Neptune2ApiSource

        # The client's own session and bravado calls, without our paging/mapping/writing.
        src = Neptune2ApiSource(SourceOptions(path=Path(), api_token=token))
        backend = src._connect()  # the raw client, as the source builds it
        lb = backend.leaderboard_client
        from bravado.client import construct_request
        from bravado.config import RequestConfig

        started = time.perf_counter()  # after the imports and the client's bootstrap

        def call(op: str, **params: Any) -> Any:
            req = construct_request(getattr(lb.api, op), {}, **params)
            return lb.swagger_spec.http_client.request(req, operation=None, request_config=RequestConfig({}, True)) \
                .response().incoming_response.json()

        offset = 0
        uuids = []
        while True:
            page = call("searchLeaderboardEntries", projectIdentifier=project, type=["run"],
                        params={"pagination": {"limit": 100, "offset": offset}, "query": {"query": ""},
                                "sorting": {"dir": "ascending", "sortBy": {"name": "sys/creation_time",
                                                                          "type": "datetime"}}})
            uuids += [e["experimentId"] for e in page["entries"]]
            if len(page["entries"]) < 100 or offset + 200 > 10_000:
                break
            offset += 100
        for uuid in uuids:
            attrs = call("getExperimentAttributes", experimentId=uuid)["attributes"]
            runs += 1
            for a in attrs:
                if a["type"] != "floatSeries":
                    continue
                last: float | None = None
                while True:
                    params: dict[str, Any] = {"experimentId": uuid, "attribute": a["name"], "limit": 1000}
                    if last is not None:
                        params["skipToStep"] = last
                    values = call("getFloatSeriesValues", **params)["values"]
                    points += len(values)
                    if len(values) < 1000:
                        break
                    last = values[-1]["step"]
    else:
        from neptune_migrate.dump.writer import DumpWriter
        from neptune_migrate.pipeline.export import export_runs
        from neptune_migrate.sources.base import RunSelection, SourceOptions
        from neptune_migrate.sources.neptune2_api.source import Neptune2ApiSource

        src = Neptune2ApiSource(SourceOptions(path=Path(), api_token=token, state_dir=Path(out) / "_state"))
        src._connect()  # the client's bootstrap, as in the raw phase
        started = time.perf_counter()
        with DumpWriter(Path(out)) as writer:
            summary = export_runs(src, writer, RunSelection(projects=(project,)), location="bench")
        runs = summary.count("exported")
        points = sum(r.points for r in summary.runs)
    seconds = time.perf_counter() - started
    rss_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    return {"phase": kind, "runs": runs, "points": points, "seconds": round(seconds, 2),
            "peak_rss_mb": round(rss_mb, 1)}


def _run_phase(kind: str, token: str, project: str, out: Path) -> dict[str, Any]:
    env = {**os.environ, "PYTHONPATH": str(REPO), "OAUTHLIB_INSECURE_TRANSPORT": "1"}
    proc = subprocess.run([sys.executable, __file__, "--phase", kind, "--token", token, "--project", project,
                           "--out", str(out)], capture_output=True, text=True, env=env, check=False)
    if proc.returncode != 0:
        raise RuntimeError(proc.stderr[-2000:])
    result: dict[str, Any] = json.loads(proc.stdout.strip().splitlines()[-1])
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--server", choices=["2"], default="2", help="which fake server (2: Neptune 2.x)")
    parser.add_argument("--runs", type=int, default=10_000)
    parser.add_argument("--points", type=int, nargs="+", default=[100_000, 1_000_000])
    parser.add_argument("--phase", help=argparse.SUPPRESS)
    parser.add_argument("--token", help=argparse.SUPPRESS)
    parser.add_argument("--project", help=argparse.SUPPRESS)
    parser.add_argument("--out", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.phase:
        print(json.dumps(_phase(args.phase, args.token, args.project, args.out)))
        return

    os.environ["OAUTHLIB_INSECURE_TRANSPORT"] = "1"
    from datetime import datetime, timedelta, timezone

    from tests.support.fake_neptune.v2 import FakeNeptune2

    server = FakeNeptune2().start()
    t0 = datetime(2024, 1, 1, tzinfo=timezone.utc)
    for i in range(args.runs):
        run = server.add_run("bench/runs", t0 + timedelta(seconds=i))
        run.fields.update({"params/lr": ("float", 0.1), "params/name": ("string", f"r{i}")})
        run.float_series["loss"] = [(0.0, 1.0, 0), (1.0, 0.5, 1), (2.0, 0.25, 2)]
    for n in args.points:
        run = server.add_run(f"bench/points{n}", t0)
        run.float_series["m"] = [(float(s), s * 0.001, 1_700_000_000_000 + s) for s in range(n)]
    print("figures taken on a loaded 2-core machine shared with other jobs; the fake server is pure Python "
          "and runs on the same cores", file=sys.stderr)
    results: list[dict[str, Any]] = []
    with tempfile.TemporaryDirectory(prefix="nm-live-bench-") as tmp:
        for case, project in [("runs", "bench/runs"), *[(f"points {n}", f"bench/points{n}") for n in args.points]]:
            for kind in ("raw", "ours"):
                res = _run_phase(kind, server.api_token(), project, Path(tmp) / f"{case}-{kind}".replace(" ", "-"))
                res["case"] = case
                res["runs_per_s"] = round(res["runs"] / res["seconds"], 1) if res["seconds"] else None
                res["points_per_s"] = round(res["points"] / res["seconds"]) if res["seconds"] else None
                results.append(res)
                print(json.dumps(res), flush=True)
    server.stop()


if __name__ == "__main__":
    main()
