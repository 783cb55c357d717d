"""Arrow schemas of the series parts, the format version, and RunRecord <-> JSON."""

from __future__ import annotations

import math
from collections.abc import Mapping
from datetime import datetime, timezone
from typing import Any, Literal, cast

import pyarrow as pa

from neptune_migrate.errors import DumpFormatError
from neptune_migrate.model import (
    FIELD_TYPES,
    SERIES_KINDS,
    STAGES,
    ContainerKind,
    Field,
    FieldType,
    FieldValue,
    FileEntry,
    FileKind,
    ForkPoint,
    Loss,
    Provenance,
    RegistryInfo,
    RunKey,
    RunRecord,
    SeriesInfo,
    SeriesKind,
    SourceRunId,
    StageChange,
    SystemInfo,
)

FORMAT_NAME = "neptune-migrate-dump"
FORMAT_VERSION = "1.3"
"""`MAJOR.MINOR`: a reader refuses another major; a new minor only adds optional things."""

TIMESTAMP = pa.timestamp("us", tz="UTC")

_COMMON = [
    pa.field("path", pa.string(), nullable=False),
    pa.field("step", pa.float64(), nullable=False),
    pa.field("timestamp", TIMESTAMP),
]

SERIES_SCHEMAS: Mapping[SeriesKind, pa.Schema] = {
    "float": pa.schema([*_COMMON, pa.field("value", pa.float64()),
                        pa.field("preview_completion", pa.float64())]),
    "string": pa.schema([*_COMMON, pa.field("value", pa.string())]),
    "histogram": pa.schema([
        *_COMMON,
        pa.field("type", pa.string()),
        pa.field("edges", pa.list_(pa.float64())),
        pa.field("values", pa.list_(pa.float64())),
    ]),
    "file": pa.schema([
        *_COMMON,
        pa.field("sha256", pa.string()),
        pa.field("size", pa.int64()),
        pa.field("name", pa.string()),
        pa.field("mime_type", pa.string()),
        pa.field("title", pa.string()),
        pa.field("description", pa.string()),
        pa.field("missing", pa.string()),
    ]),
}
"""Long format, one row per point. `step` is exact for every step a Neptune source can hold
(doubles from neptune 1.x; decimals with at most 15 significant digits from neptune-scale and the
exporter; anything else is recorded as a loss). `preview_completion` is null for final points."""


def conform(kind: SeriesKind, table: pa.Table) -> pa.Table:
    """Return `table` with exactly the columns of `kind`'s schema; missing optional ones are null."""
    schema = SERIES_SCHEMAS[kind]
    columns = []
    for f in schema:
        if f.name in table.column_names:
            columns.append(table.column(f.name).cast(f.type))
        elif f.nullable:
            columns.append(pa.nulls(table.num_rows, f.type))
        else:
            msg = f"a {kind} series table has no {f.name!r} column"
            raise ValueError(msg)
    return pa.Table.from_arrays(columns, schema=schema)


# ---------------------------------------------------------------------------------------------
# JSON encoding of the run record. Non-finite floats are strings ("NaN", "Infinity",
# "-Infinity"), datetimes are ISO 8601 with offset, string sets are sorted lists.


def encode_float(value: float) -> float | str:
    """JSON has no NaN or infinity: write them as strings."""
    if math.isnan(value):
        return "NaN"
    if math.isinf(value):
        return "Infinity" if value > 0 else "-Infinity"
    return value


def decode_float(value: float | int | str) -> float:
    """Inverse of `encode_float`."""
    if isinstance(value, str):
        if value not in ("NaN", "Infinity", "-Infinity"):
            msg = f"not a float: {value!r}"
            raise DumpFormatError(msg)
        return float(value.replace("Infinity", "inf"))
    return float(value)


def _aware(value: datetime) -> datetime:
    """Datetimes are stored with an offset; a naive one is taken as UTC."""
    return value.replace(tzinfo=timezone.utc) if value.tzinfo is None else value


def _dt(value: datetime | None) -> str | None:
    return None if value is None else _aware(value).isoformat()


def _parse_dt(value: str | None) -> datetime | None:
    return None if value is None else datetime.fromisoformat(value)


def encode_field(f: Field) -> dict[str, Any]:
    """One typed scalar as `{"type": ..., "value": ...}`."""
    value: Any
    if f.type == "float":
        value = encode_float(float(cast(float, f.value)))
    elif f.type == "datetime":
        value = _aware(cast(datetime, f.value)).isoformat()
    elif f.type == "string_set":
        value = sorted(cast(frozenset[str], f.value))
    else:
        value = f.value
    return {"type": f.type, "value": value}


def decode_field(data: Mapping[str, Any]) -> Field:
    """Inverse of `encode_field`."""
    type_ = data["type"]
    if type_ not in FIELD_TYPES:
        msg = f"unknown field type {type_!r}"
        raise DumpFormatError(msg)
    raw = data["value"]
    value: FieldValue
    if type_ == "float":
        value = decode_float(raw)
    elif type_ == "int":
        value = int(raw)
    elif type_ == "bool":
        value = bool(raw)
    elif type_ == "string":
        value = str(raw)
    elif type_ == "datetime":
        value = datetime.fromisoformat(raw)
    else:
        value = frozenset(str(v) for v in raw)
    return Field(cast(FieldType, type_), value)


def _opt_float(value: float | None) -> float | str | None:
    return None if value is None else encode_float(value)


def _opt_decode_float(value: float | str | None) -> float | None:
    return None if value is None else decode_float(value)


def record_to_json(record: RunRecord) -> dict[str, Any]:
    """The `run.json` document of one run (schema in docs/schemas/run.schema.json)."""
    s = record.system
    return {
        "key": {"project": record.key.project, "run_id": record.key.run_id},
        "kind": record.kind,
        "system": {
            "name": s.name,
            "description": s.description,
            "owner": s.owner,
            "state": s.state,
            "failed": s.failed,
            "trashed": s.trashed,
            "created_at": _dt(s.created_at),
            "modified_at": _dt(s.modified_at),
            "custom_run_id": s.custom_run_id,
            "experiment_name": s.experiment_name,
            "tags": sorted(s.tags),
            "group_tags": sorted(s.group_tags),
        },
        "fork": None if record.fork is None else {
            "parent": {"project": record.fork.parent.project, "run_id": record.fork.parent.run_id},
            "step": _opt_float(record.fork.step),
        },
        "fields": {path: encode_field(f) for path, f in sorted(record.fields.items())},
        "series": [
            {
                "path": si.path,
                "kind": si.kind,
                "count": si.count,
                "first_step": _opt_float(si.first_step),
                "last_step": _opt_float(si.last_step),
                "meta": {k: (encode_float(v) if isinstance(v, float) else v)
                         for k, v in sorted(si.meta.items())},
            }
            for si in record.series
        ],
        "files": [
            {
                "attribute_path": fe.attribute_path,
                "kind": fe.kind,
                "name": fe.name,
                "sha256": fe.sha256,
                "size": fe.size,
                "mime_type": fe.mime_type,
                "missing": fe.missing,
                "origin": fe.origin,
            }
            for fe in record.files
        ],
        "complete": record.complete,
        "partial_copy": record.partial_copy,
        "losses": [lo.to_json() for lo in record.losses],
        "absent": list(record.absent),
        "provenance": {
            "source": record.provenance.source,
            "location": record.provenance.location,
            "files": list(record.provenance.files),
            "details": dict(record.provenance.details),
        },
        **({} if record.registry is None else {"registry": registry_to_json(record.registry)}),
    }


def registry_to_json(info: RegistryInfo) -> dict[str, Any]:
    """The `registry` object of a model or model version's `run.json` (format 1.3)."""
    return {
        "model_id": info.model_id,
        "version_id": info.version_id,
        "version": info.version,
        "stage": info.stage,
        "stage_history": [{"stage": c.stage, "at": _dt(c.at)} for c in info.stage_history],
        "source_run": None if info.source_run is None else {
            "project": info.source_run.project, "run_id": info.source_run.run_id},
        "origin": info.origin,
    }


def registry_from_json(data: Mapping[str, Any]) -> RegistryInfo:
    """Inverse of `registry_to_json`; raises DumpFormatError on an unknown origin or stage."""
    origin = data.get("origin", "registry")
    if origin not in ("registry", "model_to_run"):
        msg = f"unknown registry origin {origin!r}"
        raise DumpFormatError(msg)
    stages = [data.get("stage"), *(c.get("stage") for c in data.get("stage_history", []))]
    for stage in stages:
        if stage is not None and stage not in STAGES:
            msg = f"unknown model version stage {stage!r}"
            raise DumpFormatError(msg)
    run = data.get("source_run")
    version = data.get("version")
    return RegistryInfo(
        model_id=str(data["model_id"]),
        version_id=data.get("version_id"),
        version=None if version is None else int(version),
        stage=data.get("stage"),
        stage_history=tuple(StageChange(str(c["stage"]), _parse_dt(c.get("at")))
                            for c in data.get("stage_history", [])),
        source_run=None if run is None else RunKey(run["project"], SourceRunId(run["run_id"])),
        origin=cast(Literal["registry", "model_to_run"], origin),
    )


def record_from_json(data: Mapping[str, Any]) -> RunRecord:
    """Inverse of `record_to_json`; raises DumpFormatError on a malformed document."""
    try:
        s = data["system"]
        fork = data.get("fork")
        kind = data.get("kind", "run")
        if kind not in ("run", "model", "model_version", "project"):
            msg = f"unknown container kind {kind!r}"
            raise DumpFormatError(msg)
        for si in data.get("series", []):
            if si["kind"] not in SERIES_KINDS:
                msg = f"unknown series kind {si['kind']!r}"
                raise DumpFormatError(msg)
        return RunRecord(
            key=RunKey(data["key"]["project"], SourceRunId(data["key"]["run_id"])),
            kind=cast(ContainerKind, kind),
            system=SystemInfo(
                name=s.get("name"),
                description=s.get("description"),
                owner=s.get("owner"),
                state=s.get("state"),
                failed=s.get("failed"),
                trashed=s.get("trashed"),
                created_at=_parse_dt(s.get("created_at")),
                modified_at=_parse_dt(s.get("modified_at")),
                custom_run_id=s.get("custom_run_id"),
                experiment_name=s.get("experiment_name"),
                tags=frozenset(s.get("tags", [])),
                group_tags=frozenset(s.get("group_tags", [])),
            ),
            fork=None if fork is None else ForkPoint(
                parent=RunKey(fork["parent"]["project"], SourceRunId(fork["parent"]["run_id"])),
                step=_opt_decode_float(fork.get("step")),
            ),
            fields={path: decode_field(f) for path, f in data.get("fields", {}).items()},
            series=tuple(
                SeriesInfo(
                    path=si["path"],
                    kind=cast(SeriesKind, si["kind"]),
                    count=int(si["count"]),
                    first_step=_opt_decode_float(si.get("first_step")),
                    last_step=_opt_decode_float(si.get("last_step")),
                    meta={k: (float(v) if isinstance(v, int | float) and not isinstance(v, bool) else v)
                          for k, v in si.get("meta", {}).items()},
                )
                for si in data.get("series", [])
            ),
            files=tuple(
                FileEntry(
                    attribute_path=fe["attribute_path"],
                    kind=cast(FileKind, fe["kind"]),
                    name=fe["name"],
                    sha256=fe.get("sha256"),
                    size=fe.get("size"),
                    mime_type=fe.get("mime_type"),
                    missing=fe.get("missing"),
                    origin=fe.get("origin"),
                )
                for fe in data.get("files", [])
            ),
            complete=bool(data.get("complete", True)),
            partial_copy=bool(data.get("partial_copy", False)),
            losses=tuple(Loss.from_json(lo) for lo in data.get("losses", [])),
            absent=tuple(data.get("absent", [])),
            provenance=Provenance(
                source=data["provenance"]["source"],
                location=data["provenance"]["location"],
                files=tuple(data["provenance"].get("files", [])),
                details=dict(data["provenance"].get("details", {})),
            ),
            registry=None if data.get("registry") is None else registry_from_json(data["registry"]),
        )
    except (KeyError, TypeError, ValueError) as exc:
        msg = f"malformed run record: {exc!r}"
        raise DumpFormatError(msg) from exc
