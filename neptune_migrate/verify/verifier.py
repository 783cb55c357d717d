"""verify_runs: read every run back from the destination and compare; never stops early."""

from __future__ import annotations

import logging
import math
import random
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Any, Protocol

import pyarrow as pa

from neptune_migrate.destinations.base import Destination, PreparedRun
from neptune_migrate.destinations.retrying import RetryingDestination
from neptune_migrate.dump.reader import DumpProblem, DumpReader, DumpRun, RefusedRun, check_run_dir
from neptune_migrate.errors import UsageError, one_line, redact
from neptune_migrate.model import DestinationRunId, LossCategory, SeriesKind
from neptune_migrate.pipeline.import_ import ImportOptions, Prepared, convert_chunk, link_parent, prepare_run
from neptune_migrate.pipeline.shard import owned_scan
from neptune_migrate.verify.compare import (
    NotStepOrderedError,
    compare_series,
    compare_series_chunks,
    compare_snapshots,
    step_groups,
)
from neptune_migrate.verify.findings import FINDING_KINDS, Finding

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class VerifyOptions:
    import_options: ImportOptions = field(default_factory=ImportOptions)
    """The same selection, attribute filter and step policy the import used."""
    sample: float | None = None
    """Fraction (0-1] of series compared point by point; None compares all. Counts are always
    compared."""
    seed: int = 0
    plots: int | None = None
    """Series per run kept for the report's source-vs-destination plots; None plots every compared
    series."""
    plot_runs: int = 200
    """Runs with findings whose plots the report keeps; matching runs: a quarter of it. Bounds the
    report's memory and size on large projects (the JSON report has every run either way)."""


PLOT_BUCKETS = 60
"""A plotted curve keeps the min and max of at most this many buckets (<= 120 points): the HTML
report stays small; the JSON report and the findings keep every number exact."""


@dataclass
class PlotData:
    """One series as plotted in the report: both curves downsampled, the steps that differ exact."""

    run: str
    item: str
    expected_steps: list[float]
    expected_values: list[float]
    actual_steps: list[float]
    actual_values: list[float]
    kind: str = "float"
    expected_count: int = 0
    actual_count: int = 0
    differs: bool = False
    diff_steps: list[float] = field(default_factory=list)
    """Steps of the listed point findings (at most 50), drawn as markers."""
    positions_only: bool = False
    """The values cannot be drawn (strings, files, histograms, or floats that are all NaN/inf): the
    plot shows where the points are."""

    @property
    def key(self) -> str:
        """The series key in the destination (the item without `series:<kind>:`)."""
        return self.item.split(":", 2)[-1]


@dataclass
class RunVerification:
    key: str
    destination_run_id: str | None
    status: str
    """match, mismatch, missing (not in the destination), error."""
    series_compared: int = 0
    series_sampled_out: int = 0
    points_compared: int = 0
    findings: list[Finding] = field(default_factory=list)
    dump_losses: list[dict[str, Any]] = field(default_factory=list)
    """The dump's own items for this run that the destination cannot hold because the dump does
    not: lost at export (LOST, exit 1) or no longer in the source (NOT_IN_SOURCE, a warning)."""
    source_complete: bool = True
    """False when the source held only part of the run (e.g. a truncated queue)."""
    name: str | None = None
    """The run's name in the source (`sys/name`), or its custom run id; None when it has neither."""
    plots_left_out: bool = False
    """The report has no plots for this run (over `VerifyOptions.plot_runs`)."""
    params_compared: int = 0
    files_compared: int = 0
    points_differing: int = 0

    def differing(self, area: str) -> int:
        """Distinct items of one area (`param`, `series`, `file`) with at least one finding."""
        return len({f.item for f in self.findings if f.item.split(":", 1)[0] == area})

    def summary(self) -> dict[str, dict[str, int]]:
        """Per area: how many items were compared and how many differ (the report's run table)."""
        return {
            "params": {"compared": self.params_compared, "differing": self.differing("param")},
            "series": {"compared": self.series_compared, "differing": self.differing("series")},
            "points": {"compared": self.points_compared, "differing": self.points_differing},
            "files": {"compared": self.files_compared, "differing": self.differing("file")},
        }


DUMP_LOSS_CATEGORIES = (LossCategory.LOST, LossCategory.NOT_IN_SOURCE)


@dataclass
class VerifyReport:
    destination: str
    target: str
    started_at: str
    finished_at: str = ""
    sample: float | None = None
    runs: list[RunVerification] = field(default_factory=list)
    plots: list[PlotData] = field(default_factory=list)

    @property
    def findings(self) -> list[Finding]:
        return [f for r in self.runs for f in r.findings]

    @property
    def ok(self) -> bool:
        """No finding, and nothing the dump itself lost (a dump that missed files is not "all match")."""
        return not self.findings and not self.dump_losses()[LossCategory.LOST.value]

    def dump_losses(self) -> dict[str, int]:
        """Items of the dump's own losses per category (`lost`, `not_in_source`), over all runs."""
        out = {c.value: 0 for c in DUMP_LOSS_CATEGORIES}
        for r in self.runs:
            for lo in r.dump_losses:
                out[lo["category"]] += 1
        return out

    def counts(self) -> dict[str, int]:
        out: dict[str, int] = dict.fromkeys(FINDING_KINDS, 0)
        for f in self.findings:
            out[f.kind] += 1
        return out

    def to_json(self) -> dict[str, Any]:
        return {
            "report": "neptune-migrate verify",
            "schema_version": 1,
            "destination": self.destination,
            "target": self.target,
            "started_at": self.started_at,
            "finished_at": self.finished_at,
            "sample": self.sample,
            "ok": self.ok,
            "counts": self.counts(),
            "dump_losses": self.dump_losses(),
            "totals": {
                "runs": len(self.runs),
                "runs_matching": sum(1 for r in self.runs if r.status == "match"),
                "series_compared": sum(r.series_compared for r in self.runs),
                "series_sampled_out": sum(r.series_sampled_out for r in self.runs),
                "points_compared": sum(r.points_compared for r in self.runs),
                "runs_incomplete_in_source": sum(1 for r in self.runs if not r.source_complete),
            },
            "runs": [
                {
                    "key": r.key,
                    "name": r.name,
                    "summary": r.summary(),
                    "destination_run_id": r.destination_run_id,
                    "status": r.status,
                    "series_compared": r.series_compared,
                    "series_sampled_out": r.series_sampled_out,
                    "points_compared": r.points_compared,
                    "findings": [f.to_json() for f in r.findings],
                    "dump_losses": r.dump_losses,
                    "source_complete": r.source_complete,
                }
                for r in self.runs
            ],
        }


def expected_chunks(
    reader: DumpReader, run: DumpRun, prep: Prepared, destination: Destination, kind: SeriesKind, path: str
) -> Iterator[pa.Table]:
    """The dump's points of one series as the destination should hold them, in step windows.

    Streamed from the dump batch by batch; every point of a destination step is in one window,
    so `expected_series` (which may de-duplicate a step's identical points) sees what it would
    see on the whole series. Raises `NotStepOrderedError` when the dump's series is not stored
    in step order (then `expected_points` reads it whole).
    """
    converted = (convert_chunk(t, kind, prep, reader, destination)
                 for t in reader.iter_points(run, kind, paths=[path]))
    for window in step_groups(converted, "dest_step"):
        yield destination.expected_series(kind, window)


def expected_points(
    reader: DumpReader, run: DumpRun, prep: Prepared, destination: Destination, kind: SeriesKind, path: str
) -> pa.Table:
    """The dump's points of one series as the destination should hold them."""
    tables = [convert_chunk(t, kind, prep, reader, destination)
              for t in reader.iter_points(run, kind, paths=[path])]
    return destination.expected_series(kind, pa.concat_tables([t for t in tables if t.num_rows]))


class VerifyProgress(Protocol):
    def start(self, runs: int) -> None: ...
    def run_done(self, result: RunVerification) -> None: ...


def verify_runs(
    reader: DumpReader, destination: Destination, options: VerifyOptions, *, progress: VerifyProgress | None = None
) -> VerifyReport:
    """Compare every selected run of the dump with the destination."""
    destination.check()  # unreachable: exit 3 now, before any run is tried
    dest = RetryingDestination(destination, options.import_options.retry)
    if not dest.store_exists():
        msg = f"{destination.describe()}: the store does not exist (nothing was imported there; check the path)"
        raise UsageError(msg)
    report = VerifyReport(
        destination=destination.name,
        target=destination.describe(),
        started_at=datetime.now(timezone.utc).isoformat(),
        sample=options.sample,
    )
    rng = random.Random(options.seed)
    runs: list[DumpRun] = []
    for run in owned_scan(reader.scan(), options.import_options.shard):
        if isinstance(run, RefusedRun):
            if run.key is None or options.import_options.selection.matches_key(run.key):
                p = run.problem
                report.runs.append(RunVerification(key=p.run, destination_run_id=None, status="error", findings=[
                    Finding(p.run, "error", f"dump:{p.file}", detail=redact(f"run refused: {p.message}"))]))
            continue
        if options.import_options.selection.matches_record(run.record):
            runs.append(run)
    if progress is not None:
        progress.start(len(runs))
    plotted = {True: 0, False: 0}  # runs with plots kept: with findings, matching
    for run in runs:
        before = len(report.plots)
        result = _verify_one(reader, dest, run, options, rng, report)
        differs = bool(result.findings)
        if plotted[differs] < (options.plot_runs if differs else options.plot_runs // 4):
            plotted[differs] += 1
        elif len(report.plots) > before:
            del report.plots[before:]
            result.plots_left_out = True
        report.runs.append(result)
        if progress is not None:
            progress.run_done(result)
    # The registry after the runs, one entry per model (imported here: verify.registry builds on
    # this module's RunVerification).
    from neptune_migrate.pipeline.registry import registry_runs
    from neptune_migrate.verify.registry import verify_registry

    io = options.import_options
    if dest.capabilities.registry != "none":
        models = runs if io.shard is None else registry_runs(reader, io.selection)
        report.runs.extend(verify_registry(reader, dest, models, io.shard))
    report.finished_at = datetime.now(timezone.utc).isoformat()
    return report


def _verify_one(
    reader: DumpReader,
    dest: RetryingDestination,
    run: DumpRun,
    options: VerifyOptions,
    rng: random.Random,
    report: VerifyReport,
) -> RunVerification:
    key = str(run.key)
    system = run.record.system
    result = RunVerification(key=key, destination_run_id=None, status="match",
                             source_complete=run.record.complete,
                             name=system.name or system.custom_run_id or None)
    result.dump_losses = [lo.to_json() for lo in run.record.losses if lo.category in DUMP_LOSS_CATEGORIES]
    # The dump itself first: a corrupt part or blob is an error even if the destination matches it.
    try:
        problems = check_run_dir(reader.layout, run.run_dir, check_blobs=True)
    except Exception as exc:  # noqa: BLE001 - recorded as an error finding; verify goes on
        problems = [DumpProblem(key, "run.json", f"{type(exc).__name__}: {exc}")]
    for p in problems:
        result.findings.append(Finding(key, "error", f"dump:{p.file}", detail=redact(p.message)))
    try:
        prep = prepare_run(reader, run, dest.inner, options.import_options)
        link_parent(dest, prep)
        found = dest.find_run(run.key)
        if found is None:
            result.status = "missing"
            result.findings.append(Finding(key, "missing", "run", detail="not in the destination"))
            return result
        result.destination_run_id = found.run_id
        for dup in found.duplicates:  # two imports raced for this key and both kept a run
            result.findings.append(Finding(key, "extra", "run", expected=found.run_id, actual=dup,
                                           detail="another destination run of the same source key"))
        if not found.complete:
            result.findings.append(Finding(key, "differs", "run", expected="complete",
                                           actual="incomplete", detail="import did not finish"))
        elif found.digest != run.digest:
            result.findings.append(Finding(key, "differs", "run", expected=run.digest, actual=found.digest,
                                           detail="imported from another version of the dump"))
        elif found.import_digest is not None and found.import_digest != prep.run.import_digest:
            result.findings.append(Finding(
                key, "differs", "run", expected=prep.run.import_digest, actual=found.import_digest,
                detail="imported with other options than this verify's (attribute filter, step policy, "
                       "key map or destination settings)"))
        expected = dest.expected_snapshot(prep.run)
        # The list of series is generic: every non-empty series of the dump, under its key.
        expected.series = {
            (s.kind, prep.run.key_map.get(s.path, s.path)): s.count
            for s in prep.run.record.series if s.count
        }
        result.params_compared = len(expected.params)
        result.files_compared = len(expected.files)
        actual = dest.read_snapshot(found.run_id)
        actual.series = {k: n for k, n in actual.series.items() if n}
        result.findings.extend(compare_snapshots(key, expected, actual))
        _verify_series(reader, dest, run, prep, found.run_id, options, rng, report, result)
    except Exception as exc:  # verification goes on with the next run
        log.debug("verify of %s failed", key, exc_info=True)
        result.findings.append(Finding(key, "error", "run", detail=redact(one_line(exc))))
    if result.findings and result.status == "match":
        result.status = "error" if any(f.kind == "error" for f in result.findings) else "mismatch"
    return result


def _verify_series(
    reader: DumpReader,
    dest: RetryingDestination,
    run: DumpRun,
    prep: Prepared,
    run_id: DestinationRunId,
    options: VerifyOptions,
    rng: random.Random,
    report: VerifyReport,
    result: RunVerification,
) -> None:
    prepared: PreparedRun = prep.run
    plotted = 0
    for info in prepared.record.series:
        if info.count == 0:
            continue  # an empty series has no points to compare (the series list check covers it)
        if options.sample is not None and rng.random() >= options.sample:
            result.series_sampled_out += 1
            continue
        dest_key = prepared.key_map.get(info.path, info.path)
        item = f"series:{info.kind}:{dest_key}"
        want_plot = options.plots is None or plotted < options.plots
        plot = _PlotTap(result.key, item, info.count, values=info.kind == "float") if want_plot else None
        try:
            try:
                findings, points = compare_series_chunks(
                    result.key, item,
                    _tap(expected_chunks(reader, run, prep, dest.inner, info.kind, info.path), plot, "expected"),
                    _tap(_pages(dest, run_id, info.kind, dest_key), plot, "actual"))
            except NotStepOrderedError:
                # Out of step order on one side (rare: steps logged back in time, or a store that
                # pages by timestamp): compare this series whole, as sorted tables.
                log.debug("%s %s: not step-ordered, compared whole", result.key, item)
                plot = _PlotTap(result.key, item, info.count, values=info.kind == "float") if want_plot else None
                expected = expected_points(reader, run, prep, dest.inner, info.kind, info.path)
                actual = dest.read_series(run_id, info.kind, dest_key)
                if "step" not in actual.column_names and actual.num_rows == 0:
                    actual = expected.slice(0, 0)
                findings, points = compare_series(result.key, item, expected, actual)
                if plot is not None:
                    plot.add("expected", expected)
                    plot.add("actual", actual)
        except Exception as exc:  # noqa: BLE001 - recorded as an error finding; verify goes on
            result.findings.append(Finding(result.key, "error", item, detail=redact(one_line(exc))))
            continue
        result.findings.extend(findings)
        result.series_compared += 1
        result.points_compared += points
        result.points_differing += _points_differing(findings)
        if plot is not None:
            plotted += 1
            report.plots.append(plot.data(info.kind, findings))


_NOT_LISTED = " more point findings not listed"


def _points_differing(findings: list[Finding]) -> int:
    """Points with a finding: the listed ones plus the count compare_series gives for the rest."""
    listed = sum(1 for f in findings if f.step is not None)
    hidden = sum(int(f.detail.split()[0]) for f in findings if f.detail.endswith(_NOT_LISTED))
    return listed + hidden


def downsample(steps: list[float], values: list[float], buckets: int = PLOT_BUCKETS) -> tuple[list[float], list[float]]:
    """At most 2 * `buckets` points: each bucket's lowest and highest finite value, in step order.

    Extremes survive (a spike stays visible); points that cannot be drawn (NaN, inf) are dropped.
    """
    pairs = [(s, v) for s, v in zip(steps, values, strict=True) if math.isfinite(v) and abs(v) < 1e300]
    if len(pairs) <= 2 * buckets:
        return [s for s, _ in pairs], [v for _, v in pairs]
    out: list[tuple[float, float]] = []
    size = len(pairs) / buckets
    for b in range(buckets):
        chunk = pairs[int(b * size):int((b + 1) * size)]
        if not chunk:
            continue
        lo = min(range(len(chunk)), key=lambda i: chunk[i][1])
        hi = max(range(len(chunk)), key=lambda i: chunk[i][1])
        out.extend(chunk[i] for i in sorted({lo, hi}))
    return [s for s, _ in out], [v for _, v in out]


PLOT_POINTS = 5_000
"""Points per side kept while streaming a series for its plot (every k-th point of a longer series);
`downsample` then draws at most 2 * PLOT_BUCKETS of them. The findings stay exact either way."""


class _PlotTap:
    """Keeps every k-th (step, value) of both sides of a series as the chunks stream by, so a plot of
    any series costs at most PLOT_POINTS points per side in memory."""

    def __init__(self, run: str, item: str, count: int, *, values: bool) -> None:
        self.run, self.item, self.values = run, item, values
        self.stride = max(1, -(-count // PLOT_POINTS))
        self.seen = {"expected": 0, "actual": 0}
        self.steps: dict[str, list[float]] = {"expected": [], "actual": []}
        self.vals: dict[str, list[float]] = {"expected": [], "actual": []}

    def add(self, side: str, table: pa.Table) -> None:
        if table.num_rows == 0 or "step" not in table.column_names:
            return
        start = (-self.seen[side]) % self.stride
        self.seen[side] += table.num_rows
        names = ["step", "value"] if self.values and "value" in table.column_names else ["step"]
        picked = table.select(names).slice(start)
        if self.stride > 1:
            picked = picked.take(pa.array(range(0, picked.num_rows, self.stride), pa.int64()))
        self.steps[side].extend(float(x) for x in picked.column("step").to_pylist())
        if "value" in names:
            self.vals[side].extend(float("nan") if v is None else float(v) for v in picked.column("value").to_pylist())
        else:  # the plot shows where the points are
            self.vals[side].extend([0.0] * picked.num_rows)

    def data(self, kind: str, findings: list[Finding]) -> PlotData:
        def curve(side: str, values: bool) -> tuple[list[float], list[float]]:
            steps = self.steps[side]
            vals = self.vals[side] if values else [0.0] * len(steps)
            order = sorted(range(len(steps)), key=steps.__getitem__)
            return downsample([steps[i] for i in order], [vals[i] for i in order])

        values = self.values
        es, ev = curve("expected", values)
        as_, av = curve("actual", values)
        if values and not es and not as_:  # nothing finite (NaN/inf only)
            values = False
            es, ev = curve("expected", values)
            as_, av = curve("actual", values)
        diff_steps = sorted({f.step for f in findings if f.step is not None})
        return PlotData(self.run, self.item, es, ev, as_, av, kind=kind, expected_count=self.seen["expected"],
                        actual_count=self.seen["actual"], differs=bool(findings), diff_steps=diff_steps,
                        positions_only=not values)


def _tap(chunks: Iterator[pa.Table], plot: _PlotTap | None, side: str) -> Iterator[pa.Table]:
    for table in chunks:
        if plot is not None:
            plot.add(side, table)
        yield table


def _pages(dest: RetryingDestination, run_id: DestinationRunId, kind: SeriesKind, key: str) -> Iterator[pa.Table]:
    """A destination series page by page (each page read, and retried, on its own)."""
    token: str | None = None
    while True:
        table, token = dest.read_series_page(run_id, kind, key, token)
        yield table
        if not token:
            return
