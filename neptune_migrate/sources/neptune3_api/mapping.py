"""Pure functions: Neptune 3.x API answers (protobuf attribute DTOs, series points) -> the neutral model.

No network here. `source.py` asks the server; these functions turn its answers into fields, the
system info, series tables and the NQL that selects runs on the server.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from typing import Any

import pyarrow as pa

from neptune_migrate.dump.schema import TIMESTAMP
from neptune_migrate.model import Field, ForkPoint, RunKey, SeriesKind, SourceRunId, SystemInfo
from neptune_migrate.sources.base import RunSelection

EPOCH = datetime(1970, 1, 1, tzinfo=timezone.utc)

SERIES_TYPES: Mapping[str, SeriesKind] = {
    "floatSeries": "float",
    "stringSeries": "string",
    "histogramSeries": "histogram",
    "fileRefSeries": "file",
}
"""Backend series types -> our series kinds."""

SYSTEM_PATHS = frozenset({
    "sys/id", "sys/custom_run_id", "sys/name", "sys/description", "sys/owner", "sys/creation_time",
    "sys/modification_time", "sys/tags", "sys/group_tags", "sys/trashed", "sys/failed",
    "sys/forking/parent", "sys/forking/step",
})
"""`sys/*` attributes that become the run's system info (not fields)."""

SERVER_BOOKKEEPING = ("sys/diagnostics/", "sys/forking/", "sys/experiment/", "sys/size", "sys/ping_time",
                      "sys/running_time_seconds", "sys/relative_creation_time_ms", "sys/family",
                      "sys/archived")
"""Attributes the server computes for itself (counts, sizes, clocks): not the user's data, not copied
(an offline neptune-scale log does not hold them either)."""

LISTING_ATTRIBUTES = ("sys/id", "sys/custom_run_id", "sys/creation_time", "sys/modification_time")
"""What a listing page projects: enough to name each run and tell whether it changed since a dump."""

ESTIMATE_ATTRIBUTES = ("sys/id", "sys/diagnostics/attributes/total_count",
                       "sys/diagnostics/attributes/total_series_datapoints", "sys/size")
"""What `export --dry-run` projects: the server's own counts."""


def millis_datetime(ms: int) -> datetime:
    """Milliseconds since the epoch as an aware UTC datetime."""
    return EPOCH + timedelta(milliseconds=int(ms))


def attribute_value(attr: Any) -> tuple[str, Any]:
    """`(backend type, value)` of a `ProtoAttributeDTO`; series carry None (their points are fetched apart),
    a fileRef carries `(path, size, mime)`."""
    typ = str(attr.type)
    if typ == "float":
        return typ, float(attr.float_properties.value)
    if typ == "int":
        return typ, int(attr.int_properties.value)
    if typ == "string":
        return typ, str(attr.string_properties.value)
    if typ == "bool":
        return typ, bool(attr.bool_properties.value)
    if typ == "datetime":
        return typ, millis_datetime(attr.datetime_properties.value)
    if typ == "stringSet":
        return typ, frozenset(str(v) for v in attr.string_set_properties.value)
    if typ == "fileRef":
        p = attr.file_ref_properties
        return typ, (str(p.path), int(p.sizeBytes), str(p.mimeType))
    return typ, None


def to_field(typ: str, value: Any) -> Field | None:
    """A scalar attribute as a typed field; None for series, files and types we do not carry."""
    kinds = {"float": "float", "int": "int", "string": "string", "bool": "bool", "datetime": "datetime",
             "stringSet": "string_set"}
    kind = kinds.get(typ)
    if kind is None:
        return None
    return Field(kind, value)  # type: ignore[arg-type]


@dataclass
class RunAttributes:
    """A run's attributes split by what they become."""

    system: SystemInfo
    fields: dict[str, Field]
    series: list[tuple[str, SeriesKind]]
    files: list[tuple[str, str, int, str]]
    """`(attribute path, storage path, size, mime type)` of fileRef attributes."""
    fork: ForkPoint | None
    skipped: list[tuple[str, str]]
    """`(path, backend type)` of attributes of a type we do not carry."""
    sys_id: str | None


def split_attributes(project: str, values: Iterable[tuple[str, str, Any]]) -> RunAttributes:
    """Sort `(path, backend type, value)` triples into system info, fields, series and files."""
    sysv: dict[str, Any] = {}
    fields: dict[str, Field] = {}
    series: list[tuple[str, SeriesKind]] = []
    files: list[tuple[str, str, int, str]] = []
    skipped: list[tuple[str, str]] = []
    for path, typ, value in values:
        if path in SYSTEM_PATHS:
            sysv[path] = value
            continue
        if path.startswith(SERVER_BOOKKEEPING):
            continue
        if typ in SERIES_TYPES:
            series.append((path, SERIES_TYPES[typ]))
        elif typ == "fileRef":
            storage, size, mime = value
            files.append((path, storage, size, mime))
        else:
            f = to_field(typ, value)
            if f is None:
                skipped.append((path, typ))
            else:
                fields[path] = f
    fork = None
    parent = sysv.get("sys/forking/parent")
    if parent:
        step = sysv.get("sys/forking/step")
        fork = ForkPoint(RunKey(project, SourceRunId(str(parent))), None if step is None else float(step))
    system = SystemInfo(
        name=None,
        description=sysv.get("sys/description") or None,
        owner=sysv.get("sys/owner") or None,
        failed=sysv.get("sys/failed"),
        trashed=sysv.get("sys/trashed"),
        created_at=sysv.get("sys/creation_time"),
        modified_at=sysv.get("sys/modification_time"),
        custom_run_id=sysv.get("sys/custom_run_id") or None,
        experiment_name=sysv.get("sys/name") or None,
        tags=sysv.get("sys/tags", frozenset()),
        group_tags=sysv.get("sys/group_tags", frozenset()),
    )
    return RunAttributes(system, dict(sorted(fields.items())), sorted(series), sorted(files), fork,
                         skipped, sysv.get("sys/id"))


# ---------------------------------------------------------------------------------------------
# Series points -> Arrow


def float_table(path: str, points: Iterable[Any], *, include_previews: bool) -> pa.Table:
    """`ProtoFloatPointValueDTO`s of one series as a float table (previews kept only when asked)."""
    steps: list[float] = []
    ts: list[int] = []
    vals: list[float] = []
    prev: list[float | None] = []
    for p in points:
        if p.is_preview and not include_previews:
            continue
        steps.append(float(p.step))
        ts.append(int(p.timestamp_millis) * 1000)
        vals.append(float(p.value))
        prev.append(float(p.completion_ratio) if p.is_preview else None)
    return pa.table({
        "path": pa.array([path] * len(steps), pa.string()),
        "step": pa.array(steps, pa.float64()),
        "timestamp": pa.array(ts, pa.int64()).cast(TIMESTAMP),
        "value": pa.array(vals, pa.float64()),
        "preview_completion": pa.array(prev, pa.float64()),
    })


def object_table(path: str, kind: SeriesKind, points: Iterable[Any],
                 stored: Mapping[str, tuple[str | None, int | None, str | None]] | None = None) -> pa.Table:
    """`ProtoPointValueDTO`s of a string, histogram or file series as a table of `kind`.

    `stored` maps a file's storage path to `(sha256, size, missing)` once the source saved it.
    """
    steps: list[float] = []
    ts: list[int] = []
    cols: dict[str, list[Any]] = {}
    for p in points:
        steps.append(float(p.step))
        ts.append(int(p.timestamp_millis) * 1000)
        obj = p.object
        if kind == "string":
            cols.setdefault("value", []).append(str(obj.stringValue))
        elif kind == "histogram":
            cols.setdefault("type", []).append(str(obj.histogram.type) or None)
            cols.setdefault("edges", []).append([float(e) for e in obj.histogram.edges])
            cols.setdefault("values", []).append([float(v) for v in obj.histogram.values])
        else:
            ref = obj.fileRef
            sha, size, missing = (stored or {}).get(str(ref.path), (None, None, "not downloaded"))
            cols.setdefault("sha256", []).append(sha)
            cols.setdefault("size", []).append(size)
            cols.setdefault("name", []).append(leaf(str(ref.path)))
            cols.setdefault("mime_type", []).append(str(ref.mimeType) or None)
            cols.setdefault("missing", []).append(missing)
    data: dict[str, Any] = {
        "path": pa.array([path] * len(steps), pa.string()),
        "step": pa.array(steps, pa.float64()),
        "timestamp": pa.array(ts, pa.int64()).cast(TIMESTAMP),
    }
    types = {"edges": pa.list_(pa.float64()), "values": pa.list_(pa.float64()), "size": pa.int64()}
    for name, values in cols.items():
        data[name] = pa.array(values, types.get(name, pa.string()))
    return pa.table(data)


def leaf(storage_path: str) -> str:
    """The last component of an object-store key (the file's name in the dump)."""
    return storage_path.rstrip("/").rsplit("/", 1)[-1]


# ---------------------------------------------------------------------------------------------
# Run selection -> NQL (applied on the server, so a filtered export downloads nothing it drops)


def _quote(value: str) -> str:
    return json.dumps(value)


def _when(value: datetime) -> str:
    return _quote(value.astimezone(timezone.utc).isoformat().replace("+00:00", "Z"))


def selection_nql(selection: RunSelection) -> str | None:
    """The NQL query for what the server can filter (ids, regex, tags, creation and modification times)."""
    atoms: list[str] = []
    if selection.run_ids:
        ids = " OR ".join(f"(`sys/custom_run_id`:string == {_quote(i)})" for i in selection.run_ids)
        atoms.append(f"({ids})")
    if selection.run_regex:
        atoms.append(f"(`sys/custom_run_id`:string MATCHES {_quote(selection.run_regex)})")
    atoms.extend(f"((`sys/tags`:stringSet CONTAINS {_quote(tag)}) OR "
                 f"(`sys/group_tags`:stringSet CONTAINS {_quote(tag)}))" for tag in selection.tags)
    if selection.created_after is not None:
        atoms.append(f"(`sys/creation_time`:datetime >= {_when(selection.created_after)})")
    if selection.created_before is not None:
        atoms.append(f"(`sys/creation_time`:datetime < {_when(selection.created_before)})")
    if selection.modified_after is not None:
        atoms.append(f"(`sys/modification_time`:datetime >= {_when(selection.modified_after)})")
    return " AND ".join(atoms) or None


def created_from_nql(base: str | None, created_ms: int, op: str = ">=") -> str:
    """`base` narrowed to runs created at or after `created_ms` (keyset paging of the listing); `op`
    `>` (after it) or `==` (at it) instead."""
    atom = f"(`sys/creation_time`:datetime {op} {_when(millis_datetime(created_ms))})"
    return f"({base}) AND {atom}" if base else atom
