"""export_runs: source -> dump, one committed run at a time."""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Any

from neptune_migrate.dump.writer import DumpWriter
from neptune_migrate.errors import MigrateError, MissingDependencyError, chain_text, one_line, redact
from neptune_migrate.model import RunKey, RunRecord, count_categories
from neptune_migrate.sources.base import RunSelection, Source

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
            "runs": [vars(r) for r in self.runs],
        }


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
) -> ExportSummary:
    """Export every selected run; complete runs already in the dump are skipped unless `force`."""
    summary = ExportSummary(
        source=source.name,
        location=location,
        detected=source.describe(),
        started_at=datetime.now(timezone.utc).isoformat(),
    )
    keys: list[RunKey] = list(source.list_runs())
    summary.warnings.extend(source.warnings())
    for key in keys:
        outcome = _export_one(source, writer, selection, key, force=force)
        summary.runs.append(outcome)
        if on_run is not None:
            on_run(outcome)
    summary.warnings.extend(w for w in source.warnings() if w not in summary.warnings)
    summary.finished_at = datetime.now(timezone.utc).isoformat()
    writer.record_export({
        "source": summary.source,
        "location": summary.location,
        "started_at": summary.started_at,
        "finished_at": summary.finished_at,
        "counts": summary.to_json()["counts"],
    })
    return summary


def _export_one(
    source: Source, writer: DumpWriter, selection: RunSelection, key: RunKey, *, force: bool
) -> RunOutcome:
    if not selection.matches_key(key):
        return RunOutcome(key=str(key), status="filtered")
    if not force and writer.is_committed(key):
        return RunOutcome(key=str(key), status="skipped", message="already complete in the dump")
    with writer.begin_run(key) as run:
        try:
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
        record = run.commit(record)
    return _outcome(record)
