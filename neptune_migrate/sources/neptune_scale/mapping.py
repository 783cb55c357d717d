"""Pure functions and the replay state: decoded neptune-scale protobuf operations -> the neutral model.

Nothing here touches SQLite or the file system. `source.py` decodes the rows and feeds the messages
to `RunState`, which applies them as the Neptune 3.x server would have (see docs/sources/neptune-scale.md):

* configs (`assign`) overwrite; string sets are sets; tags and group tags are edited by `modify_sets`;
* the first value logged to a path fixes its type; later values of another type are dropped
  (`FIELD_TYPE_CONFLICTING`);
* a series point must have a step strictly greater than the last committed one (and than the fork
  step); an identical point is an idempotent duplicate (`SERIES_POINT_DUPLICATE`), any other is
  dropped (`SERIES_STEP_NON_INCREASING`, `SERIES_STEP_NOT_AFTER_FORK_POINT`);
* metric previews are dropped (and counted) unless asked for.

Series points stream out through a sink in bounded batches; only one small state entry per series
stays in memory.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from typing import Any

import pyarrow as pa

from neptune_migrate.dump.schema import TIMESTAMP
from neptune_migrate.model import (
    Field,
    FileEntry,
    ForkPoint,
    Loss,
    LossCategory,
    RunKey,
    SeriesKind,
    SourceRunId,
)

MICRO = 1_000_000
"""A neptune-scale step is `whole + micro / 1e6`: we keep it as an integer count of micro steps."""
EXACT_DIGITS = 15
"""A decimal with at most 15 significant digits survives the trip through float64 exactly."""
EPOCH = datetime(1970, 1, 1, tzinfo=timezone.utc)
BATCH_ROWS = 100_000
"""Points buffered per series kind before they go to the sink."""

HISTOGRAM_TYPES = {"counts": "COUNTING", "densities": "DENSITY"}
"""Our `type` column for the two `Histogram.values` variants (COUNTING is what neptune-query calls it)."""


# ---------------------------------------------------------------------------------------------
# Scalars


def step_micros(step: Any) -> int:
    """`Step{whole, micro}` as an exact integer count of micro steps (an empty `step {}` is 0)."""
    return int(step.whole) * MICRO + int(step.micro)


def micros_to_float(n: int) -> float:
    """The float64 nearest to the decimal `n / 1e6` (Python's int division is correctly rounded)."""
    return n / MICRO


def micros_exact(n: int) -> bool:
    """True when the decimal `n / 1e6` has at most 15 significant digits (float64 keeps it exactly)."""
    return n < 10**EXACT_DIGITS or len(str(n).rstrip("0")) <= EXACT_DIGITS


def micros_text(n: int) -> str:
    """The exact decimal text of a step, for reports."""
    whole, micro = divmod(n, MICRO)
    return f"{whole}.{micro:06d}".rstrip("0").rstrip(".")


def timestamp_us(ts: Any) -> int:
    """A protobuf `Timestamp` as microseconds since the epoch (nanoseconds truncated)."""
    return int(ts.seconds) * 1_000_000 + int(ts.nanos) // 1000


def timestamp_datetime(ts: Any) -> datetime:
    """A protobuf `Timestamp` as an aware UTC datetime, rounded to the microsecond.

    The client converts datetimes through a float, so `.123456` arrives as 123456001 ns: rounding
    (not truncating) gives the value the user logged back.
    """
    return EPOCH + timedelta(microseconds=int(ts.seconds) * 1_000_000 + (int(ts.nanos) + 500) // 1000)


def config_field(value: Any) -> Field | None:
    """A `Value` assigned as a config, as a typed field; None for file refs, histograms and empty values."""
    which = value.WhichOneof("value")
    if which == "float64":
        return Field("float", float(value.float64))
    if which == "int64":
        return Field("int", int(value.int64))
    if which == "bool":
        return Field("bool", bool(value.bool))
    if which == "string":
        return Field("string", str(value.string))
    if which == "timestamp":
        return Field("datetime", timestamp_datetime(value.timestamp))
    if which == "string_set":
        # The local proto keeps the caller's list (duplicates, order); the attribute is a set.
        return Field("string_set", frozenset(value.string_set.values))
    return None


def histogram_row(hist: Any) -> tuple[str | None, list[float], list[float]]:
    """`(type, edges, values)` of a `Histogram` (integer counts become floats)."""
    which = hist.WhichOneof("values")
    edges = [float(e) for e in hist.bin_edges]
    if which == "counts":
        return HISTOGRAM_TYPES["counts"], edges, [float(c) for c in hist.counts.values]
    if which == "densities":
        return HISTOGRAM_TYPES["densities"], edges, [float(d) for d in hist.densities.values]
    return None, edges, []


def apply_set_changes(current: set[str], modify: Any) -> None:
    """Apply a `ModifyStringSet` (`values[item] = ADD | REMOVE | NOOP`) to `current` in place."""
    for item, op in modify.values.items():
        if op == 1:  # ADD
            current.add(item)
        elif op == 2:  # REMOVE
            current.discard(item)


# ---------------------------------------------------------------------------------------------
# Files


@dataclass(frozen=True, slots=True)
class FileRef:
    """A `file_ref` of an operation: the object-store key the client chose, and what it recorded."""

    path: str
    size: int
    mime_type: str


@dataclass(frozen=True, slots=True)
class ResolvedFile:
    """A file ref after the source looked for its content (and stored it when found)."""

    name: str
    sha256: str | None
    size: int | None
    mime_type: str | None
    missing: str | None = None
    origin: str | None = None
    changed: str | None = None
    """Set when the content found differs from what the log recorded (e.g. another size)."""
    gone: bool = False
    """True when the log itself no longer says where the content is (the sync process uploaded it and
    deleted its row, or a v1 log never recorded it): not in the source, rather than lost by us."""


FileResolver = Callable[[FileRef], ResolvedFile]
PointSink = Callable[[SeriesKind, pa.Table], None]


# ---------------------------------------------------------------------------------------------
# Series buffers


_COLUMNS: dict[SeriesKind, tuple[str, ...]] = {
    "float": ("value", "preview_completion"),
    "string": ("value",),
    "histogram": ("type", "edges", "values"),
    "file": ("sha256", "size", "name", "mime_type", "missing"),
}


class _Buffer:
    """Columnar buffer of one series kind; flushed to the sink every `batch_rows` points."""

    def __init__(self, kind: SeriesKind, sink: PointSink, batch_rows: int) -> None:
        self.kind = kind
        self.sink = sink
        self.batch_rows = batch_rows
        self.path: list[str] = []
        self.step: list[float] = []
        self.ts: list[int | None] = []
        self.cols: dict[str, list[Any]] = {c: [] for c in _COLUMNS[kind]}

    def flush(self) -> None:
        if not self.path:
            return
        data: dict[str, Any] = {
            "path": pa.array(self.path, pa.string()),
            "step": pa.array(self.step, pa.float64()),
            "timestamp": pa.array(self.ts, TIMESTAMP),
            **self.cols,
        }
        table = pa.table(data)
        self.path, self.step, self.ts = [], [], []
        self.cols = {c: [] for c in _COLUMNS[self.kind]}
        self.sink(self.kind, table)


@dataclass
class _SeriesState:
    kind: SeriesKind
    last: int | None
    """Last committed step (micro steps); None before the first point."""
    last_value: Any = None


@dataclass
class _LossCounter:
    count: int = 0
    detail: str = ""
    category: LossCategory = LossCategory.CHANGED_FORM


# ---------------------------------------------------------------------------------------------
# The replay


@dataclass
class RunState:
    """Applies a run's operations in order; streams series to `sink`, keeps the rest for the record."""

    project: str
    sink: PointSink
    resolve_file: FileResolver
    include_previews: bool = False
    batch_rows: int = BATCH_ROWS

    fields: dict[str, Field] = field(default_factory=dict)
    file_refs: dict[str, FileRef] = field(default_factory=dict)
    tags: set[str] = field(default_factory=set)
    group_tags: set[str] = field(default_factory=set)
    tags_touched: bool = False
    group_tags_touched: bool = False
    created: bool = False
    created_at: datetime | None = None
    created_at_from: str | None = None
    experiment_name: str | None = None
    description: str | None = None
    fork: ForkPoint | None = None
    fork_micros: int | None = None
    operations: int = 0
    points: int = 0
    _series: dict[str, _SeriesState] = field(default_factory=dict)
    _buffers: dict[SeriesKind, _Buffer] = field(default_factory=dict)
    _losses: dict[tuple[str, str | None], _LossCounter] = field(default_factory=dict)
    _inexact_steps: int = 0

    # -- losses -----------------------------------------------------------------------------------
    def loss(self, kind: str, path: str | None, detail: str, *, category: LossCategory, count: int = 1) -> None:
        """Count one more dropped or changed item; the first detail of each (kind, path) is kept."""
        counter = self._losses.setdefault((kind, path), _LossCounter(detail=detail, category=category))
        counter.count += count

    def losses(self) -> list[Loss]:
        out = [Loss(kind, path, c.count, c.detail, c.category) for (kind, path), c in self._losses.items()]
        if self._inexact_steps:
            out.append(Loss(
                "step_precision", None, self._inexact_steps,
                "steps with more than 15 significant digits are stored as the nearest float64",
                category=LossCategory.CHANGED_FORM,
            ))
        return out

    def _step(self, n: int) -> float:
        if not micros_exact(n):
            self._inexact_steps += 1
        return micros_to_float(n)

    # -- CreateRun ----------------------------------------------------------------------------------
    def apply_create(self, run: Any, enqueued_ms: int | None = None) -> None:
        """A `Run` (CreateRun) message; when a run was resumed into a second log, the first one wins.

        Without `creation_time` the server used its own clock: the enqueue time of the operation
        (`run_operations.timestamp`) is the closest recorded value.
        """
        self.operations += 1
        if self.created:
            return
        self.created = True
        if run.HasField("creation_time"):
            self.created_at = timestamp_datetime(run.creation_time)
            self.created_at_from = "creation_time"
        elif enqueued_ms is not None:
            self.created_at = EPOCH + timedelta(milliseconds=enqueued_ms)
            self.created_at_from = "enqueue time of CreateRun"
        if run.HasField("experiment_id") and run.experiment_id:
            self.experiment_name = str(run.experiment_id)
        if run.HasField("fork_point") and run.fork_point.parent_run_id:
            fp = run.fork_point
            step: float | None = None
            if fp.HasField("step"):
                self.fork_micros = step_micros(fp.step)
                step = self._step(self.fork_micros)
            parent_project = str(fp.parent_project) or self.project
            self.fork = ForkPoint(RunKey(parent_project, SourceRunId(str(fp.parent_run_id))), step)

    # -- UpdateRunSnapshot -------------------------------------------------------------------------
    def apply_snapshot(self, snap: Any) -> None:
        """One `UpdateRunSnapshot`: assignments, set edits, then appended series points."""
        self.operations += 1
        for path, value in snap.assign.items():
            self._assign(path, value)
        for path, modify in snap.modify_sets.items():
            self._modify_set(path, modify)
        if snap.append:
            self._append(snap)

    def _assign(self, path: str, value: Any) -> None:
        if path in self._series:
            self.loss("type_conflict", path, f"a config value was logged to the {self._series[path].kind} "
                      "series; the server keeps the first type", category=LossCategory.CHANGED_FORM)
            return
        which = value.WhichOneof("value")
        if which == "file_ref":
            if path in self.fields:
                self._type_conflict(path, "file", self.fields[path].type)
                return
            ref = value.file_ref
            self.file_refs[path] = FileRef(str(ref.path), int(ref.size_bytes), str(ref.mime_type))
            return
        f = config_field(value)
        if f is None:
            self.loss("unsupported_value", path, f"an assigned {which or 'empty'} value is not a config type",
                      category=LossCategory.LOST)
            return
        if path in self.file_refs:
            self._type_conflict(path, f.type, "file")
            return
        old = self.fields.get(path)
        if old is not None and old.type != f.type:
            self._type_conflict(path, f.type, old.type)
            return
        # System attributes go to SystemInfo, not to the fields.
        if path == "sys/description" and f.type == "string":
            self.description = str(f.value)
        elif path == "sys/name" and f.type == "string":
            self.experiment_name = str(f.value)  # In Neptune 3.x `sys/name` is the experiment name.
        elif path in ("sys/tags", "sys/group_tags") and isinstance(f.value, frozenset):
            target = self.tags if path == "sys/tags" else self.group_tags
            target.clear()
            target.update(f.value)
            self.tags_touched = self.tags_touched or path == "sys/tags"
            self.group_tags_touched = self.group_tags_touched or path == "sys/group_tags"
        else:
            self.fields[path] = f

    def _type_conflict(self, path: str, new: str, old: str) -> None:
        self.loss("type_conflict", path, f"a {new} value was logged to a {old} attribute; the server "
                  "keeps the first type", category=LossCategory.CHANGED_FORM)

    def _modify_set(self, path: str, modify: Any) -> None:
        if modify.WhichOneof("type") != "string":
            self.loss("unsupported_value", path, "a set modification of an unknown type", category=LossCategory.LOST)
            return
        if path == "sys/tags":
            self.tags_touched = True
            apply_set_changes(self.tags, modify.string)
            return
        if path == "sys/group_tags":
            self.group_tags_touched = True
            apply_set_changes(self.group_tags, modify.string)
            return
        old = self.fields.get(path)
        if (old is not None and old.type != "string_set") or path in self.file_refs or path in self._series:
            self._type_conflict(path, "string_set", old.type if old is not None else "other")
            return
        items = set(old.value) if old is not None and isinstance(old.value, frozenset) else set()
        apply_set_changes(items, modify.string)
        self.fields[path] = Field("string_set", frozenset(items))

    def _append(self, snap: Any) -> None:
        if not snap.HasField("step"):
            for path in snap.append:
                self.loss("missing_step", path, "a series value was logged without a step", category=LossCategory.LOST)
            return
        n = step_micros(snap.step)
        step = self._step(n)
        ts = timestamp_us(snap.timestamp) if snap.HasField("timestamp") else None
        preview: float | None = None
        if snap.HasField("preview") and snap.preview.is_preview:
            preview = float(snap.preview.completion_ratio)  # a float32, widened exactly
        for path, value in snap.append.items():
            self._point(path, value, n, step, ts, preview)

    def _point(self, path: str, value: Any, n: int, step: float, ts: int | None, preview: float | None) -> None:
        which = value.WhichOneof("value")
        kind: SeriesKind
        v: Any
        if which == "float64":
            kind, v = "float", float(value.float64)
        elif which == "string":
            kind, v = "string", str(value.string)
        elif which == "histogram":
            kind, v = "histogram", histogram_row(value.histogram)
        elif which == "file_ref":
            ref = value.file_ref
            kind, v = "file", FileRef(str(ref.path), int(ref.size_bytes), str(ref.mime_type))
        else:
            self.loss("unsupported_value", path, f"a {which or 'empty'} value cannot be a series point",
                      category=LossCategory.LOST)
            return
        st = self._series.get(path)
        if st is None:
            if path in self.fields or path in self.file_refs:
                self._type_conflict(path, f"{kind} series", "config")
                return
            st = self._series[path] = _SeriesState(kind, None)
        elif st.kind != kind:
            self._type_conflict(path, f"{kind} series", f"{st.kind} series")
            return
        floor = st.last
        if floor is None and self.fork_micros is not None and n <= self.fork_micros:
                self.loss("non_increasing_step", path, f"step {micros_text(n)} is not after the fork step "
                          f"{micros_text(self.fork_micros)}; the server rejects it", category=LossCategory.CHANGED_FORM)
                return
        if preview is not None:
            if floor is not None and n <= floor:
                self.loss("non_increasing_step", path, f"preview at step {micros_text(n)} is not after the "
                          f"last committed step {micros_text(floor)}; the server rejects it",
                              category=LossCategory.CHANGED_FORM)
                return
            if not self.include_previews:
                self.loss("preview_excluded", path, "metric previews are excluded (use --include-previews)",
                          category=LossCategory.CHANGED_FORM)
                return
        elif floor is not None and n <= floor:
            if n == floor and _same(v, st.last_value):
                self.loss("duplicate_point", path, f"the same value was logged twice at step {micros_text(n)}",
                          category=LossCategory.CHANGED_FORM)
            else:
                self.loss("non_increasing_step", path, f"step {micros_text(n)} is not after step "
                          f"{micros_text(floor)}; the server keeps only strictly increasing steps",
                          category=LossCategory.CHANGED_FORM)
            return
        if preview is None:
            st.last, st.last_value = n, (v.path if isinstance(v, FileRef) else v)
        self._emit(kind, path, step, ts, v, preview)

    def _emit(self, kind: SeriesKind, path: str, step: float, ts: int | None, v: Any, preview: float | None) -> None:
        buf = self._buffers.get(kind)
        if buf is None:
            buf = self._buffers[kind] = _Buffer(kind, self.sink, self.batch_rows)
        buf.path.append(path)
        buf.step.append(step)
        buf.ts.append(ts)
        cols = buf.cols
        if kind == "float":
            cols["value"].append(v)
            cols["preview_completion"].append(preview)
        elif kind == "string":
            cols["value"].append(v)
        elif kind == "histogram":
            cols["type"].append(v[0])
            cols["edges"].append(v[1])
            cols["values"].append(v[2])
        else:
            resolved = self.resolve_file(v)
            if resolved.sha256 is None:
                self._missing(path, resolved)
            elif resolved.changed:
                self.loss("file_changed", path, resolved.changed, category=LossCategory.LOST)
            cols["sha256"].append(resolved.sha256)
            cols["size"].append(resolved.size)
            cols["name"].append(resolved.name)
            cols["mime_type"].append(resolved.mime_type)
            cols["missing"].append(resolved.missing)
        self.points += 1
        if len(buf.path) >= buf.batch_rows:
            buf.flush()

    # -- end ----------------------------------------------------------------------------------------
    def flush(self) -> None:
        """Send every buffered point to the sink."""
        for buf in self._buffers.values():
            buf.flush()

    def _missing(self, path: str, r: ResolvedFile) -> None:
        if r.gone:
            self.loss("file_not_in_log", path, r.missing or "file not recorded", category=LossCategory.NOT_IN_SOURCE)
        else:
            self.loss("missing_file", path, r.missing or "file not found", category=LossCategory.LOST)

    def file_entries(self) -> list[FileEntry]:
        """Resolve the final value of every file attribute (superseded assignments are not read)."""
        entries = []
        for path, ref in sorted(self.file_refs.items()):
            r = self.resolve_file(ref)
            if r.sha256 is None:
                self._missing(path, r)
            elif r.changed:
                self.loss("file_changed", path, r.changed, category=LossCategory.LOST)
            entries.append(FileEntry(
                attribute_path=path, kind="file", name=r.name, sha256=r.sha256, size=r.size,
                mime_type=r.mime_type, missing=r.missing, origin=r.origin,
            ))
        return entries

    def series_kinds(self) -> dict[str, SeriesKind]:
        """Every series path seen, with its kind (including those whose points were all dropped)."""
        return {path: st.kind for path, st in self._series.items()}


def _same(a: Any, b: Any) -> bool:
    if isinstance(a, FileRef):
        return bool(a.path == b)
    if isinstance(a, float) and isinstance(b, float) and a != a and b != b:  # both NaN
        return True
    return bool(a == b)
