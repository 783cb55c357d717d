"""ExporterDumpSource: reads the Parquet + files dumps written by Neptune's official `neptune-exporter`.

Every historic layout is accepted (per-project multi-run `part_<n>.parquet`, per-run files with and
without the digest suffix, multi-part runs, the model registry's `models/` and `model_versions/`),
and both flavours (`neptune2`, `neptune3`). Rows are grouped by their `project_id` and `run_id`
columns, never by file names; names are only used to check that the exporter finished a run.

Memory: a scan reads four columns of each file once, in batches; a run is then read one file at a
time with a `(project_id, run_id)` filter (row groups of other runs are skipped by their statistics),
streamed one batch at a time (`iter_run_rows`), so peak memory does not grow with the file.
Only a run's scalar attributes are held in memory; series stream into the dump batch by batch.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import TYPE_CHECKING, ClassVar

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from neptune_migrate.dump.writer import RunWriter
from neptune_migrate.errors import SourceFormatError
from neptune_migrate.model import (
    ContainerKind,
    ErrorKind,
    Field,
    FileEntry,
    FileKind,
    Loss,
    LossCategory,
    Provenance,
    RunKey,
    RunRecord,
    SourceRunId,
)
from neptune_migrate.sources.base import Source, SourceOptions, fill_times, fingerprint_files
from neptune_migrate.sources.exporter_dump import errors
from neptune_migrate.sources.exporter_dump.errors import IncompleteRunError
from neptune_migrate.sources.exporter_dump.mapping import (
    ENTITY_DIRS,
    EXPORTER_SCHEMA,
    FILE_SERIES_TYPE,
    KEY_COLUMNS,
    LAYOUT_NAMES,
    SCALAR_TYPES,
    SERIES_TYPES,
    SNIFF_BYTES,
    VALUE_COLUMN,
    Flavour,
    Layout,
    build_identity,
    conform_rows,
    detect_flavour,
    has_extension,
    has_value,
    is_indexed_file_series_name,
    mime_from_name,
    parse_part_name,
    sanitize,
    scalar_fields,
    series_table,
    sniff,
    split_identity,
    steps_to_float,
    timestamps_us,
)

BATCH_ROWS = 64 * 1024
"""Rows read (and points handed to the dump) per batch."""

_ID_PATHS = pa.array(["sys/id", "sys/custom_run_id"], pa.string())
_SCOPE_DIRS: dict[ContainerKind, str] = {"model": "models", "model_version": "model_versions"}

_ARTIFACT_DETAIL = (
    "neptune-exporter saves only an artifact's files list (files_list.json: paths, hashes, sizes), "
    "never the artifact's content; the list is kept as the file"
)
_INDEX_STEP_DETAIL = (
    "neptune-exporter (neptune2) writes a file series' download index as its step, not the logged "
    "step, and no timestamps (exporter bug E4); kept as exported"
)
_NULL_POINT_DETAIL = (
    "points with a step but no value (the exporter writes NaN values as null); skipped, not invented"
)


class _NotExporterFileError(ValueError):
    pass


@dataclass
class _Part:
    """One readable data file holding rows of a run."""

    path: Path
    rel: str
    group: tuple[str, str | None]
    index: int


@dataclass
class _Group:
    """The files the exporter wrote for one run (per-run layouts) or one project (multi-run layout)."""

    layout: Layout
    parts: dict[int, str] = field(default_factory=dict)
    tmp: list[str] = field(default_factory=list)
    unreadable: list[str] = field(default_factory=list)
    keys: set[RunKey] = field(default_factory=set)


@dataclass
class _RunInfo:
    key: RunKey
    kind: ContainerKind
    project_dir: str
    parts: list[_Part] = field(default_factory=list)
    layouts: set[Layout] = field(default_factory=set)
    sys_id: str | None = None
    custom_run_id: str | None = None
    incomplete: list[str] = field(default_factory=list)
    shared_unreadable: list[str] = field(default_factory=list)
    duplicates: list[str] = field(default_factory=list)
    """One sentence per copy of this run's files found in another folder: which copy is read."""

    @property
    def flavour(self) -> Flavour:
        if self.kind != "run":
            return "neptune2"  # export-models exists for Neptune 2.x only
        return detect_flavour(self.key.run_id, self.sys_id, self.custom_run_id)


class ExporterDumpSource:
    """A neptune-exporter dump: `DATA_PATH` (its `--data-path`) plus its `--files-path`."""

    name: ClassVar[str] = "neptune-exporter"

    def __init__(self, options: SourceOptions) -> None:
        """Scan the dump (four columns of every data file); nothing is written anywhere."""
        self.options = options
        self.root = options.path
        self.files_root = self._find_files_root()
        self._warnings: list[str] = []
        self._runs: dict[RunKey, _RunInfo] = {}
        self._groups: dict[tuple[str, str | None], _Group] = {}
        self._unreadable = 0
        self._scan()

    # -- Source protocol ------------------------------------------------------------------------
    def describe(self) -> str:
        """Layouts and flavours detected, run counts, incomplete runs, the files folder."""
        kinds = Counter(info.kind for info in self._runs.values())
        counts = [f"{kinds['run']} runs"]
        if kinds["model"] or kinds["model_version"]:
            counts.append(f"{kinds['model']} models, {kinds['model_version']} model versions")
        projects = len({k.project for k in self._runs})
        layouts = sorted({g.layout for g in self._groups.values()})
        flavours = Counter(info.flavour for info in self._runs.values() if info.kind == "run")
        parts = [
            f"neptune-exporter dump: {', '.join(counts)} in {projects} project(s)",
            "layouts: " + ("; ".join(LAYOUT_NAMES[lay] for lay in layouts) or "none"),
            "flavours: " + (", ".join(f"{f} ({n})" for f, n in sorted(flavours.items())) or "none"),
        ]
        multi_part = sum(1 for info in self._runs.values() if len(info.parts) > 1)
        if multi_part:
            parts.append(f"{multi_part} run(s) span several files")
        incomplete = sum(1 for info in self._runs.values() if info.incomplete)
        if incomplete:
            parts.append(f"{incomplete} incomplete (interrupted export)")
        if self._unreadable:
            parts.append(f"{self._unreadable} unreadable file(s)")
        parts.append(f"files: {self.files_root}" if self.files_root else "files: no files folder found")
        return "; ".join(parts)

    def warnings(self) -> list[str]:
        """Unreadable or foreign Parquet files, leftovers no run can be matched to, duplicated runs."""
        return list(self._warnings)

    def list_runs(self) -> Iterator[RunKey]:
        """Runs, models and model versions, sorted by (project, run id)."""
        return iter(sorted(self._runs))

    def export_run(self, key: RunKey, out: RunWriter) -> RunRecord:
        """Stream one run's rows (from every file that holds some) into `out`."""
        info = self._runs.get(key)
        if info is None:
            msg = f"{key} is not in this neptune-exporter dump"
            raise SourceFormatError(msg)
        if info.incomplete and not self.options.include_incomplete:
            msg = (
                f"incomplete in the source: {'; '.join(info.incomplete)}. Re-run neptune-exporter for "
                "this run, or pass --include-incomplete to export what exists (flagged incomplete)"
            )
            raise IncompleteRunError(msg)
        run = _RunExport(self, info, out)
        for part in sorted(info.parts, key=lambda p: (p.group[0], p.group[1] or "", p.index, p.rel)):
            run.read_part(part)
        return run.record()

    def classify_error(self, error: Exception) -> ErrorKind:
        """Only file-system hiccups are transient."""
        return errors.classify_error(error)

    def fingerprint(self, key: RunKey) -> str:
        """File names and sizes of the run's data parts (relative to the data path), how many are incomplete."""
        info = self._runs.get(key)
        if info is None:
            msg = f"{key} is not in this neptune-exporter dump"
            raise SourceFormatError(msg)
        parts = sorted(info.parts, key=lambda p: p.rel)
        items: list[tuple[str, object]] = [(p.rel, p.path.stat().st_size) for p in parts]
        items.append(("incomplete", len(info.incomplete)))
        return fingerprint_files(items)

    # -- scanning -------------------------------------------------------------------------------
    def _find_files_root(self) -> Path | None:
        if self.options.files_path is not None:
            return self.options.files_path
        base = self.root if self.root.is_dir() else self.root.parent
        # `exports/` itself, `exports/data` (default layout), `exports/model_data`, a project folder.
        for candidate in (base / "files", base.parent / "files", base.parent / "model_files",
                          base.parent.parent / "files"):
            if candidate.is_dir():
                return candidate
        return None

    def _rel(self, path: Path) -> str:
        if self.root.is_file():
            return path.name
        return path.relative_to(self.root).as_posix()

    def _candidates(self) -> list[Path]:
        if self.root.is_file():
            return [self.root]
        files_root = self.files_root.resolve() if self.files_root is not None else None
        found = []
        for path in self.root.rglob("*"):
            if not (path.name.endswith(".parquet") or path.name.endswith(".parquet.tmp")):
                continue
            if any(part.startswith(".") for part in path.relative_to(self.root).parts):
                continue
            if files_root is not None and path.resolve().is_relative_to(files_root):
                continue  # a user's own .parquet logged as a Neptune file, not exporter data
            if path.is_file():
                found.append(path)
        return sorted(found)

    def _scan(self) -> None:
        candidates = self._candidates()
        if not candidates:
            msg = f"{self.root}: no neptune-exporter data files (*.parquet) found"
            raise SourceFormatError(msg)
        for path in candidates:
            self._scan_file(path)
        self._check_groups()
        for info in self._runs.values():
            _keep_one_copy(info)
            groups = {p.group for p in info.parts}
            if len(groups) > 1:
                names = ", ".join(sorted(f"{d}/{p or 'part_*'}" for d, p in groups))
                self._warnings.append(
                    f"{info.key}: rows come from several exports ({names}); all are read, "
                    "so points may be duplicated"
                )

    def _scan_file(self, path: Path) -> None:
        rel = self._rel(path)
        name = parse_part_name(path.name)
        parent = path.parent
        kind: ContainerKind = ENTITY_DIRS.get(parent.name, "run")
        project_dir = parent.parent.name if kind != "run" else parent.name
        parent_rel = self._rel(parent) if parent != self.root and not self.root.is_file() else "."
        if name.layout == "unrecognised":
            group_key: tuple[str, str | None] = (rel, None)
        else:
            group_key = (parent_rel, name.prefix)
        group = self._groups.setdefault(group_key, _Group(name.layout))
        if name.tmp:
            group.tmp.append(rel)
            return
        if name.index is not None:
            group.parts[name.index] = rel
        try:
            keys, ids = _probe(path)
        except _NotExporterFileError as exc:
            self._warnings.append(f"{rel}: not a neptune-exporter data file ({exc}); skipped")
            group.unreadable.append(rel)
            self._unreadable += 1
            return
        except (OSError, pa.ArrowException) as exc:
            first_line = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
            self._warnings.append(f"{rel}: unreadable Parquet file, skipped ({first_line})")
            group.unreadable.append(rel)
            self._unreadable += 1
            return
        for project, run_id, null_rows in keys:
            if project is None or run_id is None:
                self._warnings.append(f"{rel}: {null_rows} row(s) without project_id or run_id skipped")
                continue
            key = RunKey(project, SourceRunId(run_id))
            info = self._runs.get(key)
            if info is None:
                info = self._runs[key] = _RunInfo(key, kind, project_dir)
            elif info.kind != kind:
                self._warnings.append(
                    f"{rel}: {key} is already a {info.kind} in another file; rows of this {kind} skipped"
                )
                continue
            info.parts.append(_Part(path, rel, group_key, name.index or 0))
            info.layouts.add(name.layout)
            info.sys_id = ids.get((project, run_id, "sys/id"), info.sys_id)
            info.custom_run_id = ids.get((project, run_id, "sys/custom_run_id"), info.custom_run_id)
            group.keys.add(key)

    def _check_groups(self) -> None:
        """A run is complete only when its `part_0` exists, parts are contiguous and no `.tmp` is left."""
        for (directory, prefix), group in sorted(self._groups.items()):
            if group.layout == "unrecognised":
                continue
            reasons = []
            if group.tmp:
                reasons.append(f"leftover {', '.join(sorted(group.tmp))} of an interrupted export")
            indices = set(group.parts)
            if indices or group.tmp:
                if 0 not in indices:
                    reasons.append("no part_0.parquet (the exporter renames part_0 last, when a run is done)")
                gaps = [i for i in range(1, max(indices, default=0)) if i not in indices]
                if gaps:
                    reasons.append("missing " + ", ".join(f"part_{i}" for i in gaps))
            if group.unreadable and group.layout != "multi_run":
                reasons.append(f"unreadable {', '.join(sorted(group.unreadable))}")
            if not group.keys:
                if group.tmp:  # unreadable files were already named when the scan met them
                    label = f"{directory}/{prefix}" if prefix else directory
                    self._warnings.append(
                        f"{', '.join(sorted(group.tmp))}: leftover of an interrupted export; no run could "
                        f"be identified for {label} (no readable part), nothing exported from it"
                    )
                continue
            for key in group.keys:
                info = self._runs[key]
                info.incomplete.extend(reasons)
                if group.layout == "multi_run":
                    info.shared_unreadable.extend(group.unreadable)

    # -- files ----------------------------------------------------------------------------------
    def file_roots(self, info: _RunInfo) -> list[Path]:
        """Folders that `file_value.path` may be relative to, most likely first (existing only)."""
        if self.files_root is None:
            return []
        project = info.key.project
        names = [info.project_dir, sanitize(project), sanitize(project, digest=False), project]
        scope = _SCOPE_DIRS.get(info.kind)
        roots: list[Path] = []
        for name in names:
            base = self.files_root / name
            roots.append(base / scope if scope else base)
        roots.append(self.files_root)
        unique: list[Path] = []
        for root in roots:
            if root not in unique and root.is_dir():
                unique.append(root)
        return unique


def _probe(path: Path) -> tuple[list[tuple[str | None, str | None, int]], dict[tuple[str, str, str], str]]:
    """Distinct (project_id, run_id, rows) in a data file, and its `sys/id` / `sys/custom_run_id` values."""
    pf = pq.ParquetFile(path, pre_buffer=False)
    names = set(pf.schema_arrow.names)
    missing = [c for c in KEY_COLUMNS if c not in names]
    if missing:
        msg = f"no {', '.join(missing)} column"
        raise _NotExporterFileError(msg)
    columns = ["project_id", "run_id", "attribute_path"]
    if "string_value" in names:
        columns.append("string_value")
    counts: Counter[tuple[str | None, str | None]] = Counter()
    ids: dict[tuple[str, str, str], str] = {}
    for batch in pf.iter_batches(batch_size=BATCH_ROWS, columns=columns):
        table = pa.Table.from_batches([batch])
        grouped = table.group_by(["project_id", "run_id"]).aggregate([([], "count_all")])
        for project, run_id, n in zip(grouped.column("project_id").to_pylist(),
                                      grouped.column("run_id").to_pylist(),
                                      grouped.column("count_all").to_pylist(), strict=True):
            counts[(project, run_id)] += n
        if "string_value" in names:
            sub = table.filter(pc.is_in(table.column("attribute_path"), value_set=_ID_PATHS))
            for project, run_id, attr, value in zip(*(sub.column(c).to_pylist() for c in columns), strict=True):
                if value is not None and project is not None and run_id is not None:
                    ids[(project, run_id, attr)] = value
    return [(p, r, n) for (p, r), n in counts.items()], ids


def iter_run_rows(path: Path, key: RunKey, *, batch_rows: int = BATCH_ROWS) -> Iterator[pa.Table]:
    """One run's rows of a data file, streamed in batches of at most `batch_rows` rows.

    A plain `ParquetFile(pre_buffer=False).iter_batches` over the row groups whose statistics may
    hold the run: memory stays at about one row group whatever the file size (a dataset scanner
    decodes row groups ahead and held 700 MB for a 5M-point file).
    """
    pf = pq.ParquetFile(path, pre_buffer=False)
    names = pf.schema_arrow.names
    columns = [c for c in EXPORTER_SCHEMA.names if c in names]
    leaves = {pf.metadata.schema.column(i).path: i for i in range(pf.metadata.num_columns)}
    groups = [i for i in range(pf.metadata.num_row_groups) if _may_hold(pf.metadata.row_group(i), leaves, key)]
    if not groups:
        return
    for batch in pf.iter_batches(batch_size=batch_rows, columns=columns, row_groups=groups):
        table = pa.Table.from_batches([batch])
        mask = pc.and_(_equals(table.column("project_id"), key.project),
                       _equals(table.column("run_id"), key.run_id))
        table = table.filter(mask)
        if table.num_rows:
            yield table


def _equals(column: pa.ChunkedArray, value: str) -> pa.ChunkedArray:
    if pa.types.is_dictionary(column.type):
        column = column.cast(column.type.value_type)
    return pc.fill_null(pc.equal(column, pa.scalar(value, column.type)), False)


def _may_hold(group: pq.RowGroupMetaData, leaves: dict[str, int], key: RunKey) -> bool:
    """False only when the row group's min/max statistics exclude the run's project or id."""
    for name, value in (("project_id", key.project), ("run_id", key.run_id)):
        index = leaves.get(name)
        stats = None if index is None else group.column(index).statistics
        if stats is None or not stats.has_min_max:
            continue
        lo, hi = stats.min, stats.max
        if isinstance(lo, bytes) or isinstance(hi, bytes):
            continue  # binary statistics of an odd writer: read the group
        if value < lo or value > hi:
            return False
    return True


@dataclass
class _LossTally:
    count: int
    detail: str
    category: LossCategory


class _RunExport:
    """Accumulates one run: fields in memory, series and files straight into the dump."""

    def __init__(self, source: ExporterDumpSource, info: _RunInfo, out: RunWriter) -> None:
        self.source = source
        self.info = info
        self.out = out
        self.key = info.key
        self.roots = source.file_roots(info)
        self.fields: dict[str, Field] = {}
        self.files: list[FileEntry] = []
        self.losses: dict[tuple[str, str | None], _LossTally] = {}
        self.null_rows = 0
        self.read: list[str] = []

    # -- reading --------------------------------------------------------------------------------
    def read_part(self, part: _Part) -> None:
        self.read.append(part.rel)
        for rows in iter_run_rows(part.path, self.key):
            self.add_rows(conform_rows(rows))

    def add_rows(self, rows: pa.Table) -> None:
        types = rows.column("attribute_type")
        for type_ in pc.unique(types).to_pylist():
            sub = rows.filter(pc.is_null(types) if type_ is None else pc.equal(types, type_))
            if type_ not in VALUE_COLUMN:
                for path, n in _count_paths(sub).items():
                    self.loss("unsupported_attribute_type", path, n,
                              f"attribute type {type_!r} is not one neptune-exporter documents",
                                  category=LossCategory.LOST)
                continue
            present = has_value(sub, type_)
            nulls = sub.num_rows - pc.sum(present.cast(pa.int64())).as_py()
            if nulls:
                if type_ in SERIES_TYPES or type_ == FILE_SERIES_TYPE:
                    for path, n in _count_paths(sub.filter(pc.invert(present))).items():
                        self.loss("null_point_skipped", path, n, _NULL_POINT_DETAIL, category=LossCategory.CHANGED_FORM)
                else:
                    self.null_rows += nulls
                sub = sub.filter(present)
            if not sub.num_rows:
                continue
            if type_ in SCALAR_TYPES:
                for path, value in scalar_fields(sub):
                    self.add_field(path, value)
            elif type_ in SERIES_TYPES:
                rows_, steps = self.steps(sub)
                if rows_.num_rows:
                    kind = SERIES_TYPES[type_]
                    self.out.add_points(kind, series_table(rows_, kind, steps))
            elif type_ == FILE_SERIES_TYPE:
                self.add_file_series(sub)
            else:
                self.add_files(type_, sub)

    def steps(self, rows: pa.Table) -> tuple[pa.Table, pa.Array]:
        """Rows with a usable step, and their steps as float64; imprecise or null steps are losses."""
        steps = steps_to_float(rows.column("step"))
        inexact = rows.filter(steps.inexact)
        for path, n in _count_paths(inexact).items():
            example = inexact.filter(pc.equal(inexact.column("attribute_path"), path)).column("step")[0].as_py()
            self.loss("step_precision", path, n,
                      f"steps with more significant digits than float64 holds (e.g. {example} -> "
                      f"{float(example)!r}); stored rounded", category=LossCategory.CHANGED_FORM)
        valid = pc.is_valid(steps.values)
        if pc.all(valid).as_py():
            return rows, steps.values
        for path, n in _count_paths(rows.filter(pc.invert(valid))).items():
            self.loss("null_step", path, n, "series points without a step; not stored", category=LossCategory.LOST)
        return rows.filter(valid), steps.values.filter(valid)

    def add_field(self, path: str, value: Field) -> None:
        old = self.fields.get(path)
        if old is None:
            self.fields[path] = value
        elif not old.same_as(value):
            self.loss("conflicting_values", path, 1,
                      f"the dump holds several values; kept the first ({old.value!r}), dropped "
                      f"{value.value!r}", category=LossCategory.LOST)

    # -- files ----------------------------------------------------------------------------------
    def add_files(self, type_: str, rows: pa.Table) -> None:
        kind: FileKind = "artifact" if type_ == "artifact" else "file_set" if type_ == "file_set" else "file"
        attrs = rows.column("attribute_path").to_pylist()
        rels = pc.struct_field(rows.column("file_value"), "path").to_pylist()
        for attr, rel in zip(attrs, rels, strict=True):
            if kind == "artifact":
                self.loss("artifact_content_not_exported", attr, 1, _ARTIFACT_DETAIL,
                          category=LossCategory.CHANGED_FORM)
            found, why = self.resolve(rel)
            if found is None:
                self.missing(attr, why)
                self.files.append(FileEntry(attr, kind, PurePosixPath(rel).name, None, None, None, why, rel))
                continue
            members = [found] if found.is_file() else sorted(p for p in found.rglob("*") if p.is_file())
            if not members:
                why = f"empty folder: {rel}"
                self.missing(attr, why)
                self.files.append(FileEntry(attr, kind, PurePosixPath(rel).name, None, None, None, why, rel))
                continue
            for member in members:
                inner = member.relative_to(found).as_posix() if member != found else ""
                name = inner or member.name
                sha, size = self.out.store_file(member)
                name, mime = _name_and_mime(member, name)
                origin = f"{rel}/{inner}" if inner else rel
                self.files.append(FileEntry(attr, kind, name, sha, size, mime, None, origin))

    def add_file_series(self, rows: pa.Table) -> None:
        rows, steps = self.steps(rows)
        attrs = rows.column("attribute_path").to_pylist()
        rels = pc.struct_field(rows.column("file_value"), "path").to_pylist()
        sha256: list[str | None] = []
        sizes: list[int | None] = []
        names: list[str] = []
        mimes: list[str | None] = []
        missing: list[str | None] = []
        indexed: Counter[str] = Counter()
        for attr, rel in zip(attrs, rels, strict=True):
            base = PurePosixPath(rel).name
            if is_indexed_file_series_name(base):
                indexed[attr] += 1
            found, why = self.resolve(rel)
            if found is None or not found.is_file():
                why = why or f"not a file: {rel}"
                self.missing(attr, why)
                sha256.append(None)
                sizes.append(None)
                names.append(base)
                mimes.append(None)
                missing.append(why)
                continue
            sha, size = self.out.store_file(found)
            name, mime = _name_and_mime(found, base)
            sha256.append(sha)
            sizes.append(size)
            names.append(name)
            mimes.append(mime)
            missing.append(None)
        for attr, n in indexed.items():
            self.loss("file_series_step_is_index", attr, n, _INDEX_STEP_DETAIL, category=LossCategory.CHANGED_FORM)
        self.out.add_points("file", pa.table({
            "path": rows.column("attribute_path"),
            "step": steps,
            "timestamp": timestamps_us(rows.column("timestamp")),
            "sha256": pa.array(sha256, pa.string()),
            "size": pa.array(sizes, pa.int64()),
            "name": pa.array(names, pa.string()),
            "mime_type": pa.array(mimes, pa.string()),
            "missing": pa.array(missing, pa.string()),
        }))

    def resolve(self, rel: str) -> tuple[Path | None, str]:
        """The file `file_value.path` names, searched under the files folder; or why it is missing."""
        variants = [rel] + ([rel.replace("\\", "/")] if "\\" in rel else [])
        for variant in variants:
            parts = PurePosixPath(variant)
            if parts.is_absolute() or ".." in parts.parts:
                return None, f"unsafe path {rel!r} (absolute or leaving the files folder)"
            for root in self.roots:
                candidate = root.joinpath(*parts.parts)
                if candidate.exists():
                    return candidate, ""
        if self.source.files_root is None:
            return None, f"no files folder (pass --files-path): {rel}"
        if not self.roots:
            return None, f"no folder for project {self.key.project} under {self.source.files_root}: {rel}"
        return None, f"not found under {self.roots[0]}: {rel}"

    def missing(self, attr: str, why: str) -> None:
        tally = self.losses.get(("missing_file", attr))
        if tally is None:
            self.losses[("missing_file", attr)] = _LossTally(1, why, LossCategory.LOST)
        else:
            tally.count += 1

    def loss(self, kind: str, path: str | None, count: int, detail: str, *, category: LossCategory) -> None:
        tally = self.losses.get((kind, path))
        if tally is None:
            self.losses[(kind, path)] = _LossTally(count, detail, category)
        else:
            tally.count += count

    # -- the record -----------------------------------------------------------------------------
    def record(self) -> RunRecord:
        identity_fields, fields = split_identity(self.fields)
        sys_id = identity_fields.get("sys/id")
        custom = identity_fields.get("sys/custom_run_id")
        info = self.info
        flavour: Flavour = "neptune2" if info.kind != "run" else detect_flavour(
            self.key.run_id,
            None if sys_id is None else str(sys_id.value),
            None if custom is None else str(custom.value),
        )
        identity = build_identity(identity_fields, self.key.project, flavour)
        if info.incomplete:
            self.loss("interrupted_export", None, len(info.incomplete), "; ".join(info.incomplete),
                      category=LossCategory.NOT_IN_SOURCE)
        if info.shared_unreadable:
            self.loss("unreadable_part", None, len(info.shared_unreadable),
                      f"{', '.join(sorted(info.shared_unreadable))} of this project's multi-run export "
                      "cannot be read and may have held rows of this run", category=LossCategory.LOST)
        for sentence in info.duplicates:
            self.loss("duplicate_copy", None, 1, sentence, category=LossCategory.CHANGED_FORM)
        details = {
            "flavour": flavour,
            "entity": info.kind,
            "layout": ", ".join(sorted(info.layouts)),
            "null_rows_skipped": str(self.null_rows),
        }
        if identity.sys_id is not None:
            details["sys/id"] = identity.sys_id
        if info.duplicates:
            details["duplicate_copies"] = "; ".join(info.duplicates)
        if self.source.files_root is not None:
            details["files_path"] = str(self.source.files_root)
        losses = tuple(
            Loss(kind, path, t.count, t.detail, t.category)
            for (kind, path), t in sorted(self.losses.items(), key=lambda item: (item[0][0], item[0][1] or ""))
        )
        record = RunRecord(
            key=self.key,
            kind=info.kind,
            system=identity.system,
            fork=identity.fork,
            fields=dict(sorted(fields.items())),
            files=tuple(self.files),
            complete=not info.incomplete,
            losses=losses,
            absent=identity.absent,
            provenance=Provenance(
                source=ExporterDumpSource.name,
                location=str(self.source.root.resolve()),
                files=tuple(self.read),
                details=details,
            ),
        )
        # Without sys/creation_time or sys/modification_time (some exporter versions drop them), the
        # run spans its points' timestamps; never the export time.
        return fill_times(record, [(self.out.first_point_at, self.out.last_point_at,
                                    "first point's timestamp", "last point")])


def _keep_one_copy(info: _RunInfo) -> None:
    """Files of the same run written under the same name prefix in several folders are copies of one
    export (e.g. `V4/data` and `V5/data`): only the copy with the most bytes is read, and the choice is
    recorded. Different prefixes (different exports) are left to the caller's warning."""
    by_prefix: dict[str, dict[str, list[_Part]]] = {}
    for part in info.parts:
        directory, prefix = part.group
        if prefix is None:
            return
        by_prefix.setdefault(prefix, {}).setdefault(directory, []).append(part)
    for prefix, copies in by_prefix.items():
        if len(copies) < 2:
            continue

        def size(parts: list[_Part]) -> tuple[int, int]:
            return sum(p.path.stat().st_size for p in parts), len(parts)

        ranked = sorted(copies.items(), key=lambda item: (size(item[1]), item[0]), reverse=True)
        kept_dir, kept_parts = ranked[0]
        for other_dir, other_parts in ranked[1:]:
            for part in other_parts:
                info.parts.remove(part)
            same = " (identical sizes)" if size(other_parts) == size(kept_parts) else ""
            info.duplicates.append(
                f"two copies of {prefix}*: read {kept_dir} ({size(kept_parts)[0]} bytes in "
                f"{len(kept_parts)} part(s)), ignored {other_dir} ({size(other_parts)[0]} bytes in "
                f"{len(other_parts)} part(s)){same}"
            )
        # incompleteness found in an ignored copy no longer applies
        info.incomplete = [r for r in info.incomplete
                           if not any(r.startswith(f"{d}/") or f" {d}/" in r for d, _ in ranked[1:])]


def _count_paths(rows: pa.Table) -> dict[str, int]:
    if not rows.num_rows:
        return {}
    counts = pc.value_counts(rows.column("attribute_path"))
    return {
        str(item["values"]): int(item["counts"])
        for item in counts.to_pylist()
    }


def _name_and_mime(path: Path, name: str) -> tuple[str, str | None]:
    """Keep a name with an extension (MIME from it); give one sniffed from the content otherwise."""
    if has_extension(PurePosixPath(name).name):
        return name, mime_from_name(name)
    with path.open("rb") as fh:
        head = fh.read(SNIFF_BYTES + 1)
    ext, mime = sniff(head[:SNIFF_BYTES], complete=len(head) <= SNIFF_BYTES)
    return name + ext, mime


if TYPE_CHECKING:
    _: type[Source] = ExporterDumpSource
