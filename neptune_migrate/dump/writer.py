"""DumpWriter: writes runs into a dump so that a crash never leaves a run looking complete.

A run is staged in `.staging/<run>.<random>/`; its series parts are streamed there; `commit()`
writes `run.json` (with the sha256 of every part) into the staging folder and then renames the
folder into `runs/`. `run.json` is therefore the commit marker: a run folder without it cannot
exist under `runs/`, and a staging folder left by a crash is removed by the next writer.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import shutil
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, replace
from datetime import datetime, timezone
from pathlib import Path
from types import TracebackType
from typing import IO, Any

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from neptune_migrate.dump.layout import DumpLayout, fsync_dir, write_atomic
from neptune_migrate.dump.lock import FileLock, read_holder
from neptune_migrate.dump.manifest import Manifest, read_manifest, write_manifest
from neptune_migrate.dump.schema import FORMAT_VERSION, SERIES_SCHEMAS, conform, record_to_json
from neptune_migrate.errors import DumpFormatError, UsageError, redact_obj
from neptune_migrate.model import RunKey, RunRecord, SeriesInfo, SeriesKind

ROW_GROUP_ROWS = 256 * 1024
"""Points buffered per series kind before a row group is written (bounds memory)."""
PART_ROWS = 8 * 1024 * 1024
"""Points per Parquet part file before a new part is started."""
_COPY_CHUNK = 1024 * 1024


def sha256_file(path: Path) -> str:
    """Stream a file through sha256."""
    h = hashlib.sha256()
    with path.open("rb") as fh:
        for chunk in iter(lambda: fh.read(_COPY_CHUNK), b""):
            h.update(chunk)
    return h.hexdigest()


def _fsync_file(path: Path) -> None:
    with path.open("rb") as fh:
        os.fsync(fh.fileno())


def record_digest(doc: dict[str, Any]) -> str:
    """sha256 of a run document (parts' checksums included, `digest` itself excluded)."""
    body = {k: v for k, v in doc.items() if k not in ("digest", "committed_at")}
    return hashlib.sha256(json.dumps(body, sort_keys=True).encode()).hexdigest()


def _redact_notes(doc: dict[str, Any]) -> dict[str, Any]:
    """Mask secrets in what the tool wrote about a run (provenance, loss details, file origins such
    as pre-signed URLs); the run's own data (fields, series, names) is kept as the source has it."""
    doc = dict(doc)
    doc["provenance"] = redact_obj(doc.get("provenance"))
    doc["losses"] = redact_obj(doc.get("losses", []))
    doc["files"] = [
        {**fe, **{k: redact_obj(fe.get(k)) for k in ("origin", "missing") if k in fe}}
        for fe in doc.get("files", [])
    ]
    return doc


@dataclass
class _SeriesStats:
    count: int = 0
    first_step: float | None = None
    last_step: float | None = None


class _KindWriter:
    """Buffers one series kind of one run and writes sorted row groups into numbered parts."""

    def __init__(self, run_dir: Path, kind: SeriesKind) -> None:
        self.run_dir = run_dir
        self.kind = kind
        self.schema = SERIES_SCHEMAS[kind]
        self.buffer: list[pa.Table] = []
        self.buffered = 0
        self.part_index = 0
        self.part_rows = 0
        self.writer: pq.ParquetWriter | None = None
        self.parts: list[str] = []

    def add(self, table: pa.Table) -> None:
        self.buffer.append(table)
        self.buffered += table.num_rows
        if self.buffered >= ROW_GROUP_ROWS:
            self.flush()

    def flush(self) -> None:
        if not self.buffered:
            return
        table = pa.concat_tables(self.buffer)
        self.buffer, self.buffered = [], 0
        # Sorted by path then step inside each row group: readers can prune by path statistics.
        table = table.take(pc.sort_indices(table, [("path", "ascending"), ("step", "ascending")]))
        if self.writer is None or self.part_rows >= PART_ROWS:
            self._open_part()
        assert self.writer is not None
        self.writer.write_table(table, row_group_size=ROW_GROUP_ROWS)
        self.part_rows += table.num_rows

    def _open_part(self) -> None:
        if self.writer is not None:
            self.writer.close()
        name = DumpLayout.part_name(self.kind, self.part_index)
        self.part_index += 1
        self.part_rows = 0
        path = self.run_dir / name
        path.parent.mkdir(parents=True, exist_ok=True)
        self.writer = pq.ParquetWriter(path, self.schema, compression="zstd")
        self.parts.append(name)

    def close(self) -> list[str]:
        self.flush()
        if self.writer is not None:
            self.writer.close()
            self.writer = None
        return self.parts


class RunWriter:
    """Collects one run's series and files; `commit()` makes it part of the dump."""

    def __init__(self, dump: DumpWriter, key: RunKey) -> None:
        self.dump = dump
        self.key = key
        self.staging = dump.staging_dir / f"{dump.layout.run_dir(key).name}.{uuid.uuid4().hex[:8]}"
        self.staging.mkdir(parents=True)
        self._kinds: dict[SeriesKind, _KindWriter] = {}
        self._stats: dict[tuple[SeriesKind, str], _SeriesStats] = {}
        self._declared: dict[tuple[SeriesKind, str], dict[str, str | float | None]] = {}
        self.committed = False
        self.first_point_at: datetime | None = None
        """The earliest point timestamp written so far (None: no timestamped point)."""
        self.last_point_at: datetime | None = None
        """The latest point timestamp written so far."""

    # -- series ---------------------------------------------------------------------------------
    def add_points(self, kind: SeriesKind, table: pa.Table) -> None:
        """Append points of any series of `kind`; columns per `dump.schema.SERIES_SCHEMAS`."""
        if table.num_rows == 0:
            return
        table = conform(kind, table)
        self._update_stats(kind, table)
        writer = self._kinds.get(kind)
        if writer is None:
            writer = self._kinds[kind] = _KindWriter(self.staging, kind)
        writer.add(table)

    def declare_series(
        self, kind: SeriesKind, path: str, meta: dict[str, str | float | None] | None = None
    ) -> None:
        """Record a series that exists even if it has no points (or carries metadata)."""
        self._declared.setdefault((kind, path), {}).update(meta or {})
        self._stats.setdefault((kind, path), _SeriesStats())

    def _update_stats(self, kind: SeriesKind, table: pa.Table) -> None:
        bounds = pc.min_max(table.column("timestamp")).as_py()
        lo_ts, hi_ts = bounds["min"], bounds["max"]
        if lo_ts is not None and (self.first_point_at is None or lo_ts < self.first_point_at):
            self.first_point_at = lo_ts
        if hi_ts is not None and (self.last_point_at is None or hi_ts > self.last_point_at):
            self.last_point_at = hi_ts
        paths = table.column("path")
        if table.num_rows and not paths.null_count and pc.count_distinct(paths).as_py() == 1:
            # One series in the table (the usual case): the same figures without an Acero group-by,
            # which costs about a millisecond per call, a large part of a small run's export.
            steps = pc.min_max(table.column("step")).as_py()
            self._add_stats(kind, paths[0].as_py(), pc.count(table.column("step")).as_py(),
                            steps["min"], steps["max"])
            return
        grouped = table.group_by("path").aggregate(
            [("step", "count"), ("step", "min"), ("step", "max")]
        )
        for path, count, lo, hi in zip(
            grouped.column("path").to_pylist(),
            grouped.column("step_count").to_pylist(),
            grouped.column("step_min").to_pylist(),
            grouped.column("step_max").to_pylist(),
            strict=True,
        ):
            self._add_stats(kind, path, count, lo, hi)

    def _add_stats(self, kind: SeriesKind, path: str, count: int, lo: Any, hi: Any) -> None:
        st = self._stats.setdefault((kind, path), _SeriesStats())
        st.count += count
        st.first_step = lo if st.first_step is None else min(st.first_step, lo)
        st.last_step = hi if st.last_step is None else max(st.last_step, hi)

    @property
    def points(self) -> int:
        """Points written so far, every series kind."""
        return sum(st.count for st in self._stats.values())

    # -- files ----------------------------------------------------------------------------------
    def store_file(self, source: Path) -> tuple[str, int]:
        """Copy a file into the content-addressed store; return (sha256, size)."""
        with source.open("rb") as fh:
            return self.dump.store_stream(fh)

    def store_bytes(self, data: bytes) -> tuple[str, int]:
        """Store in-memory content; return (sha256, size)."""
        import io

        return self.dump.store_stream(io.BytesIO(data))

    # -- commit ---------------------------------------------------------------------------------
    def commit(self, record: RunRecord) -> RunRecord:
        """Write the parts' checksums and `run.json`, then move the run into `runs/`."""
        if record.key != self.key:
            msg = f"record key {record.key} does not match the run being written ({self.key})"
            raise ValueError(msg)
        parts = []
        for kind, writer in sorted(self._kinds.items()):
            for name in writer.close():
                path = self.staging / name
                _fsync_file(path)
                rows = pq.ParquetFile(path).metadata.num_rows
                parts.append({
                    "kind": kind,
                    "file": name,
                    "rows": rows,
                    "bytes": path.stat().st_size,
                    "sha256": sha256_file(path),
                })
        series = tuple(
            SeriesInfo(
                path=path,
                kind=kind,
                count=st.count,
                first_step=st.first_step,
                last_step=st.last_step,
                meta=self._declared.get((kind, path), {}),
            )
            for (kind, path), st in sorted(self._stats.items())
        )
        record = replace(record, series=series)
        doc = _redact_notes(record_to_json(record))
        doc["format_version"] = FORMAT_VERSION
        doc["parts"] = parts
        if self.dump.source_root is not None:
            doc["source_root"] = self.dump.source_root
        doc["digest"] = record_digest(doc)
        doc["committed_at"] = datetime.now(timezone.utc).isoformat()
        write_atomic(
            DumpLayout.record_file(self.staging),
            (json.dumps(doc, indent=1, ensure_ascii=False) + "\n").encode("utf-8"),
        )
        self.dump.install_run(self.key, self.staging)
        self.committed = True
        return record

    def abort(self) -> None:
        """Throw away what was staged."""
        for writer in self._kinds.values():
            with contextlib.suppress(Exception):
                writer.close()
        shutil.rmtree(self.staging, ignore_errors=True)

    def __enter__(self) -> RunWriter:
        return self

    def __exit__(
        self, et: type[BaseException] | None, e: BaseException | None, tb: TracebackType | None
    ) -> None:
        if not self.committed:
            self.abort()


class DumpWriter:
    """Opens (or creates) a dump for writing; one writer per dump at a time (a lock file).

    With `shard` (a label such as `shard-2-of-3`), one writer per shard: the dump's lock is taken
    shared (the shards write at once; an unsharded writer waits for none of them and is refused
    while any writes), the shard's own lock exclusively, runs are staged in `.staging/<shard>/`, and
    every change to `manifest.json` is made under `_locks/manifest.lock` on a fresh read of it (one
    manifest writer at a time: no shard's export entry or source root is lost).
    """

    def __init__(self, root: Path, shard: str | None = None) -> None:
        self.layout = DumpLayout(root)
        self.shard = shard
        self._lock = FileLock(self.layout.lock_file, "export" + (f" ({shard})" if shard else ""),
                              shared=shard is not None)
        self._shard_lock = None if shard is None else FileLock(self.layout.export_lock(shard), f"export ({shard})")
        self.manifest: Manifest
        self.source_root: int | None = None
        """Index in the manifest's `source_roots` of the folder the current export reads."""

    def __enter__(self) -> DumpWriter:
        self.open()
        return self

    def __exit__(
        self, et: type[BaseException] | None, e: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()

    def open(self) -> None:
        root = self.layout.root
        if root.exists() and not root.is_dir():
            msg = f"{root} exists and is not a folder"
            raise UsageError(msg)
        # What a shard starting at the same moment may have made already (its locks, its staging
        # folder, the manifest being written under a temporary name) does not make the folder foreign.
        own = {self.layout.lock_file.name, self.layout.locks_dir.name, self.layout.staging_dir.name}
        tmp = f".{self.layout.manifest.name}.tmp-"
        if (root.exists() and any(p.name not in own and not p.name.startswith(tmp) for p in root.iterdir())
                and not self.layout.manifest.exists()):
            msg = f"{root} is a non-empty folder that is not a neptune-migrate dump; choose another --out"
            raise UsageError(msg)
        root.mkdir(parents=True, exist_ok=True)
        if not self._lock.try_acquire():
            holder = read_holder(self.layout.lock_file).describe()
            msg = f"{root} is being written by another neptune-migrate process ({holder})"
            raise UsageError(msg)
        if self._shard_lock is not None:
            self.layout.locks_dir.mkdir(exist_ok=True)
            if not self._shard_lock.try_acquire():
                self._lock.release()
                holder = read_holder(self._shard_lock.path).describe()
                msg = f"{root}: {self.shard} is being exported by another neptune-migrate process ({holder})"
                raise UsageError(msg)
        with self._manifest_lock():
            if self.layout.manifest.exists():
                self.manifest = read_manifest(self.layout)
            else:
                self.manifest = Manifest.new()
                write_manifest(self.layout, self.manifest)
        # Leftovers of a crashed writer (of this shard): never committed, so never visible; remove them.
        shutil.rmtree(self.staging_dir, ignore_errors=True)
        self.layout.runs_dir.mkdir(exist_ok=True)

    @property
    def staging_dir(self) -> Path:
        """Where this writer stages runs and blobs (its own folder when it writes one shard)."""
        return self.layout.shard_staging_dir(self.shard)

    @contextlib.contextmanager
    def _manifest_lock(self) -> Iterator[None]:
        """Hold `_locks/manifest.lock` (only shards share a dump; an unsharded writer is alone)."""
        if self.shard is None:
            yield
            return
        self.layout.locks_dir.mkdir(exist_ok=True)
        with FileLock(self.layout.manifest_lock, f"manifest ({self.shard})").holding():
            yield

    def close(self) -> None:
        if self._shard_lock is not None:
            self._shard_lock.release()
        self._lock.release()

    def record_export(self, entry: dict[str, Any]) -> None:
        """Append one export's summary to the manifest."""
        with self._manifest_lock():
            if self.shard is not None:
                self.manifest = read_manifest(self.layout)
            self.manifest.exports.append(entry)
            write_manifest(self.layout, self.manifest)

    def update_extra(self, key: str, update: Callable[[Any], Any]) -> None:
        """Replace the manifest's `extra[key]` by `update(current value or None)`, on a fresh read
        under the manifest lock when shards share the dump (so no shard overwrites another's entry)."""
        with self._manifest_lock():
            if self.shard is not None:
                self.manifest = read_manifest(self.layout)
            self.manifest.extra[key] = update(self.manifest.extra.get(key))
            write_manifest(self.layout, self.manifest)

    def is_committed(self, key: RunKey) -> bool:
        """True when the run is in the dump and all its parts still match their checksums."""
        from neptune_migrate.dump.reader import check_run_dir

        run_dir = self.layout.run_dir(key)
        if not DumpLayout.record_file(run_dir).exists():
            return False
        return not check_run_dir(self.layout, run_dir, check_blobs=True)

    def committed_record(self, key: RunKey) -> RunRecord | None:
        """The record of the run as committed in the dump (None when absent or damaged)."""
        from neptune_migrate.dump.reader import load_run_doc
        from neptune_migrate.dump.schema import record_from_json

        if not self.is_committed(key):
            return None
        try:
            return record_from_json(load_run_doc(self.layout.run_dir(key)))
        except DumpFormatError:
            return None

    def recommit(self, record: RunRecord) -> RunRecord:
        """Rewrite the committed `run.json` of `record.key` with `record`'s metadata, keeping its parts,
        series and source root (for a change of metadata only, e.g. a run turned into a registry
        record); atomic, like a commit."""
        from neptune_migrate.dump.reader import load_run_doc

        run_dir = self.layout.run_dir(record.key)
        old = load_run_doc(run_dir)
        doc = _redact_notes(record_to_json(record))
        doc["format_version"] = FORMAT_VERSION
        doc["parts"] = old.get("parts", [])
        if "source_root" in old:
            doc["source_root"] = old["source_root"]
        doc["digest"] = record_digest(doc)
        doc["committed_at"] = datetime.now(timezone.utc).isoformat()
        write_atomic(DumpLayout.record_file(run_dir),
                     (json.dumps(doc, indent=1, ensure_ascii=False) + "\n").encode("utf-8"))
        return record

    def add_source_root(self, root: str) -> int:
        """Record (once) the absolute folder that the next runs' provenance paths are relative to.

        Returns its index in the manifest's `source_roots` (format 1.2); every run committed afterwards
        carries it as `source_root`.
        """
        with self._manifest_lock():
            if self.shard is not None:
                self.manifest = read_manifest(self.layout)
            roots = self.manifest.extra.setdefault("source_roots", [])
            if root not in roots:
                roots.append(root)
                write_manifest(self.layout, self.manifest)
        self.source_root = roots.index(root)
        return self.source_root

    @contextlib.contextmanager
    def begin_run(self, key: RunKey) -> Iterator[RunWriter]:
        """Stage a run; it becomes visible only when `commit()` is called on it."""
        run = RunWriter(self, key)
        try:
            yield run
        finally:
            if not run.committed:
                run.abort()

    def install_run(self, key: RunKey, staging: Path) -> None:
        target = self.layout.run_dir(key)
        old: Path | None = None
        if target.exists():
            old = self.staging_dir / f"{target.name}.old-{uuid.uuid4().hex[:8]}"
            target.rename(old)
        staging.rename(target)
        fsync_dir(self.layout.runs_dir)
        if old is not None:
            shutil.rmtree(old, ignore_errors=True)

    def store_stream(self, fh: IO[bytes]) -> tuple[str, int]:
        """Copy a stream into the blob store under its sha256; idempotent."""
        tmp_dir = self.staging_dir / "blobs"
        tmp_dir.mkdir(parents=True, exist_ok=True)
        tmp = tmp_dir / uuid.uuid4().hex
        h = hashlib.sha256()
        size = 0
        with tmp.open("wb") as out:
            for chunk in iter(lambda: fh.read(_COPY_CHUNK), b""):
                h.update(chunk)
                out.write(chunk)
                size += len(chunk)
            out.flush()
            os.fsync(out.fileno())
        digest = h.hexdigest()
        target = self.layout.blob(digest)
        if target.exists() and target.stat().st_size == size:
            tmp.unlink()
        else:
            target.parent.mkdir(parents=True, exist_ok=True)
            tmp.replace(target)
            fsync_dir(target.parent)
        return digest, size


def ensure_dump_root(root: Path) -> None:
    """Raise a clear error when `root` is not a dump."""
    if not DumpLayout(root).manifest.exists():
        msg = f"{root}: not a neptune-migrate dump (no manifest.json)"
        raise DumpFormatError(msg)
