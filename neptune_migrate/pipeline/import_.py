"""import_runs: dump -> destination, idempotent and resumable. The resume logic lives here once.

For each run: ask the destination whether it exists (the destination is the truth, the ledger
only a record). Complete with the same *import digest* (the dump digest plus every option that
changes what is written) -> skip. Present but incomplete (an import that crashed), from an older
version of this dump, or written with other options -> discard and recreate (or resume, where the
destination cannot delete). Present and imported from *another dump* (a different origin) -> a
conflict, handled by `on_conflict` (fail, skip or replace), never replaced silently. Otherwise
create, stream series, upload files, and write the completion marker last. Every call goes
through RetryingDestination.
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
import re
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field, replace
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Literal, Protocol

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from neptune_migrate.destinations.base import Destination, DestinationRun, PreparedRun, RunSnapshot, StepPlan
from neptune_migrate.destinations.retrying import RetryingDestination
from neptune_migrate.dump.reader import DumpReader, DumpRun, RefusedRun, check_run_dir
from neptune_migrate.errors import ClaimLostError, DumpFormatError, MigrateError, chain_text, one_line, redact
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
from neptune_migrate.pipeline.registry import RegistryResult, import_registry, not_carried, registry_runs
from neptune_migrate.pipeline.shard import Shard, owned_scan
from neptune_migrate.pipeline.steps import SeriesSteps, StepCollector, StepPolicyName, plan_run
from neptune_migrate.retry import RetryPolicy
from neptune_migrate.sources.base import RunSelection

log = logging.getLogger(__name__)


OnConflict = Literal["fail", "skip", "replace"]
ON_CONFLICT: tuple[OnConflict, ...] = ("fail", "skip", "replace")
IMPORT_DIGEST_SCHEME = 1
"""Version of what the import digest covers; bumping it redoes every run on the next import."""


@dataclass(frozen=True)
class ImportOptions:
    selection: RunSelection = field(default_factory=RunSelection)
    attribute_regex: str | None = None
    """Only attributes (fields and series) whose path matches; the rest are not imported."""
    step_policy: StepPolicyName = "auto"
    workers: int = 1
    dry_run: bool = False
    retry: RetryPolicy = field(default_factory=RetryPolicy)
    on_conflict: OnConflict = "fail"
    """A destination run imported from another dump: `fail` (report it, exit 1), `skip` (leave
    it), `replace` (discard it and import this dump's run)."""
    shard: Shard | None = None
    """Only the runs of this shard (`--shard K/N`); None: every run."""
    registry: Literal["with", "only", "none"] = "with"
    """`with`: runs, then the registry step; `only`: no run is imported, only the registry is built
    (`import --registry-only`, after every shard); `none`: runs only, each model reported not carried
    (`--no-registry`)."""


@dataclass
class RunResult:
    """One run's line in the import report (or in the dry-run plan)."""

    key: str
    status: str
    """created, skipped, repaired, replaced, conflict, failed, filtered; in a dry run
    would_create, would_skip, would_repair, would_replace, would_conflict, would_fail."""
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
    store: str | None = None
    """A line about the store when the import created or repaired it (or, in a dry run, would
    create it); None when it was there already."""
    runs: list[RunResult] = field(default_factory=list)
    registry: list[RegistryResult] = field(default_factory=list)
    """The registry step's models, versions and aliases (`pipeline/registry.py`), after the runs."""

    def count(self, status: str) -> int:
        return sum(1 for r in self.runs if r.status == status)

    @property
    def failed(self) -> bool:
        return any(r.status in ("failed", "would_fail", "conflict", "would_conflict") or r.has_error_loss
                   for r in self.runs) or any(
            r.status in ("failed", "would_fail") or any(lo.get("error") for lo in r.losses)
            for r in self.registry)

    @property
    def conflicts(self) -> list[str]:
        """Keys of runs left alone because the destination holds another dump's run."""
        return [r.key for r in self.runs if r.status in ("conflict", "would_conflict")]

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
            "store": self.store,
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
            "categories": count_categories([*(lo for r in self.runs for lo in r.losses),
                                            *(lo for g in self.registry for lo in g.losses)]),
            "runs": [vars(r) for r in self.runs],
            "registry": [r.to_json() for r in self.registry],
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
    collectors: dict[tuple[SeriesKind, str], StepCollector] = {}
    keep = options.step_policy == "rank"  # ranks need every distinct step; else count while we can
    for kind in SERIES_KINDS:
        kind_series = {s.path: StepCollector(keep=keep) for s in series if s.kind == kind}
        if not kind_series:
            continue
        _collect_steps(reader, run, kind, kind_series, all_paths=wanted is None)
        # A series whose steps stopped being integral and in order after they were only counted:
        # a second pass keeps its distinct steps (memory of its distinct steps, as before).
        again = {path: StepCollector(keep=True) for path, col in kind_series.items() if col.lost}
        if again:
            _collect_steps(reader, run, kind, again, all_paths=False)
            kind_series.update(again)
        collectors.update({(kind, path): col for path, col in kind_series.items()})
    for (kind, path), plan in plan_run(collectors, options.step_policy).items():
        points += plan.points
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
    if wanted is not None and wanted >= every:
        wanted = None  # a filter that keeps everything writes what no filter writes
    digest = import_digest(run.digest, destination, wanted, keymap.mapping, steps)
    end = rec.system.modified_at or last_timestamp(reader, run)
    if end is not None and rec.system.created_at is not None:
        end = max(end, rec.system.created_at)
    prepared = PreparedRun(record=rec, digest=run.digest, key_map=keymap.mapping, steps=steps,
                           import_digest=digest, origin=reader.manifest.origin, end_time=end)
    return Prepared(prepared, wanted, losses, keymap.renamed, keymap.collisions, step_changes, points, size,
                    plans)


def _collect_steps(reader: DumpReader, run: DumpRun, kind: SeriesKind, collectors: dict[str, StepCollector],
                   *, all_paths: bool) -> None:
    """Feed each series' steps (one pass over the run's `kind` parts) to its collector."""
    for table in reader.iter_points(run, kind, columns=["path", "step"],
                                    paths=None if all_paths else sorted(collectors)):
        for path, steps_of_path in _steps_by_path(table):
            if path in collectors:
                collectors[path].add(steps_of_path)


def _steps_by_path(table: pa.Table) -> Iterator[tuple[str, pa.Array]]:
    """Each path's steps in a batch, column-wise (one stable sort, not one filter per path)."""
    encoded = table.column("path").combine_chunks().dictionary_encode()
    codes = encoded.indices.to_numpy(zero_copy_only=False)
    order = np.argsort(codes, kind="stable")
    steps = table.column("step").combine_chunks().take(pa.array(order))
    bounds = np.r_[0, np.cumsum(np.bincount(codes, minlength=len(encoded.dictionary)))]
    for i, path in enumerate(encoded.dictionary.to_pylist()):
        yield path, steps.slice(int(bounds[i]), int(bounds[i + 1] - bounds[i]))


def import_digest(
    dump_digest: str,
    destination: Destination,
    wanted: frozenset[str] | None,
    key_map: dict[str, str],
    steps: dict[tuple[SeriesKind, str], StepPlan],
) -> str:
    """sha256 of the canonical JSON of everything that decides what a run's import writes.

    The dump run's digest, the digest scheme, the destination's name and `import_settings()`
    (its mapping version and write-affecting options), the attribute paths kept by the filter
    (None: all), the key map and each series' step plan (policy and scale: the step policy as it
    applies to this run, so `floor` and `auto` differ only on runs with fractional steps).
    """
    doc = {
        "scheme": IMPORT_DIGEST_SCHEME,
        "dump_digest": dump_digest,
        "destination": destination.name,
        "settings": dict(sorted(destination.import_settings().items())),
        "attributes": None if wanted is None else sorted(wanted),
        "key_map": sorted(key_map.items()),
        "steps": sorted([kind, path, plan.policy, plan.scale] for (kind, path), plan in steps.items()),
    }
    text = json.dumps(doc, sort_keys=True, ensure_ascii=False, separators=(",", ":"))
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def last_timestamp(reader: DumpReader, run: DumpRun) -> datetime | None:
    """The latest point timestamp of every series of the run (the end of a run whose source has
    no modification time); None when no point has one."""
    latest: datetime | None = None
    for kind in SERIES_KINDS:
        for table in reader.iter_points(run, kind, columns=["timestamp"]):
            value = pc.max(table.column("timestamp")).as_py()
            if isinstance(value, datetime) and (latest is None or value > latest):
                latest = value
    return latest


def convert_chunk(
    chunk: pa.Table, kind: SeriesKind, prepared: Prepared, reader: DumpReader, destination: Destination
) -> pa.Table:
    """Add `key` and `dest_step` (and `local_path` for file series) to a batch of dump points."""
    if prepared.wanted is not None:
        chunk = chunk.filter(pc.is_in(chunk.column("path"), value_set=pa.array(sorted(prepared.wanted), pa.string())))
    if chunk.num_rows == 0:
        return chunk
    # Rows grouped by path (paths in order of first appearance, rows in input order), computed
    # column-wise: one stable sort instead of a filter per path (a wide chunk holds 1,000 paths).
    encoded = chunk.column("path").combine_chunks().dictionary_encode()
    paths = encoded.dictionary.to_pylist()
    codes = encoded.indices.to_numpy(zero_copy_only=False)
    order = np.argsort(codes, kind="stable")
    if len(paths) > 1:
        chunk = chunk.take(pa.array(order))
        codes = codes[order]
    bounds = np.r_[0, np.cumsum(np.bincount(codes, minlength=len(paths)))]
    dest_keys = np.array([prepared.run.key_map.get(path, path) for path in paths], dtype=object)
    steps = chunk.column("step")
    convert = destination.capabilities.integer_steps_only
    plans = [prepared.plans.get((kind, path)) if convert else None for path in paths]
    if all(plan is None for plan in plans):
        dest_step: pa.Array | pa.ChunkedArray = steps
    else:
        pieces = [steps.slice(int(bounds[i]), int(bounds[i + 1] - bounds[i])) for i in range(len(paths))]
        converted = [piece if plan is None else plan.convert(piece) for piece, plan in zip(pieces, plans, strict=True)]
        dest_step = pa.chunked_array([c.combine_chunks() if isinstance(c, pa.ChunkedArray) else c
                                      for c in converted])
    table = chunk.append_column("key", pa.array(dest_keys[codes], pa.string()))
    table = table.append_column("dest_step", dest_step)
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
    if options.dry_run:
        # Read only: a missing store is reported, never created (find_run answers None for it).
        if not dest.store_exists():
            report.store = f"{destination.describe()} does not exist yet: the import would create it"
    else:
        # Once, before any worker touches it (under the import lock when called from the CLI).
        report.store = dest.prepare_store()
    if options.registry == "only":  # every shard imported its runs: build the whole registry once
        if dest.capabilities.registry != "none":
            report.registry = import_registry(reader, dest, registry_runs(reader, options.selection),
                                              dry_run=options.dry_run, ledger=None if options.dry_run else ledger)
        report.retries = dest.retries
        report.finished_at = datetime.now(timezone.utc).isoformat()
        return report
    runs: list[DumpRun] = []
    refused: list[RunResult] = []
    for run in owned_scan(reader.scan(), options.shard):
        if isinstance(run, RefusedRun):
            if run.key is not None and not options.selection.matches_key(run.key):
                report.runs.append(RunResult(key=str(run.key), status="filtered"))
                continue
            refused.append(RunResult(key=run.problem.run, status="would_fail" if options.dry_run else "failed",
                                     message=redact(f"{run.problem.file}: {run.problem.message}")))
            continue
        if options.selection.matches_record(run.record):
            runs.append(run)
        else:
            report.runs.append(RunResult(key=str(run.key), status="filtered"))
    sink.start(len(runs) + len(refused), sum(s.count for r in runs for s in r.record.series))
    for result in refused:  # a refused run is reported like a failed one, and nothing is written for it
        report.runs.append(result)
        sink.run_done(result)
        if ledger is not None:
            ledger.append({"key": result.key, "status": "failed", "message": result.message})
    depth = _fork_depth(runs)
    history = ledger or Ledger(reader.layout, destination.name, destination.describe(), options.shard)
    ours = _ledger_runs(history)
    workers = max(1, options.workers) if destination.capabilities.parallel_runs else 1
    results: list[RunResult] = []
    lock = threading.Lock()

    def one(run: DumpRun) -> None:
        result = _import_one(reader, dest, run, options, ledger, sink, ours.get(str(run.key), frozenset()))
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
    # After the runs: carrier and source runs exist, so versions can link to them.
    # With a shard, the models it owns are built from the versions of every shard.
    if options.registry == "none":
        report.registry = not_carried(runs if options.shard is None else registry_runs(reader, options.selection),
                                      options.shard)
    elif dest.capabilities.registry != "none":
        models = runs if options.shard is None else registry_runs(reader, options.selection)
        report.registry = import_registry(reader, dest, models, dry_run=options.dry_run, shard=options.shard,
                                          ledger=None if options.dry_run else ledger)
    report.retries = dest.retries
    report.finished_at = datetime.now(timezone.utc).isoformat()
    return report


def _ledger_runs(ledger: Ledger) -> dict[str, frozenset[str]]:
    """Source key -> destination run ids this dump's ledger says it imported (read only)."""
    out: dict[str, set[str]] = {}
    for entry in ledger.entries():
        rid = entry.get("destination_run_id")
        if isinstance(rid, str) and isinstance(entry.get("key"), str):
            out.setdefault(entry["key"], set()).add(rid)
    return {k: frozenset(v) for k, v in out.items()}


def _same_import(dest: RetryingDestination, existing: DestinationRun, prep: Prepared) -> bool:
    """True when the complete destination run holds what this import would write.

    A run imported before import digests existed (no digest recorded) counts as the same when its
    dump digest matches, no series needs a step conversion (so the step policy cannot matter) and
    what it holds (status, start and end time, params, non-empty series with their point counts,
    files) is what this import would write (so an attribute-filtered import, or one that ended the
    run at its start, is redone); otherwise it is redone once.
    """
    if not existing.complete:
        return False
    if existing.import_digest is not None:
        return existing.import_digest == prep.run.import_digest
    if existing.digest != prep.run.digest or prep.step_changes:
        return False
    expected = dest.expected_snapshot(prep.run)
    expected.series = {(s.kind, prep.run.key_map.get(s.path, s.path)): s.count
                       for s in prep.run.record.series if s.count}
    try:
        actual = dest.read_snapshot(existing.run_id)
    except Exception:  # an unreadable earlier import is redone, not trusted
        log.debug("reading back %s failed", existing.run_id, exc_info=True)
        return False
    return _same_content(expected, actual)


def _same_content(expected: RunSnapshot, actual: RunSnapshot) -> bool:
    """Status, start and end time (where the destination maps them), params, series and files."""
    for name in ("status", "start_time", "end_time"):
        want = getattr(expected, name)
        if want is not None and want != getattr(actual, name):
            return False
    return (expected.params == actual.params
            and expected.series == {k: n for k, n in actual.series.items() if n}
            and set(expected.files) == set(actual.files))


def _foreign(existing: DestinationRun, prep: Prepared, ours: frozenset[str]) -> bool:
    """True when the destination run was imported from another dump (a different origin).

    Runs imported before origins were recorded are ours when their dump digest matches or this
    dump's ledger lists them; otherwise they may be any dump's and count as another dump's.
    """
    if existing.origin is not None:
        return existing.origin != prep.run.origin
    return not (existing.digest == prep.run.digest or existing.run_id in ours)


def _redo_reason(existing: DestinationRun, prep: Prepared) -> str:
    if not existing.complete:
        return "an earlier import left it half-written"
    if existing.digest != prep.run.digest:
        return "the dump changed since the last import (different digest)"
    if existing.import_digest is None:
        return "imported by an earlier version that did not record its options; redone once"
    return ("imported with other options (attribute filter, step policy, key map or destination "
            "settings); redone to match this import")


def _import_one(
    reader: DumpReader,
    dest: RetryingDestination,
    run: DumpRun,
    options: ImportOptions,
    ledger: Ledger | None,
    sink: ImportProgress,
    ours: frozenset[str] = frozenset(),
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
        status = "created"
        if existing is not None:
            result.destination_run_id = existing.run_id
            if _same_import(dest, existing, prep):
                result.status = "would_skip" if options.dry_run else "skipped"
                result.message = "already complete in the destination"
                if existing.origin is not None and existing.origin != prep.run.origin:
                    result.message += f" (same content, imported from dump {existing.origin})"
                result.requests = 1
                sink.advance(prep.points)
                return result
            if not existing.complete and existing.busy:
                # Another import (another dump copy or machine) is writing it now: not a leftover.
                result.status = "would_skip" if options.dry_run else "skipped"
                result.message = f"another import is writing it ({existing.busy})"
                sink.advance(prep.points)
                return result
            status = "repaired"
            result.message = _redo_reason(existing, prep)
            if _foreign(existing, prep, ours):
                where = (f"dump {existing.origin}" if existing.origin is not None
                         else "another dump or an unknown earlier import")
                owner = f"destination run {existing.run_id} belongs to {where}, not to this dump ({prep.run.origin})"
                if options.on_conflict != "replace":
                    result.losses = []  # this dump's losses do not describe the run left in place
                if options.on_conflict == "fail":
                    result.status = "would_conflict" if options.dry_run else "conflict"
                    result.message = f"{owner}; pass --on-conflict skip or replace"
                    return result
                if options.on_conflict == "skip":
                    result.status = "would_skip" if options.dry_run else "skipped"
                    result.message = f"{owner}; left as it is (--on-conflict skip)"
                    sink.advance(prep.points)
                    return result
                status = "replaced"
                result.message = f"{owner}; replaced (--on-conflict replace)"
        if options.dry_run:
            chunk_losses: list[Loss] = []
            for kind in SERIES_KINDS:
                for chunk in reader.iter_points(run, kind):
                    table = convert_chunk(chunk, kind, prep, reader, dest.inner)
                    if table.num_rows:
                        chunk_losses.extend(dest.chunk_losses(kind, table))
                        _verify_file_points(reader, kind, table)
            for fe in prep.run.record.files:  # the import would refuse a corrupt blob: so does the plan
                if fe.sha256 is not None and reader.blob_path(fe.sha256).is_file():
                    _verified_blob(reader, fe.sha256, f"{fe.attribute_path} ({fe.name})")
            result.losses += [_loss(lo) for lo in merge_losses(chunk_losses)]
            result.status = "would_" + {"created": "create", "repaired": "repair", "replaced": "replace"}[status]
            result.seconds = prep.points / caps.points_per_second
            return result
        if existing is not None and caps.can_delete_runs:
            dest.discard_run(existing.run_id)
        run_id = dest.create_run(prep.run)
        result.destination_run_id = run_id
        written_losses = _write_points(reader, dest, run, prep, run_id, sink)
        result.losses += [_loss(lo) for lo in merge_losses(written_losses)]
        dest.finish_series(run_id, prep.run)
        for fe in prep.run.record.files:
            if fe.sha256 is None or not reader.blob_path(fe.sha256).is_file():
                continue  # already a file_missing_in_dump loss (error)
            dest.upload_file(run_id, fe, _verified_blob(reader, fe.sha256, f"{fe.attribute_path} ({fe.name})"))
        dest.mark_complete(run_id, prep.run)
        result.status = status
        if ledger is not None:
            ledger.append({"key": result.key, "destination_run_id": run_id, "digest": run.digest,
                           "import_digest": prep.run.import_digest, "status": status})
    except ClaimLostError as exc:  # another import won the race for this key: it writes the run
        result.status = "skipped"
        result.destination_run_id = None
        result.message = redact(str(exc))
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
            _verify_file_points(reader, kind, table)
            # One call per request-sized slice: a retry then repeats one request, not a whole chunk
            # (under steady packet loss a 64k-point chunk of 64 requests might never get through).
            step = max(1, dest.capabilities.points_per_request)
            for offset in range(0, table.num_rows, step):
                piece = table.slice(offset, step)
                dest.write_series(run_id, kind, piece)
                sink.advance(piece.num_rows)
    return losses


def _verified_blob(reader: DumpReader, sha256: str, what: str) -> Path:
    """The blob's path once its bytes are hashed and match; a corrupt blob fails the run."""
    try:
        return reader.verified_blob(sha256)
    except DumpFormatError as exc:
        msg = f"{what}: {exc}"
        raise DumpFormatError(msg) from exc


def _verify_file_points(reader: DumpReader, kind: SeriesKind, table: pa.Table) -> None:
    """Check the content of every blob a file-series batch is about to upload."""
    if kind != "file":
        return
    seen: set[str] = set()
    for path, sha in zip(table.column("path").to_pylist(), table.column("sha256").to_pylist(), strict=True):
        if sha is not None and sha not in seen and reader.blob_path(sha).is_file():
            seen.add(sha)
            _verified_blob(reader, sha, f"file series {path}")


def merge_losses(losses: list[Loss]) -> list[Loss]:
    """Sum the counts of losses that differ only in count (chunks of one series)."""
    merged: dict[tuple[str, str | None, str, LossCategory], int] = {}
    for lo in losses:
        k = (lo.kind, lo.path, lo.detail, lo.category)
        merged[k] = merged.get(k, 0) + lo.count
    return [Loss(kind, path, count, detail, category) for (kind, path, detail, category), count in merged.items()]
