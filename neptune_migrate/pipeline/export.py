"""export_runs: source -> dump, one committed run at a time.

A source with the `ConcurrentRuns` ability (the live ones) is read `run_workers` runs at once: each
run in its own thread with its own staged `RunWriter`, so runs commit in whatever order they finish
(each commit is one rename of its own folder; blobs are content-addressed and written under unique
temporary names), while the summary keeps the listing order. The source's shared budget keeps the
requests of all these runs within `--workers` and `--rate`. The manifest is written only by this
thread, after every run is done; a live export's watermark is recorded by the caller only when no run
failed, and it is the time listing started, so it never moves past a run that was not committed.
On Ctrl-C the runs not started are dropped, the source is cancelled (its threads stop after the
request they are in, their runs uncommitted) and the interrupt goes on up once they have stopped.
"""

from __future__ import annotations

import logging
import os
import re
from collections.abc import Callable
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from dataclasses import dataclass, field, replace
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from neptune_migrate.dump.writer import DumpWriter, RunWriter
from neptune_migrate.errors import MigrateError, MissingDependencyError, chain_text, one_line, redact
from neptune_migrate.model import FileEntry, Loss, LossCategory, Provenance, RunKey, RunRecord, count_categories
from neptune_migrate.pipeline.shard import Shard, source_owner_keys
from neptune_migrate.registry import REGISTRY_KINDS, annotate, from_model_to_run, model_to_run_kind
from neptune_migrate.sources.base import ConcurrentRuns, RunSelection, ServerSelection, Source, content_fingerprint

log = logging.getLogger(__name__)


@dataclass
class RunOutcome:
    """What happened to one run during an export."""

    key: str
    status: str
    """`exported`, `skipped` (already complete in the dump), `filtered` or `failed`."""
    message: str = ""
    points: int = 0
    files: int = 0
    complete: bool = True
    partial_copy: bool = False
    losses: list[dict[str, Any]] = field(default_factory=list)
    error_chain: list[str] = field(default_factory=list)
    """A failed run's exceptions, outermost first, in full (the message keeps the root cause)."""


@dataclass
class ExportSummary:
    """The export report (also written as JSON into the dump's `_reports/`)."""

    source: str
    location: str
    detected: str
    started_at: str
    finished_at: str = ""
    warnings: list[str] = field(default_factory=list)
    runs: list[RunOutcome] = field(default_factory=list)
    notices: list[str] = field(default_factory=list)
    """Advice printed as a warning that is not a problem with the data (the exit code ignores it)."""

    def count(self, status: str) -> int:
        return sum(1 for r in self.runs if r.status == status)

    @property
    def has_problems(self) -> bool:
        """True when anything the user holds did not make it into the dump intact."""
        return bool(self.warnings) or any(
            r.status == "failed"
            or (r.status == "exported" and (not r.complete or any(lo["error"] for lo in r.losses)))
            for r in self.runs
        )

    def path_map_hint(self) -> str:
        """Which `--path-map` would find files referenced by absolute paths that were not found."""
        olds: dict[str, int] = {}
        for r in self.runs:
            for lo in r.losses:
                for m in _PATH_MAP_HINT.finditer(str(lo["detail"])):
                    olds[m.group(1)] = olds.get(m.group(1), 0) + int(lo["count"])
        if not olds:
            return ""
        common = _common_folder(list(olds))
        n = sum(olds.values())
        return (f"{n} file(s) referenced by absolute paths were not found; if they moved, export again with "
                f"--path-map {common}=WHERE_THEY_ARE_NOW (runs missing files are re-read without --force)")

    def to_json(self) -> dict[str, Any]:
        return {
            "source": self.source,
            "location": self.location,
            "detected": self.detected,
            "started_at": self.started_at,
            "finished_at": self.finished_at,
            "counts": {s: self.count(s) for s in ("exported", "skipped", "filtered", "failed")},
            "categories": count_categories(lo for r in self.runs for lo in r.losses),
            "incomplete_runs": sum(1 for r in self.runs if r.status == "exported" and not r.complete),
            "warnings": self.warnings,
            "notices": self.notices,
            "runs": [vars(r) for r in self.runs],
        }


_PATH_MAP_HINT = re.compile(r"add --path-map (.+?)=NEW_PREFIX")


def _common_folder(folders: list[str]) -> str:
    if len(folders) == 1:
        return folders[0]
    sep = "\\" if all("\\" in f for f in folders) else "/"
    split = [f.split(sep) for f in folders]
    common: list[str] = []
    for parts in zip(*split, strict=False):
        if len(set(parts)) != 1:
            break
        common.append(parts[0])
    return sep.join(common) or sep


def relative_record(record: RunRecord, root: str) -> RunRecord:
    """The record with every local path under `root` written relative to it, so that the same data gives
    the same run digest wherever it sits (the root itself goes once into the manifest)."""
    prefix = root.rstrip(os.sep) + os.sep
    if prefix == os.sep:
        return record

    # A `--path-map` suggestion keeps its absolute folder: it is advice about the recorded path.
    under_root = re.compile(r"(?<!--path-map )" + re.escape(prefix))

    def rel(text: str) -> str:
        if text == root:
            return "."
        return under_root.sub("", text) if prefix in text else text

    prov = record.provenance
    provenance = Provenance(
        source=prov.source,
        location=rel(prov.location),
        files=tuple(rel(f) for f in prov.files),
        details={k: rel(v) for k, v in prov.details.items()},
    )
    files = tuple(replace(f, origin=None if f.origin is None else rel(f.origin),
                          missing=None if f.missing is None else rel(f.missing)) for f in record.files)
    losses = tuple(replace(lo, detail=rel(lo.detail)) for lo in record.losses)
    return replace(record, provenance=provenance, files=files, losses=losses)


def _stored(files: tuple[FileEntry, ...]) -> int:
    return sum(1 for f in files if f.sha256)


def _amount(points: int, record: RunRecord) -> tuple[int, int, int]:
    """How much of a run a copy holds: points, stored files, operations (when the source counts them)."""
    ops = record.provenance.details.get("operations", "0")
    return points, _stored(record.files), int(ops) if ops.isdigit() else 0


def _has_missing_files(record: RunRecord) -> bool:
    return any(f.sha256 is None and f.missing for f in record.files)


def _outcome(record: RunRecord) -> RunOutcome:
    return RunOutcome(
        key=str(record.key),
        status="exported",
        points=sum(s.count for s in record.series),
        files=sum(1 for f in record.files if f.sha256),
        complete=record.complete,
        partial_copy=record.partial_copy,
        losses=[lo.to_json() for lo in record.losses],
    )


def export_runs(
    source: Source,
    writer: DumpWriter,
    selection: RunSelection,
    *,
    location: str,
    force: bool = False,
    on_run: Callable[[RunOutcome], None] | None = None,
    source_root: Path | None = None,
    shard: Shard | None = None,
    models_from_runs: bool = False,
) -> ExportSummary:
    """Export every selected run; complete runs already in the dump are skipped unless `force`.

    A run already in the dump is exported again (without `--force`) when the source holds another copy
    of it (its content fingerprint differs) or when the dump's copy misses files: the more complete copy
    is kept and the outcome says which. Local paths under `source_root` are stored relative to it.
    With `shard`, only the runs of that shard are read (see `pipeline.shard`).

    Runs made by Neptune's `model_to_run.py` become `model` / `model_version` records with
    `models_from_runs` (`registry.from_model_to_run`); without it they stay runs and one notice says
    how many there are. Models and versions a source lists itself (its `listed_kind(key)`) are
    selected by project and `--since-last` only: the other filters are for runs.
    """
    summary = ExportSummary(
        source=source.name,
        location=location,
        detected=source.describe(),
        started_at=datetime.now(timezone.utc).isoformat(),
    )
    if isinstance(source, ServerSelection):
        source.select(selection)
    keys: list[RunKey] = list(source.list_runs())
    if shard is not None:  # the other shards' runs are not this export's: not even "filtered"
        owners = source_owner_keys(source, keys)
        keys = [k for k in keys if shard.owns(owners[k])]
    summary.warnings.extend(source.warnings())
    root: str | None = None
    if source_root is not None:
        root = os.path.abspath(source_root if source_root.is_dir() else source_root.parent)
        writer.add_source_root(root)
    lookalikes: list[str] = []
    listed_kind = getattr(source, "listed_kind", None)
    registry_selection = RunSelection(projects=selection.projects, modified_after=selection.modified_after)

    def one(key: RunKey) -> RunOutcome:
        chosen = selection
        if callable(listed_kind) and listed_kind(key) in REGISTRY_KINDS:
            chosen = registry_selection
        return _export_one(source, writer, chosen, key, force=force, root=root,
                           models_from_runs=models_from_runs, lookalikes=lookalikes)

    workers = source.run_workers if isinstance(source, ConcurrentRuns) else 1
    if workers > 1 and len(keys) > 1:
        summary.runs.extend(_export_concurrently(source, keys, one, workers=workers, on_run=on_run))
    else:
        for key in keys:
            outcome = one(key)
            summary.runs.append(outcome)
            if on_run is not None:
                on_run(outcome)
    if lookalikes:
        summary.notices.append(
            f"{len(lookalikes)} run(s) look like models / model versions that Neptune's model_to_run.py "
            "turned into runs (tags model / model_version, old_sys/* fields); they were exported as runs: "
            "pass --models-from-runs to export them as model registry records")
    summary.warnings.extend(w for w in source.warnings() if w not in summary.warnings)
    summary.finished_at = datetime.now(timezone.utc).isoformat()
    writer.record_export({
        **({"shard": shard.label} if shard is not None else {}),
        "source": summary.source,
        "location": summary.location,
        "started_at": summary.started_at,
        "finished_at": summary.finished_at,
        "counts": summary.to_json()["counts"],
    })
    return summary


def _export_concurrently(
    source: Source, keys: list[RunKey], export_one: Callable[[RunKey], RunOutcome], *, workers: int,
    on_run: Callable[[RunOutcome], None] | None,
) -> list[RunOutcome]:
    """`export_one` for every key, at most `workers` runs at once; outcomes in the order of `keys`.

    At most `workers` runs are submitted at a time (not all keys at once: a listing of 100,000 runs does
    not become 100,000 queued tasks, and on Ctrl-C there is nothing queued to cancel)."""
    outcomes: list[RunOutcome | None] = [None] * len(keys)
    pending: dict[Future[RunOutcome], int] = {}
    next_index = 0
    pool = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="nm-export-run")
    try:
        while next_index < len(keys) or pending:
            while next_index < len(keys) and len(pending) < workers:
                future = pool.submit(export_one, keys[next_index])
                pending[future] = next_index
                next_index += 1
            done, _ = wait(pending, return_when=FIRST_COMPLETED)
            for future in done:
                index = pending.pop(future)
                outcome = future.result()  # a MissingDependencyError stops the whole export
                outcomes[index] = outcome
                if on_run is not None:
                    on_run(outcome)
    except BaseException:
        if isinstance(source, ConcurrentRuns):
            source.cancel()
        raise
    finally:
        pool.shutdown(wait=True, cancel_futures=True)
    return [o for o in outcomes if o is not None]


def _export_one(
    source: Source, writer: DumpWriter, selection: RunSelection, key: RunKey, *, force: bool,
    root: str | None = None,
    models_from_runs: bool = False,
    lookalikes: list[str] | None = None,
) -> RunOutcome:
    if not selection.matches_key(key):
        return RunOutcome(key=str(key), status="filtered")
    old: RunRecord | None = None
    fingerprint: str | None = None
    if not force:
        old = writer.committed_record(key)
        if old is not None:
            try:
                fingerprint = content_fingerprint(source, key)
            except OSError:
                fingerprint = None
            same = fingerprint is None or old.provenance.details.get("content_fingerprint") == fingerprint
            unconverted = model_to_run_kind(old) is not None
            if unconverted and not models_from_runs and lookalikes is not None:
                lookalikes.append(str(key))
            if same and not _has_missing_files(old) and not (unconverted and models_from_runs):
                return RunOutcome(key=str(key), status="skipped", message="already complete in the dump")
    with writer.begin_run(key) as run:
        try:
            if fingerprint is None:
                fingerprint = content_fingerprint(source, key)
            record = source.export_run(key, run)
        except MissingDependencyError:
            raise  # the same for every run: a usage error (exit 2), not a failed run
        except Exception as exc:  # one run's failure must not stop the export
            if not isinstance(exc, MigrateError):
                log.debug("export of %s failed", key, exc_info=True)
            return RunOutcome(key=str(key), status="failed", message=redact(one_line(exc)),
                              error_chain=[redact(t) for t in chain_text(exc)])
        if not selection.matches_record(record):
            return RunOutcome(key=str(key), status="filtered")
        if fingerprint is not None:
            details = {**record.provenance.details, "content_fingerprint": fingerprint}
            record = replace(record, provenance=replace(record.provenance, details=details))
        if root is not None:
            record = relative_record(record, root)
        record = annotate(record)  # models and versions carry their registry facts (format 1.3)
        if models_from_runs:
            record = from_model_to_run(record) or record
        elif lookalikes is not None and model_to_run_kind(record) is not None and str(key) not in lookalikes:
            lookalikes.append(str(key))
        message = ""
        if old is not None and getattr(source, "live", False):
            message = "changed on the server since the dump's copy: replaced it"
        elif old is not None and old.kind != record.kind:
            message = f"the dump held it as a {old.kind}: replaced it with this {record.kind} record"
        elif old is not None:
            keep, message = _choose(old, record, run)
            if not keep:
                return RunOutcome(key=str(key), status="skipped", message=message,
                                  points=sum(s.count for s in old.series), files=_stored(old.files),
                                  complete=old.complete, partial_copy=old.partial_copy)
            record = replace(record, losses=(*record.losses, Loss(
                "copy_replaced", None, 1, message, LossCategory.CHANGED_FORM)))
        record = run.commit(record)
    outcome = _outcome(record)
    outcome.message = message
    return outcome


def _choose(old: RunRecord, new: RunRecord, run: RunWriter) -> tuple[bool, str]:
    """Whether the new copy replaces the one in the dump, and a sentence saying what was chosen."""
    old_amount = _amount(sum(s.count for s in old.series), old)
    new_amount = _amount(run.points, new)
    described = (f"the dump's copy has {old_amount[0]} point(s), {old_amount[1]} file(s), {old_amount[2]} "
                 f"operation(s); this one {new_amount[0]}, {new_amount[1]}, {new_amount[2]}")
    if new_amount > old_amount:
        return True, f"another copy of this run: replaced the dump's copy with this more complete one ({described})"
    if new_amount == old_amount:
        return False, f"another copy of this run with the same amount of data: kept the dump's copy ({described})"
    return False, f"another copy of this run: kept the dump's more complete copy ({described})"
