"""neptune-offline export benchmark: a `.neptune` queue of N logged points (one point per operation, as
a training loop logs them) exported into a dump, against the raw cost of reading and JSON-decoding the
same lines in the same process.

    python benchmarks/export_offline.py                    # 1M points, 3 rounds
    python benchmarks/export_offline.py --points 200000 --rounds 1
    python benchmarks/export_offline.py --json             # one JSON line, for scripts

The queue is written with `json.dumps` exactly like the neptune 1.x client writes it (`data-1.log` of
one offline run folder with `metadata.json`, `last_put_version`, `last_ack_version`), with the ops
`init_run` emits, including the `ClearStringLog` of stdout/stderr (so the reset pre-scan has something
to find), then N `LogFloats` ops cycling over `--series` metric paths. Generating it is not timed.

Each round times, alternately: **raw** = open every `data-*.log`, iterate its lines, `json.loads` each;
**raw scan** = the same lines in text mode fed straight to the C scanner behind `json.loads` (the
decoding our reader uses: a lower floor); **ours** = `export_runs(NeptuneQueueSource)` into a fresh
dump (layout scan, reset pre-scan, replay with the server's rules, column batches of 100k points,
Parquet zstd, checksums, commit). The best round of each is reported. Peak RSS is `VmHWM`, reset
before each phase on Linux (`/proc/self/clear_refs`), so each phase shows its own high-water mark.
"""

from __future__ import annotations

import argparse
import gc
import json
import platform
import resource
import shutil
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from neptune_migrate.dump.writer import DumpWriter  # noqa: E402
from neptune_migrate.pipeline.export import export_runs  # noqa: E402
from neptune_migrate.sources.base import RunSelection, SourceOptions  # noqa: E402
from neptune_migrate.sources.neptune_queue.source import NeptuneQueueSource  # noqa: E402

T0 = 1735787045.0
RUN_UUID = "1e1f70bf-68ea-4bd9-b998-a51b45dde7f8"


def write_queue(root: Path, points: int, series: int) -> Path:
    """A `.neptune` folder with one offline run of `points` LogFloats ops; returns the run folder."""
    run = root / ".neptune" / "offline" / f"run__{RUN_UUID}__4242__abcdefgh"
    (run / "upload_path").mkdir(parents=True)
    (run / "metadata.json").write_text(json.dumps({
        "mode": "offline", "containerId": RUN_UUID, "containerType": "run", "structureVersion": 3,
        "os": "Linux", "pythonVersion": platform.python_version(), "neptuneClientVersion": "1.14.0.post2",
        "createdAt": "2025-01-02T03:04:05.000000+00:00",
    }, indent=2))
    init = [
        {"type": "AssignString", "path": ["sys", "name"], "value": "bench"},
        {"type": "AssignString", "path": ["sys", "description"], "value": ""},
        {"type": "AddStrings", "path": ["sys", "tags"], "values": ["bench"]},
        {"type": "AssignBool", "path": ["sys", "failed"], "value": False},
        {"type": "ClearStringLog", "path": ["monitoring", "ee680fa9", "stdout"]},
        {"type": "ClearStringLog", "path": ["monitoring", "ee680fa9", "stderr"]},
        {"type": "AssignFloat", "path": ["parameters", "lr"], "value": 0.001},
    ]
    names = [["train", f"metric_{i:03d}"] for i in range(series)]
    version = 0
    with (run / "data-1.log").open("w", encoding="utf-8") as fh:
        for obj in init:
            version += 1
            fh.write(json.dumps({"obj": obj, "version": version, "at": T0 + version * 1e-4}) + "\n")
        for g in range(points):
            version += 1
            obj = {"type": "LogFloats", "path": names[g % series],
                   "values": [{"value": 1.0 / (g + 1), "step": g // series, "ts": T0 + g * 0.01}]}
            fh.write(json.dumps({"obj": obj, "version": version, "at": T0 + 1.0 + g * 0.01}) + "\n")
    (run / "last_put_version").write_text(str(version))
    (run / "last_ack_version").write_text("")
    return run


def reset_peak() -> bool:
    gc.collect()
    try:
        with open("/proc/self/clear_refs", "w") as fh:
            fh.write("5")
    except OSError:
        return False
    return True


def peak_mib() -> float:
    """VmHWM (resettable through clear_refs), else ru_maxrss (since process start)."""
    try:
        with open("/proc/self/status", encoding="ascii") as fh:
            for line in fh:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) / 1024
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def current_mib() -> float:
    try:
        with open("/proc/self/status", encoding="ascii") as fh:
            for line in fh:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1]) / 1024
    except OSError:
        pass
    return float("nan")


def raw_read(run: Path) -> int:
    """The floor: read and JSON-decode every line (what any reader of this format must do)."""
    n = 0
    loads = json.loads
    for path in sorted(run.glob("data-*.log")):
        with path.open("rb") as fh:
            for line in fh:
                loads(line)
                n += 1
    return n


def raw_scan(run: Path) -> int:
    """A lower floor: text-mode lines fed to the C scanner behind `json.loads` (what our reader uses)."""
    n = 0
    scan_once = json.JSONDecoder().scan_once  # type: ignore[attr-defined]
    for path in sorted(run.glob("data-*.log")):
        with path.open("r", encoding="utf-8", newline="\n") as fh:
            for line in fh:
                scan_once(line, 0)
                n += 1
    return n


def ours(root: Path, dump: Path) -> int:
    source = NeptuneQueueSource(SourceOptions(path=root / ".neptune", project="bench/queue"))
    with DumpWriter(dump) as writer:
        summary = export_runs(source, writer, RunSelection(), location=str(root))
    [outcome] = summary.runs
    if outcome.status != "exported":
        raise RuntimeError(f"export failed: {outcome}")
    return outcome.points


def run_benchmark(points: int, series: int, rounds: int, workdir: Path) -> dict[str, Any]:
    run = write_queue(workdir / "src", points, series)
    size = sum(p.stat().st_size for p in run.glob("data-*.log"))
    best: dict[str, float] = {}
    peaks: dict[str, float] = {}
    starts: dict[str, float] = {}
    exported = 0
    for i in range(rounds):
        reset_peak()
        starts["raw"] = max(starts.get("raw", 0.0), current_mib())
        t = time.perf_counter()
        lines = raw_read(run)
        best["raw"] = min(best.get("raw", float("inf")), time.perf_counter() - t)
        peaks["raw"] = max(peaks.get("raw", 0.0), peak_mib())

        reset_peak()
        starts["scan"] = max(starts.get("scan", 0.0), current_mib())
        t = time.perf_counter()
        raw_scan(run)
        best["scan"] = min(best.get("scan", float("inf")), time.perf_counter() - t)
        peaks["scan"] = max(peaks.get("scan", 0.0), peak_mib())

        dump = workdir / f"dump-{i}"
        reset_peak()
        starts["ours"] = max(starts.get("ours", 0.0), current_mib())
        t = time.perf_counter()
        exported = ours(workdir / "src", dump)
        best["ours"] = min(best.get("ours", float("inf")), time.perf_counter() - t)
        peaks["ours"] = max(peaks.get("ours", 0.0), peak_mib())
        shutil.rmtree(dump)
    if exported != points:
        raise RuntimeError(f"exported {exported} points, expected {points}")
    return {
        "points": points, "series": series, "rounds": rounds, "lines": lines, "queue_mib": size / 2**20,
        "raw_s": best["raw"], "scan_s": best["scan"], "ours_s": best["ours"],
        "raw_points_per_s": points / best["raw"], "scan_points_per_s": points / best["scan"],
        "ours_points_per_s": points / best["ours"],
        "ratio": best["raw"] / best["ours"], "ratio_scan": best["scan"] / best["ours"],
        "raw_peak_rss_mib": peaks["raw"], "scan_peak_rss_mib": peaks["scan"],
        "ours_peak_rss_mib": peaks["ours"],
        "raw_start_rss_mib": starts["raw"], "scan_start_rss_mib": starts["scan"],
        "ours_start_rss_mib": starts["ours"],
        "python": platform.python_version(),
    }


def print_results(r: dict[str, Any]) -> None:
    print(f"points={r['points']:,} series={r['series']} lines={r['lines']:,} queue={r['queue_mib']:.1f} MiB "
          f"best of {r['rounds']} round(s), python={r['python']}")
    print(f"  raw  (read lines + json.loads)   {r['raw_points_per_s'] / 1e6:6.2f} M points/s  {r['raw_s']:6.2f} s"
          f"  peak RSS {r['raw_peak_rss_mib']:5.0f} MiB (at start {r['raw_start_rss_mib']:.0f})")
    print(f"  raw  (lines + C scanner only)    {r['scan_points_per_s'] / 1e6:6.2f} M points/s  {r['scan_s']:6.2f} s"
          f"  peak RSS {r['scan_peak_rss_mib']:5.0f} MiB (at start {r['scan_start_rss_mib']:.0f})")
    print(f"  ours (export into a dump)        {r['ours_points_per_s'] / 1e6:6.2f} M points/s  {r['ours_s']:6.2f} s"
          f"  peak RSS {r['ours_peak_rss_mib']:5.0f} MiB (at start {r['ours_start_rss_mib']:.0f})")
    print(f"  export runs at {r['ratio']:.0%} of the raw read + json.loads speed (goal: >= 50%), "
          f"{r['ratio_scan']:.0%} of the bare-scanner floor")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--points", type=int, default=1_000_000)
    parser.add_argument("--series", type=int, default=10)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--dir", type=Path, default=None, help="where the work folder goes")
    parser.add_argument("--json", action="store_true", help="print one JSON line")
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="bench-offline-", dir=args.dir))
    try:
        result = run_benchmark(args.points, args.series, args.rounds, work)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    if args.json:
        print(json.dumps(result))
    else:
        print_results(result)
    return 0


if __name__ == "__main__":
    sys.exit(main())
