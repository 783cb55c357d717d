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


def _check_header(data: bytes, path: Path) -> None:
    if len(data) < 7 or data[:4] != HEADER:
        msg = f"{path}: not a W&B transaction log"
        raise LogFormatError(msg)
    magic, version = struct.unpack_from("<HB", data, 4)
    if magic != MAGIC or version != 0:
        msg = f"{path}: unknown W&B log version (magic {magic:#x}, version {version})"
        raise LogFormatError(msg)


def _frames_at(path: Path, start: int) -> Iterator[tuple[bytes, int]]:
    """Record payloads of a `.wandb` file from offset `start`, read one 32 KiB block at a time,
    each with the offset just past it (where the next read may start).

    `start` is 0, a block boundary, or an offset this function returned; a continuation fragment
    met first (a record begun before `start`) is skipped; a torn or corrupt record ends the read."""
    with path.open("rb") as fh:
        _check_header(fh.read(7), path)
        pos = max(start, 7)
        block_start = (pos // BLOCK) * BLOCK
        fh.seek(block_start)
        off = pos - block_start
        pending: bytearray | None = None
        while True:
            block = fh.read(BLOCK)
            if not block:
                return
            while off < len(block):
                if BLOCK - off < _REC_HEADER:
                    break  # a block tail shorter than a header
                if len(block) - off < _REC_HEADER:
                    return  # torn tail
                crc, length, kind = struct.unpack_from("<IHB", block, off)
                if kind == 0 and length == 0:
                    break  # zero padding up to the block end
                body = block[off + _REC_HEADER: off + _REC_HEADER + length]
                off += _REC_HEADER + length
                if len(body) < length or zlib.crc32(body, zlib.crc32(bytes([kind]))) & 0xFFFFFFFF != crc:
                    return  # torn or corrupt tail: everything before it is good
                if kind == _FULL:
                    pending = None
                    yield bytes(body), block_start + off
                elif kind == _FIRST:
                    pending = bytearray(body)
                elif kind == _MIDDLE and pending is not None:
                    pending += body
                elif kind == _LAST and pending is not None:
                    pending += body
                    yield bytes(pending), block_start + off
                    pending = None
            block_start += BLOCK
            off = 0


def _parsed(path: Path, start: int) -> Iterator[tuple[Any, int]]:
    """`Record`s from `start` (see `_frames_at`), each with the offset just past it."""
    from wandb.proto import wandb_internal_pb2 as pb

    for payload, end in _frames_at(path, start):
        record = pb.Record()  # type: ignore[attr-defined]
        try:
            record.ParseFromString(payload)
        except Exception:  # noqa: BLE001 - a garbled record ends the readable part
            return
        yield record, end


def iter_records(path: Path, *, tail_bytes: int | None = None) -> Iterator[Any]:
    """Parsed `Record`s of a `.wandb` file, streamed (memory of one record, not of the file); with
    `tail_bytes`, only those of the last blocks."""
    size = path.stat().st_size
    base = 0
    if tail_bytes is not None and size > tail_bytes + BLOCK:
        base = ((size - tail_bytes) // BLOCK) * BLOCK
    for record, _ in _parsed(path, base):
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
    Nested items (media, histograms) are dicts of their sub-keys. Empty when read without history."""
    counts: dict[str, int] = field(default_factory=dict)
    """Top-level history key -> rows holding it (filled with or without history)."""
    first: dict[str, Any] = field(default_factory=dict)
    """Top-level history key -> its value in the first row holding it."""


def _set_nested(target: dict[str, Any], path: tuple[str, ...], value: Any) -> None:
    node = target
    for part in path[:-1]:
        child = node.get(part)
        if not isinstance(child, dict):
            child = {}
            node[part] = child
        node = child
    node[path[-1]] = value


def _hidden(key: str) -> bool:
    return key.startswith("_") and not key.startswith("_neptune/")


def _history_row(record: Any, keys: set[str] | None) -> tuple[int, float | None, dict[str, Any]]:
    """(step, `_timestamp`, {top-level key: value}) of a history record; only `keys` when given."""
    row: dict[str, Any] = {}
    for item in record.history.item:
        path = _item_path(item)
        if keys is None or path[0] in keys or path[0] in ("_step", "_timestamp"):
            _set_nested(row, path, _loads(item.value_json))
    step = row.pop("_step", None)
    if step is None:
        step = record.history.step.num
    return int(step), row.pop("_timestamp", None), row


def read_history_page(
    path: Path, key: str, companions: tuple[str, ...], start: int, limit: int | None
) -> tuple[dict[str, list[tuple[int, float | None, Any]]], int | None]:
    """The rows of `key` (and of its `companions`, same rows) from offset `start`, as `LoggedRun.history`
    holds them, until `limit` rows of `key` were read; and the offset to go on from (None: the end).

    Memory of one page: the file is streamed and only these keys' values are decoded."""
    wanted = {key, *companions}
    history: dict[str, list[tuple[int, float | None, Any]]] = {}
    taken = 0
    for record, end in _parsed(path, start):
        if record.WhichOneof("record_type") != "history":
            continue
        if not any(_item_path(item)[0] in wanted for item in record.history.item):
            continue
        step, ts, row = _history_row(record, wanted)
        for k, value in row.items():
            history.setdefault(k, []).append((step, ts, value))
        taken += key in row
        if limit is not None and taken >= limit:
            return history, end
    return history, None


def read_run(path: Path, *, history: bool = True) -> LoggedRun:
    """Everything in a `.wandb` file that verify compares, streamed; `history=False` keeps only each
    history key's row count and first value (`counts`, `first`), not its points."""
    out = LoggedRun()
    for record in iter_records(path):
        which = record.WhichOneof("record_type")
        if which == "history":
            out.rows += 1
            if history:
                step, ts, row = _history_row(record, None)
                for key, value in row.items():
                    if not _hidden(key):
                        out.history.setdefault(key, []).append((step, ts, value))
                        out.counts[key] = out.counts.get(key, 0) + 1
                        out.first.setdefault(key, value)
                continue
            row_keys = {_item_path(item)[0] for item in record.history.item}
            row_keys = {k for k in row_keys if not _hidden(k)}  # also drops _step and _timestamp
            fresh = row_keys - out.counts.keys()
            for top in row_keys:
                out.counts[top] = out.counts.get(top, 0) + 1
            if fresh:
                _, _, row = _history_row(record, fresh)
                out.first.update({top: row.get(top) for top in fresh})
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
