"""The Source protocol: one per form of Neptune data, behind one seam."""

from __future__ import annotations

import hashlib
import re
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field, replace
from datetime import datetime
from pathlib import Path
from typing import ClassVar, Protocol, runtime_checkable

from neptune_migrate.dump.writer import RunWriter
from neptune_migrate.model import ErrorKind, RunKey, RunRecord

_WINDOWS_PATH = re.compile(r"^(?:[A-Za-z]:[\\/]|\\\\)")
"""`C:\\...`, `C:/...` or a UNC `\\\\server\\share` path, as recorded by a client on Windows."""


def is_windows_path(recorded: str) -> bool:
    """True for a path recorded on Windows (`C:\\...`, `C:/...`, `\\\\server\\share\\...`)."""
    return bool(_WINDOWS_PATH.match(recorded))


def path_leaf(recorded: str) -> str:
    """The last component of a recorded path, whichever machine recorded it (`\\` and `/` both split)."""
    text = recorded.replace("\\", "/") if is_windows_path(recorded) else recorded
    return text.rstrip("/").rsplit("/", 1)[-1]


def _normalise(recorded: str) -> tuple[str, bool]:
    """A recorded path with `/` separators, and whether it is a Windows path (compared case-insensitively)."""
    if is_windows_path(recorded):
        return recorded.replace("\\", "/"), True
    return recorded, False


@dataclass(frozen=True, slots=True)
class PathMap:
    """Rewrites absolute paths recorded on the training machine (`--path-map OLD=NEW`).

    Windows paths (`C:\\Users\\u\\proj\\test.py`) match an OLD prefix written with either separator
    (`C:\\Users\\u\\proj` or `C:/Users/u/proj`), case-insensitively; the rest of the path is appended
    to NEW with `/` separators.
    """

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

    def map(self, recorded: str) -> tuple[str, tuple[str, str] | None]:
        """`recorded` rewritten by the first (longest) matching prefix, and that pair (None: unchanged)."""
        text, windows = _normalise(recorded)
        for old, new in self.pairs:
            prefix, old_windows = _normalise(old)
            prefix = prefix.rstrip("/")
            if windows != old_windows:
                continue
            head = text[: len(prefix)]
            same = head.lower() == prefix.lower() if windows else head == prefix
            if same and (len(text) == len(prefix) or text[len(prefix)] == "/"):
                return new.rstrip("/") + text[len(prefix):] if text[len(prefix):] else new, (old, new)
        return recorded, None

    def resolve(self, recorded: str) -> Path:
        return Path(self.map(recorded)[0])


def confined(root: Path, relative: str) -> Path | None:
    """`root / relative` when it resolves (symbolic links followed) inside `root`; None otherwise.

    The one check for names a source reads from its own files (`tmp_file_name` in a queue, ...): an
    absolute name, `..` steps or a link that leads out of `root` are refused.
    """
    if not relative or relative.startswith(("/", "\\")) or is_windows_path(relative) or "\x00" in relative:
        return None
    base = root.resolve()
    target = (base / relative).resolve()
    if target == base or not target.is_relative_to(base):
        return None
    return target


def fill_times(
    record: RunRecord, candidates: Sequence[tuple[datetime | None, datetime | None, str, str]]
) -> RunRecord:
    """Give a run without a creation or modification time the earliest / latest timestamp it holds.

    `candidates` are `(first, last, first_label, last_label)` in order of preference (e.g. operation
    enqueue times, then point timestamps). The chosen origin is recorded in `provenance.details` as
    `created_at_from` / `modified_at_from`; a source time is never replaced, and nothing is invented when
    the run holds no timestamp at all (never the export time).
    """
    system = record.system
    details = dict(record.provenance.details)
    created, modified = system.created_at, system.modified_at
    if created is None:
        for first, _, label, _ in candidates:
            if first is not None:
                created = first
                details["created_at_from"] = label
                break
    if modified is None:
        for _, last, _, label in candidates:
            if last is not None:
                modified = last
                details["modified_at_from"] = label
                break
    if modified is not None and created is not None and modified < created:
        modified = created
    if created is system.created_at and modified is system.modified_at:
        return record
    absent = tuple(a for a in record.absent
                   if not (a == "created_at" and created is not None)
                   and not (a == "modified_at" and modified is not None))
    return replace(record, system=replace(system, created_at=created, modified_at=modified), absent=absent,
                   provenance=replace(record.provenance, details=details))


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
    workspace: str | None = None
    """Live sources: every project of this workspace (`--workspace`) when no project is named."""
    api_token: str | None = field(default=None, repr=False)
    """Live sources: the Neptune API token (never printed; `repr` leaves it out)."""
    workers: int = 4
    """Live sources: requests in flight at most."""
    rate: float | None = None
    """Live sources: requests per second at most for the whole export (None: no budget)."""
    state_dir: Path | None = None
    """Live sources: a folder in the dump for resume state (e.g. partial series pages of a run not
    yet committed); kept across an interrupted export, the source removes a run's state once done."""
    models: bool = True
    """Sources that list a model registry (neptune2-api): export its models and versions with the
    runs (`--no-models` leaves them out)."""


@dataclass(frozen=True, slots=True)
class RunSelection:
    """Which runs to take; shared by export and import."""

    projects: tuple[str, ...] = ()
    run_ids: tuple[str, ...] = ()
    run_regex: str | None = None
    tags: tuple[str, ...] = ()
    created_after: datetime | None = None
    created_before: datetime | None = None
    modified_after: datetime | None = None
    """Only runs created or modified at or after this time (`export --since-last`); a live source
    applies it on the server, the pipeline checks it again on the record."""
    registry_in_full: bool = False
    """`--since-last` after an export that did not include the model registry (older dumps, or
    `--no-models`): models and versions are listed and selected without `modified_after`."""

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
        if self.created_before is not None and (created is None or created >= self.created_before):
            return False
        if self.modified_after is None:
            return True
        changed = record.system.modified_at or created
        return changed is None or changed >= self.modified_after


@runtime_checkable
class ContentFingerprint(Protocol):
    """An optional ability of a source: a cheap digest of what it holds for one run.

    It depends on the run's content only (names relative to the run's folder, sizes, counters), never
    on where the source sits; two copies of a run with the same fingerprint hold the same data. The
    export compares it with the dump's copy to decide whether a run already in the dump must be read
    again.
    """

    def fingerprint(self, key: RunKey) -> str:
        """A hex digest of the run's content as the source holds it."""
        ...


def content_fingerprint(source: object, key: RunKey) -> str | None:
    """The source's fingerprint of the run, or None when the source cannot give one."""
    if isinstance(source, ContentFingerprint):
        return source.fingerprint(key)
    return None


def fingerprint_files(items: Sequence[tuple[str, object]]) -> str:
    """sha256 over `(name, facts)` pairs, in the given order (for `ContentFingerprint` implementations)."""
    h = hashlib.sha256()
    for name, facts in items:
        h.update(f"{name}\0{facts!r}\n".encode("utf-8", "surrogateescape"))
    return h.hexdigest()


@dataclass(frozen=True, slots=True)
class SourceEstimate:
    """What an export would read, from the source's own counts, with no series downloaded."""

    runs: int
    attributes: int
    points: int
    bytes: int
    details: dict[str, int] = field(default_factory=dict)
    """Optional finer counts (e.g. points per series kind, files)."""


@runtime_checkable
class Estimating(Protocol):
    """An optional ability of a (live) source: `export --dry-run` asks it instead of reading."""

    def estimate(self, selection: RunSelection) -> SourceEstimate:
        """Counts for the runs `selection` takes; reads listings and counts, never series or files."""
        ...


@runtime_checkable
class ServerSelection(Protocol):
    """An optional ability of a (live) source: filter runs on the server, so a filtered export does
    not download what it then drops. The pipeline calls `select` before `list_runs`."""

    def select(self, selection: RunSelection) -> None:
        """Use `selection` (ids, regex, tags, creation and modification times) in the next listing."""
        ...


@runtime_checkable
class ConcurrentRuns(Protocol):
    """An optional ability of a (live) source: the export may read up to `run_workers` runs at once.

    `export_run` is then called from several threads at once (each on its own run and `RunWriter`);
    the source keeps every request of every run within its own shared budget (`--workers`, `--rate`).
    `cancel()` is called from another thread when the export stops early (Ctrl-C): from then on the
    source's requests raise, so each thread leaves its run uncommitted after the request it is in.
    """

    @property
    def run_workers(self) -> int:
        """How many runs may be read at once."""
        ...

    def cancel(self) -> None:
        """Stop: every later request raises (a `BaseException`, so no run records it as its failure)."""
        ...


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
