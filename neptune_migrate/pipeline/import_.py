"""import_runs: dump -> destination, idempotent and resumable. The resume logic lives here once.

For each run: ask the destination whether it exists (the destination is the truth, the ledger
only a record). Complete with the same dump digest -> skip. Present but incomplete (an import
that crashed) or from an older dump -> discard and recreate (or resume, where the destination
cannot delete). Otherwise create, stream series, upload files, and write the completion marker
last. Every call goes through RetryingDestination.
"""

from __future__ import annotations

import logging
import math
import re
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field, replace
from datetime import datetime, timezone
from typing import Any, Protocol

import pyarrow as pa
import pyarrow.compute as pc

from neptune_migrate.destinations.base import Destination, PreparedRun, StepPlan
from neptune_migrate.destinations.retrying import RetryingDestination
from neptune_migrate.dump.reader import DumpReader, DumpRun, check_run_dir
from neptune_migrate.errors import MigrateError, chain_text, one_line, redact
from neptune_migrate.model import (
    SERIES_KINDS,
    DestinationRunId,
    Loss,
    LossCategory,
    RunKey,
    SeriesKind,
    count_categories,
)
from neptune_migrate.pipeline.keys import build_key_map
from neptune_migrate.pipeline.ledger import Ledger
from neptune_migrate.pipeline.steps import SeriesSteps, StepCollector, StepPolicyName
from neptune_migrate.retry import RetryPolicy
from neptune_migrate.sources.base import RunSelection

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class ImportOptions:
    selection: RunSelection = field(default_factory=RunSelection)
    attribute_regex: str | None = None
    """Only attributes (fields and series) whose path matches; the rest are not imported."""
    step_policy: StepPolicyName = "auto"
    workers: int = 1
    dry_run: bool = False
    retry: RetryPolicy = field(default_factory=RetryPolicy)


@dataclass
class RunResult:
    """One run's line in the import report (or in the dry-run plan)."""

    key: str
    status: str
    """created, skipped, repaired, failed, filtered; in a dry run would_create, would_skip,
    would_repair, would_fail."""
    destination_run_id: str | None = None
    message: str = ""
    points: int = 0
    files: int = 0
    bytes: int = 0
    renamed_keys: dict[str, str] = field(default_factory=dict)
    collisions: dict[str, list[str]] = field(default_factory=dict)
    step_changes: list[dict[str, Any]] = field(default_factory=list)
    losses: list[dict[str, Any]] = field(default_factory=list)
    requests: int = 0
    seconds: float = 0.0
    error_chain: list[str] = field(default_factory=list)
    """A failed run's exceptions, outermost first, in full (the message keeps the root cause)."""

    @property
    def has_error_loss(self) -> bool:
        return any(lo["error"] for lo in self.losses)


@dataclass
class ImportReport:
    destination: str
    target: str
    dry_run: bool
    started_at: str
    finished_at: str = ""
    retries: int = 0
    runs: list[RunResult] = field(default_factory=list)

    def count(self, status: str) -> int:
        return sum(1 for r in self.runs if r.status == status)

    @property
    def failed(self) -> bool:
        return any(r.status in ("failed", "would_fail") or r.has_error_loss for r in self.runs)

    def losses_by_kind(self) -> dict[str, int]:
        out: dict[str, int] = {}
        for r in self.runs:
            for lo in r.losses:
                out[lo["kind"]] = out.get(lo["kind"], 0) + int(lo["count"])
        return dict(sorted(out.items()))

    def to_json(self) -> dict[str, Any]:
        statuses = sorted({r.status for r in self.runs})
        return {
            "report": "neptune-migrate import",
            "destination": self.destination,
            "target": self.target,
            "dry_run": self.dry_run,
            "started_at": self.started_at,
            "finished_at": self.finished_at,
            "retries": self.retries,
            "counts": {s: self.count(s) for s in statuses},
            "totals": {
                "runs": len(self.runs),
                "points": sum(r.points for r in self.runs),
                "files": sum(r.files for r in self.runs),
                "bytes": sum(r.bytes for r in self.runs),
                "requests": sum(r.requests for r in self.runs),
                "renamed_keys": sum(len(r.renamed_keys) for r in self.runs),
                "collisions": sum(len(r.collisions) for r in self.runs),
                "step_changes": sum(len(r.step_changes) for r in self.runs),
            },
            "losses": self.losses_by_kind(),
            "categories": count_categories(lo for r in self.runs for lo in r.losses),
            "runs": [vars(r) for r in self.runs],
        }


class ImportProgress(Protocol):
    def start(self, runs: int, points: int) -> None: ...
    def advance(self, points: int) -> None: ...
    def run_done(self, result: RunResult) -> None: ...


class _NoProgress:
    def start(self, runs: int, points: int) -> None:
        pass

    def advance(self, points: int) -> None:
        pass

    def run_done(self, result: RunResult) -> None:
        pass


def _loss(lo: Loss) -> dict[str, Any]:
    return lo.to_json()


# ---------------------------------------------------------------------------------------------
# Preparing a run: key map and step plans, the same for import, dry run and verify.


@dataclass
class Prepared:
    run: PreparedRun
    wanted: frozenset[str] | None
    """Attribute paths to import (None: all)."""
    pipeline_losses: list[Loss]
    renamed: dict[str, str]
    collisions: dict[str, list[str]]
    step_changes: list[dict[str, Any]]
    points: int
    bytes: int
    plans: dict[tuple[SeriesKind, str], SeriesSteps] = field(default_factory=dict)
    """Full step plans (with rank tables) used to convert each batch."""


def prepare_run(
    reader: DumpReader, run: DumpRun, destination: Destination, options: ImportOptions
) -> Prepared:
    """Decide keys and steps for one run, reading only the dump (never the destination)."""
    caps = destination.capabilities
    rec = run.record
    pattern = re.compile(options.attribute_regex) if options.attribute_regex else None
    paths = set(rec.fields) | {s.path for s in rec.series}
    every = paths | {fe.attribute_path for fe in rec.files}
    wanted = frozenset(p for p in every if pattern.search(p)) if pattern else None
    if wanted is not None:
        paths &= wanted
        rec = replace(
            rec,
            fields={p: f for p, f in rec.fields.items() if p in wanted},
            series=tuple(s for s in rec.series if s.path in wanted),
            files=tuple(fe for fe in rec.files if fe.attribute_path in wanted),
        )
    keymap = build_key_map(paths, caps.sanitize_key)
    losses: list[Loss] = []
    if keymap.renamed:
        losses.append(Loss("key_renamed", None, len(keymap.renamed),
                           "keys changed to fit the destination's rules (see renamed_keys)"))
    for key, members in keymap.collisions.items():
        losses.append(Loss("key_collision", key, len(members),
                           f"{', '.join(members)} would all map to {key!r}; disambiguated with a hash suffix"))
    steps: dict[tuple[SeriesKind, str], StepPlan] = {}
    step_changes: list[dict[str, Any]] = []
    plans: dict[tuple[SeriesKind, str], SeriesSteps] = {}
    points = 0
    series = list(rec.series)
    for kind in SERIES_KINDS:
        kind_series = [s for s in series if s.kind == kind]
        if not kind_series:
            continue
        collectors = {s.path: StepCollector() for s in kind_series}
        for table in reader.iter_points(run, kind, columns=["path", "step"],
                                        paths=None if wanted is None else sorted(collectors)):
            for path in table.column("path").unique().to_pylist():
                if path in collectors:
                    rows = table.filter(pc.equal(table.column("path"), path))
                    collectors[path].add(rows.column("step"))
        for path, col in collectors.items():
            plan = col.plan(options.step_policy)
            points += col.points
            if caps.integer_steps_only:
                steps[kind, path] = plan.as_plan()
                if plan.changed:
                    step_changes.append({"kind": kind, "path": path, "policy": plan.policy,
                                         "scale": plan.scale, "points": plan.points,
                                         "detail": plan.describe()})
                    losses.append(Loss("step_converted", path, plan.points, plan.describe()))
            plans[kind, path] = plan
            if plan.duplicates:
                overwritten = caps.duplicate_steps != "kept"
                losses.append(Loss(
                    "duplicate_step", path, plan.duplicates,
                    f"points share a step; the destination {caps.duplicate_steps} them",
                    category=LossCategory.LOST if overwritten else LossCategory.CHANGED_FORM,
                ))
    # A file the export could not save keeps the category the export gave it (e.g. deleted by the
    # Neptune client after upload: not in the source any more); a blob gone from the dump is lost.
    at_export = {lo.path: lo.category for lo in rec.losses
                 if lo.path is not None and lo.category is not LossCategory.CHANGED_FORM}
    for fe in rec.files:
        if fe.sha256 is None:
            losses.append(Loss("file_missing_in_dump", fe.attribute_path, 1,
                               f"{fe.name}: {fe.missing or 'not in the dump'}",
                               category=at_export.get(fe.attribute_path, LossCategory.LOST)))
        elif not reader.blob_path(fe.sha256).is_file():
            losses.append(Loss("file_missing_in_dump", fe.attribute_path, 1,
                               f"{fe.name}: blob {fe.sha256[:12]} is missing from the dump",
                                   category=LossCategory.LOST))
    size = sum(fe.size or 0 for fe in rec.files if fe.sha256)
    prepared = PreparedRun(record=rec, digest=run.digest, key_map=keymap.mapping, steps=steps)
    return Prepared(prepared, wanted, losses, keymap.renamed, keymap.collisions, step_changes, points, size,
                    plans)


def convert_chunk(
    chunk: pa.Table, kind: SeriesKind, prepared: Prepared, reader: DumpReader, destination: Destination
) -> pa.Table:
    """Add `key` and `dest_step` (and `local_path` for file series) to a batch of dump points."""
    if prepared.wanted is not None:
        chunk = chunk.filter(pc.is_in(chunk.column("path"), value_set=pa.array(sorted(prepared.wanted))))
    if chunk.num_rows == 0:
        return chunk
    keys = []
    dest_steps = []
    pieces = []
    for path in chunk.column("path").unique().to_pylist():
        rows = chunk.filter(pc.equal(chunk.column("path"), path))
        pieces.append(rows)
        keys.append(pa.array([prepared.run.key_map.get(path, path)] * rows.num_rows, pa.string()))
        plan = prepared.plans.get((kind, path))
        if destination.capabilities.integer_steps_only and plan is not None:
            dest_steps.append(plan.convert(rows.column("step")))
        else:
            dest_steps.append(rows.column("step").combine_chunks())
    table = pa.concat_tables(pieces)
    table = table.append_column("key", pa.chunked_array(keys, pa.string()))
    table = table.append_column("dest_step", pa.chunked_array(dest_steps))
    if kind == "file":
        local = [None if sha is None else str(reader.blob_path(sha))
                 for sha in table.column("sha256").to_pylist()]
        table = table.append_column("local_path", pa.array(local, pa.string()))
    return table


def link_parent(dest: Destination, prep: Prepared) -> None:
    """Point a forked run at its parent's destination run, when the parent was imported."""
    fork = prep.run.record.fork
    if fork is None:
        return
    parent = dest.find_run(fork.parent)
    if parent is not None:
        prep.run = replace(prep.run, parent_run_id=parent.run_id)


# ---------------------------------------------------------------------------------------------


def _fork_depth(runs: list[DumpRun]) -> dict[RunKey, int]:
    by_key = {r.key: r for r in runs}
    depth: dict[RunKey, int] = {}

    def d(key: RunKey, seen: frozenset[RunKey]) -> int:
        if key in depth:
            return depth[key]
        fork = by_key[key].record.fork
        value = 0
        if fork is not None and fork.parent in by_key and fork.parent not in seen:
            value = d(fork.parent, seen | {key}) + 1
        depth[key] = value
        return value

    for r in runs:
        d(r.key, frozenset())
    return depth


def import_runs(
    reader: DumpReader,
    destination: Destination,
    options: ImportOptions,
    *,
    ledger: Ledger | None = None,
    progress: ImportProgress | None = None,
) -> ImportReport:
    """Import (or, with `dry_run`, plan) every selected committed run of the dump."""
    sink = progress or _NoProgress()
    destination.check()  # unreachable: exit 3 now, before any run is tried
    dest = RetryingDestination(destination, options.retry)
    report = ImportReport(
        destination=destination.name,
        target=destination.describe(),
        dry_run=options.dry_run,
        started_at=datetime.now(timezone.utc).isoformat(),
    )
    runs: list[DumpRun] = []
    for run in reader.runs():
        if options.selection.matches_record(run.record):
            runs.append(run)
        else:
            report.runs.append(RunResult(key=str(run.key), status="filtered"))
    sink.start(len(runs), sum(s.count for r in runs for s in r.record.series))
    depth = _fork_depth(runs)
    workers = max(1, options.workers) if destination.capabilities.parallel_runs else 1
    results: list[RunResult] = []
    lock = threading.Lock()

    def one(run: DumpRun) -> None:
        result = _import_one(reader, dest, run, options, ledger, sink)
        with lock:
            results.append(result)
        sink.run_done(result)

    for wave in sorted(set(depth.values())):
        batch = [r for r in runs if depth[r.key] == wave]
        if workers == 1:
            for r in batch:
                one(r)
        else:
            with ThreadPoolExecutor(max_workers=workers) as pool:
                list(pool.map(one, batch))
    report.runs.extend(results)
    report.runs.sort(key=lambda r: r.key)
    report.retries = dest.retries
    report.finished_at = datetime.now(timezone.utc).isoformat()
    return report


def _import_one(
    reader: DumpReader,
    dest: RetryingDestination,
    run: DumpRun,
    options: ImportOptions,
    ledger: Ledger | None,
    sink: ImportProgress,
) -> RunResult:
    started = time.monotonic()
    result = RunResult(key=str(run.key), status="failed")
    try:
        problems = check_run_dir(reader.layout, run.run_dir, check_blobs=False)
        if problems:
            result.message = "; ".join(f"{p.file}: {p.message}" for p in problems)
            result.status = "would_fail" if options.dry_run else "failed"
            return result
        prep = prepare_run(reader, run, dest.inner, options)
        result.points = prep.points
        result.bytes = prep.bytes
        result.files = sum(1 for f in prep.run.record.files if f.sha256)
        result.renamed_keys = prep.renamed
        result.collisions = prep.collisions
        result.step_changes = prep.step_changes
        losses = prep.pipeline_losses + dest.plan_run(prep.run)
        result.losses = [_loss(lo) for lo in losses]
        caps = dest.capabilities
        prec = prep.run.record
        result.requests = 3 + len(prec.files) + sum(
            math.ceil(s.count / caps.points_per_request) for s in prec.series
        ) + math.ceil(len(prec.fields) / 100)
        link_parent(dest, prep)
        existing = dest.find_run(run.key)
        if existing is not None and existing.complete and existing.digest == prep.run.digest:
            result.status = "would_skip" if options.dry_run else "skipped"
            result.destination_run_id = existing.run_id
            result.message = "already complete in the destination"
            result.requests = 1
            sink.advance(prep.points)
            return result
        if options.dry_run:
            chunk_losses: list[Loss] = []
            for kind in SERIES_KINDS:
                for chunk in reader.iter_points(run, kind):
                    table = convert_chunk(chunk, kind, prep, reader, dest.inner)
                    if table.num_rows:
                        chunk_losses.extend(dest.chunk_losses(kind, table))
            result.losses += [_loss(lo) for lo in merge_losses(chunk_losses)]
            result.status = "would_create" if existing is None else "would_repair"
            if existing is not None:
                result.message = _repair_reason(existing.complete)
            result.seconds = prep.points / caps.points_per_second
            return result
        status = "created"
        if existing is not None:
            status = "repaired"
            result.message = _repair_reason(existing.complete)
            if caps.can_delete_runs:
                dest.discard_run(existing.run_id)
        run_id = dest.create_run(prep.run)
        result.destination_run_id = run_id
        written_losses = _write_points(reader, dest, run, prep, run_id, sink)
        result.losses += [_loss(lo) for lo in merge_losses(written_losses)]
        dest.finish_series(run_id, prep.run)
        for fe in prep.run.record.files:
            if fe.sha256 is None or not reader.blob_path(fe.sha256).is_file():
                continue  # already a file_missing_in_dump loss (error)
            dest.upload_file(run_id, fe, reader.blob_path(fe.sha256))
        dest.mark_complete(run_id, prep.run)
        result.status = status
        if ledger is not None:
            ledger.append({"key": result.key, "destination_run_id": run_id, "digest": run.digest,
                           "status": status})
    except Exception as exc:  # one run's failure must not stop the import
        if not isinstance(exc, MigrateError):
            log.debug("import of %s failed", run.key, exc_info=True)
        result.status = "would_fail" if options.dry_run else "failed"
        result.message = redact(one_line(exc))
        result.error_chain = [redact(t) for t in chain_text(exc)]
    finally:
        result.seconds = result.seconds or round(time.monotonic() - started, 3)
    if result.status == "failed" and ledger is not None:
        ledger.append({"key": result.key, "status": "failed", "message": result.message})
    return result


def _repair_reason(complete: bool) -> str:
    if complete:
        return "the dump changed since the last import (different digest)"
    return "an earlier import left it half-written"


def _write_points(
    reader: DumpReader,
    dest: RetryingDestination,
    run: DumpRun,
    prep: Prepared,
    run_id: DestinationRunId,
    sink: ImportProgress,
) -> list[Loss]:
    """Stream every series into the destination; return the per-point losses of every chunk."""
    losses: list[Loss] = []
    for kind in SERIES_KINDS:
        for chunk in reader.iter_points(run, kind):
            table = convert_chunk(chunk, kind, prep, reader, dest.inner)
            if table.num_rows == 0:
                continue
            losses.extend(dest.chunk_losses(kind, table))
            # One call per request-sized slice: a retry then repeats one request, not a whole chunk
            # (under steady packet loss a 64k-point chunk of 64 requests might never get through).
            step = max(1, dest.capabilities.points_per_request)
            for offset in range(0, table.num_rows, step):
                piece = table.slice(offset, step)
                dest.write_series(run_id, kind, piece)
                sink.advance(piece.num_rows)
    return losses


def merge_losses(losses: list[Loss]) -> list[Loss]:
    """Sum the counts of losses that differ only in count (chunks of one series)."""
    merged: dict[tuple[str, str | None, str, LossCategory], int] = {}
    for lo in losses:
        k = (lo.kind, lo.path, lo.detail, lo.category)
        merged[k] = merged.get(k, 0) + lo.count
    return [Loss(kind, path, count, detail, category) for (kind, path, detail, category), count in merged.items()]
