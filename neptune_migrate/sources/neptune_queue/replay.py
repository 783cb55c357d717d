"""Replaying neptune 1.x queue operations with the server's semantics (pure: no file I/O).

`Replay.run(records)` applies decoded queue records in order and leaves the attribute state a Neptune 2.x
server would have built from them:

* the first operation on a path fixes the attribute's type; a later operation of another type is
  rejected (the server's `MetadataInconsistency`) and counted; `DeleteAttribute` removes the attribute
  and frees the path for any type;
* `Assign*` overwrites; `AddStrings` / `RemoveStrings` / `ClearStringSet` edit a string set;
* `LogFloats` / `LogStrings` / `LogImages` append points; a point whose step is not strictly greater
  than the series' last accepted step is dropped and counted; a point without a step gets the last
  accepted step + 1 (0 for the first point); `Clear*Log` empties a series (its config survives);
* `ConfigFloatSeries` sets min/max/unit of a float series; `UploadFile` / `UploadFileContent` replace a
  file; `UploadFileSet` / `DeleteFiles` edit a file set (globs are kept and expanded at export time);
  `AssignArtifact` / `TrackFilesToArtifact` / `ClearArtifact` edit an artifact reference;
  `CopyAttribute` copies a value of the same container, as it is at that point of the queue.

Points are appended column-wise to a `PointBuffer` that hands full batches over (bounded memory).
Points logged before a series' *last* reset (`Clear*Log` or `DeleteAttribute`) would be thrown away
later; the caller finds those resets first (a cheap pre-pass) and passes them as `discard`, so such
points are dropped on arrival instead of being streamed out.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import math
from collections import Counter
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from typing import Any, Literal

from neptune_migrate.model import Field, FieldType, FieldValue, SeriesKind

OpId = tuple[int, int]
"""An operation's identity: (execution index, `version`)."""

AttrType = Literal[
    "float", "int", "bool", "string", "datetime", "string_set",
    "float_series", "string_series", "image_series", "file", "file_set", "artifact",
]

OP_ATTR_TYPE: Mapping[str, AttrType] = {
    "AssignFloat": "float",
    "AssignInt": "int",
    "AssignBool": "bool",
    "AssignString": "string",
    "AssignDatetime": "datetime",
    "AddStrings": "string_set",
    "RemoveStrings": "string_set",
    "ClearStringSet": "string_set",
    "LogFloats": "float_series",
    "ClearFloatLog": "float_series",
    "ConfigFloatSeries": "float_series",
    "LogStrings": "string_series",
    "ClearStringLog": "string_series",
    "LogImages": "image_series",
    "ClearImageLog": "image_series",
    "UploadFile": "file",
    "UploadFileContent": "file",
    "UploadFileSet": "file_set",
    "DeleteFiles": "file_set",
    "AssignArtifact": "artifact",
    "TrackFilesToArtifact": "artifact",
    "ClearArtifact": "artifact",
}
"""The attribute type each operation needs (`DeleteAttribute` and `CopyAttribute` are special)."""

SERIES_KIND: Mapping[AttrType, SeriesKind] = {
    "float_series": "float", "string_series": "string", "image_series": "file",
}
COPY_TYPES: Mapping[str, AttrType] = {
    "Float": "float", "Integer": "int", "Boolean": "bool", "String": "string", "Datetime": "datetime",
}
"""`CopyAttribute.source_attr_name` -> type (the client copies only these atoms)."""

FIELD_TYPE: Mapping[AttrType, FieldType] = {
    "float": "float", "int": "int", "bool": "bool", "string": "string", "datetime": "datetime",
}
_EPOCH = datetime(1970, 1, 1, tzinfo=timezone.utc)
_EXACT_INT = 2**53
"""Integers up to this size are exact doubles; JSON may carry larger ones (Python's json writes any int)."""
_IMAGE_MAGIC: tuple[tuple[bytes, str, str], ...] = (
    (b"\x89PNG\r\n\x1a\n", ".png", "image/png"),
    (b"\xff\xd8\xff", ".jpg", "image/jpeg"),
    (b"GIF87a", ".gif", "image/gif"),
    (b"GIF89a", ".gif", "image/gif"),
    (b"BM", ".bmp", "image/bmp"),
)


def image_type(data: bytes) -> tuple[str, str]:
    """(extension, MIME type) of image bytes by their magic number (WebP too)."""
    if data[:4] == b"RIFF" and data[8:12] == b"WEBP":
        return ".webp", "image/webp"
    for magic, ext, mime in _IMAGE_MAGIC:
        if data.startswith(magic):
            return ext, mime
    return ".bin", "application/octet-stream"


def step_label(step: float) -> str:
    """`3` for 3.0, `0.5` for 0.5: used in file names of image points."""
    return str(int(step)) if float(step).is_integer() and abs(step) < 1e15 else repr(float(step))


def _sha_only(data: bytes) -> tuple[str, int]:
    return hashlib.sha256(data).hexdigest(), len(data)


# ---------------------------------------------------------------------------------------------
# State pieces


@dataclass
class Series:
    """One series attribute: its kind, the step logic's state, its config."""

    kind: SeriesKind
    last_step: float | None = None
    count: int = 0
    config: dict[str, str | float | None] | None = None
    discard_until: OpId | None = None
    """Set while this series' points are doomed by a later reset found by the pre-pass."""


@dataclass(frozen=True)
class FileRef:
    """What an `UploadFile` / `UploadFileContent` pointed to."""

    execution: int
    ext: str
    file_path: str | None = None
    tmp_file_name: str | None = None
    content_b64: str | None = None
    version: int = 0
    """The operation's `version` in its execution (compared with `last_ack_version`)."""
    clean_after_upload: bool = False


@dataclass(frozen=True)
class FileSetOp:
    """One `UploadFileSet` (globs, reset) or `DeleteFiles` (paths inside the set)."""

    action: Literal["upload", "delete"]
    items: tuple[str, ...]
    reset: bool = False
    execution: int = 0
    version: int = 0


@dataclass
class ArtifactRef:
    """An artifact attribute: an assigned hash and/or tracked locations `(path, destination)`."""

    hash: str | None = None
    entries: list[tuple[str, str | None]] = field(default_factory=list)
    project_id: str | None = None


@dataclass
class Tally:
    """A count and the first example's explanation."""

    count: int
    detail: str


class PointBuffer:
    """Accepted points, column-wise per kind; full batches go to `on_flush` (or stay, for tests)."""

    def __init__(
        self,
        batch_rows: int = 100_000,
        on_flush: Callable[[SeriesKind, dict[str, list[Any]]], None] | None = None,
    ) -> None:
        """`on_flush(kind, columns)` receives and owns each full batch; None keeps everything."""
        self.batch_rows = batch_rows if on_flush is not None else 1 << 62
        self.on_flush = on_flush
        self.columns: dict[SeriesKind, dict[str, list[Any]]] = {
            "float": self._new("float"), "string": self._new("string"), "file": self._new("file"),
        }

    @staticmethod
    def _new(kind: SeriesKind) -> dict[str, list[Any]]:
        names = ["path", "step", "ts", "value"] if kind != "file" else [
            "path", "step", "ts", "sha256", "size", "name", "mime_type", "title", "description", "missing",
        ]
        return {n: [] for n in names}

    def flush(self, kind: SeriesKind) -> None:
        """Hand the buffered points of `kind` to `on_flush`, which must copy them: the lists are then
        emptied in place (the replay keeps references to them)."""
        cols = self.columns[kind]
        if self.on_flush is None or not cols["path"]:
            return
        self.on_flush(kind, cols)
        for col in cols.values():
            col.clear()

    def flush_all(self) -> None:
        for kind in list(self.columns):
            self.flush(kind)

    def rows(self, kind: SeriesKind) -> list[dict[str, Any]]:
        """The buffered points of `kind` as dicts (tests)."""
        cols = self.columns[kind]
        return [dict(zip(cols, values, strict=True)) for values in zip(*cols.values(), strict=True)]


# ---------------------------------------------------------------------------------------------


class Replay:
    """The attribute state of one container, built by applying its operations in order."""

    def __init__(
        self,
        container_id: str,
        *,
        buffer: PointBuffer | None = None,
        discard: Mapping[str, OpId] | None = None,
        store_image: Callable[[bytes], tuple[str, int]] | None = None,
        points: bool = True,
    ) -> None:
        """`points=False` tracks types and resets only (the pre-pass); `store_image` saves image bytes."""
        self.container_id = container_id
        self.buffer = buffer if buffer is not None else PointBuffer()
        self.discard: dict[str, OpId] = dict(discard or {})
        self.store_image = store_image or _sha_only
        self.points = points
        floats = self.buffer.columns["float"]
        self._floats = (floats["path"], floats["step"], floats["ts"], floats["value"])

        self.types: dict[str, AttrType] = {}
        self.fields: dict[str, Field] = {}
        self.sets: dict[str, set[str]] = {}
        self.series: dict[str, Series] = {}
        self.files: dict[str, FileRef] = {}
        self.file_sets: dict[str, list[FileSetOp]] = {}
        self.artifacts: dict[str, ArtifactRef] = {}

        self.op_types: Counter[str] = Counter()
        self.last_reset: dict[str, OpId] = {}
        """The last *applied* `Clear*Log` / `DeleteAttribute` per path."""
        self.dropped_steps: Counter[str] = Counter()
        self.discarded_points = 0
        """Points thrown away by a later `Clear*Log` / `DeleteAttribute` (the server's semantics)."""
        self.conflicts: dict[str, Tally] = {}
        self.unresolved_copies: dict[str, Tally] = {}
        self.invalid: dict[str, Tally] = {}
        self.unknown_ops: Counter[str] = Counter()
        self.empty_images: Counter[str] = Counter()
        self.rounded: dict[str, Tally] = {}
        """Integers beyond 2**53 in `LogFloats` values or in steps, stored as the nearest double."""

        self._handlers: dict[str, Callable[[str, dict[str, Any], OpId], None]] = {
            "AssignFloat": self._assign,
            "AssignInt": self._assign,
            "AssignBool": self._assign,
            "AssignString": self._assign,
            "AssignDatetime": self._assign,
            "AddStrings": self._add_strings,
            "RemoveStrings": self._remove_strings,
            "ClearStringSet": self._clear_string_set,
            "LogFloats": self._log_floats,
            "LogStrings": self._log_strings,
            "LogImages": self._log_images,
            "ClearFloatLog": self._clear_log,
            "ClearStringLog": self._clear_log,
            "ClearImageLog": self._clear_log,
            "ConfigFloatSeries": self._config_float_series,
            "UploadFile": self._upload_file,
            "UploadFileContent": self._upload_file_content,
            "UploadFileSet": self._file_set,
            "DeleteFiles": self._file_set,
            "AssignArtifact": self._artifact,
            "TrackFilesToArtifact": self._artifact,
            "ClearArtifact": self._artifact,
            "DeleteAttribute": self._delete,
            "CopyAttribute": self._copy,
        }

    # -- driving --------------------------------------------------------------------------------
    def run(self, records: Iterable[tuple[int, dict[str, Any]]]) -> None:
        """Apply `(execution index, record)` pairs in order (records as in the queue files)."""
        handlers = self._handlers
        op_types = self.op_types
        for execution, rec in records:
            obj = rec["obj"]
            type_ = obj.get("type")
            op_types[type_] += 1
            handler = handlers.get(type_)
            if handler is None:
                self.unknown_ops[str(type_)] += 1
                continue
            try:
                path = "/".join(obj["path"])
                handler(path, obj, (execution, rec["version"]))
            except (KeyError, TypeError, ValueError, AttributeError, binascii.Error) as exc:
                self._tally(self.invalid, str(type_), f"v{rec.get('version')}: {type(exc).__name__}: {exc}")

    # -- helpers --------------------------------------------------------------------------------
    @staticmethod
    def _tally(tallies: dict[str, Tally], key: str, detail: str) -> None:
        t = tallies.get(key)
        if t is None:
            tallies[key] = Tally(1, detail)
        else:
            t.count += 1

    def _nearest_double(self, path: str, what: str, value: int) -> float:
        """An integer a double cannot hold exactly (JSON allows any size): the nearest double, counted."""
        try:
            near = float(value)
        except OverflowError:
            near = math.inf if value > 0 else -math.inf
        self._tally(self.rounded, path, f"{what} {value} is beyond 2**53; stored as the nearest double {near!r}")
        return near

    def _claim(self, path: str, needed: AttrType, op_type: str) -> bool:
        """Fix the path's type on first use; False (counted) when it already has another type."""
        current = self.types.get(path)
        if current is None:
            self.types[path] = needed
            return True
        if current == needed:
            return True
        self._tally(self.conflicts, path,
                    f"{op_type} on a {current} attribute (first seen as {current}); the server rejects it")
        return False

    def _series(self, path: str, attr: AttrType, op_type: str) -> Series | None:
        s = self.series.get(path)
        if s is not None and self.types.get(path) == attr:
            return s
        if not self._claim(path, attr, op_type):
            return None
        s = self.series[path] = Series(SERIES_KIND[attr], discard_until=self.discard.get(path))
        return s

    # -- atoms and sets -------------------------------------------------------------------------
    def _assign(self, path: str, obj: dict[str, Any], op: OpId) -> None:
        type_ = obj["type"]
        attr = OP_ATTR_TYPE[type_]
        raw = obj["value"]
        value: FieldValue
        if attr == "float":
            value = float(raw)
        elif attr == "int":
            if isinstance(raw, bool) or not isinstance(raw, int):
                raise TypeError(f"AssignInt value {raw!r}")
            value = raw
        elif attr == "bool":
            if not isinstance(raw, bool):
                raise TypeError(f"AssignBool value {raw!r}")
            value = raw
        elif attr == "string":
            if not isinstance(raw, str):
                raise TypeError(f"AssignString value {raw!r}")
            value = raw
        else:  # datetime: int epoch milliseconds, UTC
            value = _EPOCH + timedelta(milliseconds=int(raw))
        if self._claim(path, attr, type_):
            self.fields[path] = Field(FIELD_TYPE[attr], value)

    def _add_strings(self, path: str, obj: dict[str, Any], op: OpId) -> None:
        values = [str(v) for v in obj["values"]]
        if self._claim(path, "string_set", obj["type"]):
            self.sets.setdefault(path, set()).update(values)

    def _remove_strings(self, path: str, obj: dict[str, Any], op: OpId) -> None:
        values = [str(v) for v in obj["values"]]
        if self._claim(path, "string_set", obj["type"]):
            self.sets.setdefault(path, set()).difference_update(values)

    def _clear_string_set(self, path: str, obj: dict[str, Any], op: OpId) -> None:
        if self._claim(path, "string_set", obj["type"]):
            self.sets[path] = set()

    def _copy(self, path: str, obj: dict[str, Any], op: OpId) -> None:
        source = "/".join(obj["source_path"])
        attr = COPY_TYPES.get(str(obj.get("source_attr_name")))
        if str(obj.get("container_id", "")).lower() != self.container_id.lower():
            self._tally(self.unresolved_copies, path,
                        f"copies {obj.get('container_type')} {obj.get('container_id')} [{source}]: another "
                        "container's value is resolved only when the queue is synced, so it is not on disk")
            return
        found = self.fields.get(source)
        if attr is None or found is None or found.type != attr:
            self._tally(self.unresolved_copies, path,
                        f"copies [{source}] ({obj.get('source_attr_name')}), which holds no such value "
                        "at that point of the queue")
            return
        if self._claim(path, attr, "CopyAttribute"):
            self.fields[path] = found

    def _delete(self, path: str, obj: dict[str, Any], op: OpId) -> None:
        self.types.pop(path, None)
        self.fields.pop(path, None)
        self.sets.pop(path, None)
        self.files.pop(path, None)
        self.file_sets.pop(path, None)
        self.artifacts.pop(path, None)
        self.series.pop(path, None)
        self._after_reset(path, op)

    # -- series ---------------------------------------------------------------------------------
    def _after_reset(self, path: str, op: OpId) -> None:
        self.last_reset[path] = op
        if self.discard.get(path) == op:
            del self.discard[path]

    def _clear_log(self, path: str, obj: dict[str, Any], op: OpId) -> None:
        attr = OP_ATTR_TYPE[obj["type"]]
        s = self._series(path, attr, obj["type"])
        if s is None:
            return
        fresh = Series(s.kind, config=s.config)
        self.series[path] = fresh
        self._after_reset(path, op)

    def _config_float_series(self, path: str, obj: dict[str, Any], op: OpId) -> None:
        s = self._series(path, "float_series", obj["type"])
        if s is not None:
            s.config = {"min": _opt_float(obj.get("min")), "max": _opt_float(obj.get("max")),
                        "unit": None if obj.get("unit") is None else str(obj["unit"])}

    def _append_target(
        self, path: str, kind: SeriesKind, attr: AttrType, op_name: str, n_values: int
    ) -> Series | None:
        """The series an append operation adds to (typed by its first operation), or None when its
        points are not wanted: a type conflict, a points-free pass, or points a later clear erases."""
        s = self.series.get(path)
        if s is None or s.kind != kind:
            s = self._series(path, attr, op_name)
            if s is None:
                return None
        if not self.points:
            return None
        if s.discard_until is not None:
            self.discarded_points += n_values
            return None
        return s

    def _log_floats(self, path: str, obj: dict[str, Any], op: OpId) -> None:
        s = self._append_target(path, "float", "float_series", "LogFloats", len(obj["values"]))
        if s is None:
            return
        values = obj["values"]
        paths, steps, tss, vals = self._floats
        last = s.last_step
        kept = 0
        for v in values:
            step, ts, value = v["step"], v["ts"], v["value"]  # all read before any column grows
            if type(value) is int and not -_EXACT_INT <= value <= _EXACT_INT:
                value = self._nearest_double(path, "value", value)
            if type(step) is int and not -_EXACT_INT <= step <= _EXACT_INT:
                step = self._nearest_double(path, "step", step)
            if step is None:
                step = 0.0 if last is None else last + 1.0
            elif last is not None and step <= last:
                self.dropped_steps[path] += 1
                continue
            last = step
            paths.append(path)
            steps.append(step)
            tss.append(ts)
            vals.append(value)
            kept += 1
        s.last_step = last
        s.count += kept
        if len(paths) >= self.buffer.batch_rows:
            self.buffer.flush("float")

    def _log_strings(self, path: str, obj: dict[str, Any], op: OpId) -> None:
        s = self._append_target(path, "string", "string_series", "LogStrings", len(obj["values"]))
        if s is None:
            return
        values = obj["values"]
        cols = self.buffer.columns["string"]
        last = s.last_step
        for v in values:
            step, ts, value = v["step"], v["ts"], v["value"]
            if type(step) is int and not -_EXACT_INT <= step <= _EXACT_INT:
                step = self._nearest_double(path, "step", step)
            if step is None:
                step = 0.0 if last is None else last + 1.0
            elif last is not None and step <= last:
                self.dropped_steps[path] += 1
                continue
            last = step
            cols["path"].append(path)
            cols["step"].append(step)
            cols["ts"].append(ts)
            cols["value"].append(None if value is None else str(value))
            s.count += 1
        s.last_step = last
        if len(cols["path"]) >= self.buffer.batch_rows:
            self.buffer.flush("string")

    def _log_images(self, path: str, obj: dict[str, Any], op: OpId) -> None:
        s = self._append_target(path, "file", "image_series", "LogImages", len(obj["values"]))
        if s is None:
            return
        values = obj["values"]
        leaf = path.rsplit("/", 1)[-1]
        last = s.last_step
        for v in values:
            step, ts, payload = v["step"], v["ts"], v["value"]
            if type(step) is int and not -_EXACT_INT <= step <= _EXACT_INT:
                step = self._nearest_double(path, "step", step)
            if step is None:
                step = 0.0 if last is None else last + 1.0
            elif last is not None and step <= last:
                self.dropped_steps[path] += 1
                continue
            last = step
            # Clients < 1.x wrote the image as a bare base64 string; later ones as {data, name, description}.
            if isinstance(payload, str):
                data_b64, title, description = payload, None, None
            else:
                data_b64 = payload.get("data") or ""
                title, description = payload.get("name"), payload.get("description")
            row: dict[str, Any] = {"path": path, "step": step, "ts": ts, "title": title,
                                   "description": description}
            if not data_b64:
                self.empty_images[path] += 1
                row.update(sha256=None, size=None, name=f"{leaf}-{step_label(step)}", mime_type=None,
                           missing="empty image data: the client stores images over its size limit as ''")
            else:
                data = base64.b64decode(data_b64, validate=True)
                sha, size = self.store_image(data)
                ext, mime = image_type(data)
                row.update(sha256=sha, size=size, name=f"{leaf}-{step_label(step)}{ext}", mime_type=mime,
                           missing=None)
            cols = self.buffer.columns["file"]
            for name, col in cols.items():
                col.append(row[name])
            s.count += 1
        s.last_step = last
        if len(self.buffer.columns["file"]["path"]) >= self.buffer.batch_rows:
            self.buffer.flush("file")

    # -- files and artifacts --------------------------------------------------------------------
    def _upload_file(self, path: str, obj: dict[str, Any], op: OpId) -> None:
        ref = FileRef(op[0], str(obj.get("ext") or ""), obj.get("file_path"), obj.get("tmp_file_name"),
                      version=op[1], clean_after_upload=obj.get("clean_after_upload") is True)
        if ref.file_path is None and ref.tmp_file_name is None:
            raise KeyError("file_path and tmp_file_name are both null")
        if self._claim(path, "file", obj["type"]):
            self.files[path] = ref

    def _upload_file_content(self, path: str, obj: dict[str, Any], op: OpId) -> None:
        ref = FileRef(op[0], str(obj.get("ext") or ""), content_b64=str(obj["file_content"]), version=op[1])
        if self._claim(path, "file", obj["type"]):
            self.files[path] = ref

    def _file_set(self, path: str, obj: dict[str, Any], op: OpId) -> None:
        if obj["type"] == "UploadFileSet":
            reset = obj.get("reset")
            item = FileSetOp("upload", tuple(str(g) for g in obj["file_globs"]),
                             reset=reset is True or str(reset) == "True", execution=op[0], version=op[1])
        else:
            item = FileSetOp("delete", tuple(str(p) for p in obj["file_paths"]), execution=op[0], version=op[1])
        if self._claim(path, "file_set", obj["type"]):
            ops = self.file_sets.setdefault(path, [])
            if item.reset:
                ops.clear()
            ops.append(item)

    def _artifact(self, path: str, obj: dict[str, Any], op: OpId) -> None:
        type_ = obj["type"]
        if type_ == "AssignArtifact":
            new = ArtifactRef(hash=str(obj["hash"]))
        elif type_ == "TrackFilesToArtifact":
            entries = [(str(e[0]), None if e[1] is None else str(e[1])) for e in obj["entries"]]
            new = ArtifactRef(entries=entries, project_id=obj.get("project_id"))
        else:
            new = ArtifactRef()
        if not self._claim(path, "artifact", type_):
            return
        if type_ == "TrackFilesToArtifact" and path in self.artifacts:
            old = self.artifacts[path]
            old.entries.extend(new.entries)
            old.project_id = new.project_id or old.project_id
        else:
            self.artifacts[path] = new

    # -- results --------------------------------------------------------------------------------
    @property
    def operations(self) -> int:
        return sum(self.op_types.values())

    def field_items(self) -> dict[str, Field]:
        """Every scalar attribute, string sets included, sorted by path."""
        out: dict[str, Field] = dict(self.fields)
        for path, values in self.sets.items():
            out[path] = Field("string_set", frozenset(values))
        return dict(sorted(out.items()))


def _opt_float(value: object) -> float | None:
    return None if value is None else float(value)  # type: ignore[arg-type]


def replay_ops(
    ops: Iterable[Mapping[str, Any]], container_id: str = "00000000-0000-0000-0000-000000000000",
    *, discard: Mapping[str, OpId] | None = None,
) -> Replay:
    """Replay bare operation objects (`obj` values), numbered 1..N, keeping every point (tests)."""
    replay = Replay(container_id, discard=discard)
    replay.run((0, {"obj": dict(op), "version": i}) for i, op in enumerate(ops, 1))
    return replay

