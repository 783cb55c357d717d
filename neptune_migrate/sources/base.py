"""The Source protocol: one per form of Neptune data, behind one seam."""

from __future__ import annotations

import re
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import ClassVar, Protocol

from neptune_migrate.dump.writer import RunWriter
from neptune_migrate.model import ErrorKind, RunKey, RunRecord


@dataclass(frozen=True, slots=True)
class PathMap:
    """Rewrites absolute paths recorded on the training machine (`--path-map OLD=NEW`)."""

    pairs: tuple[tuple[str, str], ...] = ()

    @classmethod
    def parse(cls, items: Sequence[str]) -> PathMap:
        from neptune_migrate.errors import UsageError

        pairs = []
        for item in items:
            old, sep, new = item.partition("=")
            if not sep or not old:
                msg = f"--path-map {item!r}: expected OLD_PREFIX=NEW_PREFIX"
                raise UsageError(msg)
            pairs.append((old, new))
        # Longest prefix first, so nested mappings win over their parents.
        return cls(tuple(sorted(pairs, key=lambda p: -len(p[0]))))

    def resolve(self, recorded: str) -> Path:
        for old, new in self.pairs:
            if recorded == old or recorded.startswith(old.rstrip("/") + "/"):
                return Path(new + recorded[len(old):])
        return Path(recorded)


@dataclass(frozen=True, slots=True)
class SourceOptions:
    """Everything a source may need; each source uses the options that concern it."""

    path: Path
    project: str | None = None
    """`workspace/project` for sources that do not record it (offline queues)."""
    path_map: PathMap = field(default_factory=PathMap)
    files_path: Path | None = None
    """neptune-exporter: the `--files-path` folder (default: `files/` beside the data path)."""
    include_previews: bool = False
    include_incomplete: bool = False


@dataclass(frozen=True, slots=True)
class RunSelection:
    """Which runs to take; shared by export and import."""

    projects: tuple[str, ...] = ()
    run_ids: tuple[str, ...] = ()
    run_regex: str | None = None
    tags: tuple[str, ...] = ()
    created_after: datetime | None = None
    created_before: datetime | None = None

    def matches_key(self, key: RunKey) -> bool:
        if self.projects and key.project not in self.projects:
            return False
        if self.run_ids and key.run_id not in self.run_ids:
            return False
        return not (self.run_regex and not re.search(self.run_regex, key.run_id))

    def matches_record(self, record: RunRecord) -> bool:
        if not self.matches_key(record.key):
            return False
        all_tags = record.system.tags | record.system.group_tags
        if self.tags and not set(self.tags) <= all_tags:
            return False
        created = record.system.created_at
        if self.created_after is not None and (created is None or created < self.created_after):
            return False
        return not (
            self.created_before is not None and (created is None or created >= self.created_before)
        )


class Source(Protocol):
    """Reads runs from one Neptune form. Never writes, locks or cleans up the user's data."""

    name: ClassVar[str]

    def describe(self) -> str:
        """One line: what was detected at the path (layout, version, run count)."""
        ...

    def warnings(self) -> list[str]:
        """Source-level problems found while scanning (one line each, naming the file)."""
        ...

    def list_runs(self) -> Iterator[RunKey]:
        """Every run the source holds, in a stable order."""
        ...

    def export_run(self, key: RunKey, out: RunWriter) -> RunRecord:
        """Stream the run's series and files into `out` and return its record (not committed).

        Data that cannot be saved is recorded as a `Loss` in the record; an exception fails only
        this run.
        """
        ...

    def classify_error(self, error: Exception) -> ErrorKind:
        """Transient errors are retried by the pipeline; permanent ones fail the run."""
        ...
