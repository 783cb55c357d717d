"""DumpReader: lists committed runs and streams their series and files."""

from __future__ import annotations

import json
import re
import threading
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from neptune_migrate.dump.layout import DumpLayout, UnsafePathError, check_sha256
from neptune_migrate.dump.manifest import Manifest, read_manifest
from neptune_migrate.dump.schema import FORMAT_VERSION, SERIES_SCHEMAS, record_from_json
from neptune_migrate.errors import DumpFormatError
from neptune_migrate.model import SERIES_KINDS, RunKey, RunRecord, SeriesKind, SourceRunId


@dataclass(frozen=True, slots=True)
class DumpProblem:
    """Something wrong inside a dump, named by run and file."""

    run: str
    file: str
    message: str

    def __str__(self) -> str:
        return f"{self.run}: {self.file}: {self.message}"


@dataclass(frozen=True, slots=True)
class DumpRun:
    """A committed run: its record plus where its parts are (every path already confined)."""

    record: RunRecord
    run_dir: Path
    parts: tuple[dict[str, Any], ...]
    digest: str
    paths: tuple[Path, ...] = ()
    """The resolved file of each entry of `parts`, in the same order."""

    @property
    def key(self) -> RunKey:
        return self.record.key

    def part_paths(self, kind: SeriesKind) -> list[Path]:
        return [path for p, path in zip(self.parts, self.paths, strict=True) if p["kind"] == kind]


@dataclass(frozen=True, slots=True)
class RefusedRun:
    """A committed run folder that cannot be trusted: never imported, reported with one reason."""

    run_dir: Path
    key: RunKey | None
    """The key from `run.json` when it could be read (for run selection), else None."""
    problem: DumpProblem


def load_run_doc(run_dir: Path, layout: DumpLayout | None = None) -> dict[str, Any]:
    """Read and check one `run.json` (format version, shape); DumpFormatError names the file."""
    doc = _read_run_json(run_dir, layout)
    _check_run_version(doc)
    return doc


def _read_run_json(run_dir: Path, layout: DumpLayout | None) -> dict[str, Any]:
    path = DumpLayout.record_file(run_dir) if layout is None else layout.committed(run_dir)
    try:
        doc = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        msg = f"unreadable run record ({_one_line(exc)})"
        raise DumpFormatError(msg) from exc
    if not isinstance(doc, dict):
        msg = f"run record is {type(doc).__name__}, not a JSON object"
        raise DumpFormatError(msg)
    return doc


def _check_run_version(doc: dict[str, Any]) -> None:
    version = doc.get("format_version")
    if not isinstance(version, str) or not re.fullmatch(r"\d+\.\d+", version):
        msg = f"format_version {version!r} is not MAJOR.MINOR"
        raise DumpFormatError(msg)
    if version.split(".")[0] != FORMAT_VERSION.split(".")[0]:
        msg = (f"run format version {version} is not supported (this neptune-migrate reads "
               f"{FORMAT_VERSION.split('.')[0]}.x); the run is refused")
        raise DumpFormatError(msg)


def _one_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return (text[0] if text else type(exc).__name__)[:200]


def _doc_key(doc: object) -> RunKey | None:
    if not isinstance(doc, dict) or not isinstance(doc.get("key"), dict):
        return None
    project, run_id = doc["key"].get("project"), doc["key"].get("run_id")
    if isinstance(project, str) and isinstance(run_id, str):
        return RunKey(project, SourceRunId(run_id))
    return None


def _checked_parts(layout: DumpLayout, run_dir: Path, doc: dict[str, Any]) -> list[tuple[dict[str, Any], Path]]:
    """Every entry of `parts`, well-formed and confined to the run folder, with its resolved path."""
    parts = doc.get("parts", [])
    if not isinstance(parts, list):
        msg = "`parts` is not a list"
        raise DumpFormatError(msg)
    out = []
    for i, part in enumerate(parts):
        if not isinstance(part, dict):
            msg = f"parts[{i}] is not an object"
            raise DumpFormatError(msg)
        path = layout.part(run_dir, part.get("file"))
        if part.get("kind") not in SERIES_KINDS:
            msg = f"parts[{i}] ({part.get('file')}): unknown series kind {part.get('kind')!r}"
            raise DumpFormatError(msg)
        if not isinstance(part.get("rows"), int) or not isinstance(part.get("sha256"), str):
            msg = f"parts[{i}] ({part.get('file')}): `rows` or `sha256` is missing or of the wrong type"
            raise DumpFormatError(msg)
        out.append((part, path))
    return out


def _check_record_files(record: RunRecord) -> None:
    for fe in record.files:
        if fe.sha256 is not None:
            check_sha256(fe.sha256, what=f"files[{fe.attribute_path}].sha256")


def read_run(layout: DumpLayout, run_dir: Path) -> DumpRun | RefusedRun:
    """One committed run, or the one-line reason it is refused (nothing outside the dump is read)."""
    doc: dict[str, Any] | None = None
    what = "run.json"
    try:
        doc = _read_run_json(run_dir, layout)
        _check_run_version(doc)
        parts = _checked_parts(layout, run_dir, doc)
        record = record_from_json(doc)
        _check_record_files(record)
    except DumpFormatError as exc:
        key = _doc_key(doc)
        name = str(key) if key is not None else run_dir.name
        return RefusedRun(run_dir, key, DumpProblem(name, what, str(exc)))
    return DumpRun(
        record=record,
        run_dir=run_dir,
        parts=tuple(p for p, _ in parts),
        digest=str(doc.get("digest", "")),
        paths=tuple(path for _, path in parts),
    )


def check_run_dir(layout: DumpLayout, run_dir: Path, *, check_blobs: bool) -> list[DumpProblem]:
    """Every problem of one committed run: unreadable record, missing or altered parts and blobs."""
    from neptune_migrate.dump.writer import record_digest, sha256_file

    run = read_run(layout, run_dir)
    if isinstance(run, RefusedRun):
        return [run.problem]
    name = str(run.key)
    doc = load_run_doc(run_dir, layout)
    problems: list[DumpProblem] = []
    if doc.get("digest") != record_digest(doc):
        problems.append(DumpProblem(name, "run.json", "record digest does not match its content"))
    file_parts: list[tuple[str, Path]] = []
    for part, path in zip(run.parts, run.paths, strict=True):
        if not path.is_file():
            problems.append(DumpProblem(name, part["file"], "part file is missing"))
            continue
        try:
            actual = sha256_file(path)
        except OSError as exc:
            problems.append(DumpProblem(name, part["file"], f"unreadable part ({_one_line(exc)})"))
            continue
        if actual != part["sha256"]:
            problems.append(DumpProblem(name, part["file"], "sha256 does not match the record"))
            continue
        try:
            rows = pq.ParquetFile(path).metadata.num_rows
        except (OSError, pa.ArrowException) as exc:
            problems.append(DumpProblem(name, part["file"], f"unreadable Parquet ({_one_line(exc)})"))
            continue
        if rows != part["rows"]:
            problems.append(DumpProblem(name, part["file"], f"{rows} rows, record says {part['rows']}"))
            continue
        if part["kind"] == "file":
            file_parts.append((part["file"], path))
    refs: dict[str, str] = {fe.sha256: "run.json" for fe in run.record.files if fe.sha256}
    for file, path in file_parts:
        try:
            col = pq.read_table(path, columns=["sha256"]).column("sha256")
        except (OSError, pa.ArrowException, KeyError) as exc:
            problems.append(DumpProblem(name, file, f"unreadable sha256 column ({_one_line(exc)})"))
            continue
        for value in pc.unique(col).to_pylist():
            if value is None:
                continue
            try:
                check_sha256(value, what="sha256")
            except UnsafePathError as exc:
                problems.append(DumpProblem(name, file, str(exc)))
                continue
            refs.setdefault(value, file)
    for digest in refs:  # where every blob is, always; its content only with `check_blobs`
        where = f"files/sha256/{digest[:2]}/{digest}"
        try:
            blob = layout.blob(digest)
        except UnsafePathError as exc:
            problems.append(DumpProblem(name, where, str(exc)))
            continue
        if not check_blobs:
            continue
        if not blob.is_file():
            problems.append(DumpProblem(name, where, "blob is missing"))
            continue
        try:
            actual = sha256_file(blob)
        except OSError as exc:
            problems.append(DumpProblem(name, where, f"unreadable blob ({_one_line(exc)})"))
            continue
        if actual != digest:
            problems.append(DumpProblem(name, where, "blob content does not match its sha256"))
    return problems


class DumpReader:
    """Reads a dump. Refuses a format major version it does not know."""

    def __init__(self, root: Path) -> None:
        self.layout = DumpLayout(root)
        self.manifest: Manifest = read_manifest(self.layout)
        self._verified: dict[str, tuple[int, int, int]] = {}
        self._verified_lock = threading.Lock()

    @property
    def root(self) -> Path:
        return self.layout.root

    def run_dirs(self) -> list[Path]:
        """Committed run folders, in a stable order."""
        if not self.layout.runs_dir.is_dir():
            return []
        # A symlink is listed without looking where it points: `read_run` refuses it if it leaves.
        return sorted(
            d for d in self.layout.runs_dir.iterdir()
            if d.is_symlink() or (d.is_dir() and DumpLayout.record_file(d).exists())
        )

    def staged_leftovers(self) -> list[Path]:
        """Runs a crashed export left uncommitted (invisible to readers, redone by the next export)."""
        staging = self.layout.staging_dir
        if not staging.is_dir():
            return []
        out: list[Path] = []
        for d in staging.iterdir():
            if d.is_dir() and d.name.startswith("shard-"):  # one shard's writer stages in its own folder
                out.extend(e for e in d.iterdir() if e.is_dir() and e.name != "blobs")
            elif d.is_dir() and d.name != "blobs":
                out.append(d)
        return sorted(out)

    def open_run(self, run_dir: Path) -> DumpRun:
        """One run; a refused one raises DumpFormatError naming the run and the file."""
        run = read_run(self.layout, run_dir)
        if isinstance(run, RefusedRun):
            raise DumpFormatError(str(run.problem))
        return run

    def scan(self) -> Iterator[DumpRun | RefusedRun]:
        """Every committed run folder: a run to read, or a refused one with its reason.

        What import, verify and inspect iterate: one damaged or hostile run is reported and the
        others are read as usual.
        """
        for run_dir in self.run_dirs():
            yield read_run(self.layout, run_dir)

    def runs(self) -> Iterator[DumpRun]:
        """Every committed run (a refused one raises DumpFormatError naming it; see `scan`)."""
        for run_dir in self.run_dirs():
            yield self.open_run(run_dir)

    def get_run(self, key: RunKey) -> DumpRun | None:
        run_dir = self.layout.run_dir(key)
        if not DumpLayout.record_file(run_dir).is_file():
            return None
        return self.open_run(run_dir)

    def iter_points(
        self,
        run: DumpRun,
        kind: SeriesKind,
        *,
        paths: Sequence[str] | None = None,
        columns: Sequence[str] | None = None,
        batch_rows: int = 64 * 1024,
    ) -> Iterator[pa.Table]:
        """Stream a run's points of one kind in bounded batches, optionally only some paths/columns."""
        wanted = None if paths is None else pa.array(list(paths), pa.string())
        schema = SERIES_SCHEMAS[kind]
        if columns is not None:
            schema = pa.schema([schema.field(c) for c in columns])
        for part in run.part_paths(kind):
            # pre_buffer=False: otherwise pyarrow keeps every row group read so far until close.
            pf = pq.ParquetFile(part, pre_buffer=False)
            cols = None if columns is None else list(columns)
            for batch in pf.iter_batches(batch_size=batch_rows, columns=cols):
                table = pa.Table.from_batches([batch], schema=schema)
                if wanted is not None:
                    table = table.filter(pc.is_in(table.column("path"), value_set=wanted))
                if table.num_rows:
                    yield table

    def read_series(self, run: DumpRun, kind: SeriesKind, path: str) -> pa.Table:
        """All points of one series, sorted by step (for verify and small runs)."""
        tables = list(self.iter_points(run, kind, paths=[path]))
        if not tables:
            return SERIES_SCHEMAS[kind].empty_table()
        table = pa.concat_tables(tables)
        return table.take(pc.sort_indices(table, [("step", "ascending")]))

    def blob_path(self, sha256: str) -> Path:
        """Where a blob is (refused unless a hex sha256 inside `files/`); its content is unchecked."""
        return self.layout.blob(sha256)

    def verified_blob(self, sha256: str) -> Path:
        """A blob whose content has been hashed and matches its name, else DumpFormatError.

        Called right before a blob is handed to a destination, so the destination's read of the
        same bytes comes from the page cache. A blob is hashed once per reader (again only if its
        size, mtime or inode changed).
        """
        from neptune_migrate.dump.writer import sha256_file

        path = self.layout.blob(sha256)
        where = f"files/sha256/{sha256[:2]}/{sha256}"
        try:
            st = path.stat()
        except OSError as exc:
            msg = f"{where}: blob is missing ({type(exc).__name__})"
            raise DumpFormatError(msg) from exc
        stamp = (st.st_size, st.st_mtime_ns, st.st_ino)
        with self._verified_lock:
            if self._verified.get(sha256) == stamp:
                return path
        try:
            actual = sha256_file(path)
        except OSError as exc:
            msg = f"{where}: unreadable blob ({_one_line(exc)}); not uploaded"
            raise DumpFormatError(msg) from exc
        if actual != sha256:
            msg = f"{where}: blob content does not match its sha256; not uploaded"
            raise DumpFormatError(msg)
        with self._verified_lock:
            self._verified[sha256] = stamp
        return path

    def check(self, *, check_blobs: bool = True) -> list[DumpProblem]:
        """All problems of all runs; never stops at the first."""
        problems: list[DumpProblem] = []
        for run_dir in self.run_dirs():
            problems.extend(check_run_dir(self.layout, run_dir, check_blobs=check_blobs))
        return problems
