"""Scale-out benchmark: one import split over 1, 2 and 4 shard processes into an `mlflow server` on
127.0.0.1, next to the unsharded import, with the server's own CPU use.

    python benchmarks/scale_out.py                          # 16 runs x 2,000 points; unsharded, 1, 2, 4 shards
    python benchmarks/scale_out.py --runs 32 --points 5000 --shards 1,2,4,8 --server-workers 4
    python benchmarks/scale_out.py --json                   # one JSON line, for scripts

Each line gets a fresh `mlflow server` (SQLite backend, proxied artifacts, `--workers` as given) and a
fresh copy of the dump (no ledger or report of an earlier line). Timed: from starting the
`neptune-migrate import ... [--shard k/K]` processes (all at once) to the last one's exit, so each
process's start-up (Python, pyarrow, mlflow) is in the figure, as it is in a real job. Not timed:
building the dump, starting the server. The server's CPU time (user + system, its process and its
workers, via psutil) and the import processes' CPU time are measured over the same interval; the
server's CPU divided by the wall time says how busy it was (100 % = one core). Afterwards the metric
rows in the server's database are counted and must equal the dump's points, for every line.

Figures depend on the machine: say how many cores it had and what else ran on it.
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
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import pyarrow as pa

REPO = Path(__file__).resolve().parent.parent
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

PROJECT = "bench/scale-out"
T0 = datetime(2025, 3, 1, tzinfo=timezone.utc)


def build_dump(root: Path, runs: int, points: int) -> None:
    """`runs` runs, each with two float series (`points` and `points // 10` steps) and two params."""
    from neptune_migrate.dump.writer import DumpWriter
    from neptune_migrate.model import Field, Provenance, RunKey, RunRecord, SourceRunId, SystemInfo

    with DumpWriter(root) as dump:
        for i in range(runs):
            key = RunKey(PROJECT, SourceRunId(f"BENCH-{i}"))
            with dump.begin_run(key) as run:
                for path, n in (("train/loss", points), ("val/acc", max(1, points // 10))):
                    run.add_points("float", pa.table({
                        "path": [path] * n,
                        "step": [float(s) for s in range(n)],
                        "timestamp": pa.array([T0 + timedelta(seconds=s) for s in range(n)],
                                              pa.timestamp("us", tz="UTC")),
                        "value": [1.0 / (s + 1 + i) for s in range(n)],
                    }))
                run.commit(RunRecord(key=key, system=SystemInfo(name=f"bench-{i}", created_at=T0),
                                     fields={"parameters/lr": Field("float", 0.001 * (i + 1)),
                                             "parameters/seed": Field("int", i)},
                                     provenance=Provenance("bench", "benchmarks/scale_out.py")))


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@contextlib.contextmanager
def mlflow_server(root: Path, workers: int) -> Iterator[tuple[str, subprocess.Popen[bytes]]]:
    """A fresh `mlflow server` on 127.0.0.1, killed with its process group afterwards."""
    mlflow = Path(sys.executable).with_name("mlflow")
    exe = str(mlflow) if mlflow.is_file() else (shutil.which("mlflow") or "mlflow")
    port = _free_port()
    log = (root / "server.log").open("wb")
    proc = subprocess.Popen(
        [exe, "server", "--backend-store-uri", f"sqlite:///{root}/mlflow.db",
         "--artifacts-destination", str(root / "artifacts"), "--host", "127.0.0.1", "--port", str(port),
         "--workers", str(workers)],
        cwd=root, stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
        # No telemetry thread: under load its session variable can vanish while the server copies
        # os.environ (KeyError '_MLFLOW_TELEMETRY_SESSION_ID' at start-up, seen with mlflow 3.x).
        env=dict(os.environ, MLFLOW_SERVER_ENABLE_JOB_EXECUTION="false", MLFLOW_DISABLE_TELEMETRY="true",
                 DO_NOT_TRACK="true"),
    )
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 300
        while True:
            if proc.poll() is not None:
                raise RuntimeError(f"mlflow server exited: {(root / 'server.log').read_text()[-2000:]}")
            with contextlib.suppress(OSError), urllib.request.urlopen(f"{url}/health", timeout=2) as resp:
                if resp.status == 200:
                    break
            if time.monotonic() > deadline:
                raise RuntimeError("mlflow server did not answer /health within 300 s")
            time.sleep(0.5)
        yield url, proc
    finally:
        for sig in (signal.SIGTERM, signal.SIGKILL):
            try:
                os.killpg(proc.pid, sig)
                proc.wait(timeout=15)
                break
            except ProcessLookupError:
                break
            except subprocess.TimeoutExpired:
                continue
        log.close()


def server_cpu(proc: subprocess.Popen[bytes]) -> float | None:
    """CPU seconds (user + system) of the server process and its workers so far; None without psutil."""
    try:
        import psutil
    except ImportError:
        return None
    try:
        top = psutil.Process(proc.pid)
        total = 0.0
        for p in [top, *top.children(recursive=True)]:
            with contextlib.suppress(psutil.Error):
                t = p.cpu_times()
                total += t.user + t.system
        return total
    except psutil.Error:
        return None


def metric_rows(db: Path) -> int:
    with contextlib.closing(sqlite3.connect(f"file:{db}?mode=ro", uri=True)) as con:
        return int(con.execute("select count(*) from metrics").fetchone()[0])


def one_line(dump: Path, work: Path, shards: int | None, server_workers: int) -> dict[str, Any]:
    """Import `dump` (a fresh copy) with `shards` processes (None: one unsharded import)."""
    work.mkdir(parents=True)
    copy = work / "dump"
    shutil.copytree(dump, copy)
    env = dict(os.environ, PYTHONPATH=str(REPO) + os.pathsep + os.environ.get("PYTHONPATH", ""), NO_COLOR="1")
    with mlflow_server(work, server_workers) as (url, server):
        args = [sys.executable, "-m", "neptune_migrate", "import", str(copy), "--to", "mlflow", "--tracking-uri", url]
        specs: list[list[str]] = [[]] if shards is None else [["--shard", f"{k}/{shards}"] for k in
                                                               range(1, shards + 1)]
        cpu0, children0 = server_cpu(server), resource.getrusage(resource.RUSAGE_CHILDREN)
        t0 = time.perf_counter()
        procs = [subprocess.Popen([*args, *spec], env=env, cwd=work, stdout=subprocess.DEVNULL,
                                  stderr=subprocess.PIPE) for spec in specs]
        errors = [p.communicate()[1] for p in procs]
        wall = time.perf_counter() - t0
        cpu1, children1 = server_cpu(server), resource.getrusage(resource.RUSAGE_CHILDREN)
        for p, err in zip(procs, errors, strict=True):
            if p.returncode != 0:
                raise RuntimeError(f"import exited {p.returncode}: {err.decode(errors='replace')[-2000:]}")
    tool_cpu = (children1.ru_utime - children0.ru_utime) + (children1.ru_stime - children0.ru_stime)
    busy = None if cpu0 is None or cpu1 is None else cpu1 - cpu0
    return {
        "line": "unsharded" if shards is None else f"{shards} shard(s)",
        "processes": len(specs),
        "seconds": round(wall, 2),
        "server_cpu_seconds": None if busy is None else round(busy, 2),
        "server_cpu_percent": None if busy is None else round(100 * busy / wall, 1),
        "import_cpu_seconds": round(tool_cpu, 2),
        "metric_rows": metric_rows(work / "mlflow.db"),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=16)
    parser.add_argument("--points", type=int, default=2000, help="points of the longer series of each run")
    parser.add_argument("--shards", default="1,2,4", help="comma-separated shard counts")
    parser.add_argument("--server-workers", type=int, default=1)
    parser.add_argument("--json", action="store_true")
    opts = parser.parse_args()
    counts = [int(c) for c in opts.shards.split(",") if c.strip()]
    expected = opts.runs * (opts.points + max(1, opts.points // 10))
    with tempfile.TemporaryDirectory(prefix="neptune-migrate-scale-out-") as tmp:
        root = Path(tmp)
        build_dump(root / "dump", opts.runs, opts.points)
        lines = [one_line(root / "dump", root / "unsharded", None, opts.server_workers)]
        lines += [one_line(root / "dump", root / f"shards-{n}", n, opts.server_workers) for n in counts]
    for line in lines:
        if line["metric_rows"] != expected:
            raise SystemExit(f"{line['line']}: {line['metric_rows']} metric rows in the server, expected {expected}")
    load = os.getloadavg() if hasattr(os, "getloadavg") else None
    result = {
        "benchmark": "scale_out", "runs": opts.runs, "points": expected, "server_workers": opts.server_workers,
        "cpus": os.cpu_count(), "load_average_after": None if load is None else [round(x, 1) for x in load],
        "python": platform.python_version(), "lines": lines,
    }
    if opts.json:
        print(json.dumps(result))
        return
    print(f"{opts.runs} runs, {expected:,} points into mlflow server --workers {opts.server_workers} on 127.0.0.1; "
          f"{os.cpu_count()} CPU(s), load average afterwards {result['load_average_after']}")
    print(f"{'line':<12} {'procs':>5} {'wall s':>8} {'points/s':>9} {'server CPU s':>12} {'server CPU %':>12} "
          f"{'import CPU s':>12}")
    for line in lines:
        rate = expected / line["seconds"] if line["seconds"] else 0.0
        print(f"{line['line']:<12} {line['processes']:>5} {line['seconds']:>8.1f} {rate:>9,.0f} "
              f"{line['server_cpu_seconds'] if line['server_cpu_seconds'] is not None else '-':>12} "
              f"{line['server_cpu_percent'] if line['server_cpu_percent'] is not None else '-':>12} "
              f"{line['import_cpu_seconds']:>12}")
    print("every line stored all points (metric rows counted in the server's database)")


if __name__ == "__main__":
    main()
