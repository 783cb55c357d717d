"""The neptune-scale source: `run_operations.sqlite3` logs left by offline runs and unsynced async runs.

The user's database is never opened: each `.sqlite3` is copied with its `-wal` and `-shm` into a
temporary folder and the copy is opened, which replays the WAL (after a SIGKILL the data may live
only there). Operations are decoded with the protobuf classes shipped by `neptune-api` and applied by
`mapping.RunState`; series stream into the dump in bounded batches.
"""

from __future__ import annotations

import shutil
import sqlite3
import struct
import tempfile
from collections import Counter
from collections.abc import Iterator
from contextlib import closing
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path, PurePosixPath
from typing import TYPE_CHECKING, Any, ClassVar

from neptune_migrate.dump.writer import RunWriter
from neptune_migrate.errors import MissingDependencyError, SourceFormatError
from neptune_migrate.model import ErrorKind, LossCategory, Provenance, RunKey, RunRecord, SourceRunId, SystemInfo
from neptune_migrate.sources.base import SourceOptions, fill_times, fingerprint_files
from neptune_migrate.sources.neptune_scale.errors import classify_error
from neptune_migrate.sources.neptune_scale.mapping import EPOCH, FileRef, ResolvedFile, RunState

if TYPE_CHECKING:
    from neptune_migrate.sources.base import Source

KNOWN_VERSIONS = ("v1", "v2", "v3", "v4", "v5")
FETCH_ROWS = 10_000
"""Operation rows fetched from SQLite at a time."""
CREATE_RUN = 1
UPDATE_SNAPSHOT = 0
_SUFFIXES = ("", "-wal", "-shm")
_SYSTEM_FIELDS = (
    "name", "description", "owner", "state", "failed", "trashed", "created_at", "modified_at",
    "custom_run_id", "experiment_name",
)


def _proto_classes() -> tuple[Any, Any, type[Exception]]:
    """`Run`, `UpdateRunSnapshot` and protobuf's `DecodeError`, imported only when a run is read."""
    try:
        from google.protobuf.message import DecodeError
        from neptune_api.proto.neptune_pb.ingest.v1.common_pb2 import Run, UpdateRunSnapshot
    except ImportError:
        try:  # neptune-query ships an identical copy of the generated classes
            from google.protobuf.message import DecodeError
            from neptune_query.generated.neptune_api.proto.neptune_pb.ingest.v1.common_pb2 import (
                Run,
                UpdateRunSnapshot,
            )
        except ImportError as exc:
            raise MissingDependencyError("neptune-scale", "neptune") from exc
    return Run, UpdateRunSnapshot, DecodeError


# ---------------------------------------------------------------------------------------------
# Finding and copying databases


def find_databases(path: Path) -> list[Path]:
    """`path` itself when it is a file; else every `*.sqlite3` below it (v1 files and v2+ run folders).

    A `*.sqlite3-wal` whose main file is gone (a run killed before SQLite checkpointed, then the main
    file lost) is listed by the name of its missing main file: `copy_database` rebuilds it.
    """
    if path.is_file():
        if path.name.endswith(".sqlite3-wal"):
            return [path.with_name(path.name.removesuffix("-wal"))]
        return [path]
    found = {p for p in path.rglob("*.sqlite3") if p.is_file()}
    for wal in path.rglob("*.sqlite3-wal"):
        main = wal.with_name(wal.name.removesuffix("-wal"))
        if wal.is_file() and not main.exists():
            found.add(main)
    return sorted(found)


WAL_MAGIC = (0x377F0682, 0x377F0683)


def wal_page_size(wal: Path) -> int | None:
    """The page size a WAL file's header records, or None when the file is not a SQLite WAL."""
    with wal.open("rb") as fh:
        header = fh.read(32)
    if len(header) < 32:
        return None
    magic, _version, page_size = struct.unpack(">III", header[:12])
    if magic not in WAL_MAGIC or page_size < 512 or page_size > 65536 or page_size & (page_size - 1):
        return None
    return int(page_size)


def copy_database(db: Path, into: Path) -> Path:
    """Copy `db` and its `-wal` / `-shm` (when present) into `into`; return the copy of `db`.

    When only the `-wal` is left, the copy is an empty WAL-mode database of the WAL's page size with the
    WAL next to it: opening it replays whatever the WAL holds (raises `SourceFormatError` when the file
    is not a WAL).
    """
    if not db.exists():
        wal = db.with_name(db.name + "-wal")
        page_size = wal_page_size(wal)
        if page_size is None:
            msg = f"{wal}: not a SQLite WAL file"
            raise SourceFormatError(msg)
        target = into / db.name
        with closing(sqlite3.connect(target)) as con:
            con.execute(f"pragma page_size={page_size}")
            con.execute("pragma journal_mode=wal")
            con.execute("create table neptune_migrate_empty(x)")
            con.execute("drop table neptune_migrate_empty")
            con.commit()
        shutil.copyfile(wal, into / (db.name + "-wal"))  # the stale -shm is not copied: SQLite rebuilds it
        return target
    for sfx in _SUFFIXES:
        src = db.with_name(db.name + sfx)
        if src.is_file():
            shutil.copyfile(src, into / (db.name + sfx))
    return into / db.name


def _wal_mode(db: Path) -> bool:
    """True when the file header says WAL journal mode (read/write version bytes 18-19 are 2)."""
    with db.open("rb") as fh:
        header = fh.read(20)
    return len(header) == 20 and header[:16] == b"SQLite format 3\x00" and header[18] == 2


def _tables(con: sqlite3.Connection) -> set[str]:
    return {r[0] for r in con.execute("select name from sqlite_master where type = 'table'")}


@dataclass(frozen=True, slots=True)
class DatabaseInfo:
    """What a scan learns about one operation log (from a copy)."""

    path: Path
    version: str
    project: str
    run_id: str
    operations: int
    first_seq: int | None
    allocated: int
    """Highest sequence id ever allocated (`sqlite_sequence`): rows below it that are gone were
    acknowledged by the server and deleted by the sync process."""
    first_enqueued_ms: int | None
    wal_bytes: int | None
    submitted: int
    """Rows of `run_operation_submission` (v4+): sent to the server, not yet acknowledged."""

    @property
    def acknowledged_gone(self) -> int:
        return max(0, self.allocated - self.operations)

    @property
    def layout(self) -> str:
        return "run folder" if self.path.name == "run_operations.sqlite3" else "single file"

    @property
    def copy_name(self) -> str:
        """What names the log whatever folder holds it: `<proj>_<run>_<ts>/run_operations.sqlite3` or
        `<proj>_<run>_<ts>.sqlite3` (the timestamp is the run's start in nanoseconds)."""
        if self.path.name == "run_operations.sqlite3":
            return f"{self.path.parent.name}/{self.path.name}"
        return self.path.name

    @property
    def wal_only(self) -> bool:
        """True when only the `-wal` was found and the log was rebuilt from it."""
        return not self.path.exists()


def probe_database(db: Path, warnings: list[str]) -> DatabaseInfo | None:
    """Read a copy of `db`: its metadata and row statistics. Problems become warnings, None is returned."""
    wal = db.with_name(db.name + "-wal")
    shm = db.with_name(db.name + "-shm")
    wal_only = not db.exists()
    try:
        wal_mode = True if wal_only else _wal_mode(db)
    except OSError as exc:
        warnings.append(f"{db}: cannot be read ({type(exc).__name__}: {exc.strerror or exc}); skipped")
        return None
    if wal_only:
        return _probe_wal_only(db, warnings)
    if wal_mode and not wal.exists() and shm.exists():
        warnings.append(f"{db}: its -shm file is here but its -wal file is not; the run did not close cleanly "
                        "and operations still in the WAL are missing (copy the -wal next to the .sqlite3)")
    return _probe_copy(db, warnings, wal_mode=wal_mode)


def _probe_wal_only(db: Path, warnings: list[str]) -> DatabaseInfo | None:
    wal = db.with_name(db.name + "-wal")
    why = f"{wal}: the main file {db.name} is missing"
    try:
        page_size = wal_page_size(wal)
    except OSError as exc:
        warnings.append(f"{why} and the -wal cannot be read ({exc.strerror or exc}); skipped")
        return None
    if page_size is None:
        warnings.append(f"{why} and the -wal is not a SQLite WAL file; skipped")
        return None
    problems: list[str] = []
    info = _probe_copy(db, problems, wal_mode=True, check=True)
    if info is None:
        detail = "; ".join(p.split(": ", 1)[-1] for p in problems) or "no data"
        warnings.append(f"{why}; replaying the -wal onto an empty database of its page size ({page_size}) "
                        f"did not give back the operation log ({detail}): its data cannot be exported")
        return None
    return info


def _probe_copy(db: Path, warnings: list[str], *, wal_mode: bool, check: bool = False) -> DatabaseInfo | None:
    wal = db.with_name(db.name + "-wal")
    with tempfile.TemporaryDirectory(prefix="neptune-migrate-scale-") as tmp:
        try:
            copy = copy_database(db, Path(tmp))
        except (OSError, SourceFormatError) as exc:
            warnings.append(f"{db}: cannot be read ({type(exc).__name__}: {getattr(exc, 'strerror', None) or exc}); "
                            "skipped")
            return None
        try:
            with closing(sqlite3.connect(copy)) as con:
                if check:
                    verdict = con.execute("pragma integrity_check").fetchone()
                    if verdict is None or verdict[0] != "ok":
                        warnings.append(f"{db}: integrity check failed ({verdict[0] if verdict else 'no answer'})")
                        return None
                tables = _tables(con)
                if not {"metadata", "run_operations"} <= tables:
                    if wal_mode and not wal.exists():
                        warnings.append(
                            f"{db}: no neptune-scale tables in the file and its -wal file is missing: a run that "
                            "was killed keeps its data only in the -wal; data may be missing (copy the "
                            f"{wal.name} file next to it and export again)"
                        )
                    else:
                        warnings.append(f"{db}: not a neptune-scale operation log (no metadata/run_operations "
                                        "tables); skipped")
                    return None
                meta = con.execute("select version, project, run_id from metadata order by id limit 1").fetchone()
                if meta is None:
                    warnings.append(f"{db}: the metadata table is empty (project and run id unknown); skipped")
                    return None
                version, project, run_id = (str(v) for v in meta)
                if version not in KNOWN_VERSIONS:
                    warnings.append(f"{db}: unknown operation-log version {version!r}; read as v5")
                count, first_seq, max_seq, first_ms = con.execute(
                    "select count(*), min(sequence_id), max(sequence_id), min(timestamp) from run_operations"
                ).fetchone()
                allocated = int(max_seq or 0)
                if "sqlite_sequence" in tables:
                    row = con.execute("select seq from sqlite_sequence where name = 'run_operations'").fetchone()
                    if row is not None:
                        allocated = max(allocated, int(row[0]))
                submitted = 0
                if "run_operation_submission" in tables:
                    submitted = int(con.execute("select count(*) from run_operation_submission").fetchone()[0])
        except sqlite3.DatabaseError as exc:
            warnings.append(f"{db}: not a readable SQLite database ({exc}); skipped")
            return None
    return DatabaseInfo(
        path=db, version=version, project=project, run_id=run_id, operations=int(count),
        first_seq=None if first_seq is None else int(first_seq), allocated=allocated,
        first_enqueued_ms=None if first_ms is None else int(first_ms),
        wal_bytes=wal.stat().st_size if wal.exists() else None, submitted=submitted,
    )


# ---------------------------------------------------------------------------------------------
# Files


@dataclass(frozen=True, slots=True)
class _Upload:
    source_path: str
    mime_type: str
    size: int
    temporary: bool
    db_dir: Path


class _FileFinder:
    """Resolves `file_ref`s through `file_upload_requests` and stores what it finds (once per ref)."""

    def __init__(self, out: RunWriter, options: SourceOptions) -> None:
        self.out = out
        self.options = options
        self.uploads: dict[str, _Upload] = {}
        self.used: set[str] = set()
        self.read: list[str] = []
        self._cache: dict[str, ResolvedFile] = {}

    def add_uploads(self, con: sqlite3.Connection, db_dir: Path) -> None:
        rows = con.execute(
            "select source_path, destination, mime_type, size_bytes, is_temporary from file_upload_requests "
            "order by id"
        )
        for source_path, destination, mime, size, temporary in rows:
            self.uploads[str(destination)] = _Upload(str(source_path), str(mime), int(size), bool(temporary), db_dir)

    def candidates(self, up: _Upload) -> list[Path]:
        recorded = PurePosixPath(up.source_path)
        out = []
        if up.temporary:  # written by the client next to the DB: found by name even if the folder moved
            out.append(up.db_dir / recorded.name)
        out.append(self.options.path_map.resolve(up.source_path))
        return out

    def __call__(self, ref: FileRef) -> ResolvedFile:
        cached = self._cache.get(ref.path)
        if cached is not None:
            return cached
        result = self._resolve(ref)
        self._cache[ref.path] = result
        return result

    def _resolve(self, ref: FileRef) -> ResolvedFile:
        storage_name = PurePosixPath(ref.path).name
        mime = ref.mime_type or None
        up = self.uploads.get(ref.path)
        if up is None:
            return ResolvedFile(
                name=storage_name, sha256=None, size=None, mime_type=mime,
                missing="no file_upload_requests row (a v1 log, or already uploaded by the sync process)",
                gone=True,
            )
        self.used.add(ref.path)
        name = storage_name if up.temporary else PurePosixPath(up.source_path).name
        tried = self.candidates(up)
        for path in tried:
            if path.is_file():
                sha, size = self.out.store_file(path)
                self.read.append(str(path))
                changed = None
                if size != up.size:
                    changed = f"{path} has {size} bytes, the log recorded {up.size}: it changed since it was logged"
                return ResolvedFile(name=name, sha256=sha, size=size, mime_type=up.mime_type or mime,
                                    origin=up.source_path, changed=changed)
        where = ", ".join(dict.fromkeys(str(p) for p in tried))
        hint = "" if up.temporary else " (use --path-map OLD=NEW if the files moved)"
        return ResolvedFile(name=name, sha256=None, size=None, mime_type=up.mime_type or mime,
                            missing=f"not found at {where}{hint}", origin=up.source_path)


# ---------------------------------------------------------------------------------------------
# The source


class NeptuneScaleSource:
    """neptune-scale operation logs: a log directory, one run folder or one `.sqlite3` file."""

    name: ClassVar[str] = "neptune-scale"

    def __init__(self, options: SourceOptions) -> None:
        _proto_classes()  # a missing SDK is an install hint (exit 2) before any run is tried
        self.options = options
        self._warnings: list[str] = []
        self._runs: dict[RunKey, list[DatabaseInfo]] | None = None
        self._duplicates: dict[RunKey, list[str]] = {}

    def _scan(self) -> dict[RunKey, list[DatabaseInfo]]:
        if self._runs is not None:
            return self._runs
        dbs = find_databases(self.options.path.absolute())
        if not dbs:
            msg = f"{self.options.path}: no neptune-scale operation logs (*.sqlite3) found"
            raise SourceFormatError(msg)
        runs: dict[RunKey, list[DatabaseInfo]] = {}
        for db in dbs:
            info = probe_database(db, self._warnings)
            if info is not None:
                self._add(runs.setdefault(RunKey(info.project, SourceRunId(info.run_id)), []), info)
        for infos in runs.values():  # a run resumed later writes a second log: replay them in order
            infos.sort(key=lambda i: (i.first_enqueued_ms is None, i.first_enqueued_ms or 0, str(i.path)))
        self._runs = dict(sorted(runs.items()))
        return self._runs

    def _add(self, infos: list[DatabaseInfo], info: DatabaseInfo) -> None:
        """A second copy of the same log (same run folder or file name, e.g. two copies of a log directory)
        is not replayed twice: the copy holding more operations is kept and the choice recorded."""
        twin = next((i for i in infos if i.copy_name == info.copy_name), None)
        if twin is None:
            infos.append(info)
            return
        old, new = (twin.allocated, twin.operations), (info.allocated, info.operations)
        kept, other = (info, twin) if new > old else (twin, info)
        if kept is info:
            infos[infos.index(twin)] = info
        key = RunKey(info.project, SourceRunId(info.run_id))
        self._duplicates.setdefault(key, []).append(
            f"two copies of {info.copy_name}: kept {kept.path} ({kept.operations} operation(s)), "
            f"ignored {other.path} ({other.operations} operation(s))"
            + (" (identical counts)" if new == old else "")
        )

    def fingerprint(self, key: RunKey) -> str:
        """Names, operation counts and sequence numbers of the run's logs (not where they sit)."""
        infos = self._scan().get(key) or []
        return fingerprint_files([(i.copy_name, (i.version, i.operations, i.allocated, i.first_enqueued_ms,
                                                 i.wal_bytes is not None, i.wal_only)) for i in infos])

    def describe(self) -> str:
        runs = self._scan()
        infos = [i for group in runs.values() for i in group]
        versions = Counter(i.version for i in infos)
        by_version = ", ".join(f"{v}: {n}" for v, n in sorted(versions.items()))
        return (f"neptune-scale operation logs at {self.options.path}: {len(infos)} database(s) "
                f"({by_version or 'none readable'}), {len(runs)} run(s)")

    def warnings(self) -> list[str]:
        return list(self._warnings)

    def list_runs(self) -> Iterator[RunKey]:
        yield from self._scan()

    def classify_error(self, error: Exception) -> ErrorKind:
        return classify_error(error)

    def export_run(self, key: RunKey, out: RunWriter) -> RunRecord:
        infos = self._scan().get(key)
        if not infos:
            msg = f"{key}: no such run in {self.options.path}"
            raise SourceFormatError(msg)
        run_cls, snapshot_cls, decode_error = _proto_classes()
        finder = _FileFinder(out, self.options)
        state = RunState(project=key.project, sink=out.add_points, resolve_file=finder,
                         include_previews=self.options.include_previews)
        complete = True
        errors: list[tuple[int | None, str, str]] = []
        read: list[str] = []
        first_ms: int | None = None
        last_ms: int | None = None
        for info in infos:
            with tempfile.TemporaryDirectory(prefix="neptune-migrate-scale-") as tmp:
                copy = copy_database(info.path, Path(tmp))
                read.extend(str(info.path.with_name(info.path.name + sfx)) for sfx in _SUFFIXES
                            if info.path.with_name(info.path.name + sfx).is_file())
                with closing(sqlite3.connect(copy)) as con:
                    tables = _tables(con)
                    if "file_upload_requests" in tables:
                        finder.add_uploads(con, info.path.parent)
                    if "operation_errors" in tables:
                        # error_body is a pickled exception: never unpickled, only its size is reported.
                        errors.extend(
                            (seq, str(etype), f"{details} [error_body: {body or 0} hex chars, not read]")
                            for seq, etype, details, body in con.execute(
                                "select sequence_id, error_type, error_details, length(error_body) "
                                "from operation_errors order by error_id"
                            )
                        )
                    cur = con.execute(
                        "select sequence_id, timestamp, operation_type, operation from run_operations "
                        "order by sequence_id"
                    )
                    while rows := cur.fetchmany(FETCH_ROWS):
                        ms = [r[1] for r in rows if r[1] is not None]
                        if ms:
                            lo_ms, hi_ms = min(ms), max(ms)
                            first_ms = lo_ms if first_ms is None else min(first_ms, lo_ms)
                            last_ms = hi_ms if last_ms is None else max(last_ms, hi_ms)
                        for seq, enqueued_ms, op_type, blob in rows:
                            try:
                                if op_type == UPDATE_SNAPSHOT:
                                    state.apply_snapshot(snapshot_cls.FromString(blob))
                                elif op_type == CREATE_RUN:
                                    state.apply_create(run_cls.FromString(blob), enqueued_ms)
                                else:
                                    state.loss("unknown_operation", None, f"operation type {op_type} (seq "
                                               f"{seq}) is not known to this reader", category=LossCategory.LOST)
                            except decode_error as exc:
                                complete = False
                                state.loss("corrupt_operation", None, f"{info.path}: seq {seq}: {exc}",
                                           category=LossCategory.LOST)
        state.flush()
        files = state.file_entries()
        for path, kind in state.series_kinds().items():
            out.declare_series(kind, path)
        for seq, etype, details in errors:
            state.loss("operation_error", None, f"seq {seq}: {etype}: {details}", category=LossCategory.LOST)
        unused = [d for d in finder.uploads if d not in finder.used]
        if unused:
            state.loss("unreferenced_upload", None, f"{len(unused)} file(s) waiting for upload belong to operations "
                       f"no longer in the log, e.g. {finder.uploads[unused[0]].source_path}",
                       category=LossCategory.CHANGED_FORM,
                       count=len(unused))
        for sentence in self._duplicates.get(key, []):
            state.loss("duplicate_copy", None, sentence, category=LossCategory.CHANGED_FORM)
        for info in infos:
            if info.wal_only:
                state.loss("recovered_from_wal", None, f"{info.path.name} is missing: the run was rebuilt by "
                           f"replaying {info.path.name}-wal onto an empty database ({info.operations} "
                           "operation(s)); anything checkpointed into the lost main file before is not in it",
                           category=LossCategory.CHANGED_FORM)
        record = self._record(key, infos, state, files, complete, read + finder.read)
        # The run spans its operations' enqueue times (and its points' timestamps, if later).
        first_op = None if first_ms is None else EPOCH + timedelta(milliseconds=first_ms)
        last_op = None if last_ms is None else EPOCH + timedelta(milliseconds=last_ms)
        last_point = out.last_point_at
        last: datetime | None
        if last_op is not None and (last_point is None or last_op >= last_point):
            last, label = last_op, "last operation"
        else:
            last, label = last_point, "last point"
        return fill_times(record, [
            (first_op, last, "first operation's enqueue time", label),
            (out.first_point_at, last_point, "first point's timestamp", "last point"),
        ])

    def _record(
        self, key: RunKey, infos: list[DatabaseInfo], state: RunState, files: list[Any], complete: bool,
        read: list[str],
    ) -> RunRecord:
        gone = sum(i.acknowledged_gone for i in infos)
        partial = gone > 0
        system = SystemInfo(
            description=state.description,
            created_at=state.created_at,
            custom_run_id=key.run_id,
            experiment_name=state.experiment_name,
            tags=frozenset(state.tags),
            group_tags=frozenset(state.group_tags),
        )
        absent = [name for name in _SYSTEM_FIELDS if getattr(system, name) is None]
        if partial and not state.tags_touched:
            absent.append("tags")
        if partial and not state.group_tags_touched:
            absent.append("group_tags")
        if partial and not state.created:
            absent.append("fork")
        first = infos[0]
        details = {
            "db_version": ",".join(dict.fromkeys(i.version for i in infos)),
            "layout": first.layout,
            "databases": str(len(infos)),
            "operations": str(state.operations),
            "acknowledged_gone": str(gone),
            "submitted_unacknowledged": str(sum(i.submitted for i in infos)),
            "wal": "; ".join(f"{i.path.name}-wal: {'absent' if i.wal_bytes is None else f'{i.wal_bytes} bytes'}"
                             for i in infos),
        }
        if state.created_at_from:
            details["created_at_from"] = state.created_at_from
        if any(i.wal_only for i in infos):
            details["wal_only"] = "rebuilt from the -wal file (the main .sqlite3 is missing)"
        if key in self._duplicates:
            details["duplicate_copies"] = "; ".join(self._duplicates[key])
        return RunRecord(
            key=key,
            system=system,
            fields=dict(sorted(state.fields.items())),
            provenance=Provenance(source=self.name, location=str(first.path), files=tuple(read), details=details),
            fork=state.fork,
            files=tuple(files),
            complete=complete,
            partial_copy=partial,
            losses=tuple(state.losses()),
            absent=tuple(absent),
        )


if TYPE_CHECKING:
    _: type[Source] = NeptuneScaleSource
