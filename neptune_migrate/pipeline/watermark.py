"""`export --since-last`: the watermark of a live export, kept in the dump's manifest.

`manifest.json` holds `live_watermarks`: one entry per live source and server/projects, e.g.
`{"neptune2-api http://neptune.local ws/proj": {"listed_at": "2026-12-03T12:00:00+00:00",
"overlap_seconds": 600}}`. `listed_at` is the time (this machine's clock) when the last export
without failed runs started listing. The next `--since-last` export asks the server only for runs
created or modified at or after `listed_at - overlap` (the overlap covers clock skew between this
machine and the server and runs written while the previous export listed); runs in the overlap
whose content did not change are skipped without a request.

An entry also says whether that export included the model registry (`"models": true`); when it
does not (`--no-models`, or a dump from a release before the registry was exported), the next
`--since-last` export lists the registry in full (`registry_included`).
"""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any

from neptune_migrate.dump.layout import DumpLayout
from neptune_migrate.dump.manifest import read_manifest
from neptune_migrate.dump.writer import DumpWriter

KEY = "live_watermarks"
OVERLAP = timedelta(minutes=10)
"""Safety overlap subtracted from the watermark."""


def watermark_id(source: str, location: str, projects: tuple[str, ...], workspace: str | None,
                 filters: str = "", shard: str | None = None) -> str:
    """Which live export a watermark belongs to: source, server, what was exported, with which run
    filters (a filtered export must not move the watermark of an unfiltered one) and, for `--shard`,
    which shard (each shard moves only its own: one that failed a run keeps its older mark)."""
    what = " ".join(sorted(projects)) or f"workspace:{workspace or '-'}"
    return f"{source} {location} {what}" + (f" filters:{filters}" if filters else "") + (
        f" {shard}" if shard else "")


def _entries(extra: dict[str, Any]) -> dict[str, Any]:
    entries = extra.get(KEY)
    return entries if isinstance(entries, dict) else {}


def read_since(layout: DumpLayout, ident: str) -> tuple[datetime | None, datetime | None]:
    """(the stored watermark, the time to ask from = watermark - overlap); (None, None) without one."""
    if not layout.manifest.exists():
        return None, None
    entry = _entries(read_manifest(layout).extra).get(ident)
    if not isinstance(entry, dict) or not isinstance(entry.get("listed_at"), str):
        return None, None
    mark = datetime.fromisoformat(entry["listed_at"])
    overlap = timedelta(seconds=float(entry.get("overlap_seconds", OVERLAP.total_seconds())))
    return mark, mark - overlap


def registry_included(layout: DumpLayout, ident: str) -> bool:
    """Whether the export that stored the watermark `ident` included the model registry."""
    if not layout.manifest.exists():
        return False
    entry = _entries(read_manifest(layout).extra).get(ident)
    return isinstance(entry, dict) and entry.get("models") is True


def record(writer: DumpWriter, ident: str, listed_at: datetime, runs: int, *, models: bool = False) -> None:
    """Store the watermark of an export that finished without failed runs (under the manifest lock,
    on a fresh read, when shards share the dump)."""

    def update(current: Any) -> dict[str, Any]:
        entries = dict(current) if isinstance(current, dict) else {}
        entries[ident] = {"listed_at": listed_at.isoformat(), "overlap_seconds": OVERLAP.total_seconds(),
                          "runs_listed": runs, "models": models}
        return entries

    writer.update_extra(KEY, update)
