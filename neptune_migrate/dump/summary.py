"""`inspect`: what a dump holds and what is wrong with it."""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from typing import Any

from neptune_migrate.dump.reader import DumpProblem, DumpReader, RefusedRun, check_run_dir


@dataclass
class DumpSummary:
    root: str
    format_version: str
    runs: int = 0
    kinds: Counter[str] = field(default_factory=Counter)
    fields: int = 0
    series: Counter[str] = field(default_factory=Counter)
    points: Counter[str] = field(default_factory=Counter)
    files: int = 0
    missing_files: int = 0
    file_bytes: int = 0
    part_bytes: int = 0
    incomplete_runs: list[str] = field(default_factory=list)
    partial_copies: list[str] = field(default_factory=list)
    losses: Counter[str] = field(default_factory=Counter)
    uncommitted: list[str] = field(default_factory=list)
    problems: list[DumpProblem] = field(default_factory=list)
    per_run: list[dict[str, Any]] = field(default_factory=list)

    def to_json(self) -> dict[str, Any]:
        return {
            "root": self.root,
            "format_version": self.format_version,
            "runs": self.runs,
            "kinds": dict(self.kinds),
            "fields": self.fields,
            "series": dict(self.series),
            "points": dict(self.points),
            "files": self.files,
            "missing_files": self.missing_files,
            "file_bytes": self.file_bytes,
            "part_bytes": self.part_bytes,
            "incomplete_runs": self.incomplete_runs,
            "partial_copies": self.partial_copies,
            "losses": dict(self.losses),
            "uncommitted": self.uncommitted,
            "problems": [{"run": p.run, "file": p.file, "message": p.message} for p in self.problems],
            "per_run": self.per_run,
        }


def summarize(reader: DumpReader, *, check: bool = True) -> DumpSummary:
    """Count everything; with `check`, verify every checksum too. Never stops at a problem."""
    summary = DumpSummary(root=str(reader.root), format_version=reader.manifest.format_version)
    seen_blobs: set[str] = set()
    good = []
    for run in reader.scan():
        if isinstance(run, RefusedRun):
            summary.problems.append(run.problem)
            continue
        good.append(run)
        rec = run.record
        summary.runs += 1
        summary.kinds[rec.kind] += 1
        summary.fields += len(rec.fields)
        points = 0
        for s in rec.series:
            summary.series[s.kind] += 1
            summary.points[s.kind] += s.count
            points += s.count
        summary.part_bytes += sum(int(p.get("bytes", 0)) for p in run.parts)
        for f in rec.files:
            if f.sha256 is None:
                summary.missing_files += 1
                continue
            summary.files += 1
            if f.sha256 not in seen_blobs and f.size is not None:
                seen_blobs.add(f.sha256)
                summary.file_bytes += f.size
        if not rec.complete:
            summary.incomplete_runs.append(str(rec.key))
        if rec.partial_copy:
            summary.partial_copies.append(str(rec.key))
        for lo in rec.losses:
            summary.losses[lo.kind] += lo.count
        summary.per_run.append({
            "key": str(rec.key),
            "kind": rec.kind,
            "name": rec.system.name,
            "fields": len(rec.fields),
            "series": len(rec.series),
            "points": points,
            "files": len(rec.files),
            "complete": rec.complete,
            "partial_copy": rec.partial_copy,
            "source": rec.provenance.source,
        })
    summary.uncommitted = [d.name for d in reader.staged_leftovers()]
    if check:
        for run in good:
            summary.problems.extend(check_run_dir(reader.layout, run.run_dir, check_blobs=True))
    return summary
