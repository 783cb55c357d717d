"""Read a W&B transaction log (`run-<id>.wandb`) back into plain Python, for find_run and verify.

The file is the LevelDB log format wandb has always used (its Python `DataStore` was removed in
0.31): a 7-byte header (`:W&B`, magic 0xBEE1, version 0), then 32 KiB blocks of records, each with
a 7-byte header (crc32 of type byte + payload, uint16 length, uint8 type FULL/FIRST/MIDDLE/LAST);
the payload is a `wandb.proto.wandb_internal_pb2.Record`. A block tail shorter than a header, and
zero padding, are skipped; a torn last record (a crash mid-write) ends the read.

Parsing the protobuf needs wandb (imported lazily); the framing does not.
"""

from __future__ import annotations

import json
import struct
import zlib
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

HEADER = b":W&B"
MAGIC = 0xBEE1
BLOCK = 32 * 1024
_REC_HEADER = 7
_FULL, _FIRST, _MIDDLE, _LAST = 1, 2, 3, 4


class LogFormatError(Exception):
    """Not a `.wandb` file, or one of an unknown version."""


def _frames(data: bytes, base: int) -> Iterator[bytes]:
    """Record payloads of `data`, which starts at file offset `base` (0 or a block boundary);
    a leading continuation fragment (a record begun in an earlier block) is skipped."""
    off = 7 if base == 0 else 0
    pending: bytearray | None = None
    while off < len(data):
        left = BLOCK - (base + off) % BLOCK
        if left < _REC_HEADER:
            off += left
            continue
        crc, length, kind = struct.unpack_from("<IHB", data, off)
        if kind == 0 and length == 0:
            off += left  # zero padding up to the block end
            continue
        body = data[off + _REC_HEADER: off + _REC_HEADER + length]
        off += _REC_HEADER + length
        if len(body) < length or zlib.crc32(body, zlib.crc32(bytes([kind]))) & 0xFFFFFFFF != crc:
            return  # torn or corrupt tail: everything before it is good
        if kind == _FULL:
            pending = None
            yield bytes(body)
        elif kind == _FIRST:
            pending = bytearray(body)
        elif kind == _MIDDLE and pending is not None:
            pending += body
        elif kind == _LAST and pending is not None:
            pending += body
            yield bytes(pending)
            pending = None


def _check_header(data: bytes, path: Path) -> None:
    if len(data) < 7 or data[:4] != HEADER:
        msg = f"{path}: not a W&B transaction log"
        raise LogFormatError(msg)
    magic, version = struct.unpack_from("<HB", data, 4)
    if magic != MAGIC or version != 0:
        msg = f"{path}: unknown W&B log version (magic {magic:#x}, version {version})"
        raise LogFormatError(msg)


def iter_records(path: Path, *, tail_bytes: int | None = None) -> Iterator[Any]:
    """Parsed `Record`s of a `.wandb` file; with `tail_bytes`, only those of the last blocks."""
    from wandb.proto import wandb_internal_pb2 as pb

    with path.open("rb") as fh:
        _check_header(fh.read(7), path)
        size = path.stat().st_size
        base = 0
        if tail_bytes is not None and size > tail_bytes + BLOCK:
            base = ((size - tail_bytes) // BLOCK) * BLOCK
        fh.seek(base)
        data = fh.read()
    for payload in _frames(data, base):
        record = pb.Record()  # type: ignore[attr-defined]
        try:
            record.ParseFromString(payload)
        except Exception:  # noqa: BLE001 - a garbled record ends the readable part
            return
        yield record


def _item_path(item: Any) -> tuple[str, ...]:
    return tuple(item.nested_key) if len(item.nested_key) else (item.key,)


def _loads(text: str) -> Any:
    return json.loads(text) if text else None


@dataclass
class Marker:
    """What find_run needs: the completion marker and whether the run exited."""

    status: str | None = None
    digest: str | None = None
    exited: bool = False
    values: dict[str, Any] = field(default_factory=dict)
    """The last value of each of `read_marker`'s `extra_keys` found."""


def read_marker(path: Path, status_key: str, digest_key: str, extra_keys: tuple[str, ...] = ()) -> Marker:
    """The last status/digest summary values and the exit record, reading from the end.

    The marker is written just before `finish`, so the last blocks normally hold it; the read
    widens to the whole file when they do not.
    """
    size = path.stat().st_size
    tail = 4 * BLOCK
    while True:
        marker = Marker()
        for record in iter_records(path, tail_bytes=tail):
            which = record.WhichOneof("record_type")
            if which == "summary":
                for item in record.summary.update:
                    key = "/".join(_item_path(item))
                    if key == status_key:
                        marker.status = _loads(item.value_json)
                    elif key == digest_key:
                        marker.digest = _loads(item.value_json)
                    elif key in extra_keys:
                        marker.values[key] = _loads(item.value_json)
            elif which == "exit":
                marker.exited = marker.status is not None
        if marker.status is not None or tail >= size:
            return marker
        tail *= 8


@dataclass
class LoggedRun:
    """One offline run file, read back."""

    run_id: str = ""
    project: str = ""
    entity: str = ""
    name: str | None = None
    notes: str | None = None
    group: str | None = None
    tags: tuple[str, ...] = ()
    config: dict[str, Any] = field(default_factory=dict)
    summary: dict[str, Any] = field(default_factory=dict)
    files: list[str] = field(default_factory=list)
    exit_code: int | None = None
    start_micros: int | None = None
    """The run record's start time (epoch microseconds); None online or when unset."""
    rows: int = 0
    history: dict[str, list[tuple[int, float | None, Any]]] = field(default_factory=dict)
    """Top-level history key -> (step, row `_timestamp` in seconds, value) per row holding it.
    Nested items (media, histograms) are dicts of their sub-keys."""


def _set_nested(target: dict[str, Any], path: tuple[str, ...], value: Any) -> None:
    node = target
    for part in path[:-1]:
        child = node.get(part)
        if not isinstance(child, dict):
            child = {}
            node[part] = child
        node = child
    node[path[-1]] = value


def read_run(path: Path) -> LoggedRun:
    """Everything in a `.wandb` file that verify compares."""
    out = LoggedRun()
    history = out.history
    for record in iter_records(path):
        which = record.WhichOneof("record_type")
        if which == "history":
            row: dict[str, Any] = {}
            for item in record.history.item:
                _set_nested(row, _item_path(item), _loads(item.value_json))
            step = row.pop("_step", None)
            if step is None:
                step = record.history.step.num
            ts = row.pop("_timestamp", None)
            out.rows += 1
            for key, value in row.items():
                if key.startswith("_") and not key.startswith("_neptune/"):
                    continue
                history.setdefault(key, []).append((int(step), ts, value))
        elif which == "run":
            run = record.run
            out.run_id = run.run_id
            out.project = run.project
            out.entity = run.entity
            out.name = run.display_name or None
            out.notes = run.notes or None
            out.group = run.run_group or None
            out.tags = tuple(run.tags)
            if run.HasField("start_time"):
                out.start_micros = int(run.start_time.ToMicroseconds())
            for item in run.config.update:
                _set_nested(out.config, _item_path(item), _loads(item.value_json))
        elif which == "config":
            for item in record.config.update:
                _set_nested(out.config, _item_path(item), _loads(item.value_json))
            for item in record.config.remove:
                out.config.pop(_item_path(item)[0], None)
        elif which == "summary":
            for item in record.summary.update:
                out.summary["/".join(_item_path(item))] = _loads(item.value_json)
        elif which == "files":
            out.files.extend(f.path for f in record.files.files)
        elif which == "exit":
            out.exit_code = int(record.exit.exit_code)
    return out
