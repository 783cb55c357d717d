"""Finding the queue folders of every neptune 1.x generation, and reading their JSON lines.

Generations (the client's `StructureVersion` and its predecessors):

| generation | client | folder |
|---|---|---|
| `v3` | >= 1.9 | `<mode>/<type>__<uuid>__<pid>__<rand8>/` with `metadata.json` |
| `pre-1.9` | <= 1.8 | `<mode>/run__<uuid>/` (no `metadata.json`) |
| `exec-v2` | <= 1.8 | `<mode>/run__<uuid>/exec-<ts>-<date>-<pid>/` |
| `exec-v1` | 0.x | `<mode>/<uuid>/exec-<n><ts>/` plus a `container_type` file |

Each execution folder holds `data-<first version>.log` files (JSON lines), `last_put_version`,
`last_ack_version` and `upload_path/`. Nothing here writes to, creates in, or locks the user's folders:
files are opened read-only and never through the client's `DiskQueue` (which creates and deletes files).
"""

from __future__ import annotations

import heapq
import json
import os
import re
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from datetime import datetime
from itertools import repeat
from pathlib import Path
from typing import Any, Literal, cast

from neptune_migrate.model import ContainerKind
from neptune_migrate.sources.neptune_queue.errors import QueueLayoutError

MODES = ("offline", "async", "sync")
"""Sub-folders of a `.neptune` data directory, one per client mode."""
KINDS: tuple[ContainerKind, ...] = ("run", "model", "model_version", "project")

Generation = Literal["v3", "pre-1.9", "exec-v2", "exec-v1"]
GENERATION_NAMES: dict[Generation, str] = {
    "v3": "<type>__<uuid>__<pid>__<rand> with metadata.json (client >= 1.9)",
    "pre-1.9": "run__<uuid> without metadata.json (client <= 1.8)",
    "exec-v2": "run__<uuid>/exec-* (StructureVersion 2, client <= 1.8)",
    "exec-v1": "<uuid>/exec-* (StructureVersion 1, client 0.x)",
}

_UUID = re.compile(r"^[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}$")
_DATA_FILE = re.compile(r"^data-(\d+)\.log$")
_EXEC_TS = re.compile(r"^exec-(\d{9,}\.\d+)-")

RESET_TYPES = frozenset({"ClearFloatLog", "ClearStringLog", "ClearImageLog", "DeleteAttribute"})
"""Operations that throw away the points a series received before them."""
_RESET_NEEDLES = tuple(f'"type": "{t}"'.encode() for t in sorted(RESET_TYPES))
_RECORD_PREFIX = b'{"obj": {"type": "'
"""How the client's `json.dumps` starts every line; the byte-level pre-scan relies on it."""


@dataclass(frozen=True)
class Execution:
    """One execution folder: the queue one client process wrote."""

    folder: Path
    data_files: tuple[Path, ...]
    """`data-<N>.log` sorted by N (the first version each holds)."""
    mode: str
    generation: Generation
    metadata: dict[str, Any] | None
    last_put: int | None
    last_ack: int | None
    started: float | None
    """Epoch seconds: `metadata.json:createdAt`, or the timestamp in an `exec-<ts>-...` name."""

    @property
    def upload_dir(self) -> Path:
        return self.folder / "upload_path"


@dataclass
class Container:
    """A run, model, model version or project: every execution folder with its uuid."""

    kind: ContainerKind
    uuid: str
    folder: Path
    executions: list[Execution] = field(default_factory=list)
    container_type_file: bool = False
    """True when a `container_type` file (StructureVersion 1) named the kind."""
    duplicates: list[str] = field(default_factory=list)
    """One sentence per execution folder found twice (copies of one run): which copy was kept."""

    @property
    def mode(self) -> str:
        """`async`/`sync` when any execution is a leftover of a connected run, else its mode."""
        modes = {e.mode for e in self.executions}
        for mode in ("async", "sync", "offline"):
            if mode in modes:
                return mode
        return "unknown"

    @property
    def generations(self) -> list[Generation]:
        return sorted({e.generation for e in self.executions})


@dataclass
class Scan:
    """What a path holds: how it was recognised, the containers found, and what was skipped."""

    detected: str
    root: Path
    containers: dict[str, Container] = field(default_factory=dict)
    warnings: list[str] = field(default_factory=list)
    unreadable: dict[str, str] = field(default_factory=dict)
    """uuid -> why its folder could not be read (reported as that run's failure)."""
    data_folders: list[Path] = field(default_factory=list)
    """The `.neptune` data folders found under the given path (when it held several)."""


def parse_container_name(name: str) -> tuple[ContainerKind | None, str] | None:
    """`(kind, uuid)` of a container folder name (kind None for a bare uuid); None if not one."""
    parts = name.split("__")
    kind: str | None
    if len(parts) == 1:
        kind, uuid = None, parts[0]
    elif len(parts) in (2, 4, 5):
        kind, uuid = parts[0], parts[1]
    else:
        return None
    if not _UUID.match(uuid):
        return None
    if kind is None:
        return None, uuid.lower()
    for known in KINDS:
        if kind == known:
            return known, uuid.lower()
    return None


def _data_files(folder: Path) -> tuple[Path, ...]:
    found = []
    for p in folder.iterdir():
        m = _DATA_FILE.match(p.name)
        if m and p.is_file():
            found.append((int(m.group(1)), p))
    return tuple(p for _, p in sorted(found))


def _is_execution(folder: Path) -> bool:
    if (folder / "metadata.json").is_file() or (folder / "last_put_version").is_file():
        return True
    return any(_DATA_FILE.match(p.name) for p in folder.iterdir())


def _exec_children(folder: Path) -> list[Path]:
    return sorted(p for p in folder.iterdir() if p.is_dir() and p.name.startswith("exec-"))


def _read_version(path: Path, warnings: list[str]) -> int | None:
    """`last_put_version` / `last_ack_version`: an int; an empty or absent file is None."""
    if not path.is_file():
        return None
    text = path.read_text(encoding="utf-8", errors="replace").strip()
    if not text:
        return None
    try:
        return int(text)
    except ValueError:
        warnings.append(f"{path}: not a version number ({text[:40]!r}); ignored")
        return None


def _parse_created(value: object) -> float | None:
    if not isinstance(value, str):
        return None
    try:
        dt = datetime.fromisoformat(value)
    except ValueError:
        return None
    if dt.tzinfo is None:
        return None  # never guess a time zone
    return dt.timestamp()


def _read_execution(folder: Path, mode: str, generation: Generation, warnings: list[str]) -> Execution:
    metadata: dict[str, Any] | None = None
    meta_file = folder / "metadata.json"
    if meta_file.is_file():
        try:
            loaded = json.loads(meta_file.read_text(encoding="utf-8"))
        except (ValueError, UnicodeDecodeError) as exc:
            warnings.append(f"{meta_file}: unreadable metadata.json ({exc}); ignored")
        else:
            if isinstance(loaded, dict):
                metadata = loaded
    started = _parse_created(metadata.get("createdAt")) if metadata else None
    m = _EXEC_TS.match(folder.name)
    if started is None and m:
        started = float(m.group(1))
    if mode == "unknown" and metadata and metadata.get("mode") in MODES:
        mode = str(metadata["mode"])
    return Execution(
        folder=folder,
        data_files=_data_files(folder),
        mode=mode,
        generation=generation,
        metadata=metadata,
        last_put=_read_version(folder / "last_put_version", warnings),
        last_ack=_read_version(folder / "last_ack_version", warnings),
        started=started,
    )


def _container_type_file(folder: Path) -> ContainerKind | None:
    for candidate in (folder / "container_type", *(p / "container_type" for p in _exec_children(folder))):
        if candidate.is_file():
            text = candidate.read_text(encoding="utf-8", errors="replace").strip().lower()
            for known in KINDS:
                if text == known:
                    return known
    return None


def _add_container_dir(scan: Scan, folder: Path, mode: str) -> bool:
    """Read one container folder (any generation) into `scan`; False if it is not one."""
    parsed = parse_container_name(folder.name)
    if parsed is None:
        return False
    kind, uuid = parsed
    execs = _exec_children(folder)
    executions: list[Execution] = []
    if _is_execution(folder):
        has_meta = (folder / "metadata.json").is_file()
        executions.append(_read_execution(folder, mode, "v3" if has_meta else "pre-1.9", scan.warnings))
    elif execs:
        generation: Generation = "exec-v1" if kind is None else "exec-v2"
        executions.extend(
            _read_execution(e, mode, generation, scan.warnings) for e in execs if _is_execution(e)
        )
    if not executions:
        scan.warnings.append(f"{folder}: a container folder with no queue files (data-*.log); skipped")
        return True
    meta_kind = next(
        (e.metadata.get("containerType") for e in executions if e.metadata), None
    )
    typed = _container_type_file(folder) if kind is None else None
    if kind is None:
        kind = typed or "run"
    if meta_kind in KINDS and meta_kind != kind:
        scan.warnings.append(
            f"{folder}: folder name says {kind}, metadata.json says {meta_kind}; using {meta_kind}"
        )
        kind = cast(ContainerKind, meta_kind)
    meta_id = next((e.metadata.get("containerId") for e in executions if e.metadata), None)
    if isinstance(meta_id, str) and meta_id.lower() != uuid:
        scan.warnings.append(f"{folder}: metadata.json containerId {meta_id} differs from the folder name; "
                             "using the folder name")
    existing = scan.containers.get(uuid)
    if existing is None:
        scan.containers[uuid] = Container(kind, uuid, folder, executions, container_type_file=typed is not None)
    elif existing.kind != kind:
        scan.warnings.append(f"{folder}: uuid {uuid} is already a {existing.kind} in {existing.folder}; skipped")
    else:
        for ex in executions:
            _add_execution(existing, ex)
    return True


def _amount(ex: Execution) -> tuple[int, int]:
    """How much of its queue a copy of an execution folder holds: `last_put_version`, bytes of data."""
    return ex.last_put or 0, sum(f.stat().st_size for f in ex.data_files)


def _add_execution(container: Container, ex: Execution) -> None:
    """Add an execution folder to its container; a second copy of the same folder (the same run kept in
    two `.neptune` folders) is not merged: the copy holding more of the queue is kept and the choice recorded."""
    twin = next((e for e in container.executions if e.folder.name == ex.folder.name), None)
    if twin is None:
        container.executions.append(ex)
        return
    old, new = _amount(twin), _amount(ex)
    if new > old:
        container.executions[container.executions.index(twin)] = ex
        kept, other, kept_n, other_n = ex, twin, new, old
    else:
        kept, other, kept_n, other_n = twin, ex, old, new
    same = " (identical sizes)" if kept_n == other_n else ""
    container.duplicates.append(
        f"two copies of {ex.folder.name}: kept {kept.folder} (last_put_version {kept_n[0]}, {kept_n[1]} bytes), "
        f"ignored {other.folder} (last_put_version {other_n[0]}, {other_n[1]} bytes){same}"
    )


def _scan_mode_dir(scan: Scan, folder: Path, mode: str) -> None:
    try:
        children = sorted(folder.iterdir())
    except OSError as exc:
        scan.warnings.append(f"{folder}: cannot be read ({exc.strerror or exc}); its runs are not exported")
        return
    for child in children:
        if not child.is_dir():
            continue
        try:
            if not _add_container_dir(scan, child, mode):
                scan.warnings.append(f"{child}: not a neptune queue folder (unexpected name); skipped")
        except OSError as exc:
            _unreadable(scan, child, exc)


def _unreadable(scan: Scan, folder: Path, exc: OSError) -> None:
    """A container folder that cannot be read (permissions, I/O): its run is reported, the others go on."""
    parsed = parse_container_name(folder.name)
    why = f"{folder}: cannot be read ({type(exc).__name__}: {exc.strerror or exc})"
    if parsed is None or parsed[1] in scan.containers:
        scan.warnings.append(why + "; skipped")
    else:
        scan.unreadable[parsed[1]] = why


def _scan_data_dir(scan: Scan, folder: Path) -> None:
    for mode in MODES:
        if (folder / mode).is_dir():
            _scan_mode_dir(scan, folder / mode, mode)


def _data_folders_below(path: Path) -> list[Path]:
    """Every `.neptune` data folder (one holding `offline/`, `async/` or `sync/`) below `path`, any depth.

    Users keep several (`V4/.neptune`, `V5/.neptune`, one per experiment folder). Folders that cannot
    be listed are passed over; hidden folders other than `.neptune` are not entered.
    """
    found: list[Path] = []
    for root, dirs, _files in os.walk(path, onerror=None):
        here = Path(root)
        if here != path and any(d in MODES for d in dirs) and here.name == ".neptune":
            found.append(here)
            dirs[:] = []
            continue
        dirs[:] = sorted(d for d in dirs if d == ".neptune" or not d.startswith("."))
    return sorted(found)


def scan_path(path: Path) -> Scan:
    """Recognise `path`: a `.neptune` folder, a folder holding one, a mode folder, or one run folder."""
    if not path.is_dir():
        msg = (f"{path}: not a folder; give a .neptune folder, a folder containing one, "
               "or one run folder (run__<uuid>...)")
        raise QueueLayoutError(msg)
    parsed = parse_container_name(path.name)
    parent_mode = path.parent.name if path.parent.name in MODES else "unknown"
    if path.name.startswith("exec-") and parse_container_name(path.parent.name) is not None:
        container = path.parent
        grand = container.parent.name if container.parent.name in MODES else "unknown"
        scan = Scan(f"one execution folder of {container.name} (its whole run is read)", container)
        _add_container_dir(scan, container, grand)
    elif parsed is not None and (_is_execution(path) or _exec_children(path)):
        scan = Scan(f"one {parsed[0] or 'container'} folder", path)
        _add_container_dir(scan, path, parent_mode)
    elif any((path / mode).is_dir() for mode in MODES):
        scan = Scan(".neptune data folder", path)
        _scan_data_dir(scan, path)
    elif (path / ".neptune").is_dir():
        scan = Scan("folder containing .neptune", path / ".neptune")
        _scan_data_dir(scan, path / ".neptune")
    elif path.name in MODES:
        scan = Scan(f"{path.name}/ folder of a .neptune data folder", path)
        _scan_mode_dir(scan, path, path.name)
    elif found := _data_folders_below(path):
        names = ", ".join(str(f.relative_to(path)) for f in found)
        scan = Scan(f"folder holding {len(found)} .neptune data folder(s) ({names})", path)
        scan.data_folders = found
        for data_dir in found:
            _scan_data_dir(scan, data_dir)
    else:
        msg = (f"{path}: no neptune 1.x queue found (expected a .neptune folder with offline/ or async/, "
               "a folder containing .neptune, or a run__<uuid>... folder)")
        raise QueueLayoutError(msg)
    if not scan.containers and not scan.unreadable:
        msg = f"{path}: recognised as a {scan.detected}, but it holds no queue files (data-*.log)"
        raise QueueLayoutError(msg)
    return scan


# ---------------------------------------------------------------------------------------------
# Reading the JSON lines


@dataclass
class ReadStats:
    """What reading one execution's queue found, besides the operations themselves."""

    records: int = 0
    first_version: int | None = None
    last_version: int | None = None
    gaps: list[tuple[int, int]] = field(default_factory=list)
    """Missing version ranges `(first, last)` between records that are present."""
    out_of_order: int = 0
    unreadable: list[str] = field(default_factory=list)
    """`data-N.log:line` of lines that are not a JSON record (not counting a torn last line)."""
    torn_tail: str | None = None
    """`data-N.log:line` when the very last line was cut (a process killed mid-write)."""
    first_at: float | None = None
    last_at: float | None = None
    """The latest `at` (enqueue time, epoch seconds) of any record: when the run last wrote."""


_DECODER = json.JSONDecoder()
_SCAN_ONCE: Callable[[str, int], tuple[Any, int]] = _DECODER.scan_once  # type: ignore[attr-defined]
"""The C scanner behind `json.loads`, called directly (no bytes sniffing, no whitespace regex per line).
Python's json parses the `NaN` / `Infinity` literals the client writes."""


def _decode_line(line: str) -> dict[str, Any] | None:
    """One queue record, or None when the line is not one (torn, garbage)."""
    try:
        rec, end = _SCAN_ONCE(line, 0)
        if len(line) - end > 1 and line[end:].strip():
            return None
    except (StopIteration, ValueError):
        try:
            rec = json.loads(line)  # leading whitespace, odd spacing
        except ValueError:
            return None
    if type(rec) is not dict or type(rec.get("obj")) is not dict or type(rec.get("version")) is not int:
        return None
    return cast(dict[str, Any], rec)


def read_records(execution: Execution, stats: ReadStats) -> Iterator[dict[str, Any]]:
    """Every record of one execution, in file and line order, counting versions, gaps and bad lines.

    The client writes ASCII-only JSON; bytes that are not UTF-8 can only come from a damaged file and are
    replaced (the line then fails to parse and is reported).
    """
    scan_once = _SCAN_ONCE
    n_files = len(execution.data_files)
    last_version = stats.last_version
    for index, path in enumerate(execution.data_files):
        last_bad: str | None = None
        with path.open("r", encoding="utf-8", errors="replace", newline="\n") as fh:
            for lineno, line in enumerate(fh, 1):
                try:
                    rec, end = scan_once(line, 0)
                    version = rec["version"]
                    if (len(line) - end > 1 and line[end:].strip()) or type(rec["obj"]) is not dict \
                            or type(version) is not int:
                        raise ValueError
                except (StopIteration, ValueError, KeyError, TypeError):
                    if not line.strip():
                        continue
                    rec = _decode_line(line)
                    if rec is None:
                        if last_bad is not None:
                            stats.unreadable.append(last_bad)
                        last_bad = f"{path.name}:{lineno}"
                        continue
                    version = rec["version"]
                if last_bad is not None:
                    stats.unreadable.append(last_bad)
                    last_bad = None
                stats.records += 1
                at = rec.get("at")
                if at is not None and type(at) is not bool and isinstance(at, int | float) and at == at:
                    if stats.first_at is None:
                        stats.first_at = float(at)
                    if stats.last_at is None or at > stats.last_at:
                        stats.last_at = float(at)
                if last_version is None:
                    stats.first_version = version
                elif version != last_version + 1:
                    if version <= last_version:
                        stats.out_of_order += 1
                        stats.last_version = last_version
                        yield rec
                        continue
                    stats.gaps.append((last_version + 1, version - 1))
                last_version = version
                stats.last_version = version
                yield rec
        if last_bad is not None:
            if index == n_files - 1:
                stats.torn_tail = last_bad
            else:
                stats.unreadable.append(last_bad)


def read_matching(execution: Execution, needles: tuple[bytes, ...] | None) -> Iterator[dict[str, Any]]:
    """Records of one execution whose line contains one of `needles` (every record with None), in order.

    The needles are located with `bytes.find` over large blocks (a C search), so lines of other paths
    are never decoded, nor even split. Nothing is counted: the main pass reports bad lines.
    """
    for path in execution.data_files:
        if path.stat().st_size == 0:
            continue
        if needles is None:
            with path.open("r", encoding="utf-8", errors="replace", newline="\n") as text:
                for line in text:
                    rec = _decode_line(line)
                    if rec is not None:
                        yield rec
            continue
        for block in _blocks(path):
            starts: set[int] = set()
            for needle in needles:
                pos = block.find(needle)
                while pos != -1:
                    starts.add(block.rfind(b"\n", 0, pos) + 1)
                    pos = block.find(needle, pos + len(needle))
            for begin in sorted(starts):
                end = block.find(b"\n", begin)
                raw = block[begin:len(block) if end == -1 else end]
                rec = _decode_line(raw.decode("utf-8", errors="replace"))
                if rec is not None:
                    yield rec


BLOCK_BYTES = 8 * 1024 * 1024


def _blocks(path: Path) -> Iterator[bytes]:
    """The file in blocks of about `BLOCK_BYTES` that end on a line boundary (memory stays bounded by
    the block size, or by the longest line)."""
    carry = b""
    with path.open("rb") as fh:
        while chunk := fh.read(BLOCK_BYTES):
            block = carry + chunk if carry else chunk
            cut = block.rfind(b"\n") + 1
            if cut == 0:
                carry = block
                continue
            carry = block[cut:]
            yield block[:cut]
    if carry:
        yield carry


def merged_records(
    executions: list[Execution],
    stats: list[ReadStats] | None = None,
    needles: tuple[bytes, ...] | None = None,
) -> Iterator[tuple[int, dict[str, Any]]]:
    """`(execution index, record)` of several executions of one container, merged by time.

    With `stats`, every record is read and counted; without, only lines containing one of `needles`
    (every line when None) are decoded. One execution: its records in order. Several: merged by each
    record's `at` (enqueue time); a record without `at` (clients < 1.8) takes the previous record's, or
    its execution's start time.
    """

    def reader(i: int) -> Iterator[dict[str, Any]]:
        if stats is not None:
            return read_records(executions[i], stats[i])
        return read_matching(executions[i], needles)

    if len(executions) == 1:
        return zip(repeat(0), reader(0))

    def keyed(i: int) -> Iterator[tuple[float, int, int, dict[str, Any]]]:
        ex = executions[i]
        key = ex.started if ex.started is not None else 0.0
        for n, rec in enumerate(reader(i)):
            at = rec.get("at")
            if isinstance(at, int | float) and at == at:
                key = float(at)
            yield key, i, n, rec

    return ((i, rec) for _, i, _, rec in heapq.merge(*(keyed(i) for i in range(len(executions)))))


def reset_paths(executions: Iterable[Execution]) -> tuple[set[tuple[str, ...]], bool]:
    """Paths that receive a `Clear*Log` or `DeleteAttribute`, found by a byte search (no JSON decoding
    of ordinary lines); and whether every file looked like the client's own `json.dumps` output.

    When a file does not (hand-written, other separators), the caller decodes everything instead.
    """
    found: set[tuple[str, ...]] = set()
    client_format = True
    for ex in executions:
        for path in ex.data_files:
            for i, block in enumerate(_blocks(path)):
                if i == 0 and not block.startswith(_RECORD_PREFIX):
                    client_format = False
                _scan_resets(block, found)
    return found, client_format


def _scan_resets(block: bytes, found: set[tuple[str, ...]]) -> None:
    """Add the paths of the reset lines in `block` to `found`."""
    for needle in _RESET_NEEDLES:
        start = block.find(needle)
        while start != -1:
            begin = block.rfind(b"\n", 0, start) + 1
            end = block.find(b"\n", start)
            end = len(block) if end == -1 else end
            try:
                obj = json.loads(block[begin:end])["obj"]
                if obj.get("type") in RESET_TYPES:
                    found.add(tuple(str(s) for s in obj["path"]))
            except (ValueError, KeyError, TypeError, AttributeError):
                pass  # a torn line: the main pass reports it
            start = block.find(needle, end)


def path_needles(paths: Iterable[tuple[str, ...]]) -> tuple[bytes, ...]:
    """The bytes the client writes for each path (`"path": ["a", "b"]`), to pick their lines."""
    return tuple(b'"path": ' + json.dumps(list(p)).encode() for p in sorted(paths))
