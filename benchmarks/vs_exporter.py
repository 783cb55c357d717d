"""Side by side with Neptune's own loader: the same neptune-exporter dump into MLflow, twice.

    python benchmarks/vs_exporter.py --exporter /path/to/venv/bin/neptune-exporter
    python benchmarks/vs_exporter.py --exporter ... --points 200000 --json

Neptune's exporter (`neptune-exporter`, github.com/neptune-ai/neptune-exporter) is not on PyPI and
is never a dependency of this project: this script does not install or build it. Give it the
`neptune-exporter` command of an environment where you installed it yourself, separately (it
declares Python >= 3.13; its MLflow loader imports and runs on 3.11 too), with the same MLflow
version as ours, so both write the same store schema.

Input: one run of N float points over `--series` paths in one exporter data file
(`benchmarks/memory.py::build_exporter_file`: the exporter's 14-column schema, the `<run>_part_0`
name it gives a finished run). Then, each in its own process (peak RSS from `os.wait4`):

- exporter: `neptune-exporter load --loader mlflow --data-path DATA --mlflow-tracking-uri
  sqlite:///A.db` (a fresh store; its MLflow loader: `log_batch` of its own batches).
- ours: `neptune-migrate export DATA --from neptune-exporter --out DUMP`, then `neptune-migrate
  import DUMP --to mlflow --tracking-uri sqlite:///B.db` (a fresh store; `--bulk auto`: the bulk
  path). Its time is export + import, its peak the greater of the two.

Both wall times include interpreter start, imports and the creation of the store's schema; CPU
seconds (user + system, from `os.wait4`) are printed too: on a shared machine they depend less on
what else runs than wall time does. After
both, the parent counts the `metrics` rows of each store and checks the sums of steps and values
match: the two tools stored the same points.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import sqlite3
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
for entry in (REPO, REPO / "benchmarks"):
    if str(entry) not in sys.path:
        sys.path.insert(0, str(entry))

from memory import build_exporter_file  # noqa: E402


def timed(cmd: list[str], cwd: Path, env: dict[str, str]) -> dict[str, Any]:
    """Run one command; exit code, wall seconds, peak RSS (MiB), the tail of stderr on failure."""
    start = time.perf_counter()
    proc = subprocess.Popen(cmd, cwd=cwd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    assert proc.stderr is not None
    err = proc.stderr.read()
    _, status, usage = os.wait4(proc.pid, 0)
    rc = os.waitstatus_to_exitcode(status)
    out: dict[str, Any] = {"rc": rc, "seconds": round(time.perf_counter() - start, 2),
                           "cpu_seconds": round(usage.ru_utime + usage.ru_stime, 2),
                           "peak_rss_mib": round(usage.ru_maxrss / 1024)}
    if rc != 0:
        out["stderr_tail"] = err.decode(errors="replace").strip().splitlines()[-5:]
    return out


def store_points(db: Path) -> dict[str, Any]:
    """What a store holds: metric rows, and sums that differ if any point differs."""
    with sqlite3.connect(f"file:{db}?mode=ro", uri=True) as conn:
        rows, steps, values = conn.execute(
            "SELECT count(*), coalesce(sum(step), 0), coalesce(sum(value), 0) FROM metrics").fetchone()
    return {"rows": int(rows), "sum_step": int(steps), "sum_value": round(float(values), 6)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--exporter", required=True, help="the neptune-exporter command (of its own venv)")
    parser.add_argument("--points", type=int, default=1_000_000)
    parser.add_argument("--series", type=int, default=10)
    parser.add_argument("--dir", type=Path, default=None, help="where the temporary work folder goes")
    parser.add_argument("--keep", action="store_true")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    exporter = shutil.which(args.exporter) or args.exporter
    work = Path(tempfile.mkdtemp(prefix="bench-vs-exporter-", dir=args.dir))
    try:
        data = build_exporter_file(work / "src", args.points, args.series)
        (work / "files").mkdir()
        theirs_env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV")}
        theirs_env["MLFLOW_SUPPRESS_PRINTING_URL_TO_STDOUT"] = "1"
        theirs = timed([exporter, "load", "--loader", "mlflow", "--data-path", str(data),
                        "--files-path", str(work / "files"), "--mlflow-tracking-uri",
                        f"sqlite:///{work / 'exporter.db'}", "--log-file", str(work / "exporter.log")],
                       work, theirs_env)
        ours_env = dict(os.environ, PYTHONPATH=str(REPO), NO_COLOR="1")
        cli = [sys.executable, "-m", "neptune_migrate"]
        export = timed([*cli, "export", str(data), "--from", "neptune-exporter", "--out", str(work / "dump")],
                       work, ours_env)
        imp = timed([*cli, "import", str(work / "dump"), "--to", "mlflow", "--tracking-uri",
                     f"sqlite:///{work / 'ours.db'}", "--bulk", "auto"], work, ours_env)
        ours = {"rc": export["rc"] or imp["rc"], "seconds": round(export["seconds"] + imp["seconds"], 2),
                "cpu_seconds": round(export["cpu_seconds"] + imp["cpu_seconds"], 2),
                "peak_rss_mib": max(export["peak_rss_mib"], imp["peak_rss_mib"]),
                "export": export, "import": imp}
        row: dict[str, Any] = {"points": args.points, "series": args.series, "exporter": theirs, "ours": ours}
        for name, db in (("exporter", work / "exporter.db"), ("ours", work / "ours.db")):
            row[name]["store"] = store_points(db) if db.is_file() else None
        row["same_points"] = row["exporter"]["store"] == row["ours"]["store"]
        if theirs["rc"] == 0 and ours["rc"] == 0:
            row["speedup"] = round(theirs["seconds"] / ours["seconds"], 2)
            row["cpu_ratio"] = round(theirs["cpu_seconds"] / ours["cpu_seconds"], 2)
        if args.json:
            print(json.dumps(row))
        else:
            for name in ("exporter", "ours"):
                r = row[name]
                rate = args.points / r["seconds"] / 1000
                print(f"{name:<9} {r['seconds']:>8.1f} s ({r['cpu_seconds']:.1f} s CPU)  {rate:>8.1f}k points/s"
                      f"  peak RSS {r['peak_rss_mib']:>5} MiB"
                      f"  rows {r['store'] and r['store']['rows']}" + ("" if r["rc"] == 0 else f"  (exit {r['rc']})"))
                for line in r.get("stderr_tail", []):
                    print(f"    {line}")
            print(f"ours: export {export['seconds']:.1f} s ({export['peak_rss_mib']} MiB), "
                  f"import {imp['seconds']:.1f} s ({imp['peak_rss_mib']} MiB)")
            print(f"same points in both stores: {row['same_points']}; speedup: {row.get('speedup')}x wall, "
                  f"{row.get('cpu_ratio')}x CPU")
            print(f"python {platform.python_version()}, {os.cpu_count()} cores, "
                  f"load average {os.getloadavg()[0]:.1f} at the end")
    finally:
        if not args.keep:
            shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
