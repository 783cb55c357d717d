"""Pure mapping from the 2.x server's JSON (as the neptune 1.x client receives it) to the model."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Any

import pyarrow as pa

from neptune_migrate.dump.schema import TIMESTAMP
from neptune_migrate.model import Field, FieldType, FieldValue, SeriesKind, SystemInfo

SYSTEM_PATHS = {
    "sys/name": "name", "sys/description": "description", "sys/owner": "owner", "sys/state": "state",
    "sys/failed": "failed", "sys/trashed": "trashed", "sys/creation_time": "created_at",
    "sys/modification_time": "modified_at", "sys/custom_run_id": "custom_run_id",
}
"""`sys/*` attributes that belong in `SystemInfo`; every other `sys/*` stays an ordinary field."""
SYSTEM_FIELDS = ("name", "description", "owner", "state", "failed", "trashed", "created_at", "modified_at",
                 "custom_run_id")

SCALAR_TYPES: Mapping[str, FieldType] = {
    "float": "float", "int": "int", "bool": "bool", "string": "string", "datetime": "datetime",
    "stringSet": "string_set", "experimentState": "string",
}
"""Backend attribute type -> field type."""
SERIES_TYPES: Mapping[str, SeriesKind] = {"floatSeries": "float", "stringSeries": "string", "imageSeries": "file"}
"""Backend series type -> series kind (image series are file series)."""
SERIES_OPERATION = {"floatSeries": "getFloatSeriesValues", "stringSeries": "getStringSeriesValues",
                    "imageSeries": "getImageSeriesValues"}
IGNORED_TYPES = frozenset({"notebookRef", "gitRef"})
"""Types the 2.x server computes for its UI; nothing the user logged."""


def parse_time(text: str) -> datetime:
    """A 2.x ISO time (`2024-03-01T12:00:00.000Z`) as an aware UTC datetime."""
    when = datetime.fromisoformat(text.replace("Z", "+00:00"))
    return when.replace(tzinfo=timezone.utc) if when.tzinfo is None else when.astimezone(timezone.utc)


def nql_time(when: datetime) -> str:
    """A datetime as the 2.x server writes it (millisecond precision, `Z`)."""
    when = when.astimezone(timezone.utc)
    return when.strftime("%Y-%m-%dT%H:%M:%S.") + f"{when.microsecond // 1000:03d}Z"


def properties(attr: Mapping[str, Any]) -> Mapping[str, Any]:
    props = attr.get(f"{attr.get('type')}Properties")
    return props if isinstance(props, Mapping) else {}


def entry_value(entry: Mapping[str, Any], path: str) -> Any:
    """The value of attribute `path` in a leaderboard entry (None when absent)."""
    for attr in entry.get("attributes", ()):
        if attr.get("name") == path:
            props = properties(attr)
            return props.get("value", props.get("values"))
    return None


def field_of(typ: str, value: Any) -> Field | None:
    """A typed field from a scalar attribute's value (None when the server holds no value)."""
    kind = SCALAR_TYPES[typ]
    if value is None:
        return None
    converted: FieldValue
    if kind == "float":
        converted = float(value)
    elif kind == "int":
        converted = int(value)
    elif kind == "bool":
        converted = bool(value)
    elif kind == "datetime":
        converted = parse_time(str(value))
    elif kind == "string_set":
        converted = frozenset(str(v) for v in value)
    else:
        converted = str(value)
    return Field(kind, converted)


@dataclass
class Attributes:
    """A run's attributes split by what the export does with them."""

    system: SystemInfo
    fields: dict[str, Field]
    absent: tuple[str, ...]
    series: list[tuple[str, str]] = field(default_factory=list)
    """(path, backend series type)."""
    files: list[tuple[str, str, int | None]] = field(default_factory=list)
    """(path, file name with extension, size)."""
    file_sets: list[tuple[str, int | None]] = field(default_factory=list)
    unknown: list[tuple[str, str]] = field(default_factory=list)
    """(path, backend type) of attributes of a type this tool does not know."""


def split_attributes(attrs: Sequence[Mapping[str, Any]]) -> Attributes:
    """Split `getExperimentAttributes` into system info, fields, series, files and the unknown."""
    fields: dict[str, Field] = {}
    values: dict[str, Any] = {}
    tags: frozenset[str] = frozenset()
    group_tags: frozenset[str] = frozenset()
    out = Attributes(SystemInfo(), fields, ())
    for attr in attrs:
        path, typ = str(attr.get("name")), str(attr.get("type"))
        props = properties(attr)
        if typ in SCALAR_TYPES:
            f = field_of(typ, props.get("values" if typ == "stringSet" else "value"))
            if path == "sys/tags":
                tags = frozenset(f.value) if f is not None and isinstance(f.value, frozenset) else frozenset()
            elif path == "sys/group_tags":
                group_tags = frozenset(f.value) if f is not None and isinstance(f.value, frozenset) else frozenset()
            elif path in SYSTEM_PATHS:
                values[SYSTEM_PATHS[path]] = None if f is None else f.value
            elif f is not None:
                fields[path] = f
        elif typ in SERIES_TYPES:
            out.series.append((path, typ))
        elif typ == "file":
            ext = props.get("ext")
            name = str(props.get("name") or path.rsplit("/", 1)[-1]) + (f".{ext}" if ext else "")
            size = props.get("size")
            out.files.append((path, name, int(size) if size is not None else None))
        elif typ == "fileSet":
            size = props.get("size")
            out.file_sets.append((path, int(size) if size is not None else None))
        elif typ not in IGNORED_TYPES:
            out.unknown.append((path, typ))

    def text(name: str) -> str | None:
        v = values.get(name)
        return None if v is None else str(v)

    def flag(name: str) -> bool | None:
        v = values.get(name)
        return v if isinstance(v, bool) else None

    def when(name: str) -> datetime | None:
        v = values.get(name)
        return v if isinstance(v, datetime) else None

    out.system = SystemInfo(
        name=text("name"), description=text("description"), owner=text("owner"), state=text("state"),
        failed=flag("failed"), trashed=flag("trashed"), created_at=when("created_at"),
        modified_at=when("modified_at"), custom_run_id=text("custom_run_id"), tags=tags, group_tags=group_tags,
    )
    out.absent = tuple(n for n in SYSTEM_FIELDS if getattr(out.system, n) is None)
    return out


def _timestamps(millis: Sequence[int | None]) -> pa.Array:
    return pa.array([None if m is None else int(m) * 1000 for m in millis], pa.int64()).cast(TIMESTAMP)


def points_table(kind: SeriesKind, path: str, values: Sequence[Mapping[str, Any]]) -> pa.Table:
    """One page of `get<Float|String>SeriesValues` as a dump series table."""
    base = {
        "path": pa.array([path] * len(values), pa.string()),
        "step": pa.array([float(v["step"]) for v in values], pa.float64()),
        "timestamp": _timestamps([v.get("timestampMillis") for v in values]),
    }
    if kind == "float":
        return pa.table({**base, "value": pa.array([v.get("value") for v in values], pa.float64())})
    return pa.table({**base, "value": pa.array([v.get("value") for v in values], pa.string())})


def file_points_table(path: str, rows: Sequence[tuple[float, int | None, str, int, str]]) -> pa.Table:
    """Image-series points `(step, timestamp millis, sha256, size, name)` as a dump file-series table."""
    n = len(rows)
    return pa.table({
        "path": pa.array([path] * n, pa.string()),
        "step": pa.array([r[0] for r in rows], pa.float64()),
        "timestamp": _timestamps([r[1] for r in rows]),
        "sha256": pa.array([r[2] for r in rows], pa.string()),
        "size": pa.array([r[3] for r in rows], pa.int64()),
        "name": pa.array([r[4] for r in rows], pa.string()),
        "mime_type": pa.array(["image/png"] * n, pa.string()),
        "title": pa.array([None] * n, pa.string()),
        "description": pa.array([None] * n, pa.string()),
        "missing": pa.array([None] * n, pa.string()),
    })
