"""DumpReader: lists committed runs and streams their series and files."""

from __future__ import annotations

import json
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from neptune_migrate.dump.layout import DumpLayout
from neptune_migrate.dump.manifest import Manifest, check_version, read_manifest
from neptune_migrate.dump.schema import SERIES_SCHEMAS, record_from_json
from neptune_migrate.errors import DumpFormatError
from neptune_migrate.model import RunKey, RunRecord, SeriesKind


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
    """A committed run: its record plus where its parts are."""

    record: RunRecord
    run_dir: Path
    parts: tuple[dict[str, Any], ...]
    digest: str

    @property
    def key(self) -> RunKey:
        return self.record.key

    def part_paths(self, kind: SeriesKind) -> list[Path]:
        return [self.run_dir / p["file"] for p in self.parts if p["kind"] == kind]


def load_run_doc(run_dir: Path) -> dict[str, Any]:
    path = DumpLayout.record_file(run_dir)
    try:
        doc = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        msg = f"{path}: unreadable run record ({exc})"
        raise DumpFormatError(msg) from exc
    if not isinstance(doc, dict):
        msg = f"{path}: run record is not a JSON object"
        raise DumpFormatError(msg)
    check_version(doc.get("format_version"), path)
    return doc


def check_run_dir(layout: DumpLayout, run_dir: Path, *, check_blobs: bool) -> list[DumpProblem]:
    """Every problem of one committed run: unreadable record, missing or altered parts and blobs."""
    from neptune_migrate.dump.writer import record_digest, sha256_file

    name = run_dir.name
    try:
        doc = load_run_doc(run_dir)
        record = record_from_json(doc)
    except DumpFormatError as exc:
        return [DumpProblem(name, "run.json", str(exc))]
    name = str(record.key)
    problems: list[DumpProblem] = []
    if doc.get("digest") != record_digest(doc):
        problems.append(DumpProblem(name, "run.json", "record digest does not match its content"))
    for part in doc.get("parts", []):
        path = run_dir / part["file"]
        if not path.is_file():
            problems.append(DumpProblem(name, part["file"], "part file is missing"))
            continue
        if sha256_file(path) != part["sha256"]:
            problems.append(DumpProblem(name, part["file"], "sha256 does not match the record"))
            continue
        try:
            rows = pq.ParquetFile(path).metadata.num_rows
        except (OSError, pa.ArrowException) as exc:
            problems.append(DumpProblem(name, part["file"], f"unreadable Parquet ({exc})"))
            continue
        if rows != part["rows"]:
            problems.append(DumpProblem(name, part["file"], f"{rows} rows, record says {part['rows']}"))
    if check_blobs:
        from neptune_migrate.dump.writer import sha256_file as _sha

        seen: set[str] = set()
        for digest in _blob_refs(run_dir, record, doc):
            if digest in seen:
                continue
            seen.add(digest)
            blob = layout.blob(digest)
            where = f"files/sha256/{digest[:2]}/{digest}"
            if not blob.is_file():
                problems.append(DumpProblem(name, where, "blob is missing"))
            elif _sha(blob) != digest:
                problems.append(DumpProblem(name, where, "blob content does not match its sha256"))
    return problems


def _blob_refs(run_dir: Path, record: RunRecord, doc: dict[str, Any]) -> Iterator[str]:
    for fe in record.files:
        if fe.sha256:
            yield fe.sha256
    for part in doc.get("parts", []):
        if part["kind"] != "file":
            continue
        path = run_dir / part["file"]
        if not path.is_file():
            continue
        try:
            col = pq.read_table(path, columns=["sha256"]).column("sha256")
        except (OSError, pa.ArrowException):
            continue
        for value in pc.unique(col).to_pylist():
            if value:
                yield value


class DumpReader:
    """Reads a dump. Refuses a format major version it does not know."""

    def __init__(self, root: Path) -> None:
        self.layout = DumpLayout(root)
        self.manifest: Manifest = read_manifest(self.layout)

    @property
    def root(self) -> Path:
        return self.layout.root

    def run_dirs(self) -> list[Path]:
        """Committed run folders, in a stable order."""
        if not self.layout.runs_dir.is_dir():
            return []
        return sorted(
            d for d in self.layout.runs_dir.iterdir()
            if d.is_dir() and DumpLayout.record_file(d).is_file()
        )

    def staged_leftovers(self) -> list[Path]:
        """Runs a crashed export left uncommitted (invisible to readers, redone by the next export)."""
        staging = self.layout.staging_dir
        if not staging.is_dir():
            return []
        return sorted(d for d in staging.iterdir() if d.is_dir() and d.name != "blobs")

    def open_run(self, run_dir: Path) -> DumpRun:
        doc = load_run_doc(run_dir)
        return DumpRun(
            record=record_from_json(doc),
            run_dir=run_dir,
            parts=tuple(doc.get("parts", [])),
            digest=str(doc.get("digest", "")),
        )

    def runs(self) -> Iterator[DumpRun]:
        """Every committed run (a malformed record raises DumpFormatError naming its file)."""
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
        return self.layout.blob(sha256)

    def check(self, *, check_blobs: bool = True) -> list[DumpProblem]:
        """All problems of all runs; never stops at the first."""
        problems: list[DumpProblem] = []
        for run_dir in self.run_dirs():
            problems.extend(check_run_dir(self.layout, run_dir, check_blobs=check_blobs))
        return problems
