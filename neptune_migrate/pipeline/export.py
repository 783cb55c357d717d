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
from neptune_migrate.errors import DumpFormatError, MigrateError, MissingDependencyError, chain_text, one_line, redact
from neptune_migrate.model import (
    FileEntry,
    Loss,
    LossCategory,
    Provenance,
    RunKey,
    RunRecord,
    SourceRunId,
    count_categories,
)
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
    models: bool = True,
) -> ExportSummary:
    """Export every selected run; complete runs already in the dump are skipped unless `force`.

    A run already in the dump is exported again (without `--force`) when the source holds another copy
    of it (its content fingerprint differs) or when the dump's copy misses files: the more complete copy
    is kept and the outcome says which. Local paths under `source_root` are stored relative to it.
    With `shard`, only the runs of that shard are read (see `pipeline.shard`).

    Runs made by Neptune's `model_to_run.py` become `model` / `model_version` records with
    `models_from_runs` (`registry.from_model_to_run`); without it they stay runs and one notice says
    how many there are; a record converted once stays converted (a `model_to_run` record in the dump
    converts its run again without the flag). Registry records, whatever the source, are selected by
    project and `--since-last` only (`models=False`, `--no-models`, leaves them out): `--tag` and
    `--created-*` are for runs, and so are `--run-id` / `--run-regex` where the source says which keys
    are registry records before reading them (`listed_kind`). See `_RegistryRule`.
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
    rule = _RegistryRule.of(source, selection, keys, models=models)

    def one(key: RunKey) -> RunOutcome:
        return _export_one(source, writer, selection, key, force=force, root=root,
                           models_from_runs=models_from_runs, lookalikes=lookalikes, rule=rule)

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
    rule: _RegistryRule | None = None,
) -> RunOutcome:
    rule = rule or _RegistryRule(selection)
    if not rule.key_matches(key):
        return RunOutcome(key=str(key), status="filtered")
    old: RunRecord | None = None
    to_convert: RunRecord | None = None  # the dump's copy, still a run, that --models-from-runs converts
    fingerprint: str | None = None
    if not force:
        old = writer.committed_record(key)
        if old is not None:
            try:
                fingerprint = content_fingerprint(source, key)
            except OSError:
                fingerprint = None
            same = fingerprint is None or old.provenance.details.get("content_fingerprint") == fingerprint
            unconverted = model_to_run_kind(old) is not None and not rule.is_native_elsewhere(old, writer)
            if unconverted and not models_from_runs and lookalikes is not None:
                lookalikes.append(str(key))
            if unconverted and models_from_runs:
                if same and not _has_missing_files(old):
                    return _convert_in_place(writer, old, rule)
                to_convert = old  # another copy in the source: the more complete one is converted
                old = from_model_to_run(old)
            elif same and not _has_missing_files(old):
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
        if fingerprint is not None:
            details = {**record.provenance.details, "content_fingerprint": fingerprint}
            record = replace(record, provenance=replace(record.provenance, details=details))
        if root is not None:
            record = relative_record(record, root)
        record = annotate(record)  # models and versions carry their registry facts (format 1.3)
        previous = old if not force else _committed_metadata(writer, key)
        sticky = _was_converted(previous)
        if models_from_runs or sticky:
            record = _converted(record, writer, rule)
        elif lookalikes is not None and model_to_run_kind(record) is not None and str(key) not in lookalikes:
            lookalikes.append(str(key))
        if not rule.record_matches(record):
            return RunOutcome(key=str(key), status="filtered")
        message = ""
        if previous is not None and previous.kind != record.kind:
            message = f"the dump held it as a {previous.kind}: replaced it with this {record.kind} record"
            record = replace(record, losses=(*record.losses, Loss(
                "kind_changed", None, 1, message, LossCategory.CHANGED_FORM)))
        elif old is not None and getattr(source, "live", False):
            message = "changed on the server since the dump's copy: replaced it"
        elif old is not None:
            keep, message = _choose(old, record, run)
            if not keep and to_convert is not None:
                outcome = _convert_in_place(writer, to_convert, rule)
                outcome.message = f"{message}; {outcome.message}"
                return outcome
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


def _committed_metadata(writer: DumpWriter, key: RunKey) -> RunRecord | None:
    """The dump's record of `key` from its `run.json` only (no checksums: for what it says, not its data)."""
    from neptune_migrate.dump.reader import load_run_doc
    from neptune_migrate.dump.schema import record_from_json

    run_dir = writer.layout.run_dir(key)
    try:
        return record_from_json(load_run_doc(run_dir))
    except (OSError, DumpFormatError):
        return None


def _was_converted(record: RunRecord | None) -> bool:
    """Whether the dump's record was made from a `model_to_run.py` run: such a conversion sticks."""
    return record is not None and record.registry is not None and record.registry.origin == "model_to_run"


@dataclass
class _RegistryRule:
    """One selection rule for registry records, whatever the source.

    Model and version records are selected by project and `--since-last` only (`registry_in_full`:
    the registry is listed without `modified_after`), or not at all with `--no-models`; the other
    filters are for runs. Before reading, only a source's `listed_kind(key)` says what a key is.
    `natives` are the (project, id) of models / versions the source lists itself this time.
    """

    selection: RunSelection
    models: bool = True
    listed_kind: Callable[[RunKey], str] | None = None
    natives: frozenset[tuple[str, str]] = frozenset()

    @classmethod
    def of(cls, source: Source, selection: RunSelection, keys: list[RunKey], *, models: bool) -> _RegistryRule:
        listed = getattr(source, "listed_kind", None)
        if not callable(listed):
            return cls(selection, models)
        natives = frozenset((k.project, k.run_id) for k in keys if listed(k) in REGISTRY_KINDS)
        return cls(selection, models, listed, natives)

    @property
    def registry_selection(self) -> RunSelection:
        since = None if self.selection.registry_in_full else self.selection.modified_after
        return RunSelection(projects=self.selection.projects, modified_after=since)

    def key_matches(self, key: RunKey) -> bool:
        if self.listed_kind is not None and self.listed_kind(key) in REGISTRY_KINDS:
            return self.models and self.registry_selection.matches_key(key)
        return self.selection.matches_key(key)

    def record_matches(self, record: RunRecord) -> bool:
        if record.kind in REGISTRY_KINDS:
            return self.models and self.registry_selection.matches_record(record)
        return self.selection.matches_record(record)

    def is_native_elsewhere(self, record: RunRecord, writer: DumpWriter) -> bool:
        """Whether the model / version a `model_to_run.py` run stands for is a native record too (listed
        now, or committed in the dump with origin `registry`): then the run stays a run."""
        old_id = record.fields.get("old_sys/id")
        if old_id is None or not isinstance(old_id.value, str):
            return False
        if (record.key.project, old_id.value) in self.natives:
            return True
        other = writer.committed_record(RunKey(record.key.project, SourceRunId(old_id.value)))
        return other is not None and other.registry is not None and other.registry.origin == "registry"


def _converted(record: RunRecord, writer: DumpWriter, rule: _RegistryRule) -> RunRecord:
    """`from_model_to_run(record)`, unless the source also holds that model / version natively: then the
    run stays a run and says why (the native record is the registry's)."""
    if model_to_run_kind(record) is None:
        return record
    if rule.is_native_elsewhere(record, writer):
        old_id = record.fields["old_sys/id"].value
        return replace(record, losses=(*record.losses, Loss(
            "registry_duplicate", "old_sys/id", 1, f"made by Neptune's model_to_run.py from {old_id}, which the "
            "source also holds as a registry record: kept as a run (the registry record is the native one)",
            LossCategory.CHANGED_FORM)))
    return from_model_to_run(record) or record


def _convert_in_place(writer: DumpWriter, old: RunRecord, rule: _RegistryRule) -> RunOutcome:
    """A complete run of the dump that `model_to_run.py` made, turned into its registry record without
    reading the source again (its series and files are the dump's)."""
    record = from_model_to_run(old)
    assert record is not None  # the caller checked model_to_run_kind
    if not rule.record_matches(record):
        return RunOutcome(key=str(old.key), status="filtered")
    message = "the dump held it as a run: turned it into a registry record"
    record = writer.recommit(replace(record, losses=(*record.losses, Loss(
        "kind_changed", None, 1, message, LossCategory.CHANGED_FORM))))
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
