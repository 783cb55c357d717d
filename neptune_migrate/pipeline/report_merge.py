"""`report merge`: one import or verify report from the reports of N shards, and the coverage check.

Each shard's report carries a `shard` object (`number`, `count`, `label`, `dump_id`, `dump_runs`,
`owned_runs`). The merge takes, per shard, its newest report (a shard re-run after a failure
replaces its earlier report), and checks that the shards together handled every run of the dump
exactly once: no shard missing, no run in two shards, as many runs owned as the dump holds, every
owned run in the report (an import lists filtered runs too; a verify lists only the runs it
compared), and, when the dump itself is at hand, every run of it named in a report.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from neptune_migrate.dump.layout import DumpLayout
from neptune_migrate.dump.reader import DumpReader, DumpRun
from neptune_migrate.errors import UsageError

REPORT_KINDS = {"neptune-migrate import": "import", "neptune-migrate verify": "verify"}
_TIMES = ("started_at", "finished_at")
_SUMMED = ("retries",)
"""Top-level numbers that are per-shard amounts (others, like `schema_version` or `sample`, are settings)."""


@dataclass
class ShardReport:
    """One shard's report file, as read."""

    path: Path
    kind: str
    doc: dict[str, Any]

    @property
    def shard(self) -> dict[str, Any]:
        value = self.doc["shard"]
        assert isinstance(value, dict)
        return value

    @property
    def number(self) -> int:
        return int(self.shard["number"])

    @property
    def group(self) -> tuple[str, str, str, str, int]:
        """What shards of one job share: kind, destination, target, dump and shard count."""
        return (self.kind, str(self.doc.get("destination")), str(self.doc.get("target")),
                str(self.shard.get("dump_id")), int(self.shard["count"]))

    def failed(self) -> bool:
        if self.kind == "verify":
            return not self.doc.get("ok", False)
        return any(r.get("status") in ("failed", "would_fail", "conflict", "would_conflict")
                   or any(lo.get("error") for lo in r.get("losses", []))
                   for r in self.doc.get("runs", []))


@dataclass
class MergeResult:
    kind: str
    report: dict[str, Any]
    """The merged report: the fields of an unsharded report of the same kind, plus `shards` and `merge`."""
    problems: list[str] = field(default_factory=list)
    """Coverage problems (missing shards, overlaps, runs no shard handled), one line each."""
    ignored: int = 0
    """Report files that are not a shard's import or verify report (or older runs of a shard)."""


def report_dirs(dirs: Iterable[Path]) -> list[Path]:
    """The folders to read: a dump stands for its `_reports/`."""
    out = []
    for d in dirs:
        if not d.is_dir():
            msg = f"{d}: no such folder"
            raise UsageError(msg)
        layout = DumpLayout(d)
        out.append(layout.reports_dir if layout.manifest.is_file() else d)
    return out


def read_shard_reports(dirs: Iterable[Path], kind: str | None = None) -> tuple[list[ShardReport], int]:
    """Every shard report (of `kind`, when given) in the folders; and how many JSON files were not one."""
    found: list[ShardReport] = []
    ignored = 0
    for d in report_dirs(dirs):
        for path in sorted(d.glob("*.json")):
            try:
                doc = json.loads(path.read_text(encoding="utf-8"))
            except (OSError, ValueError):
                ignored += 1
                continue
            which = REPORT_KINDS.get(str(doc.get("report"))) if isinstance(doc, dict) else None
            shard = doc.get("shard") if isinstance(doc, dict) else None
            if which is None or not isinstance(shard, dict) or (kind is not None and which != kind):
                ignored += 1
                continue
            if not all(isinstance(shard.get(k), int) for k in ("number", "count")):
                msg = f"{path}: its `shard` object has no integer number and count"
                raise UsageError(msg)
            found.append(ShardReport(path, which, doc))
    return found, ignored


def _sum_dicts(docs: list[dict[str, Any]]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for doc in docs:
        for k, v in doc.items():
            if isinstance(v, bool) or not isinstance(v, int | float):
                continue
            out[k] = out.get(k, 0) + v
    return out


def _merge_docs(kind: str, docs: list[dict[str, Any]]) -> dict[str, Any]:
    """Amounts summed (`retries`, dicts of numbers such as counts and totals), runs concatenated and
    sorted by key, `ok` all-of, times min/max; any other field is the first shard's (settings such as
    `schema_version`, `sample` or `dry_run` are the same for one job)."""
    merged: dict[str, Any] = {}
    for key, first in docs[0].items():
        if key in ("shard",):
            continue
        values = [d.get(key) for d in docs]
        if key in ("runs", "registry"):  # registry: the import's models, versions and aliases
            merged[key] = sorted((r for v in values for r in (v or [])), key=lambda r: str(r.get("key")))
        elif key in _TIMES:
            present = [v for v in values if isinstance(v, str) and v]
            merged[key] = (min(present) if key == "started_at" else max(present)) if present else first
        elif key == "ok":
            merged[key] = all(bool(v) for v in values)
        elif isinstance(first, bool):
            merged[key] = first
        elif key in _SUMMED:
            merged[key] = sum(v for v in values if isinstance(v, int | float) and not isinstance(v, bool))
        elif isinstance(first, dict) and all(isinstance(v, int | float) for v in first.values()):
            merged[key] = _sum_dicts([v for v in values if isinstance(v, dict)])
        elif key == "store":
            merged[key] = next((v for v in values if v), None)
        else:
            merged[key] = first
    if kind == "import":  # statuses present in the merged runs, sorted, like an unsharded report
        statuses = sorted({str(r.get("status")) for r in merged.get("runs", [])})
        merged["counts"] = {s: sum(1 for r in merged["runs"] if r.get("status") == s) for s in statuses}
    return merged


def _dump_keys(dump: Path) -> list[tuple[str, ...]]:
    """Each run of the dump as the names a report may give it (key, and folder for a refused run)."""
    out: list[tuple[str, ...]] = []
    for run in DumpReader(dump).scan():
        if isinstance(run, DumpRun):
            out.append((str(run.key),))
        else:
            out.append(tuple(n for n in (None if run.key is None else str(run.key), run.problem.run) if n))
    return out


def merge(dirs: list[Path], *, kind: str | None = None, dump: Path | None = None,
          count: int | None = None) -> MergeResult:
    """Merge the newest report of each shard found in `dirs` (folders of reports, or dumps); with
    `count`, only reports of jobs split into that many shards."""
    if dump is None:
        dump = next((d for d in dirs if DumpLayout(d).manifest.is_file()), None)
    found, ignored = read_shard_reports(dirs, kind)
    if count is not None:
        ignored += sum(1 for r in found if r.group[4] != count)
        found = [r for r in found if r.group[4] == count]
    if not found:
        what = f"{kind} " if kind else "import or verify "
        msg = (f"no shard {what}report in {', '.join(str(d) for d in dirs)} (reports written with --shard K/N "
               "carry a `shard` object)")
        raise UsageError(msg)
    groups = sorted({r.group for r in found})
    if len(groups) > 1:
        shown = "; ".join(f"{g[0]} into {g[2]} (dump {g[3]}, {g[4]} shards)" for g in groups)
        msg = f"reports of {len(groups)} different jobs: {shown}; merge one (--kind, --shard-count or separate folders)"
        raise UsageError(msg)
    which, _dest, _target, dump_id, count = groups[0]
    newest: dict[int, ShardReport] = {}
    for r in found:
        old = newest.get(r.number)
        if old is None or (str(r.doc.get("finished_at")), r.path.name) > (str(old.doc.get("finished_at")),
                                                                         old.path.name):
            newest[r.number] = r
    ignored += len(found) - len(newest)
    shards = [newest[n] for n in sorted(newest)]
    problems: list[str] = []
    missing = [n for n in range(1, count + 1) if n not in newest]
    if missing:
        problems.append(f"missing shard(s): {', '.join(f'{n}/{count}' for n in missing)} (no report)")
    owner: dict[str, list[int]] = {}
    for r in shards:
        for run in [*r.doc.get("runs", []), *r.doc.get("registry", [])]:
            owner.setdefault(str(run.get("key")), []).append(r.number)
    overlaps = {k: v for k, v in owner.items() if len(v) > 1}
    if overlaps:
        shown = ", ".join(f"{k} (shards {', '.join(map(str, v))})" for k, v in sorted(overlaps.items())[:20])
        problems.append(f"{len(overlaps)} run(s) handled by more than one shard: {shown}")
    dump_runs = {int(r.shard.get("dump_runs", -1)) for r in shards}
    if len(dump_runs) > 1:
        problems.append(f"the shards saw different numbers of runs in the dump: {sorted(dump_runs)}")
    owned = sum(int(r.shard.get("owned_runs", 0)) for r in shards)
    if not missing and len(dump_runs) == 1 and owned != next(iter(dump_runs)):
        problems.append(f"the shards own {owned} run(s) together but the dump holds {next(iter(dump_runs))}")
    deferred = sorted(str(x.get("key")) for r in shards for x in r.doc.get("registry", [])
                      if x.get("status") == "deferred")
    if deferred:
        problems.append(f"{len(deferred)} registry model(s) deferred (waiting for other shards' runs): "
                        f"{', '.join(deferred[:20])}; run `import --registry-only` (without --shard) now that "
                        "every shard finished")
    for r in shards:  # a verify report also lists the models its shard owns (`model:...`), not runs
        listed = sum(1 for x in r.doc.get("runs", []) if not str(x.get("key", "")).startswith("model:"))
        mine = int(r.shard.get("owned_runs", listed))
        if listed > mine or (which == "import" and listed != mine):
            problems.append(f"shard {r.number}/{count} owns {mine} run(s) but its report lists {listed} ({r.path})")
    if dump is not None:
        reader_id = DumpReader(dump).manifest.origin
        if reader_id != dump_id:
            problems.append(f"the reports are of dump {dump_id}, not of {dump} ({reader_id})")
        else:
            unhandled = [names[0] for names in _dump_keys(dump) if not any(n in owner for n in names)]
            if unhandled and which == "import":
                shown = ", ".join(unhandled[:20]) + (" ..." if len(unhandled) > 20 else "")
                problems.append(f"{len(unhandled)} run(s) of the dump are in no shard's report: {shown}")
    report = _merge_docs(which, [r.doc for r in shards])
    report["shards"] = [
        {"shard": f"{r.number}/{count}", "status": "failed" if r.failed() else "ok", "report": str(r.path),
         "runs": len(r.doc.get("runs", [])), "owned_runs": r.shard.get("owned_runs"),
         "detected_from": r.shard.get("detected_from"), "started_at": r.doc.get("started_at"),
         "finished_at": r.doc.get("finished_at")}
        for r in shards
    ] + [{"shard": f"{n}/{count}", "status": "missing", "report": None} for n in missing]
    report["merge"] = {"shard_count": count, "dump_id": dump_id, "problems": problems}
    return MergeResult(which, report, problems, ignored)
