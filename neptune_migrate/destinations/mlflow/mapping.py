"""Pure mapping from the neutral model to MLflow: keys, tags, param strings, metric rows, paths.

No MLflow import here: everything is plain Python and pyarrow, so `--dry-run`, verify and the unit
tests use exactly the rules the writer uses. The rules are documented in docs/destinations/mlflow.md.
"""

from __future__ import annotations

import hashlib
import json
import math
import re
import sys
from collections.abc import Iterator, Mapping
from datetime import datetime, timedelta, timezone
from typing import Any, cast

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from neptune_migrate.destinations.base import FileDigest, PreparedRun, RunSnapshot
from neptune_migrate.destinations.system_metrics import mlflow_name, monitoring_metric, system_losses
from neptune_migrate.dump.schema import decode_float, encode_float, record_to_json
from neptune_migrate.model import (
    DestinationRunId,
    Field,
    FileEntry,
    Loss,
    RunRecord,
    SeriesKind,
    SystemInfo,
)

MAX_KEY = 250
"""Metric, param and tag keys (`MAX_ENTITY_KEY_LENGTH`)."""
MAX_PARAM_VALUE = 6000
"""Param values; MLflow would silently truncate longer ones."""
MAX_TAG_VALUE = 8000
MAX_TAG_KEY = 250
"""Tag values on SQL stores; MLflow would silently truncate longer ones."""
MAX_RUN_NAME = 250
"""`runs.name` is VARCHAR(250) (SQLite does not enforce it, PostgreSQL/MySQL do)."""
MAX_EXPERIMENT_NAME = 500
METRICS_PER_BATCH = 1000
PARAMS_PER_BATCH = 100
FLOAT_MAX = sys.float_info.max
"""SQL stores clamp +-inf to +-1.7976931348623157e308; we clamp before writing, on every backend."""
TRUNCATION_MARK = "...[truncated]"
"""Appended to a value cut to a limit: the stored value is `value[:limit - 14] + TRUNCATION_MARK`."""

EPOCH = datetime(1970, 1, 1, tzinfo=timezone.utc)
STATUS_COMPLETE = "complete"
STATUS_IN_PROGRESS = "in_progress"

TAG_PROJECT = "neptune.project"
TAG_RUN_ID = "neptune.run_id"
PROVENANCE_PREFIX = "nm."
"""The one short prefix of this tool's own tags (provenance and import bookkeeping); the details
(tool version, dump format, source location) are in the run's `neptune/run.json` artifact."""
LEGACY_PREFIX = "neptune_migrate."
"""The prefix of the same tags written by mapping version 1 (read by `find_run` only)."""
TAG_SOURCE = "nm.source"
TAG_STATUS = "nm.status"
TAG_DIGEST = "nm.digest"
TAG_IMPORTED_AT = "nm.imported_at"
"""Import wall-clock time (not compared by verify; used to pick the newest of duplicate runs)."""
TAG_CLAIM = "nm.claim"
"""`<claimed at, ISO UTC>|<host>|<pid>|<token>`: which import created the run (tie-break of racing imports)."""
TAG_HEARTBEAT = "nm.heartbeat"
"""ISO UTC time of the last write of an import still in progress (refreshed every 30 s)."""
TAG_IMPORT_DIGEST = "nm.import_digest"
"""The import digest (dump digest + write-affecting options); compared by the import, not by verify."""
TAG_ORIGIN = "nm.origin"
"""The `dump_id` of the dump the run was imported from."""
TAG_SOURCE_COMPLETE = "nm.source_complete"
"""`false` on a run the source holds only in part (a truncated queue); absent otherwise."""
TAG_PER_TAG_PREFIX = "neptune.tag."
"""`neptune.tag.<tag>` = `true` for every Neptune tag, so `search_runs` and the UI filter on it."""
PER_TAG_VALUE = "true"
MAPPING_VERSION = "2"
"""Bumped when this mapping writes runs differently; part of the import digest (2: per-tag tags,
`nm.` prefix, no source location tag, experiment kind, monitoring as system metrics)."""
VOLATILE_TAGS = frozenset({TAG_IMPORTED_AT, TAG_CLAIM, TAG_HEARTBEAT, TAG_IMPORT_DIGEST, TAG_ORIGIN})
"""Provenance tags that legitimately differ between import and verify: not in `RunSnapshot.extra`."""
EXPERIMENT_KIND_TAG = "mlflow.experimentKind"
"""The experiment tag MLflow 3's UI reads to choose the experiment page (3.17: `ExperimentKind`)."""
EXPERIMENT_KIND = "custom_model_development"
"""Opens the experiment on its "Model training" runs page instead of GenAI traces."""
TAG_TAGS = "neptune.tags"
TAG_USER = "mlflow.user"
TAG_NOTE = "mlflow.note.content"
TAG_PARENT = "mlflow.parentRunId"
"""Tags this tool writes (plus `mlflow.parentRunId`); read back into `RunSnapshot.extra`."""

ARTIFACT_ROOT = "neptune"
PARAMS_TYPES_ARTIFACT = "neptune/params_types.json"
KEY_MAP_ARTIFACT = "neptune/key_map.json"
RUN_ARTIFACT = "neptune/run.json"
FILES_DIR = "neptune/files"
FILE_SERIES_DIR = "neptune/file_series"
FILE_SERIES_INDEX = "index.jsonl"
SERIES_DIRS: Mapping[SeriesKind, str] = {"string": "neptune/series", "histogram": "neptune/histograms"}

_INVALID_KEY_CHARS = re.compile(r"[^/\w.\- :]")
_UNSAFE_NAME_CHARS = re.compile(r"[\x00-\x1f\\]")


# ---------------------------------------------------------------------------------------------
# keys, names, values


def _short_hash(text: str) -> str:
    return hashlib.sha256(text.encode("utf-8")).hexdigest()[:8]


def sanitize_key(path: str) -> str:
    """Map a Neptune attribute path to a valid MLflow key (`^[/\\w.\\- :]*$`, <= 250 chars).

    Invalid characters become `_`; empty, `.` and `..` segments are dropped or replaced so that
    `posixpath.normpath(key) == key` (MLflow's "path_not_unique" rule); a key over 250 chars keeps
    its first 240 chars plus `-` and 8 hex digits of the sha256 of the whole path. Neptune's
    hardware monitoring series get MLflow's system-metric names (`system/cpu_utilization_percentage`).
    """
    system = monitoring_metric(path)
    if system is not None:
        return mlflow_name(system)
    cleaned = _INVALID_KEY_CHARS.sub("_", path)
    parts = [("_" * len(p) if p in (".", "..") else p) for p in cleaned.split("/") if p]
    key = "/".join(parts) or "_"
    if key.startswith(".."):
        key = "_" + key[1:]
    if len(key) > MAX_KEY:
        key = f"{key[:240]}-{_short_hash(path)}"
    return key


def safe_file_name(name: str) -> str:
    """A file name fit for an artifact path: no separators, control chars, `.`/`..` or empties."""
    cleaned = _UNSAFE_NAME_CHARS.sub("_", name).replace("/", "_")
    if cleaned in ("", ".", ".."):
        cleaned = "_" * max(len(cleaned), 1)
    return cleaned


def fit(value: str, limit: int) -> tuple[str, bool]:
    """`value` within `limit` chars: unchanged, or cut and marked with `TRUNCATION_MARK`."""
    if len(value) <= limit:
        return value, False
    return value[: limit - len(TRUNCATION_MARK)] + TRUNCATION_MARK, True


def experiment_name(template: str, project: str) -> str:
    """The experiment of a Neptune project: `template` with {project}, {workspace}, {project_name}."""
    workspace, _, project_name = project.rpartition("/")
    name = template.format(project=project, workspace=workspace, project_name=project_name)
    if not name.strip():
        name = project or "neptune"
    if len(name) > MAX_EXPERIMENT_NAME:
        name = f"{name[:490]}~{_short_hash(name)}"
    return name


def param_value(f: Field) -> str:
    """A field as MLflow param text (before the 6000-char limit).

    floats: `repr` (`nan`, `inf`, `-inf` included); ints: decimal; bools: `True`/`False`;
    datetimes: ISO 8601 with offset; string sets: sorted JSON list.
    """
    if f.type == "float":
        return repr(float(cast(float, f.value)))
    if f.type == "int":
        return str(int(cast(int, f.value)))
    if f.type == "bool":
        return "True" if f.value else "False"
    if f.type == "datetime":
        return cast(datetime, f.value).isoformat()
    if f.type == "string_set":
        return json.dumps(sorted(cast(frozenset[str], f.value)), ensure_ascii=False)
    return str(f.value)


def ms(value: datetime) -> int:
    """Epoch milliseconds, floored (MLflow's time unit)."""
    return (value - EPOCH) // timedelta(milliseconds=1)


def from_ms(value: int) -> datetime:
    return EPOCH + timedelta(milliseconds=value)


def start_time_ms(system: SystemInfo) -> int | None:
    """`create_run(start_time=...)`; None lets MLflow use the import time (creation time absent)."""
    return None if system.created_at is None else ms(system.created_at)


def end_time_ms(system: SystemInfo, end: datetime | None = None) -> int | None:
    """`set_terminated(end_time=...)`: the prepared end (`PreparedRun.end_time`: modification time,
    else the last point's timestamp), else creation time; never before start."""
    end = end or system.modified_at or system.created_at
    if end is None:
        return None
    start = start_time_ms(system)
    return ms(end) if start is None else max(ms(end), start)


def run_status(system: SystemInfo, *, complete: bool = True) -> str:
    """FAILED when `sys/failed`; KILLED for an aborted/killed state or a run the source holds only
    in part (`complete` False: never FINISHED); FINISHED otherwise."""
    if system.failed:
        return "FAILED"
    if not complete or (system.state or "").strip().lower() in ("aborted", "killed", "interrupted"):
        return "KILLED"
    return "FINISHED"


def run_name(record: RunRecord) -> str:
    return fit(record.system.name or str(record.key.run_id), MAX_RUN_NAME)[0]


def dest_key(run: PreparedRun, path: str) -> str:
    return run.key_map.get(path) or sanitize_key(path)


# ---------------------------------------------------------------------------------------------
# run-level mapping


def run_tags(run: PreparedRun, tool_version: str) -> dict[str, str]:  # noqa: ARG001
    """Every tag set by `create_run` (in the same call), status `in_progress`. The tool version
    (kept in the signature for callers) is in `neptune/run.json`, not a tag."""
    record = run.record
    s = record.system
    tags: dict[str, str] = {
        TAG_PROJECT: record.key.project,
        TAG_RUN_ID: str(record.key.run_id),
        "neptune.kind": record.kind,
        TAG_TAGS: json.dumps(sorted(s.tags), ensure_ascii=False),
        "neptune.group_tags": json.dumps(sorted(s.group_tags), ensure_ascii=False),
        TAG_SOURCE: record.provenance.source,
        TAG_STATUS: STATUS_IN_PROGRESS,
        TAG_DIGEST: run.digest,
    }
    tags.update(per_tag_tags(s.tags))
    if run.import_digest:
        tags[TAG_IMPORT_DIGEST] = run.import_digest
    if run.origin:
        tags[TAG_ORIGIN] = run.origin
    if not record.complete:
        tags[TAG_SOURCE_COMPLETE] = "false"
    if s.name is not None:
        tags["neptune.name"] = s.name
    if s.owner is not None:
        tags[TAG_USER] = s.owner
    if s.description is not None:
        tags[TAG_NOTE] = s.description
    if s.state is not None:
        tags["neptune.state"] = s.state
    if s.custom_run_id is not None:
        tags["neptune.custom_run_id"] = s.custom_run_id
    if s.experiment_name is not None:
        tags["neptune.experiment_name"] = s.experiment_name
    if record.fork is not None:
        tags["neptune.fork.parent"] = str(record.fork.parent)
        if record.fork.step is not None:
            tags["neptune.fork.step"] = repr(record.fork.step)
    if run.parent_run_id is not None:
        tags[TAG_PARENT] = str(run.parent_run_id)
    return {k: fit(v, MAX_TAG_VALUE)[0] for k, v in tags.items()}


def per_tag_tags(neptune_tags: frozenset[str] | set[str]) -> dict[str, str]:
    """`neptune.tag.<tag>` = `true` per Neptune tag (key sanitised, cut to MLflow's 250 chars;
    tags that sanitise alike share one MLflow tag: the exact list stays in `neptune.tags`)."""
    out = {}
    for tag in sorted(neptune_tags):
        key = TAG_PER_TAG_PREFIX + sanitize_key(tag)
        if len(key) > MAX_TAG_KEY:
            key = key[:MAX_TAG_KEY - 9] + "~" + _short_hash(tag)
        out[key] = PER_TAG_VALUE
    return out


def import_document(run: PreparedRun, tool_version: str) -> dict[str, Any]:
    """The `import` section of `neptune/run.json`: provenance details kept off the run page (the
    source location is in its `provenance` section)."""
    from neptune_migrate.dump.schema import FORMAT_VERSION

    return {"dump_format": FORMAT_VERSION, "tool_version": tool_version, "origin": run.origin,
            "mapping_version": MAPPING_VERSION}


def run_params(run: PreparedRun) -> dict[str, str]:
    """Destination key -> param text as stored (long values cut, see `TRUNCATION_MARK`)."""
    return {key: fit(param_value(f), MAX_PARAM_VALUE)[0] for key, f in sorted(run.dest_fields().items())}


def long_params(run: PreparedRun) -> dict[str, str]:
    """Destination key -> full text of every param over 6000 chars (kept as artifacts)."""
    out = {}
    for key, f in sorted(run.dest_fields().items()):
        text = param_value(f)
        if len(text) > MAX_PARAM_VALUE:
            out[key] = text
    return out


def param_artifact(key: str) -> str:
    return f"{ARTIFACT_ROOT}/params/{key}.txt"


def params_types(run: PreparedRun) -> dict[str, str]:
    return {key: f.type for key, f in sorted(run.dest_fields().items())}


def run_document(run: PreparedRun, tool_version: str = "") -> dict[str, Any]:
    """`neptune/run.json`: the record without its fields (those are params + params_types.json),
    plus the import details (`import`)."""
    doc = record_to_json(run.record)
    doc.pop("fields", None)
    doc["digest"] = run.digest
    doc["import"] = import_document(run, tool_version)
    return doc


def plan_losses(run: PreparedRun) -> list[Loss]:
    """Everything this mapping changes or cannot hold, known from the record alone."""
    record = run.record
    losses: list[Loss] = system_losses(run)
    for path, f in sorted(record.fields.items()):
        text = param_value(f)
        if len(text) > MAX_PARAM_VALUE:
            key = dest_key(run, path)
            losses.append(Loss(
                "param_truncated", path, 1,
                f"{len(text)} chars > {MAX_PARAM_VALUE}: param cut, full value in {param_artifact(key)}",
            ))
    name = record.system.name or str(record.key.run_id)
    if len(name) > MAX_RUN_NAME:
        losses.append(Loss("name_truncated", "sys/name", 1,
                           f"{len(name)} chars > {MAX_RUN_NAME}: full name in tag neptune.name and {RUN_ARTIFACT}"))
    full_tags = run_tags_untruncated(run)
    for tag, value in sorted(full_tags.items()):
        if len(value) > MAX_TAG_VALUE:
            losses.append(Loss("tag_truncated", tag, 1,
                               f"{len(value)} chars > {MAX_TAG_VALUE}: full value in {RUN_ARTIFACT}"))
    for si in record.series:
        if si.kind == "float" and si.count == 0:
            losses.append(Loss("empty_series", si.path, 1,
                               "MLflow cannot hold a metric without points; listed in neptune/run.json"))
        elif si.kind != "float":
            where = series_artifact(si.kind, dest_key(run, si.path))
            losses.append(Loss("series_as_artifact", si.path, si.count,
                               f"{si.kind} series stored as artifact {where} (no native MLflow type)"))
    return losses


def run_tags_untruncated(run: PreparedRun) -> dict[str, str]:
    """The tags before the 8000-char cut (for loss reporting)."""
    s = run.record.system
    out = {TAG_TAGS: json.dumps(sorted(s.tags), ensure_ascii=False),
           "neptune.group_tags": json.dumps(sorted(s.group_tags), ensure_ascii=False)}
    optional = (("neptune.name", s.name), (TAG_NOTE, s.description),
                ("neptune.custom_run_id", s.custom_run_id),
                ("neptune.experiment_name", s.experiment_name))
    out.update({tag: value for tag, value in optional if value is not None})
    return out


def series_artifact(kind: SeriesKind, key: str) -> str:
    """Artifact holding a non-float series (for files: the index; blobs sit beside it)."""
    if kind == "file":
        return f"{FILE_SERIES_DIR}/{key}/{FILE_SERIES_INDEX}"
    if kind == "float":
        msg = "float series are MLflow metrics, not artifacts"
        raise ValueError(msg)
    return f"{SERIES_DIRS[kind]}/{key}.jsonl"


def file_artifact(attribute_key: str, name: str) -> str:
    """`neptune/files/<attribute key>/<name>`; a name's sub-folders are kept, unsafe parts renamed."""
    parts = [safe_file_name(p) for p in name.split("/") if p] or ["_"]
    return "/".join([FILES_DIR, attribute_key, *parts])


def file_series_artifact(key: str, dest_step: int, name: str, sha256: str, *, disambiguate: bool) -> str:
    """`neptune/file_series/<key>/<dest_step>_<name>` (+ sha prefix when that path is taken)."""
    base = safe_file_name(name) if name else sha256[:12]
    leaf = f"{dest_step}_{sha256[:12]}_{base}" if disambiguate else f"{dest_step}_{base}"
    return f"{FILE_SERIES_DIR}/{key}/{leaf}"


def expected_snapshot(run: PreparedRun, tool_version: str, *, hashes: bool) -> RunSnapshot:
    """What `read_snapshot` returns after a faithful, completed import of `run`."""
    record = run.record
    s = record.system
    start = start_time_ms(s)
    end = end_time_ms(s, run.end_time)
    tags = run_tags(run, tool_version)
    tags[TAG_STATUS] = STATUS_COMPLETE
    snap = RunSnapshot(
        run_id=DestinationRunId(""),
        name=run_name(record),
        description=None if s.description is None else fit(s.description, MAX_TAG_VALUE)[0],
        owner=s.owner,
        status=run_status(s, complete=record.complete),
        start_time=None if start is None else from_ms(start),
        end_time=None if end is None else from_ms(end),
        tags=frozenset(s.tags),
        params=run_params(run),
        extra=comparable_tags(tags),
    )
    for si in record.series:
        if si.kind == "float" and si.count == 0:
            continue
        snap.series[(si.kind, dest_key(run, si.path))] = si.count
    for entry in record.files:
        if entry.sha256 is None:
            continue
        snap.files[file_entry_artifact(entry)] = FileDigest(entry.size, entry.sha256 if hashes else None)
    return snap


def current_tags(tags: Mapping[str, str]) -> dict[str, str]:
    """`tags` with a mapping-1 run's `neptune_migrate.*` bookkeeping tags under their `nm.` names
    (so an older import is still found, and repaired because its import digest differs)."""
    out = dict(tags)
    for k, v in tags.items():
        if k.startswith(LEGACY_PREFIX):
            out.setdefault(PROVENANCE_PREFIX + k[len(LEGACY_PREFIX):], v)
    return out


def comparable_tags(tags: Mapping[str, str]) -> dict[str, str]:
    """The tags verify reads back: every tag but MLflow's own `mlflow.*` ones (the parent link
    excepted) and the volatile import time / tool version, so a tag someone added is `extra`."""
    return {
        k: v for k, v in sorted(tags.items())
        if (not k.startswith("mlflow.") or k == TAG_PARENT) and k not in VOLATILE_TAGS
    }


def file_entry_artifact(entry: FileEntry) -> str:
    """Where `upload_file` puts a file: the attribute path is sanitised on its own (file
    attributes are not in the pipeline's key map)."""
    return file_artifact(sanitize_key(entry.attribute_path), entry.name)


# ---------------------------------------------------------------------------------------------
# series


def timestamps_ms(column: pa.ChunkedArray | pa.Array) -> list[int]:
    """Point timestamps in epoch ms (floored); a missing timestamp becomes 0 (1970-01-01)."""
    micros = pc.fill_null(pc.cast(column, pa.int64()), 0).to_numpy()
    return cast(list[int], np.floor_divide(micros, 1000).tolist())


def metric_columns(chunk: pa.Table) -> tuple[list[str], list[float], list[int], list[int]]:
    """Keys, values, timestamps (ms) and steps of the float points as written: points without a
    value skipped, +-inf clamped to +-`FLOAT_MAX`. Column-wise: this runs once per point imported."""
    if chunk.column("value").null_count:
        chunk = chunk.filter(pc.is_valid(chunk.column("value")))
    values = chunk.column("value").to_numpy()
    if np.isinf(values).any():
        values = np.clip(values, -FLOAT_MAX, FLOAT_MAX)  # finite values and NaN pass unchanged
    steps = chunk.column("dest_step")
    step_list = (steps.to_pylist() if pa.types.is_integer(steps.type) and not steps.null_count
                 else [int(s) for s in steps.to_pylist()])
    return (chunk.column("key").to_pylist(), values.tolist(), timestamps_ms(chunk.column("timestamp")),
            step_list)


def metric_rows(chunk: pa.Table) -> Iterator[tuple[str, float, int, int]]:
    """(key, value, timestamp ms, step) per float point as written: nulls skipped, +-inf clamped."""
    yield from zip(*metric_columns(chunk), strict=True)


def chunk_losses(kind: SeriesKind, chunk: pa.Table) -> list[Loss]:
    """Per-point conversions of one chunk (float only): clamped infinities, null values dropped,
    missing timestamps set to 0. Counts by Neptune path."""
    if kind != "float" or chunk.num_rows == 0:
        return []
    losses: list[Loss] = []
    values = chunk.column("value")
    checks = (
        ("inf_clamped", pc.fill_null(pc.is_inf(values), False),
         f"+-inf stored as +-{FLOAT_MAX!r} (MLflow SQL stores cannot hold inf)"),
        ("null_value_dropped", pc.is_null(values), "points without a value are not written"),
        ("timestamp_missing", pc.is_null(chunk.column("timestamp")), "points without a timestamp get 0 ms (1970)"),
    )
    for kind_name, mask, detail in checks:
        if not pc.any(mask).as_py():
            continue
        counts = pc.value_counts(chunk.column("path").filter(mask))
        losses.extend(Loss(kind_name, item["values"], int(item["counts"]), detail)
                      for item in counts.to_pylist())
    return losses


FLOAT_READ_SCHEMA = pa.schema([
    pa.field("step", pa.int64()),
    pa.field("timestamp", pa.timestamp("ms", tz="UTC")),
    pa.field("value", pa.float64()),
])


def float_table(steps: list[int], stamps: list[int], values: list[float]) -> pa.Table:
    """A float series as `read_series` returns it: sorted by (step, timestamp, value)."""
    table = pa.table({
        "step": pa.array(steps, pa.int64()),
        "timestamp": pa.array(stamps, pa.int64()).cast(pa.timestamp("ms", tz="UTC")),
        "value": pa.array(values, pa.float64()),
    }, schema=FLOAT_READ_SCHEMA)
    return _sort(table, ["step", "timestamp", "value"])


def _sort(table: pa.Table, keys: list[str]) -> pa.Table:
    if table.num_rows < 2:
        return table
    return table.take(pc.sort_indices(table, [(k, "ascending") for k in keys]))


def expected_float(points: pa.Table) -> pa.Table:
    """Float points as MLflow holds them: ms timestamps (null -> 0), clamped inf, null values
    dropped, exact duplicates (same step, ms timestamp and value; NaN equal to NaN) stored once."""
    if "key" not in points.column_names:
        points = points.append_column("key", pa.array([""] * points.num_rows, pa.string()))
    seen: set[tuple[int, int, float | str]] = set()
    steps: list[int] = []
    stamps: list[int] = []
    values: list[float] = []
    for _, v, t, s in metric_rows(points):
        ident = (s, t, "nan" if math.isnan(v) else v)
        if ident in seen:
            continue
        seen.add(ident)
        steps.append(s)
        stamps.append(t)
        values.append(v)
    return float_table(steps, stamps, values)


def _iso(value: datetime | None) -> str | None:
    return None if value is None else value.astimezone(timezone.utc).isoformat(timespec="microseconds")


def _json_floats(values: list[float | None] | None) -> list[float | str | None] | None:
    if values is None:
        return None
    return [None if v is None else encode_float(v) for v in values]


def _from_json_floats(values: list[float | str | None] | None) -> list[float | None] | None:
    if values is None:
        return None
    return [None if v is None else decode_float(v) for v in values]


def jsonl_lines(kind: SeriesKind, rows: pa.Table) -> Iterator[tuple[str, dict[str, Any]]]:
    """(destination key, JSON object) per string/histogram/file point, in chunk order.

    File rows get no `artifact` here (the writer adds it after the upload).
    """
    data = rows.to_pylist()
    for row in data:
        obj: dict[str, Any] = {
            "step": encode_float(float(row["step"])),
            "dest_step": int(row["dest_step"]),
            "timestamp": _iso(row["timestamp"]),
        }
        if kind == "string":
            obj["value"] = row["value"]
        elif kind == "histogram":
            obj["type"] = row["type"]
            obj["edges"] = _json_floats(row["edges"])
            obj["values"] = _json_floats(row["values"])
        else:
            for name in ("name", "mime_type", "title", "description", "sha256", "size", "missing"):
                obj[name] = row.get(name)
        yield row.get("key", ""), obj


def dumps_line(obj: Mapping[str, Any]) -> str:
    return json.dumps(obj, ensure_ascii=False, allow_nan=False, sort_keys=True) + "\n"


_TS = pa.timestamp("us", tz="UTC")
JSONL_READ_SCHEMAS: Mapping[SeriesKind, pa.Schema] = {
    "string": pa.schema([("step", pa.int64()), ("neptune_step", pa.float64()), ("timestamp", _TS),
                         ("value", pa.string())]),
    "histogram": pa.schema([("step", pa.int64()), ("neptune_step", pa.float64()), ("timestamp", _TS),
                            ("type", pa.string()), ("edges", pa.list_(pa.float64())),
                            ("values", pa.list_(pa.float64()))]),
    "file": pa.schema([("step", pa.int64()), ("neptune_step", pa.float64()), ("timestamp", _TS),
                       ("name", pa.string()), ("mime_type", pa.string()), ("title", pa.string()),
                       ("description", pa.string()), ("sha256", pa.string()), ("size", pa.int64()),
                       ("missing", pa.string())]),
}
"""What `read_series` returns for the artifact-backed kinds: `step` is the MLflow-side step,
`neptune_step` the original one, timestamps keep microseconds (nulls stay null)."""


def jsonl_table(kind: SeriesKind, objects: list[dict[str, Any]]) -> pa.Table:
    """Rows of a series artifact as a table (sorted like `expected_series`)."""
    schema = JSONL_READ_SCHEMAS[kind]
    columns: dict[str, list[Any]] = {f.name: [] for f in schema}
    for obj in objects:
        columns["step"].append(int(obj["dest_step"]))
        columns["neptune_step"].append(decode_float(obj["step"]))
        ts = obj.get("timestamp")
        columns["timestamp"].append(None if ts is None else datetime.fromisoformat(ts))
        for f in schema:
            if f.name in ("step", "neptune_step", "timestamp"):
                continue
            value = obj.get(f.name)
            if f.name in ("edges", "values"):
                value = _from_json_floats(value)
            columns[f.name].append(value)
    table = pa.table({name: pa.array(vals, schema.field(name).type) for name, vals in columns.items()},
                     schema=schema)
    return _sort(table, ["step", "neptune_step", "timestamp"])


def expected_jsonl(kind: SeriesKind, points: pa.Table) -> pa.Table:
    """String/histogram/file points as the artifact-backed `read_series` returns them."""
    objects = [obj for _, obj in jsonl_lines(kind, points)]
    # a JSON round trip, so that both sides went through the same encoding
    return jsonl_table(kind, [json.loads(dumps_line(o)) for o in objects])
