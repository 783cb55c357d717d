"""Pure mapping from the neutral model to W&B: keys, run ids, config, tags, history rows.

No wandb import here: `--dry-run`, verify and the unit tests use exactly the rules the writer
uses. The rules are documented in docs/destinations/wandb.md.
"""

from __future__ import annotations

import hashlib
import json
import math
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from typing import Any, cast

import pyarrow as pa
import pyarrow.compute as pc

from neptune_migrate.destinations.base import FileDigest, PreparedRun, RunSnapshot
from neptune_migrate.destinations.system_metrics import monitoring_metric, system_losses, wandb_name
from neptune_migrate.model import DestinationRunId, Field, FileEntry, Loss, LossCategory, RunRecord, SeriesKind

OWN = "neptune_migrate"
"""Reserved top-level name: the config block lives under it."""
MARK = "_neptune_migrate"
"""The summary keys of the completion marker and the source times live under it: W&B keeps
`_`-prefixed summary keys (like its own `_runtime`, `_wandb`) out of the user's summary metrics."""
STATUS_KEY = f"{MARK}/status"
DIGEST_KEY = f"{MARK}/digest"
IMPORT_DIGEST_KEY = f"{MARK}/import_digest"
"""Summary: the import digest (dump digest + write-affecting options)."""
ORIGIN_KEY = f"{MARK}/origin"
"""Summary: the `dump_id` of the dump the run was imported from."""
SOURCE_COMPLETE_KEY = f"{MARK}/source_complete"
"""Summary: `false` on a run the source holds only in part (a truncated queue); absent otherwise."""
START_KEY = f"{MARK}/start_time"
END_KEY = f"{MARK}/end_time"
"""Summary: the Neptune run's start and end (ISO). The offline run record's own start time is set
to the source's too (see `WandbDestination.create_run`), but W&B's server takes the upload time
as the run's creation (its `UpsertBucket` has no start field) and wandb-core measures `_runtime`
from the import, so the source's times are kept here as well, and each history row's
`_timestamp` is the point's own time."""
MARKER_KEYS = (IMPORT_DIGEST_KEY, ORIGIN_KEY, SOURCE_COMPLETE_KEY, START_KEY, END_KEY)
MAPPING_VERSION = "2"
"""Bumped when this mapping writes runs differently; part of the import digest (2: marker under
`_neptune_migrate/`, run record start time, monitoring as `system/` metrics, one step scale)."""
STATUS_COMPLETE = "complete"
COMPANION = "_neptune"
"""Hidden history keys this tool adds (user keys never start with `_`, see `sanitize_key`):
`_neptune/step/<key>` the original Neptune step of a series whose steps were converted,
`_neptune/timestamp/<key>` a point's own timestamp when it differs from its row's `_timestamp`,
`_neptune/histogram/<key>` the exact histogram (JSON) when it has more than 512 bins."""
MAX_TAG = 64
MAX_GROUP = 128
MAX_PROJECT = 128
MAX_HISTOGRAM_BINS = 512
FILES_DIR = "neptune/files"
FILE_SERIES_DIR = "neptune/file_series"
IMAGE_EXTENSIONS: Mapping[str, str] = {
    "image/png": "png", "image/jpeg": "jpg", "image/jpg": "jpg", "image/gif": "gif",
}
"""Image types `wandb.Image` stores byte for byte (others would be re-encoded)."""

_KEY_CHARS = re.compile(r"[^A-Za-z0-9_/]")
_PROJECT_CHARS = re.compile(r"[/\\#?%:]")
_FILE_CHARS = re.compile(r"[\x00-\x1f\\]")


def step_key(key: str) -> str:
    return f"{COMPANION}/step/{key}"


def timestamp_key(key: str) -> str:
    return f"{COMPANION}/timestamp/{key}"


def histogram_key(key: str) -> str:
    return f"{COMPANION}/histogram/{key}"


def _hash(text: str, n: int = 8) -> str:
    return hashlib.sha256(text.encode("utf-8")).hexdigest()[:n]


# ---------------------------------------------------------------------------------------------
# keys, ids, names


def sanitize_key(path: str) -> str:
    """A Neptune attribute path as a W&B key: `/` kept (W&B shows it as sections).

    Characters outside `[A-Za-z0-9_/]` (W&B's sortable-name set plus `/`) become `_`; a key that
    does not start with an ASCII letter gets `neptune_` in front (keys starting with `_` are
    W&B's and this tool's own); a first segment `neptune_migrate` becomes `neptune_migrate_`
    (reserved for provenance and the completion marker). Neptune's hardware monitoring series
    go to W&B's `system/` section (`system/cpu`, `system/gpu_0_gpu`).
    """
    system = monitoring_metric(path)
    if system is not None:
        return wandb_name(system)
    key = _KEY_CHARS.sub("_", path)
    if not key or not ("a" <= key[0].lower() <= "z"):
        key = f"neptune_{key}"
    head, sep, rest = key.partition("/")
    if head == OWN:
        key = f"{OWN}_{sep}{rest}"
    return key


def run_id_for(project: str, source_key: str) -> str:
    """The W&B run id: 16 hex digits of sha256(W&B project + source key); re-imports reuse it."""
    return hashlib.sha256(f"{project}\n{source_key}".encode()).hexdigest()[:16]


def project_name(template: str, neptune_project: str) -> str:
    """The W&B project of a Neptune project: `template` with {project}, {workspace}, {project_name}.

    W&B forbids `/ \\ # ? % :` in project names (they become `-`) and allows 128 characters.
    """
    workspace, _, name = neptune_project.rpartition("/")
    text = template.format(project=neptune_project, workspace=workspace, project_name=name)
    text = _PROJECT_CHARS.sub("-", text).strip() or "neptune"
    if len(text) > MAX_PROJECT:
        text = f"{text[:MAX_PROJECT - 9]}-{_hash(text)}"
    return text


def map_tag(tag: str) -> str | None:
    """A Neptune tag as a W&B tag (1-64 chars): longer ones keep 55 chars + `~` + 8 hex; empty: None."""
    if not tag.strip():
        return None
    if len(tag) <= MAX_TAG:
        return tag
    return f"{tag[:MAX_TAG - 9]}~{_hash(tag)}"


def run_tags(record: RunRecord) -> list[str]:
    return sorted({t for t in (map_tag(tag) for tag in record.system.tags) if t is not None})


def run_group(record: RunRecord) -> str | None:
    """Experiment name, else the sorted group tags joined by `,`, else the fork parent's key."""
    s = record.system
    group = s.experiment_name or (",".join(sorted(s.group_tags)) if s.group_tags else None)
    if group is None and record.fork is not None:
        group = str(record.fork.parent)
    if group is not None and len(group) > MAX_GROUP:
        group = f"{group[:MAX_GROUP - 9]}~{_hash(group)}"
    return group


def run_name(record: RunRecord) -> str:
    return record.system.name or str(record.key.run_id)


def exit_code(record: RunRecord) -> int:
    """1 for a failed run and for a run the source holds only in part (never "finished")."""
    return 1 if record.system.failed or not record.complete else 0


def run_status(record: RunRecord) -> str:
    return "failed" if exit_code(record) else "finished"


def marker_summary(run: PreparedRun) -> dict[str, Any]:
    """Summary keys `mark_complete` writes just before `finish`, the completion marker first."""
    out: dict[str, Any] = {STATUS_KEY: STATUS_COMPLETE, DIGEST_KEY: run.digest,
                           IMPORT_DIGEST_KEY: run.import_digest, ORIGIN_KEY: run.origin}
    if not run.record.complete:
        out[SOURCE_COMPLETE_KEY] = False
    created = run.record.system.created_at
    if created is not None:
        out[START_KEY] = created.isoformat()
    if run.end_time is not None:
        out[END_KEY] = run.end_time.isoformat()
    return out


def start_micros(record: RunRecord) -> int | None:
    """`sys/creation_time` as epoch microseconds (the run record's start), None when absent."""
    created = record.system.created_at
    if created is None:
        return None
    created = created if created.tzinfo else created.replace(tzinfo=timezone.utc)
    delta = created - datetime(1970, 1, 1, tzinfo=timezone.utc)
    return (delta.days * 86_400 + delta.seconds) * 1_000_000 + delta.microseconds


def from_micros(micros: int) -> datetime:
    """Epoch microseconds as an aware UTC datetime, exact."""
    return datetime(1970, 1, 1, tzinfo=timezone.utc) + timedelta(microseconds=micros)


def summary_time(summary: Mapping[str, Any], key: str) -> datetime | None:
    value = summary.get(key)
    if not isinstance(value, str):
        return None
    try:
        return datetime.fromisoformat(value)
    except ValueError:
        return None


def safe_file_name(name: str) -> str:
    parts = [_FILE_CHARS.sub("_", p) for p in name.split("/") if p not in ("", ".", "..")]
    return "/".join(parts) or "_"


def file_path(entry: FileEntry) -> str:
    """Run-file path of a file attribute: `neptune/files/<sanitised attribute>/<name>`."""
    return f"{FILES_DIR}/{sanitize_key(entry.attribute_path)}/{safe_file_name(entry.name)}"


def file_series_index(key: str) -> str:
    return f"{FILE_SERIES_DIR}/{key}/index.jsonl"


def file_series_blob(key: str, dest_step: int, seq: int, name: str | None) -> str:
    leaf = safe_file_name(name or "file").replace("/", "_")
    return f"{FILE_SERIES_DIR}/{key}/{dest_step}_{seq}_{leaf}"


# ---------------------------------------------------------------------------------------------
# config


def config_value(f: Field) -> Any:
    """A field as a JSON value: non-finite floats as "NaN"/"Infinity"/"-Infinity", datetimes as
    ISO 8601 strings, string sets as sorted lists (types kept in `neptune_migrate.types`)."""
    if f.type == "float":
        v = float(cast(float, f.value))
        if math.isnan(v):
            return "NaN"
        if math.isinf(v):
            return "Infinity" if v > 0 else "-Infinity"
        return v
    if f.type == "datetime":
        value = cast(datetime, f.value)
        return (value if value.tzinfo else value.replace(tzinfo=timezone.utc)).isoformat()
    if f.type == "string_set":
        return sorted(cast(frozenset[str], f.value))
    return f.value


def param_text(value: Any) -> str:
    """How verify compares one config value."""
    return json.dumps(value, sort_keys=True, ensure_ascii=False)


def nest(flat: Mapping[str, Any]) -> dict[str, Any]:
    """`a/b/c` keys as nested dicts; a key that cannot nest (a prefix is a value, or an empty
    segment) stays flat at the top level under its full key."""
    out: dict[str, Any] = {}
    flat_keys: list[str] = []
    for key in sorted(flat):
        parts = key.split("/")
        if "" in parts:
            flat_keys.append(key)
            continue
        node = out
        ok = True
        for part in parts[:-1]:
            child = node.setdefault(part, {})
            if not isinstance(child, dict):
                ok = False
                break
            node = child
        if not ok or parts[-1] in node:
            flat_keys.append(key)
            continue
        node[parts[-1]] = flat[key]
    for key in flat_keys:
        out[key] = flat[key]
    return out


def flatten(config: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    out: dict[str, Any] = {}
    for k, v in config.items():
        key = f"{prefix}/{k}" if prefix else k
        if isinstance(v, dict) and v:
            out.update(flatten(v, key))
        else:
            out[key] = v
    return out


def _field_keys(run: PreparedRun) -> dict[str, Field]:
    return {run.key_map.get(p) or sanitize_key(p): f for p, f in run.record.fields.items()}


def provenance(run: PreparedRun, tool_version: str, dump_format: str) -> dict[str, Any]:
    """The `neptune_migrate` config block: source identity, system fields W&B cannot hold, types."""
    record = run.record
    s = record.system
    sys_info = {
        "name": s.name, "description": s.description, "owner": s.owner, "state": s.state,
        "failed": s.failed, "trashed": s.trashed,
        "created_at": None if s.created_at is None else s.created_at.isoformat(),
        "modified_at": None if s.modified_at is None else s.modified_at.isoformat(),
        "custom_run_id": s.custom_run_id, "experiment_name": s.experiment_name,
        "tags": sorted(s.tags), "group_tags": sorted(s.group_tags),
    }
    block: dict[str, Any] = {
        "source_key": str(record.key),
        "project": record.key.project,
        "run_id": str(record.key.run_id),
        "kind": record.kind,
        "source": record.provenance.source,
        "source_location": record.provenance.location,
        "digest": run.digest,
        "dump_format": dump_format,
        "tool_version": tool_version,
        "sys": {k: v for k, v in sys_info.items() if v is not None and v != []},
    }
    if record.absent:
        block["absent"] = list(record.absent)
    if record.fork is not None:
        block["fork"] = {
            "parent": str(record.fork.parent),
            "step": None if record.fork.step is None else record.fork.step,
            "parent_run": None if run.parent_run_id is None else str(run.parent_run_id),
        }
    types = {k: f.type for k, f in _field_keys(run).items()
             if f.type in ("datetime", "string_set") or (f.type == "float" and isinstance(config_value(f), str))}
    if types:
        block["types"] = dict(sorted(types.items()))
    kinds = {run.key_map.get(si.path) or sanitize_key(si.path): si.kind
             for si in record.series if si.kind != "float"}
    if kinds:
        block["series"] = dict(sorted(kinds.items()))
    return block


def run_config(run: PreparedRun, tool_version: str, dump_format: str) -> dict[str, Any]:
    config = nest({k: config_value(f) for k, f in _field_keys(run).items()})
    config[OWN] = provenance(run, tool_version, dump_format)
    return config


def params_from_config(config: Mapping[str, Any]) -> dict[str, str]:
    user = {k: v for k, v in config.items() if k not in (OWN, "_wandb")}
    return {k: param_text(v) for k, v in flatten(user).items()}


def extra_from(config: Mapping[str, Any], summary: Mapping[str, Any], group: str | None) -> dict[str, str]:
    """What verify compares beyond params: the provenance block, the marker and the group."""
    own = config.get(OWN)
    flat = flatten(own) if isinstance(own, dict) else {}
    # the parent's W&B id is whatever existed at import time (a parent imported later, or in
    # another run of the tool, is not linked): informative, not compared
    out = {f"{OWN}.{k}": param_text(v) for k, v in flat.items() if k != "fork/parent_run"}
    out[STATUS_KEY] = str(summary.get(STATUS_KEY))
    out[DIGEST_KEY] = str(summary.get(DIGEST_KEY))
    if SOURCE_COMPLETE_KEY in summary:
        out[SOURCE_COMPLETE_KEY] = param_text(summary[SOURCE_COMPLETE_KEY])
    out["group"] = str(group)
    return out


# ---------------------------------------------------------------------------------------------
# run-level expectations and losses


def dest_key(run: PreparedRun, path: str) -> str:
    return run.key_map.get(path) or sanitize_key(path)


def expected_snapshot(run: PreparedRun, tool_version: str, dump_format: str) -> RunSnapshot:
    record = run.record
    config = run_config(run, tool_version, dump_format)
    group = run_group(record)
    summary = marker_summary(run)
    return RunSnapshot(
        run_id=DestinationRunId(""),
        name=run_name(record),
        description=record.system.description or None,  # W&B stores empty notes as none
        status=run_status(record),
        start_time=summary_time(summary, START_KEY),
        end_time=summary_time(summary, END_KEY),
        tags=frozenset(run_tags(record)),
        params=params_from_config(config),
        files={file_path(fe): FileDigest(fe.size, fe.sha256) for fe in record.files if fe.sha256},
        extra=extra_from(config, summary, group),
    )


def plan_losses(run: PreparedRun) -> list[Loss]:
    """Everything this mapping changes or cannot hold, known from the record alone."""
    record = run.record
    losses: list[Loss] = system_losses(run)
    for tag in sorted(record.system.tags):
        mapped = map_tag(tag)
        if mapped is None:
            losses.append(Loss("tag_dropped", "sys/tags", 1, "W&B tags cannot be empty; kept in config "
                               f"{OWN}.sys.tags"))
        elif mapped != tag:
            losses.append(Loss("tag_shortened", "sys/tags", 1, f"{len(tag)} chars > {MAX_TAG}: stored as "
                               f"{mapped!r}; the full tag is in config {OWN}.sys.tags"))
    group = run_group(record)
    s = record.system
    if s.group_tags and (s.experiment_name or len(s.group_tags) > 1):
        losses.append(Loss("group_tags_joined", "sys/group_tags", len(s.group_tags),
                           f"W&B has one group per run: group is {group!r}; all group tags are in config "
                           f"{OWN}.sys.group_tags"))
    if record.fork is not None:
        losses.append(Loss("fork_as_link", None, 1,
                           f"fork of {record.fork.parent} kept as group and config {OWN}.fork "
                           "(W&B fork_from is a cloud-only preview that drops points below the fork step)"))
    if s.created_at is not None or s.owner is not None:
        losses.append(Loss("system_fields_in_config", None, 1,
                           f"W&B cannot set creation time or owner: kept in config {OWN}.sys"))
    for path, f in sorted(record.fields.items()):
        if f.type == "datetime" or (f.type == "float" and isinstance(config_value(f), str)):
            losses.append(Loss("param_as_string", path, 1,
                               f"{f.type} stored as a string in config (type in {OWN}.types)"))
    lowered: dict[str, list[str]] = {}
    for si in record.series:
        key = dest_key(run, si.path)
        lowered.setdefault(key.lower(), []).append(key)
        if si.count == 0:
            losses.append(Loss("empty_series", si.path, 1,
                               "W&B cannot hold a metric without points; listed in config "
                               f"{OWN}.series" if si.kind != "float" else
                               "W&B cannot hold a metric without points"))
        elif si.kind == "histogram":
            losses.append(Loss("histogram_type_dropped", si.path, si.count,
                               "W&B histograms have no type: the Neptune histogram type is not kept "
                               f"(histograms over {MAX_HISTOGRAM_BINS} bins are shown re-binned, the "
                               f"exact one is in {histogram_key(key)})"))
    conflicts = [sorted(set(members)) for members in lowered.values() if len(set(members)) > 1]
    losses.extend(Loss("key_case_conflict", None, len(keys),
                       f"W&B compares metric names case-insensitively: {', '.join(keys)} may show as one "
                       "metric in the W&B UI") for keys in conflicts)
    return losses


def chunk_losses(kind: SeriesKind, chunk: pa.Table) -> list[Loss]:
    """Per-point losses of one converted chunk, counted by path.

    Points at a negative W&B step are lost (W&B drops them); histograms over 512 bins are shown
    re-binned (the exact one is kept in a hidden companion key, so this is no error).
    """
    losses: list[Loss] = []
    negative = pc.less(chunk.column("dest_step"), 0)
    checks = [("negative_step", negative, "W&B cannot hold a step below 0: these points are not written",
               True)]
    if kind == "histogram":
        bins = pc.greater(pc.fill_null(pc.list_value_length(chunk.column("values")), 0), MAX_HISTOGRAM_BINS)
        checks.append(("histogram_rebinned", bins,
                       f"over {MAX_HISTOGRAM_BINS} bins: shown re-binned in W&B, the exact histogram is in "
                       f"the hidden key {COMPANION}/histogram/<key>", False))
    for name, mask, detail, error in checks:
        if not pc.any(mask).as_py():
            continue
        counts = pc.value_counts(chunk.column("path").filter(mask))
        losses.extend(Loss(name, item["values"], int(item["counts"]), detail,
                           LossCategory.LOST if error else LossCategory.CHANGED_FORM)
                      for item in counts.to_pylist())
    return losses


# ---------------------------------------------------------------------------------------------
# series


TS = pa.timestamp("us", tz="UTC")


def seconds(ts_us: int) -> float:
    """A timestamp in microseconds as W&B's `_timestamp` (float seconds; exact to the microsecond)."""
    return ts_us / 1_000_000


def from_seconds(value: float | None) -> int | None:
    return None if value is None else round(float(value) * 1_000_000)


def row_timestamp(stamps: Iterable[int | None]) -> int | None:
    """A history row's `_timestamp` (µs): the latest timestamp of the points in it."""
    known = [t for t in stamps if t is not None]
    return max(known) if known else None


def rebin(edges: list[float], values: list[float]) -> tuple[list[float], list[float]]:
    """At most 512 bins, merging runs of adjacent bins (sums of counts; outer edges kept)."""
    n = len(values)
    group = math.ceil(n / MAX_HISTOGRAM_BINS)
    new_values = [float(sum(values[i:i + group])) for i in range(0, n, group)]
    new_edges = [edges[i] for i in range(0, n, group)] + [edges[-1]]
    return new_edges, new_values


def _as_float(v: Any) -> float | None:
    return None if v is None else float(v)


def _floats(values: Any) -> list[float | None] | None:
    if values is None:
        return None
    return [_as_float(v) for v in values]


READ_SCHEMAS: Mapping[SeriesKind, pa.Schema] = {
    "float": pa.schema([("step", pa.int64()), ("timestamp", TS), ("value", pa.float64())]),
    "string": pa.schema([("step", pa.int64()), ("timestamp", TS), ("value", pa.string())]),
    "histogram": pa.schema([("step", pa.int64()), ("timestamp", TS), ("edges", pa.list_(pa.float64())),
                            ("values", pa.list_(pa.float64()))]),
    "file": pa.schema([("step", pa.int64()), ("timestamp", TS), ("sha256", pa.string()),
                       ("size", pa.int64())]),
}
"""What `read_series` returns (and `expected_series` builds): W&B's step plus what it keeps."""


def _sorted(table: pa.Table) -> pa.Table:
    if table.num_rows < 2:
        return table
    return table.take(pc.sort_indices(table, [("step", "ascending"), ("timestamp", "ascending")]))


def expected_series(kind: SeriesKind, points: pa.Table) -> pa.Table:
    """Dump points as `read_series` returns them: `step` = the W&B step, timestamps to the µs.

    Every point is expected, duplicates and negative steps included: W&B cannot hold those (they
    are reported as error losses), so verify shows them as missing too.
    """
    schema = READ_SCHEMAS[kind]
    if points.num_rows == 0:
        return schema.empty_table()
    cols: dict[str, Any] = {
        "step": points.column("dest_step").cast(pa.int64()),
        "timestamp": points.column("timestamp").cast(TS),
    }
    if kind in ("float", "string"):
        cols["value"] = points.column("value").cast(schema.field("value").type)
    elif kind == "histogram":
        cols["edges"] = points.column("edges").cast(pa.list_(pa.float64()))
        cols["values"] = points.column("values").cast(pa.list_(pa.float64()))
    else:
        cols["sha256"] = points.column("sha256").cast(pa.string())
        cols["size"] = points.column("size").cast(pa.int64())
        missing = pc.is_null(points.column("sha256"))
        cols["size"] = pc.if_else(missing, pa.scalar(None, pa.int64()), cols["size"])
    return _sorted(pa.table(cols, schema=schema))


@dataclass(frozen=True)
class HistoryPoint:
    """One point as read back from a history row."""

    step: int
    timestamp: int | None
    value: Any


def history_points(
    history: Mapping[str, list[tuple[int, float | None, Any]]], key: str
) -> list[HistoryPoint]:
    """The points of one key: its own timestamp companion overrides the row's `_timestamp`, and
    the exact-histogram companion overrides a re-binned histogram."""
    own_ts = {step: value for step, _, value in history.get(timestamp_key(key), [])}
    exact = {step: value for step, _, value in history.get(histogram_key(key), [])}
    out = []
    for step, row_ts, value in history.get(key, []):
        ts = from_seconds(own_ts[step]) if step in own_ts else from_seconds(row_ts)
        if step in exact:
            value = json.loads(exact[step])
        out.append(HistoryPoint(step, ts, value))
    return out


def history_table(kind: SeriesKind, points: list[HistoryPoint]) -> pa.Table:
    """History points of one key as `read_series` returns them."""
    rows: list[dict[str, Any]] = []
    for p in points:
        row: dict[str, Any] = {"step": p.step, "timestamp": p.timestamp}
        v = p.value
        if kind == "float":
            row["value"] = _as_float(v)
        elif kind == "string":
            row["value"] = v
        elif kind == "histogram":
            if isinstance(v, dict):
                row["edges"] = _floats(v.get("bins", v.get("edges")))
                row["values"] = _floats(v.get("values"))
        elif isinstance(v, dict):
            row["sha256"] = v.get("sha256")
            row["size"] = v.get("size")
        rows.append(row)
    schema = READ_SCHEMAS[kind]
    cols = {}
    for f in schema:
        values = [r.get(f.name) for r in rows]
        if f.name == "timestamp":
            cols[f.name] = pa.array(values, pa.int64()).cast(TS)
        else:
            cols[f.name] = pa.array(values, f.type)
    return _sorted(pa.table(cols, schema=schema))


def index_table(lines: list[dict[str, Any]]) -> pa.Table:
    """A file series kept as run files: its `index.jsonl` lines as `read_series` returns them."""
    rows = [{"step": int(o["dest_step"]), "timestamp": o.get("timestamp"), "sha256": o.get("sha256"),
             "size": o.get("size")} for o in lines]
    schema = READ_SCHEMAS["file"]
    cols = {f.name: (pa.array([r[f.name] for r in rows], pa.int64()).cast(TS) if f.name == "timestamp"
                     else pa.array([r[f.name] for r in rows], f.type)) for f in schema}
    return _sorted(pa.table(cols, schema=schema))
