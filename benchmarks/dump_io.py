"""Dump I/O benchmark: write one run of N float points through DumpWriter, read it back, compare
with plain pyarrow doing the same work.

    python benchmarks/dump_io.py                      # 10M points, 10 series
    python benchmarks/dump_io.py --points 1000000     # smaller
    python benchmarks/dump_io.py --compare-sizes      # 1M and 10M in separate processes (peak RSS)

Throughput counts only the time spent in our API (or in pyarrow for the ceiling): generating the
input batches is not timed. Peak RSS is `getrusage(RUSAGE_SELF).ru_maxrss`; on Linux the peak is
reset between phases (`/proc/self/clear_refs`), so each phase reports its own high-water mark.
"""

from __future__ import annotations

import argparse
import gc
import json
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

REPO = Path(__file__).resolve().parent.parent
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from neptune_migrate.dump.reader import DumpReader  # noqa: E402
from neptune_migrate.dump.schema import SERIES_SCHEMAS  # noqa: E402
from neptune_migrate.dump.writer import ROW_GROUP_ROWS, DumpWriter  # noqa: E402
from neptune_migrate.model import Provenance, RunKey, RunRecord, SourceRunId, SystemInfo  # noqa: E402

BATCH_ROWS = 100_000
READ_BATCH_ROWS = 64 * 1024
T0_US = int(datetime(2025, 3, 1, tzinfo=timezone.utc).timestamp() * 1_000_000)
SCHEMA = SERIES_SCHEMAS["float"]


def batches(points: int, series: int, batch_rows: int = BATCH_ROWS) -> Iterator[pa.Table]:
    """Deterministic float-series batches, interleaved across `series` paths like a training log.

    Point g goes to path g % series at step g // series: every batch holds every path.
    """
    paths = pa.array([f"train/metric_{i:03d}" for i in range(series)], pa.string())
    for start in range(0, points, batch_rows):
        g = np.arange(start, min(start + batch_rows, points), dtype=np.int64)
        step = (g // series).astype(np.float64)
        path = pa.DictionaryArray.from_arrays(pa.array(g % series, pa.int32()), paths).cast(pa.string())
        yield pa.Table.from_arrays(
            [
                path,
                pa.array(step, pa.float64()),
                pa.array(T0_US + (g // series) * 1_000_000, pa.int64()).cast(SCHEMA.field("timestamp").type),
                pa.array(np.sin(g * 1e-3) / (1.0 + step), pa.float64()),
                pa.nulls(len(g), pa.float64()),
            ],
            schema=SCHEMA,
        )


def reset_peak() -> bool:
    """Reset the process's peak RSS (Linux >= 4.0); False where that is not possible.

    Memory the previous phase freed but Arrow's allocator kept is handed back first, so a phase's
    peak is its own (plus what is still alive), not the previous phase's.
    """
    gc.collect()
    pa.default_memory_pool().release_unused()
    try:
        with open("/proc/self/clear_refs", "w") as fh:
            fh.write("5")
    except OSError:
        return False
    return True


def peak_mib() -> float:
    """Peak RSS since start (or since the last reset), in MiB (ru_maxrss is KiB on Linux)."""
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return rss / (1024 * 1024) if sys.platform == "darwin" else rss / 1024


def current_mib() -> float | None:
    """Resident set size now, in MiB (Linux only; None elsewhere)."""
    try:
        with open("/proc/self/status") as fh:
            for line in fh:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1]) / 1024
    except OSError:
        pass
    return None


def phase(name: str, results: dict[str, Any], points: int, seconds: float, start_rss: float | None) -> None:
    results[name] = {"seconds": seconds, "points_per_s": points / seconds, "peak_rss_mib": peak_mib(),
                     "start_rss_mib": start_rss}


def run_benchmark(points: int, series: int, workdir: Path) -> dict[str, Any]:
    results: dict[str, Any] = {"points": points, "series": series, "batch_rows": BATCH_ROWS}
    results["baseline_rss_mib"] = peak_mib()
    resettable = reset_peak()
    results["per_phase_peaks"] = resettable
    start = current_mib()
    key = RunKey("bench/dump-io", SourceRunId("BENCH-1"))

    # 1. our writer: DumpWriter / RunWriter.add_points / commit
    dump_root = workdir / "dump"
    elapsed = 0.0
    with DumpWriter(dump_root) as dump, dump.begin_run(key) as run:
        for table in batches(points, series):
            t = time.perf_counter()
            run.add_points("float", table)
            elapsed += time.perf_counter() - t
        t = time.perf_counter()
        record = run.commit(RunRecord(key=key, system=SystemInfo(name="bench"), fields={},
                                      provenance=Provenance("benchmark", str(workdir))))
        elapsed += time.perf_counter() - t
    assert sum(s.count for s in record.series) == points
    phase("dump_write", results, points, elapsed, start)

    # 2. our reader: DumpReader.iter_points over the whole run
    reset_peak()
    start = current_mib()
    t = time.perf_counter()
    reader = DumpReader(dump_root)
    dump_run = reader.get_run(key)
    assert dump_run is not None
    rows = 0
    for table in reader.iter_points(dump_run, "float", batch_rows=READ_BATCH_ROWS):
        rows += table.num_rows
    elapsed = time.perf_counter() - t
    assert rows == points, (rows, points)
    phase("dump_read", results, points, elapsed, start)
    part_paths = dump_run.part_paths("float")
    results["dump_parts"] = len(part_paths)
    results["dump_bytes"] = sum(p.stat().st_size for p in part_paths)

    # 3. ceiling: plain pq.ParquetWriter, same tables, same compression, no sort / stats / checksums
    reset_peak()
    start = current_mib()
    raw = workdir / "raw.parquet"
    elapsed = 0.0
    t = time.perf_counter()
    writer = pq.ParquetWriter(raw, SCHEMA, compression="zstd")
    elapsed += time.perf_counter() - t
    for table in batches(points, series):
        t = time.perf_counter()
        writer.write_table(table)
        elapsed += time.perf_counter() - t
    t = time.perf_counter()
    writer.close()
    elapsed += time.perf_counter() - t
    phase("raw_write", results, points, elapsed, start)
    results["raw_bytes"] = raw.stat().st_size

    # 4. ceiling: plain ParquetFile.iter_batches over the raw file
    reset_peak()
    start = current_mib()
    t = time.perf_counter()
    rows = 0
    for batch in pq.ParquetFile(raw).iter_batches(batch_size=READ_BATCH_ROWS):
        rows += batch.num_rows
    elapsed = time.perf_counter() - t
    assert rows == points
    phase("raw_read", results, points, elapsed, start)

    # 5. plain ParquetFile.iter_batches over the dump's own parts (isolates DumpReader's overhead)
    reset_peak()
    start = current_mib()
    t = time.perf_counter()
    rows = 0
    for part in part_paths:
        for batch in pq.ParquetFile(part).iter_batches(batch_size=READ_BATCH_ROWS):
            rows += batch.num_rows
    elapsed = time.perf_counter() - t
    assert rows == points
    phase("raw_read_dump_parts", results, points, elapsed, start)

    # 6. the same without pre-buffering: pre_buffer=True (pyarrow's default) keeps the compressed
    # column chunks of every row group read so far until the file is closed, so memory grows
    # with the part's size; this line shows what DumpReader would use with pre_buffer=False.
    reset_peak()
    start = current_mib()
    t = time.perf_counter()
    rows = 0
    for part in part_paths:
        for batch in pq.ParquetFile(part, pre_buffer=False).iter_batches(batch_size=READ_BATCH_ROWS):
            rows += batch.num_rows
    elapsed = time.perf_counter() - t
    assert rows == points
    phase("raw_read_dump_parts_no_prebuffer", results, points, elapsed, start)
    return results


LABELS = {
    "dump_write": "dump write  (RunWriter.add_points + commit)",
    "dump_read": "dump read   (DumpReader.iter_points)",
    "raw_write": "raw write   (pq.ParquetWriter, zstd)",
    "raw_read": "raw read    (ParquetFile.iter_batches)",
    "raw_read_dump_parts": "raw read of the dump's parts",
    "raw_read_dump_parts_no_prebuffer": "raw read of the dump's parts, pre_buffer=False",
}


def print_results(r: dict[str, Any]) -> None:
    print(f"points={r['points']:,} series={r['series']} batch_rows={r['batch_rows']:,} "
          f"row_group_rows={ROW_GROUP_ROWS:,} python={sys.version.split()[0]} pyarrow={pa.__version__}")
    peak = "per phase" if r["per_phase_peaks"] else "cumulative (could not reset between phases)"
    print(f"baseline RSS after imports: {r['baseline_rss_mib']:.0f} MiB; peak RSS is {peak}")
    for name, label in LABELS.items():
        p = r[name]
        at_start = "" if p["start_rss_mib"] is None else f" (RSS at start {p['start_rss_mib']:4.0f})"
        print(f"  {label:<47} {p['points_per_s'] / 1e6:7.2f} M points/s  {p['seconds']:7.2f} s  "
              f"peak RSS {p['peak_rss_mib']:5.0f} MiB{at_start}")
    print(f"  dump: {r['dump_parts']} part(s), {r['dump_bytes'] / 2**20:.1f} MiB; "
          f"raw file {r['raw_bytes'] / 2**20:.1f} MiB")
    for ours, raw in (("dump_write", "raw_write"), ("dump_read", "raw_read")):
        print(f"  {ours} takes {r[ours]['seconds'] / r[raw]['seconds']:.2f}x the time of {raw}")


def compare_sizes(series: int, sizes: list[int]) -> int:
    """Run the benchmark at each size in a fresh process and print peak RSS side by side."""
    results = []
    for n in sizes:
        cmd = [sys.executable, __file__, "--points", str(n), "--series", str(series), "--json"]
        proc = subprocess.run(cmd, capture_output=True, text=True, check=False)
        if proc.returncode != 0:
            sys.stderr.write(proc.stderr)
            return proc.returncode
        r = json.loads(proc.stdout.strip().splitlines()[-1])
        print_results(r)
        print()
        results.append(r)
    print("peak RSS (MiB) by run size, each size in its own process:")
    print(f"  {'phase':<47} " + " ".join(f"{r['points']:>12,}" for r in results))
    for name, label in LABELS.items():
        print(f"  {label:<47} " + " ".join(f"{r[name]['peak_rss_mib']:>12.0f}" for r in results))
    return 0


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--points", type=int, default=10_000_000, help="float points in the run")
    parser.add_argument("--series", type=int, default=10, help="number of series paths")
    parser.add_argument("--dir", type=Path, default=None,
                        help="make the temporary work folder inside this folder (default: the system temp)")
    parser.add_argument("--keep", action="store_true", help="keep the work folder")
    parser.add_argument("--json", action="store_true", help="print the results as one JSON line")
    parser.add_argument("--compare-sizes", action="store_true",
                        help="run 1M and 10M points in separate processes and compare peak RSS")
    args = parser.parse_args()
    if args.compare_sizes:
        return compare_sizes(args.series, [1_000_000, 10_000_000])
    if args.dir is not None:
        args.dir.mkdir(parents=True, exist_ok=True)
    workdir = Path(tempfile.mkdtemp(prefix="dump-io-", dir=args.dir))
    try:
        results = run_benchmark(args.points, args.series, workdir)
    finally:
        if not args.keep:
            shutil.rmtree(workdir, ignore_errors=True)
    if args.json:
        print(json.dumps(results))
    else:
        print_results(results)
    return 0


if __name__ == "__main__":
    sys.exit(main())
