"""Pure mapping from the neutral model to Aim: run hashes, params, series values, artifact names.

No Aim import here: `--dry-run`, verify and the unit tests use exactly the rules the writer uses.
The rules are documented in docs/destinations/aim.md.
"""

from __future__ import annotations

import hashlib
import json
import math
from collections.abc import Iterable, Mapping
from datetime import datetime, timezone
from typing import Any, cast

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from neptune_migrate.destinations.base import FileDigest, PreparedRun, RunSnapshot
from neptune_migrate.destinations.system_metrics import aim_name, monitoring_metric, system_losses
from neptune_migrate.dump.schema import FORMAT_VERSION, encode_float
from neptune_migrate.model import DestinationRunId, Field, FileEntry, Loss, RunKey, RunRecord, SeriesKind

NEPTUNE = "neptune"
"""Top-level Aim param holding the source key, system fields, fork and provenance."""
TOOL = "neptune_migrate"
"""Top-level Aim param holding the import status, dump digest and tool version."""
REGISTRY = "neptune_registry"
"""Top-level Aim param holding a model's or version's registry facts (Aim has no registry)."""
RESERVED_TOP = frozenset({NEPTUNE, TOOL, REGISTRY})
STATUS_COMPLETE = "complete"
STATUS_IN_PROGRESS = "in_progress"

INT64_MIN = -(2**63)
INT64_MAX = 2**63 - 1
EPOCH = datetime(1970, 1, 1, tzinfo=timezone.utc)

FILES_DIR = "files"
"""Artifact folder of the run's files: `files/<attribute path>/<name>`."""
SERIES_DIR = "neptune/series"
"""Artifact folder of the per-point records of histogram and file series (JSON lines)."""
FILE_SERIES_DIR = "neptune/file_series"
"""Artifact folder of file-series contents: `neptune/file_series/<series dir>/<step>/<name>`."""
MAX_DIR_NAME = 80

RUN_HASH_LENGTH = 24
"""Aim's own run hashes are 24 hex digits (`uuid4().hex[:24]`)."""


# ---------------------------------------------------------------------------------------------
# identity


def run_hash(key: RunKey) -> str:
    """The Aim run hash of a Neptune run: 24 hex digits of sha256(project NUL run id).

    Deterministic, so a re-run finds (or replaces) the run without a query, and a crash right
    after `Run()` leaves no orphan that nothing could find.
    """
    digest = hashlib.sha256(f"{key.project}\0{key.run_id}".encode()).hexdigest()
    return digest[:RUN_HASH_LENGTH]


def experiment_name(template: str, project: str) -> str:
    """The Aim experiment of a Neptune project: `template` with {project}, {workspace}, {project_name}."""
    workspace, _, project_name = project.rpartition("/")
    name = template.format(project=project, workspace=workspace, project_name=project_name)
    return name if name.strip() else (project or "neptune")


def sanitize_key(path: str) -> str:
    """Aim sequence names and param keys are free-form strings: Neptune paths are kept as they are,
    but Neptune's hardware monitoring series get Aim's system-metric names (`__system__cpu`)."""
    system = monitoring_metric(path)
    return path if system is None else aim_name(system)


# ---------------------------------------------------------------------------------------------
# params


def param_value(f: Field) -> Any:
    """A field as the value stored in `run[...]`.

    float, int (int64 range), bool and string keep their type; datetimes become ISO 8601 strings
    (Aim rejects datetimes); ints outside int64 become decimal strings (Aim raises OverflowError);
    string sets become sorted lists of strings.
    """
    if f.type == "float":
        return float(cast(float, f.value))
    if f.type == "int":
        v = int(cast(int, f.value))
        return v if INT64_MIN <= v <= INT64_MAX else str(v)
    if f.type == "bool":
        return bool(f.value)
    if f.type == "datetime":
        value = cast(datetime, f.value)
        return (value if value.tzinfo else value.replace(tzinfo=timezone.utc)).isoformat()
    if f.type == "string_set":
        return sorted(cast(frozenset[str], f.value))
    return str(f.value)


def param_text(value: Any) -> str:
    """A param value as comparable text: its Python type and JSON value (NaN/inf spelled out)."""
    if isinstance(value, bool):
        tag = "bool"
    elif isinstance(value, int):
        tag = "int"
    elif isinstance(value, float):
        return json.dumps(["float", encode_float(value)])
    elif isinstance(value, str):
        tag = "str"
    elif isinstance(value, list | tuple):
        return json.dumps(["list", [json.loads(param_text(v)) for v in value]], ensure_ascii=False)
    elif value is None:
        tag = "none"
    else:
        tag = type(value).__name__
        value = repr(value)
    return json.dumps([tag, value], ensure_ascii=False)


def _nestable(keys: Iterable[str]) -> set[str]:
    """Keys that can live at their `/`-split path in the param tree without clashing."""
    keys = list(keys)
    prefixes: set[str] = set()
    for k in keys:
        parts = k.split("/")
        prefixes.update("/".join(parts[:i]) for i in range(1, len(parts)))
    out = set()
    for k in keys:
        parts = k.split("/")
        if any(p == "" for p in parts) or parts[0] in RESERVED_TOP or parts[0].startswith("__"):
            continue
        if k in prefixes:
            continue  # a field and a namespace at one path: the field goes flat
        out.add(k)
    return out


def field_params(fields: Mapping[str, Field]) -> tuple[dict[str, Any], dict[str, Any]]:
    """(nested params by top-level key, flat params for `neptune.fields`).

    `parameters/lr` becomes `run["parameters"]["lr"]` (queried as `run.parameters.lr`). A key
    that cannot nest (an empty segment, a `neptune`/`neptune_migrate`/`__*` first segment, or a
    path that is also a namespace of another key) is kept flat under `run["neptune"]["fields"]`.
    """
    nest = _nestable(fields)
    tree: dict[str, Any] = {}
    flat: dict[str, Any] = {}
    for key in sorted(fields):
        value = param_value(fields[key])
        if key not in nest:
            flat[key] = value
            continue
        parts = key.split("/")
        node = tree
        for p in parts[:-1]:
            node = node.setdefault(p, {})
        node[parts[-1]] = value
    return tree, flat


def flatten_params(attrs: Mapping[str, Any]) -> dict[str, str]:
    """Read side of `field_params`: every Neptune field key -> `param_text` of its value."""
    out: dict[str, str] = {}

    def walk(prefix: str, node: Any) -> None:
        if isinstance(node, Mapping):
            for k, v in node.items():
                walk(f"{prefix}/{k}" if prefix else str(k), v)
        else:
            out[prefix] = param_text(node)

    for top, node in attrs.items():
        if top in RESERVED_TOP or str(top).startswith("__"):
            continue
        walk(str(top), node)
    neptune = attrs.get(NEPTUNE)
    flat = neptune.get("fields") if isinstance(neptune, Mapping) else None
    if isinstance(flat, Mapping):
        for k, v in flat.items():
            out[str(k)] = param_text(v)
    return out


def _iso(value: datetime | None) -> str | None:
    if value is None:
        return None
    return (value if value.tzinfo else value.replace(tzinfo=timezone.utc)).isoformat()


FORK_PARENT_NAME = "neptune.fork.parent_name"


def run_name(record: RunRecord) -> str:
    """The Aim run name: `sys/name`, else the custom run id, else the Neptune run id (never left
    empty, which the UI shows as `Run: <hash>`)."""
    s = record.system
    return s.name or s.custom_run_id or str(record.key.run_id)


def neptune_params(run: PreparedRun, parent_name: str | None = None) -> dict[str, Any]:
    """`run["neptune"]`: source key, system fields, fork and provenance (None values left out).

    `parent_name`: the Aim name of the fork parent's run, when it was imported (shown with the
    parent's key and hash as the fork link)."""
    rec = run.record
    s = rec.system
    system = {
        "owner": s.owner,
        "state": s.state,
        "failed": s.failed,
        "trashed": s.trashed,
        "created_at": _iso(s.created_at),
        "modified_at": _iso(s.modified_at),
        "custom_run_id": s.custom_run_id,
        "experiment_name": s.experiment_name,
        "group_tags": sorted(s.group_tags) if s.group_tags else None,
        "kind": rec.kind,
    }
    out: dict[str, Any] = {
        "project": rec.key.project,
        "run_id": str(rec.key.run_id),
        "key": str(rec.key),
        "sys": {k: v for k, v in system.items() if v is not None},
        "provenance": {
            "source": rec.provenance.source,
            "location": rec.provenance.location,
            "files": list(rec.provenance.files),
            "details": dict(rec.provenance.details),
        },
    }
    if rec.absent:
        out["absent"] = list(rec.absent)
    if not rec.complete:
        out["source_complete"] = False  # the source holds only part of the run (truncated queue)
    if rec.fork is not None:
        out["fork"] = {
            "parent": str(rec.fork.parent),
            "parent_hash": run_hash(rec.fork.parent),
            "step": None if rec.fork.step is None else encode_float(rec.fork.step),
        }
        if parent_name is not None:
            out["fork"]["parent_name"] = parent_name
    _, flat = field_params(run.dest_fields())
    if flat:
        out["fields"] = flat
    return out


MAPPING_VERSION = "2"
"""Bumped when this mapping writes runs differently; part of the import digest (2: run name
falls back to the custom/Neptune run id, fork parent's name, monitoring as system metrics)."""


def tool_params(run: PreparedRun, status: str, version: str) -> dict[str, Any]:
    """`run["neptune_migrate"]`: status (the completion marker), dump and import digests, the
    dump's id (origin), versions."""
    return {"status": status, "digest": run.digest, "import_digest": run.import_digest or None,
            "origin": run.origin or None, "tool_version": version, "dump_format": FORMAT_VERSION}


def end_timestamp(run: PreparedRun) -> float | None:
    """The run's end as Aim stores it (epoch seconds): the prepared end (modification time, else
    the last point's time), else the creation time; None leaves Aim's own (the close time)."""
    end = run.end_time or run.record.system.created_at
    if end is None:
        return None
    return (end if end.tzinfo else end.replace(tzinfo=timezone.utc)).timestamp()


def _flat_meta(prefix: str, node: Any, out: dict[str, str]) -> None:
    if isinstance(node, Mapping):
        for k, v in node.items():
            _flat_meta(f"{prefix}.{k}", v, out)
    else:
        out[prefix] = param_text(node)


def meta_extra(neptune: Mapping[str, Any], experiment: str | None) -> dict[str, str]:
    """`RunSnapshot.extra`: identity, system fields, fork, provenance and experiment as text."""
    out: dict[str, str] = {}
    for k, v in neptune.items():
        if k != "fields":
            _flat_meta(f"{NEPTUNE}.{k}", v, out)
    # The parent's name is a display link read from Aim when the child was written (the parent may
    # be imported later, or renamed): not source data, so not compared.
    out.pop(FORK_PARENT_NAME, None)
    if experiment is not None:
        out["experiment"] = experiment
    return out


# ---------------------------------------------------------------------------------------------
# files


def _clean_segment(segment: str) -> str:
    cleaned = "".join("_" if (ord(c) < 32 or c in "\\") else c for c in segment)
    return "_" * max(len(cleaned), 1) if cleaned in ("", ".", "..") else cleaned


def safe_name(name: str) -> str:
    """A file name fit for one artifact path segment."""
    return _clean_segment(name.replace("/", "_"))


def file_artifact_name(entry: FileEntry) -> str:
    """`files/<attribute path>/<name>`, with empty, `.`/`..` segments and control chars replaced."""
    path = "/".join(_clean_segment(p) for p in entry.attribute_path.split("/"))
    return f"{FILES_DIR}/{path}/{safe_name(entry.name)}"


def series_dir(key: str) -> str:
    """One artifact path segment per series key: the key's safe characters plus a hash suffix."""
    cleaned = "".join(c if (c.isascii() and (c.isalnum() or c in "._-")) else "_" for c in key)
    return f"{cleaned[:MAX_DIR_NAME]}-{hashlib.sha256(key.encode()).hexdigest()[:8]}"


def file_series_artifact(key: str, step: int, name: str | None) -> str:
    return f"{FILE_SERIES_DIR}/{series_dir(key)}/{step}/{safe_name(name or 'file')}"


def series_part_artifact(kind: SeriesKind, key: str, rows: list[dict[str, Any]]) -> str:
    """A JSON-lines part of per-point records; named by its content, so a retry overwrites it."""
    digest = hashlib.sha256(json.dumps(rows, sort_keys=True).encode()).hexdigest()[:16]
    return f"{SERIES_DIR}/{kind}/{series_dir(key)}/{rows[0]['step']}-{digest}.jsonl"


# ---------------------------------------------------------------------------------------------
# plan, losses and the expected snapshot


def plan_losses(run: PreparedRun) -> list[Loss]:
    """Every run-level conversion; per-point ones come from `chunk_losses`."""
    losses: list[Loss] = system_losses(run)
    fields = run.dest_fields()
    datetimes = [k for k, f in fields.items() if f.type == "datetime"]
    if datetimes:
        losses.append(Loss("datetime_as_string", None, len(datetimes),
                           "Aim params cannot hold datetimes: stored as ISO 8601 strings"))
    big = [k for k, f in fields.items() if f.type == "int" and not INT64_MIN <= int(cast(int, f.value)) <= INT64_MAX]
    if big:
        losses.append(Loss("int_as_string", None, len(big),
                           "integers outside int64 are stored as decimal strings (Aim raises OverflowError)"))
    _, flat = field_params(fields)
    if flat:
        losses.append(Loss("param_not_nested", None, len(flat),
                           "fields whose path cannot nest in Aim's param tree are kept flat under neptune.fields"))
    if run.record.system.owner is not None:
        losses.append(Loss("owner_as_param", None, 1, "Aim has no run owner: kept as param neptune.sys.owner"))
    return losses


def _uneven(edges: list[float] | None, n: int) -> bool:
    if not edges or len(edges) != n + 1:
        return True
    rebuilt = np.linspace(edges[0], edges[-1], num=n + 1)
    return not bool(np.array_equal(np.asarray(edges, dtype=np.float64), rebuilt))


def chunk_losses(kind: SeriesKind, chunk: pa.Table) -> list[Loss]:
    """Per-point conversions of one chunk, counted by Neptune path."""
    out: list[Loss] = []
    if kind == "histogram":
        counts: dict[str, int] = {}
        for path, edges, values in zip(chunk.column("path").to_pylist(), chunk.column("edges").to_pylist(),
                                       chunk.column("values").to_pylist(), strict=True):
            if _uneven(edges, len(values or [])):
                counts[path] = counts.get(path, 0) + 1
        out.extend(Loss("histogram_edges_lost", p, n,
                        "aim.Distribution keeps only (first edge, last edge, bin count): edges are shown evenly "
                        f"spaced; the original edges are kept in artifacts under {SERIES_DIR}/histogram/")
                   for p, n in sorted(counts.items()))
    elif kind == "file":
        not_images: dict[str, int] = {}
        for path, local in zip(chunk.column("path").to_pylist(), chunk.column("local_path").to_pylist(),
                               strict=True):
            if local is not None and not is_image(local):
                not_images[path] = not_images.get(path, 0) + 1
        out.extend(Loss("file_not_image", p, n,
                        f"not an image Aim can show: kept as artifacts under {FILE_SERIES_DIR}/ only")
                   for p, n in sorted(not_images.items()))
    return out


def is_image(path: str) -> bool:
    """True when Pillow can decode the file (so `aim.Image` accepts it)."""
    try:
        from PIL import Image as PILImage
    except ImportError:  # pragma: no cover - Pillow comes with aim
        return False
    try:
        with PILImage.open(path) as img:
            img.verify()
    except Exception:  # noqa: BLE001 - any decoder error means "not an image"
        return False
    return True


def expected_snapshot(run: PreparedRun, experiment: str) -> RunSnapshot:
    """What `read_snapshot` returns after a faithful import."""
    rec = run.record
    s = rec.system
    fields = run.dest_fields()
    start = None
    if s.created_at is not None:
        created = s.created_at if s.created_at.tzinfo else s.created_at.replace(tzinfo=timezone.utc)
        start = created.astimezone(timezone.utc)
    end = end_timestamp(run)
    return RunSnapshot(
        run_id=DestinationRunId(run_hash(rec.key)),
        name=run_name(rec),
        description=s.description,
        start_time=start,
        end_time=None if end is None else datetime.fromtimestamp(end, tz=timezone.utc),
        tags=frozenset(s.tags),
        params={k: param_text(param_value(f)) for k, f in fields.items()},
        files={file_artifact_name(fe): FileDigest(fe.size, fe.sha256) for fe in rec.files if fe.sha256},
        extra=meta_extra(neptune_params(run), experiment),
    )


# ---------------------------------------------------------------------------------------------
# series values


def seconds(timestamps: pa.ChunkedArray | pa.Array) -> list[float]:
    """Dump timestamps (us, UTC) as the float seconds Aim stores; a missing one becomes 0.0."""
    micros = pc.cast(timestamps, pa.int64()).to_pylist()
    return [0.0 if t is None else t / 1e6 for t in micros]


def timestamps_from_seconds(values: Iterable[float]) -> pa.Array:
    """Aim's float seconds back to microsecond timestamps (exact for every us timestamp < 2^53).

    A numpy array is converted column-wise (`np.rint`, like `round`: half to even)."""
    if isinstance(values, np.ndarray):
        micros = np.rint(values.astype(np.float64) * 1e6).astype(np.int64)
        return pa.array(micros, pa.int64()).cast(pa.timestamp("us", tz="UTC"))
    return pa.array([round(v * 1e6) for v in values], pa.int64()).cast(pa.timestamp("us", tz="UTC"))


def _ts(points: pa.Table) -> pa.Array:
    return timestamps_from_seconds(seconds(points.column("timestamp")))


def rebuilt_edges(edges: list[float] | None, n: int) -> list[float]:
    """The edges Aim shows for a histogram: `linspace(first, last, n + 1)`."""
    if not edges:
        return [float(x) for x in np.linspace(0.0, float(n), num=n + 1)]
    return [float(x) for x in np.linspace(edges[0], edges[-1], num=n + 1)]


def expected_series(kind: SeriesKind, points: pa.Table) -> pa.Table:
    """The dump points of one series as `read_series` returns them."""
    step = points.column("dest_step").cast(pa.int64())
    if kind == "float":
        values = [math.nan if v is None else float(v) for v in points.column("value").to_pylist()]
        return pa.table({"step": step, "timestamp": _ts(points), "value": pa.array(values, pa.float64())})
    if kind == "string":
        texts = ["" if v is None else str(v) for v in points.column("value").to_pylist()]
        return pa.table({"step": step, "timestamp": _ts(points), "value": pa.array(texts, pa.string())})
    if kind == "histogram":
        hists = [[float(x) for x in (v or [])] for v in points.column("values").to_pylist()]
        edges = points.column("edges").to_pylist()
        return pa.table({
            "step": step,
            "timestamp": _ts(points),
            "values": pa.array(hists, pa.list_(pa.float64())),
            "edges": pa.array([rebuilt_edges(e, len(v)) for e, v in zip(edges, hists, strict=True)],
                              pa.list_(pa.float64())),
            "original_edges": points.column("edges"),
            "type": points.column("type"),
        })
    return pa.table({
        "step": step,
        "timestamp": _ts(points),
        "name": pa.array([safe_name(n or "file") for n in points.column("name").to_pylist()], pa.string()),
        "sha256": pa.array([sha if lp is not None else None for sha, lp in
                            zip(points.column("sha256").to_pylist(), points.column("local_path").to_pylist(),
                                strict=True)], pa.string()),
        "size": pa.array([sz if lp is not None else None for sz, lp in
                          zip(points.column("size").to_pylist(), points.column("local_path").to_pylist(),
                              strict=True)], pa.int64()),
    })
