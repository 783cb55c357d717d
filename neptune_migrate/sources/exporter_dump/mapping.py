"""Pure functions: neptune-exporter rows -> the neutral model and our series tables.

The exporter writes one long table (14 fixed columns, one row per value or point). Nothing here reads
or writes files: `source.py` does the I/O and feeds Arrow tables through these functions.
"""

from __future__ import annotations

import hashlib
import json
import mimetypes
import re
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal
from typing import Literal, cast

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from neptune_migrate.dump.schema import TIMESTAMP
from neptune_migrate.model import (
    ContainerKind,
    Field,
    FieldType,
    FieldValue,
    ForkPoint,
    RunKey,
    SeriesKind,
    SourceRunId,
    SystemInfo,
)

Flavour = Literal["neptune2", "neptune3", "unknown"]

EXPORTER_SCHEMA = pa.schema([
    pa.field("project_id", pa.string()),
    pa.field("run_id", pa.string()),
    pa.field("attribute_path", pa.string()),
    pa.field("attribute_type", pa.string()),
    pa.field("step", pa.decimal128(18, 6)),
    pa.field("timestamp", pa.timestamp("ms", tz="UTC")),
    pa.field("int_value", pa.int64()),
    pa.field("float_value", pa.float64()),
    pa.field("string_value", pa.string()),
    pa.field("bool_value", pa.bool_()),
    pa.field("datetime_value", pa.timestamp("ms", tz="UTC")),
    pa.field("string_set_value", pa.list_(pa.string())),
    pa.field("file_value", pa.struct([pa.field("path", pa.string())])),
    pa.field("histogram_value", pa.struct([
        pa.field("type", pa.string()),
        pa.field("edges", pa.list_(pa.float64())),
        pa.field("values", pa.list_(pa.float64())),
    ])),
])
"""`neptune_exporter/model.py::SCHEMA`, unchanged since 2025-10-03."""

KEY_COLUMNS = ("project_id", "run_id", "attribute_path", "attribute_type")
"""Without these a Parquet file is not an exporter data file."""

VALUE_COLUMN: Mapping[str, str] = {
    "float": "float_value",
    "int": "int_value",
    "string": "string_value",
    "bool": "bool_value",
    "datetime": "datetime_value",
    "string_set": "string_set_value",
    "float_series": "float_value",
    "string_series": "string_value",
    "histogram_series": "histogram_value",
    "file": "file_value",
    "file_series": "file_value",
    "file_set": "file_value",
    "artifact": "file_value",
}
"""The column holding the value of each of the 13 attribute types the exporter emits."""

SCALAR_TYPES: frozenset[str] = frozenset({"float", "int", "string", "bool", "datetime", "string_set"})
SERIES_TYPES: Mapping[str, SeriesKind] = {
    "float_series": "float",
    "string_series": "string",
    "histogram_series": "histogram",
}
FILE_TYPES: frozenset[str] = frozenset({"file", "file_set", "artifact"})
FILE_SERIES_TYPE = "file_series"

IDENTITY_TYPES: Mapping[str, tuple[FieldType, ...]] = {
    "sys/custom_run_id": ("string",),
    "sys/id": ("string",),
    "sys/name": ("string",),
    "sys/creation_time": ("datetime",),
    "sys/modification_time": ("datetime",),
    "sys/owner": ("string",),
    "sys/description": ("string",),
    "sys/tags": ("string_set",),
    "sys/group_tags": ("string_set",),
    "sys/state": ("string",),
    "sys/failed": ("bool",),
    "sys/trashed": ("bool",),
    "sys/forking/parent": ("string",),
    "sys/forking/step": ("float", "int"),
}
"""`sys/*` attributes that become the run's identity (`SystemInfo`, `ForkPoint`), with the types
they must have; any other `sys/*` attribute (or one of these with another type) stays a field."""

SYSTEM_FIELDS = (
    "name", "description", "owner", "state", "failed", "trashed", "created_at", "modified_at",
    "custom_run_id", "experiment_name", "tags", "group_tags",
)

ENTITY_DIRS: Mapping[str, ContainerKind] = {"models": "model", "model_versions": "model_version"}
"""Model registry exports (`export-models`) keep models and versions in these sub-folders."""

# ---------------------------------------------------------------------------------------------
# File names written by the exporter

_PER_RUN_PART = re.compile(r"(?P<prefix>.+)_part_(?P<index>\d+)\.parquet(?P<tmp>\.tmp)?")
_PROJECT_PART = re.compile(r"part_(?P<index>\d+)\.parquet(?P<tmp>\.tmp)?")
_DIGEST_SUFFIX = re.compile(r"-[0-9a-f]{16}$")

Layout = Literal["multi_run", "per_run", "per_run_digest", "unrecognised"]
LAYOUT_NAMES: Mapping[Layout, str] = {
    "multi_run": "one multi-run part_<n>.parquet series per project (exporter before 2025-11-11)",
    "per_run": "per-run files without digest suffix (exporter before 2025-11-12)",
    "per_run_digest": "per-run files with digest suffix (exporter since 2025-11-12)",
    "unrecognised": "Parquet files with names the exporter never wrote",
}


@dataclass(frozen=True, slots=True)
class PartName:
    """What a data file's name says: layout, run prefix (per-run layouts), part index, `.tmp`."""

    layout: Layout
    prefix: str | None
    index: int | None
    tmp: bool


def parse_part_name(name: str) -> PartName:
    """Classify an exporter data file name (`<run>[-<digest>]_part_<n>.parquet[.tmp]`, `part_<n>...`)."""
    m = _PROJECT_PART.fullmatch(name)
    if m:
        return PartName("multi_run", None, int(m["index"]), bool(m["tmp"]))
    m = _PER_RUN_PART.fullmatch(name)
    if m:
        prefix = m["prefix"]
        layout: Layout = "per_run_digest" if _DIGEST_SUFFIX.search(prefix) else "per_run"
        return PartName(layout, prefix, int(m["index"]), bool(m["tmp"]))
    return PartName("unrecognised", None, None, name.endswith(".tmp"))


def sanitize(value: str, *, digest: bool = True) -> str:
    """The exporter's `sanitize_path_part`: unsafe characters -> `_`, then `-<blake2b-64 of value>`."""
    safe = re.sub(r"[^a-zA-Z0-9_-]", "_", value)
    if not digest:
        return safe
    return f"{safe}-{hashlib.blake2b(value.encode('utf-8'), digest_size=8).hexdigest()}"


# ---------------------------------------------------------------------------------------------
# Rows


def conform_rows(table: pa.Table) -> pa.Table:
    """`table` with exactly the 14 exporter columns, cast to their types; missing ones are null."""
    columns = []
    for f in EXPORTER_SCHEMA:
        if f.name in table.column_names:
            col = table.column(f.name)
            if f.name == "step":
                columns.append(col)  # converted by steps_to_float, whatever its numeric type
                continue
            columns.append(col if col.type == f.type else col.cast(f.type))
        else:
            columns.append(pa.nulls(table.num_rows, f.type))
    names = [f.name for f in EXPORTER_SCHEMA]
    return pa.Table.from_arrays(columns, names=names)


def has_value(table: pa.Table, attribute_type: str) -> pa.Array:
    """Boolean mask: the row's value column (for `attribute_type`) is not null."""
    column = VALUE_COLUMN[attribute_type]
    values = table.column(column)
    mask = pc.is_valid(values)
    if column == "file_value":
        mask = pc.and_(mask, pc.is_valid(pc.struct_field(values, "path")))
    return mask


@dataclass(frozen=True, slots=True)
class Steps:
    """Exporter steps converted to float64 (our dump's step type)."""

    values: pa.Array
    """float64; null where the exporter's step is null."""
    inexact: pa.Array
    """bool; True where float64 does not hold the exporter's decimal exactly."""


def _decimal_unscaled(arr: pa.Array) -> np.ndarray:
    """The unscaled int64 values of a decimal128 array with precision <= 18 (nulls are garbage)."""
    words: np.ndarray = np.frombuffer(arr.buffers()[1], dtype="<i8")
    return words[2 * arr.offset: 2 * (arr.offset + len(arr)): 2]


def steps_to_float(steps: pa.Array | pa.ChunkedArray) -> Steps:
    """Convert exporter steps (decimal128(18, 6)) to float64, exactly where possible (vectorised).

    Every decimal with scale `s` and magnitude below `2**52 / 10**s` is the nearest double of
    `unscaled / 10**s` (an exactly rounded division of two exact doubles), and the spacing of doubles
    there is finer than `10**-s`, so the decimal is recovered by its shortest repr. The rare larger
    steps go through `Decimal` one by one and are flagged when `repr(float)` differs from the decimal.
    """
    arr = steps.combine_chunks() if isinstance(steps, pa.ChunkedArray) else steps
    n = len(arr)
    valid = np.asarray(pc.is_valid(arr).to_numpy(zero_copy_only=False), dtype=bool)
    t = arr.type
    if pa.types.is_decimal(t) and isinstance(t, pa.Decimal128Type) and t.precision <= 18:
        scale = t.scale
        unscaled = _decimal_unscaled(arr)
        small = np.abs(unscaled) < 2 ** 52
        values = unscaled.astype(np.float64) / (10.0 ** scale)
        inexact = np.zeros(n, dtype=bool)
        for idx in np.nonzero(~small & valid)[0]:
            exact = Decimal(int(unscaled[idx])).scaleb(-scale)
            as_float = float(exact)
            values[idx] = as_float
            inexact[idx] = Decimal(repr(as_float)) != exact
    elif pa.types.is_decimal(t):
        values = np.zeros(n, dtype=np.float64)
        inexact = np.zeros(n, dtype=bool)
        for i, d in enumerate(arr.to_pylist()):
            if d is not None:
                as_float = float(d)
                values[i] = as_float
                inexact[i] = Decimal(repr(as_float)) != d
    else:
        floats = arr.cast(pa.float64())
        values = np.asarray(floats.fill_null(0.0).to_numpy(zero_copy_only=False), dtype=np.float64)
        inexact = np.zeros(n, dtype=bool)
        if pa.types.is_integer(t):
            ints = arr.cast(pa.int64()).fill_null(0).to_numpy(zero_copy_only=False)
            inexact = np.asarray(np.abs(ints) > 2 ** 53, dtype=bool)
    mask = ~valid
    return Steps(
        values=pa.array(values, type=pa.float64(), mask=mask),
        inexact=pa.array(inexact & valid, type=pa.bool_()),
    )


def timestamps_us(column: pa.Array | pa.ChunkedArray) -> pa.Array | pa.ChunkedArray:
    """Exporter timestamps (ms, UTC) as our `timestamp[us, UTC]` (exact)."""
    return column.cast(TIMESTAMP)


def series_table(rows: pa.Table, kind: SeriesKind, steps: pa.Array) -> pa.Table:
    """Rows of one series type (value and step present) as our series table of `kind`."""
    data: dict[str, pa.Array | pa.ChunkedArray] = {
        "path": rows.column("attribute_path"),
        "step": steps,
        "timestamp": timestamps_us(rows.column("timestamp")),
    }
    if kind == "float":
        data["value"] = rows.column("float_value")
    elif kind == "string":
        data["value"] = rows.column("string_value")
    elif kind == "histogram":
        hist = rows.column("histogram_value")
        data["type"] = pc.struct_field(hist, "type")
        data["edges"] = pc.struct_field(hist, "edges")
        data["values"] = pc.struct_field(hist, "values")
    else:
        msg = f"series_table does not build {kind!r} series"
        raise ValueError(msg)
    return pa.table(data)


def scalar_fields(rows: pa.Table) -> list[tuple[str, Field]]:
    """Scalar rows (types float/int/string/bool/datetime/string_set, value present) as fields."""
    out: list[tuple[str, Field]] = []
    paths = rows.column("attribute_path").to_pylist()
    types = rows.column("attribute_type").to_pylist()
    columns = {name: rows.column(name) for name in {VALUE_COLUMN[t] for t in set(types)}}
    py = {name: col.to_pylist() for name, col in columns.items()}
    for i, (path, type_) in enumerate(zip(paths, types, strict=True)):
        raw = py[VALUE_COLUMN[type_]][i]
        value: FieldValue
        if type_ == "string_set":
            value = frozenset(str(v) for v in raw if v is not None)
        elif type_ == "int":
            value = int(raw)
        elif type_ == "float":
            value = float(raw)
        elif type_ == "bool":
            value = bool(raw)
        elif type_ == "datetime":
            value = cast(datetime, raw)
        else:
            value = str(raw)
        out.append((path, Field(cast(FieldType, type_), value)))
    return out


# ---------------------------------------------------------------------------------------------
# Run identity


def detect_flavour(run_id: str, sys_id: str | None, custom_run_id: str | None) -> Flavour:
    """neptune3 keys runs by `sys/custom_run_id`, neptune2 by `sys/id`; the `run_id` column tells."""
    if custom_run_id is not None and custom_run_id == run_id and sys_id != run_id:
        return "neptune3"
    if sys_id is not None and sys_id == run_id:
        return "neptune2"
    if custom_run_id is not None and custom_run_id == run_id:
        return "neptune3"
    return "unknown"


def split_identity(fields: Mapping[str, Field]) -> tuple[dict[str, Field], dict[str, Field]]:
    """Separate the identity `sys/*` attributes (with their expected types) from ordinary fields."""
    identity: dict[str, Field] = {}
    other: dict[str, Field] = {}
    for path, f in fields.items():
        if f.type in IDENTITY_TYPES.get(path, ()):
            identity[path] = f
        else:
            other[path] = f
    return identity, other


@dataclass(frozen=True, slots=True)
class Identity:
    """A run's identity built from its `sys/*` rows."""

    system: SystemInfo
    fork: ForkPoint | None
    absent: tuple[str, ...]
    sys_id: str | None


def build_identity(identity: Mapping[str, Field], project: str, flavour: Flavour) -> Identity:
    """`SystemInfo` + `ForkPoint` from identity fields (see `split_identity`).

    `sys/name` is the run name in Neptune 2.x and the experiment name in Neptune 3.x.
    """

    def get(path: str) -> FieldValue | None:
        f = identity.get(path)
        return None if f is None else f.value

    def text(path: str) -> str | None:
        v = get(path)
        return None if v is None else str(v)

    def flag(path: str) -> bool | None:
        v = get(path)
        return None if v is None else bool(v)

    def when(path: str) -> datetime | None:
        v = get(path)
        return v if isinstance(v, datetime) else None

    def tags(path: str) -> frozenset[str]:
        v = get(path)
        return v if isinstance(v, frozenset) else frozenset()

    name = text("sys/name")
    system = SystemInfo(
        name=None if flavour == "neptune3" else name,
        experiment_name=name if flavour == "neptune3" else None,
        description=text("sys/description"),
        owner=text("sys/owner"),
        state=text("sys/state"),
        failed=flag("sys/failed"),
        trashed=flag("sys/trashed"),
        created_at=when("sys/creation_time"),
        modified_at=when("sys/modification_time"),
        custom_run_id=text("sys/custom_run_id"),
        tags=tags("sys/tags"),
        group_tags=tags("sys/group_tags"),
    )
    fork = None
    parent = text("sys/forking/parent")
    if parent is not None:
        step = get("sys/forking/step")
        fork = ForkPoint(
            parent=RunKey(project, SourceRunId(parent)),
            step=None if step is None else float(cast(float, step)),
        )
    absent = []
    for name_ in SYSTEM_FIELDS:
        if name_ == "tags":
            missing = "sys/tags" not in identity
        elif name_ == "group_tags":
            missing = "sys/group_tags" not in identity
        else:
            missing = getattr(system, name_) is None
        if missing:
            absent.append(name_)
    return Identity(system=system, fork=fork, absent=tuple(absent), sys_id=text("sys/id"))


# ---------------------------------------------------------------------------------------------
# Files

_MAGIC: tuple[tuple[bytes, str, str], ...] = (
    (b"\x89PNG\r\n\x1a\n", ".png", "image/png"),
    (b"\xff\xd8\xff", ".jpg", "image/jpeg"),
    (b"GIF87a", ".gif", "image/gif"),
    (b"GIF89a", ".gif", "image/gif"),
    (b"PK\x03\x04", ".zip", "application/zip"),
    (b"PK\x05\x06", ".zip", "application/zip"),
)
SNIFF_BYTES = 64 * 1024
"""How much of a file `sniff` looks at (JSON is recognised only when it fits)."""


def sniff(head: bytes, *, complete: bool) -> tuple[str, str]:
    """(extension, MIME type) of content by its first bytes: png, jpeg, gif, zip, json, text, else bin.

    `complete` says `head` is the whole file (JSON is only recognised then: it must parse).
    """
    for magic, ext, mime in _MAGIC:
        if head.startswith(magic):
            return ext, mime
    if b"\x00" not in head:
        try:
            text = head.decode("utf-8")
        except UnicodeDecodeError as exc:
            # A multi-byte character cut at the end of the head is still text.
            text = head[: exc.start].decode("utf-8") if not complete and exc.start >= len(head) - 3 else ""
            if not text and head:
                return ".bin", "application/octet-stream"
        stripped = text.lstrip()
        if complete and stripped[:1] in ("{", "["):
            try:
                json.loads(text)
            except ValueError:
                pass
            else:
                return ".json", "application/json"
        return ".txt", "text/plain"
    return ".bin", "application/octet-stream"


def has_extension(name: str) -> bool:
    """True for `a.png`, False for `weights` or `.hidden`."""
    stem, dot, ext = name.rpartition(".")
    return bool(dot and stem and ext)


def mime_from_name(name: str) -> str | None:
    """MIME type guessed from a file name's extension (None when unknown)."""
    return mimetypes.guess_type(name, strict=False)[0]


def is_indexed_file_series_name(name: str) -> bool:
    """neptune2 names file-series files `<index>.<ext>` (step = index); neptune3 `step_<step>.<ext>`."""
    return not name.startswith("step_")

