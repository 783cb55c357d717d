"""From a replayed attribute state to the neutral model: series tables, system info, files, losses."""

from __future__ import annotations

import base64
import glob
import json
import mimetypes
import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any, cast

import pyarrow as pa
import pyarrow.compute as pc

from neptune_migrate.dump.schema import TIMESTAMP
from neptune_migrate.model import (
    Field,
    FileEntry,
    FileKind,
    Loss,
    LossCategory,
    SeriesKind,
    SystemInfo,
)
from neptune_migrate.sources.base import PathMap, confined, is_windows_path, path_leaf
from neptune_migrate.sources.neptune_queue.replay import ArtifactRef, FileRef, FileSetOp, Replay

SYSTEM_FIELDS = (
    "name", "description", "owner", "state", "failed", "trashed", "created_at", "modified_at",
    "custom_run_id", "experiment_name",
)
_SYSTEM_PATHS = {
    "sys/name": "name", "sys/description": "description", "sys/owner": "owner", "sys/state": "state",
    "sys/failed": "failed", "sys/trashed": "trashed", "sys/creation_time": "created_at",
    "sys/modification_time": "modified_at", "sys/custom_run_id": "custom_run_id",
}
"""`sys/*` attributes that belong in `SystemInfo`; every other `sys/*` stays an ordinary field."""

ARTIFACT_REFERENCE_NAME = "artifact_reference.json"
_REMOTE_SCHEMES = ("s3://", "gs://", "gcs://", "http://", "https://", "az://", "abfs://")


# ---------------------------------------------------------------------------------------------
# Series


def _timestamps(ts: list[Any]) -> pa.Array:
    """Float Unix seconds -> timestamp[us, UTC], rounded to the nearest microsecond."""
    seconds = pa.array(ts, pa.float64())
    micros = pc.round(pc.multiply(seconds, 1_000_000.0))
    return pc.cast(micros, pa.int64()).cast(TIMESTAMP)


def points_table(kind: SeriesKind, cols: Mapping[str, list[Any]]) -> pa.Table:
    """A batch of `PointBuffer` columns as a dump series table of `kind`."""
    base = {
        "path": pa.array(cols["path"], pa.string()),
        "step": pa.array(cols["step"], pa.float64()),
        "timestamp": _timestamps(cols["ts"]),
    }
    if kind == "float":
        return pa.table({**base, "value": pa.array(cols["value"], pa.float64())})
    if kind == "string":
        return pa.table({**base, "value": pa.array(cols["value"], pa.string())})
    return pa.table({
        **base,
        "sha256": pa.array(cols["sha256"], pa.string()),
        "size": pa.array(cols["size"], pa.int64()),
        "name": pa.array(cols["name"], pa.string()),
        "mime_type": pa.array(cols["mime_type"], pa.string()),
        "title": pa.array(cols["title"], pa.string()),
        "description": pa.array(cols["description"], pa.string()),
        "missing": pa.array(cols["missing"], pa.string()),
    })


# ---------------------------------------------------------------------------------------------
# System info


@dataclass(frozen=True)
class Identity:
    """`SystemInfo`, the remaining ordinary fields, and the system fields the source lacks."""

    system: SystemInfo
    fields: dict[str, Field]
    absent: tuple[str, ...]


def build_identity(replay: Replay, created_at: datetime | None, *, partial: bool) -> Identity:
    """Split `sys/*` identity attributes off the fields. For a partial copy, untouched tags are absent
    (they may have been synced and removed); for an offline run they are known to be empty."""
    fields = replay.field_items()
    values: dict[str, Any] = {}
    for path, name in _SYSTEM_PATHS.items():
        f = fields.pop(path, None)
        if f is not None:
            values[name] = f.value
    tags_field = fields.pop("sys/tags", None)
    group_field = fields.pop("sys/group_tags", None)
    if "created_at" not in values and created_at is not None:
        values["created_at"] = created_at
    system = SystemInfo(
        name=_opt_str(values.get("name")),
        description=_opt_str(values.get("description")),
        owner=_opt_str(values.get("owner")),
        state=_opt_str(values.get("state")),
        failed=values.get("failed") if isinstance(values.get("failed"), bool) else None,
        trashed=values.get("trashed") if isinstance(values.get("trashed"), bool) else None,
        created_at=values.get("created_at") if isinstance(values.get("created_at"), datetime) else None,
        modified_at=values.get("modified_at") if isinstance(values.get("modified_at"), datetime) else None,
        custom_run_id=_opt_str(values.get("custom_run_id")),
        tags=cast(frozenset[str], tags_field.value) if tags_field is not None else frozenset(),
        group_tags=cast(frozenset[str], group_field.value) if group_field is not None else frozenset(),
    )
    absent = [name for name in SYSTEM_FIELDS if getattr(system, name) is None]
    if partial and tags_field is None:
        absent.append("tags")
    if partial and group_field is None:
        absent.append("group_tags")
    return Identity(system, fields, tuple(absent))


def _opt_str(value: object) -> str | None:
    return None if value is None else str(value)


# ---------------------------------------------------------------------------------------------
# Files


def _mime(name: str) -> str | None:
    return mimetypes.guess_type(name, strict=False)[0]


def map_path(path_map: PathMap, recorded: str) -> tuple[str, tuple[str, str] | None]:
    """`recorded` rewritten by the first (longest) matching `--path-map` prefix, and that pair.

    Windows paths (`C:\\Users\\...`) are matched with either separator and come out with `/`."""
    return path_map.map(recorded)


def path_map_hint(recorded: str) -> str:
    """The folder of a recorded path (before any glob character): the OLD part of a `--path-map` that
    would find it."""
    sep = "\\" if is_windows_path(recorded) and "\\" in recorded else "/"
    head = recorded
    for i, ch in enumerate(recorded):
        if ch in "*?[":
            head = recorded[:i]
            break
    folder = head.rsplit(sep, 1)[0] if sep in head else head
    return folder or sep


def unmap_path(local: str, pair: tuple[str, str] | None) -> str:
    """The path as recorded on the training machine, for a local path found through `pair`."""
    if pair is None:
        return local
    old, new = pair
    return old + local[len(new):] if local.startswith(new) else local


@dataclass
class FileResolver:
    """Finds and stores the files a run references; records what is missing.

    A missing file whose operation the server had acknowledged (`version <= last_ack_version` of its
    execution), or that the client deletes itself once uploaded (`clean_after_upload`) in an async/sync
    leftover, is *not in the source any more*: the client uploaded it and may have removed it. Any other
    missing file is *lost*.
    """

    path_map: PathMap
    store_file: Callable[[Path], tuple[str, int]]
    store_bytes: Callable[[bytes], tuple[str, int]]
    upload_dirs: list[Path]
    """`upload_path/` of each execution, by execution index."""
    last_acks: list[int | None] = field(default_factory=list)
    """`last_ack_version` of each execution, by execution index (None: nothing acknowledged)."""
    leftover: bool = False
    """True for an async/sync leftover (a client that was connected to a server)."""
    entries: list[FileEntry] = field(default_factory=list)
    losses: list[Loss] = field(default_factory=list)
    read: list[str] = field(default_factory=list)
    unmapped: list[str] = field(default_factory=list)
    """Recorded absolute paths not found and not rewritten by any `--path-map` (for the hint)."""

    def acknowledged(self, execution: int, version: int) -> bool:
        ack = self.last_acks[execution] if execution < len(self.last_acks) else None
        return ack is not None and 0 < version <= ack

    def missing(
        self, attr: str, kind: FileKind, name: str, origin: str | None, why: str,
        *, category: LossCategory = LossCategory.LOST,
    ) -> None:
        self.entries.append(FileEntry(attr, kind, name, None, None, _mime(name), why, origin))
        loss_kind = "missing_file" if category is LossCategory.LOST else "file_gone_after_upload"
        self.losses.append(Loss(loss_kind, attr, 1, why, category=category))

    def _gone_category(self, execution: int, version: int, *, cleaned: bool = False) -> tuple[LossCategory, str]:
        if self.acknowledged(execution, version):
            return LossCategory.NOT_IN_SOURCE, (
                f" (operation v{version} was acknowledged by the server, last_ack_version "
                f"{self.last_acks[execution]}: the client had uploaded it)")
        if cleaned and self.leftover:
            return LossCategory.NOT_IN_SOURCE, " (clean_after_upload: the client deletes it once uploaded)"
        return LossCategory.LOST, ""

    def store(self, attr: str, kind: FileKind, name: str, local: Path, origin: str) -> None:
        try:
            sha, size = self.store_file(local)
        except OSError as exc:
            self.missing(attr, kind, name, origin, f"unreadable: {local} ({exc.strerror or exc})")
            return
        self.read.append(str(local))
        self.entries.append(FileEntry(attr, kind, name, sha, size, _mime(name), None, origin))

    def _where(self, recorded: str, local: str, pair: tuple[str, str] | None) -> str:
        if pair:
            return f"{recorded} (looked at {local} via --path-map)"
        self.unmapped.append(recorded)
        return f"{recorded} (if it moved, add --path-map {path_map_hint(recorded)}=NEW_PREFIX)"

    # -- UploadFile -----------------------------------------------------------------------------
    def file(self, attr: str, ref: FileRef) -> None:
        leaf = attr.rsplit("/", 1)[-1]
        memory_name = f"{leaf}.{ref.ext}" if ref.ext else leaf
        if ref.content_b64 is not None:
            sha, size = self.store_bytes(base64.b64decode(ref.content_b64))
            origin = "UploadFileContent (inline in the queue)"
            self.entries.append(FileEntry(attr, "file", memory_name, sha, size, _mime(memory_name), None, origin))
            return
        if ref.file_path is None:
            folder = self.upload_dirs[ref.execution]
            name = str(ref.tmp_file_name)
            upload = confined(folder, name)
            if upload is None:
                self.missing(attr, "file", memory_name, name,
                             f"refused: tmp_file_name {name!r} does not stay inside {folder}")
                return
            if upload.is_file():
                self.store(attr, "file", memory_name, upload, str(folder / name))
            else:
                category, why = self._gone_category(ref.execution, ref.version, cleaned=ref.clean_after_upload)
                why = why or " (async runs delete it once uploaded)"
                self.missing(attr, "file", memory_name, str(folder / name),
                             f"in-memory upload not found: {folder / name}{why}", category=category)
            return
        recorded = ref.file_path
        name = path_leaf(recorded) or memory_name
        local, pair = map_path(self.path_map, recorded)
        if Path(local).is_file():
            self.store(attr, "file", name, Path(local), recorded)
        else:
            category, why = self._gone_category(ref.execution, ref.version, cleaned=ref.clean_after_upload)
            self.missing(attr, "file", name, recorded, f"not found: {self._where(recorded, local, pair)}{why}",
                         category=category)

    # -- UploadFileSet / DeleteFiles ------------------------------------------------------------
    def file_set(self, attr: str, ops: list[FileSetOp]) -> None:
        """Expand globs now (as the client did at sync time); names are relative to the common root."""
        members: dict[str, tuple[Path, str]] = {}
        for op in ops:
            if op.action == "delete":
                for item in op.items:
                    prefix = item.rstrip("/") + "/"
                    for name in [n for n in members if n == item or n.startswith(prefix)]:
                        del members[name]
                continue
            if op.reset:
                members.clear()
            found: list[tuple[str, str]] = []  # (local, recorded)
            for pattern in op.items:
                local_pattern, pair = map_path(self.path_map, pattern)
                matches = [] if is_windows_path(local_pattern) else sorted(glob.glob(local_pattern, recursive=True))
                if not matches:
                    category, why = self._gone_category(op.execution, op.version)
                    self.missing(attr, "file_set", path_leaf(pattern) or pattern, pattern,
                                 f"matched no file at export time: {self._where(pattern, local_pattern, pair)}{why}",
                                 category=category)
                for match in matches:
                    local = os.path.abspath(match)
                    if os.path.isdir(local):
                        for root, _, files in os.walk(local):
                            for f in sorted(files):
                                p = os.path.join(root, f)
                                found.append((p, unmap_path(p, pair)))
                    else:
                        found.append((local, unmap_path(local, pair)))
            if not found:
                continue
            common = os.path.commonpath([p for p, _ in found])
            if os.path.isfile(common):
                common = os.path.dirname(common)
            for local, recorded in found:
                members[os.path.relpath(local, common).replace(os.sep, "/")] = (Path(local), recorded)
        for name, (member, recorded) in sorted(members.items()):
            self.store(attr, "file_set", name, member, recorded)

    # -- artifacts ------------------------------------------------------------------------------
    def artifact(self, attr: str, ref: ArtifactRef) -> None:
        """Tracked local files are stored; a hash or a remote location is kept as a reference document."""
        remote = [e for e in ref.entries if e[0].startswith(_REMOTE_SCHEMES)]
        if ref.hash is not None or remote:
            doc = {
                "hash": ref.hash,
                "entries": [{"path": p, "destination": d} for p, d in ref.entries],
                "project_id": ref.project_id,
            }
            data = (json.dumps(doc, indent=1, sort_keys=True) + "\n").encode()
            sha, size = self.store_bytes(data)
            self.entries.append(FileEntry(attr, "artifact", ARTIFACT_REFERENCE_NAME, sha, size,
                                          "application/json", None, f"artifact {ref.hash or 'tracked files'}"))
            why = []
            if ref.hash is not None:
                why.append("AssignArtifact records only the artifact's hash; its files were on the Neptune server")
            if remote:
                why.append(f"{len(remote)} tracked remote location(s) ({remote[0][0]}) are not downloaded")
            self.losses.append(Loss("artifact_content_not_exported", attr, 1,
                                    "; ".join(why) + f"; the reference is kept as {ARTIFACT_REFERENCE_NAME}"))
        for location, destination in ref.entries:
            if location.startswith(_REMOTE_SCHEMES):
                continue
            recorded = location.removeprefix("file://")
            local, pair = map_path(self.path_map, recorded)
            base = Path(local).expanduser()
            if base.is_dir():
                files = sorted(p for p in base.rglob("*") if p.is_file())
                pairs = [(p, p.relative_to(base).as_posix()) for p in files]
            elif base.is_file():
                pairs = [(base, base.name)]
            else:
                name = path_leaf(recorded)
                self.missing(attr, "artifact", name, recorded,
                             f"tracked location not found: {self._where(recorded, local, pair)}")
                continue
            for path, rel in pairs:
                name = rel if destination is None else f"{destination.rstrip('/')}/{rel}"
                self.store(attr, "artifact", name, path, unmap_path(str(path), pair))
