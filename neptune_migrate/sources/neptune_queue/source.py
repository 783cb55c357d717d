"""NeptuneQueueSource: runs, models, model versions and projects from neptune 1.x `.neptune` queues.

`PATH` may be a `.neptune` folder, a folder containing one, a mode folder (`offline/`, `async/`) or one
container folder; every directory generation is read (see `layout.py`). The queue is parsed directly
(never with the client's `DiskQueue`, which creates and deletes files) and replayed with the server's
semantics (`replay.py`).

Memory does not grow with the number of points. Each container is read in up to two passes:

1. a byte search (no JSON decoding of ordinary lines) finds the paths that receive a `Clear*Log` or
   `DeleteAttribute`. Only when there are such paths are their lines (picked by the bytes of their
   `"path": [...]`) decoded and replayed without points, to learn which reset is the last one the server
   would apply on each path;
2. the full replay streams accepted points in batches straight into the dump; points of a path logged
   before its last applied reset are dropped on arrival, exactly as the server would have emptied them.
"""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Iterator
from dataclasses import replace
from datetime import datetime, timezone
from typing import TYPE_CHECKING, Any, ClassVar

from neptune_migrate.dump.writer import RunWriter
from neptune_migrate.errors import SourceFormatError, UsageError
from neptune_migrate.model import (
    ErrorKind,
    Loss,
    LossCategory,
    Provenance,
    RunKey,
    RunRecord,
    SeriesKind,
    SourceRunId,
)
from neptune_migrate.sources.base import Source, SourceOptions, fill_times, fingerprint_files
from neptune_migrate.sources.neptune_queue import errors
from neptune_migrate.sources.neptune_queue.errors import QueueLayoutError
from neptune_migrate.sources.neptune_queue.layout import (
    GENERATION_NAMES,
    Container,
    Execution,
    ReadStats,
    merged_records,
    path_needles,
    reset_paths,
    scan_path,
)
from neptune_migrate.sources.neptune_queue.mapping import FileResolver, build_identity, points_table
from neptune_migrate.sources.neptune_queue.replay import PointBuffer, Replay

_LOCAL_DATE = re.compile(r"(\d{4}-\d{2}-\d{2}_\d{2}\.\d{2}\.\d{2}(?:\.\d{1,6})?)")
"""The local date in an `exec-<n>-<YYYY-mm-dd_HH.MM.SS.ffffff>` folder name (clients <= 1.8)."""
_MAX_UTC_OFFSET_HOURS = 14


def _folder_local_date(name: str) -> datetime | None:
    """The naive local date an old client put in an execution folder's name, if any."""
    if not name.startswith("exec-"):
        return None
    m = _LOCAL_DATE.search(name)
    if m is None:
        return None
    text = m.group(1)
    fmt = "%Y-%m-%d_%H.%M.%S.%f" if text.count(".") == 3 else "%Y-%m-%d_%H.%M.%S"
    try:
        return datetime.strptime(text, fmt)  # noqa: DTZ007 - a local time of an unknown zone, compared only
    except ValueError:
        return None


BATCH_ROWS = 100_000
"""Points handed to the dump per `add_points` call (per series kind)."""

_PARTIAL_DETAIL = (
    "a {mode}-mode leftover: the client deletes a data-N.log once every operation in it is acknowledged, "
    "so operations already synced to the server may be gone"
)


def _check_project(project: str | None) -> str:
    if not project:
        msg = ("--project WORKSPACE/PROJECT is required with --from neptune-offline "
               "(.neptune queues do not record the project)")
        raise UsageError(msg)
    ws, sep, name = project.partition("/")
    if not sep or not ws or not name or "/" in name:
        msg = f"--project {project!r}: expected WORKSPACE/PROJECT"
        raise UsageError(msg)
    return project


def _order(executions: list[Execution]) -> list[Execution]:
    return sorted(executions, key=lambda e: (e.started is None, e.started or 0.0, e.folder.name))


class NeptuneQueueSource:
    """`.neptune` offline runs and async leftovers of the neptune 1.x client (Neptune 2.x era)."""

    name: ClassVar[str] = "neptune-offline"

    def __init__(self, options: SourceOptions) -> None:
        """Find every container folder under `options.path`; nothing is written anywhere."""
        self.options = options
        self.project = _check_project(options.project)
        try:
            self.scan = scan_path(options.path.absolute())
        except OSError as exc:
            msg = f"{options.path}: cannot be read ({type(exc).__name__}: {exc.strerror or exc})"
            raise QueueLayoutError(msg) from exc

    # -- Source protocol ------------------------------------------------------------------------
    def describe(self) -> str:
        """What PATH was recognised as, containers by mode and kind, generations."""
        by_mode: dict[str, Counter[str]] = {}
        generations: Counter[str] = Counter()
        executions = 0
        for c in self.scan.containers.values():
            by_mode.setdefault(c.mode, Counter())[c.kind] += 1
            executions += len(c.executions)
            for g in c.generations:
                generations[g] += 1
        parts = []
        for mode, kinds in sorted(by_mode.items()):
            counted = ", ".join(f"{n} {k}{'s' if n > 1 else ''}" for k, n in sorted(kinds.items()))
            parts.append(f"{mode}: {counted}")
        layouts = "; ".join(f"{GENERATION_NAMES[g]} ({n})" for g, n in sorted(generations.items()))  # type: ignore[index]
        typed = sum(1 for c in self.scan.containers.values() if c.container_type_file)
        if typed:
            layouts += f"; {typed} with a container_type file"
        multi = executions - len(self.scan.containers)
        text = (f"neptune 1.x queue, {self.scan.detected} at {self.scan.root}: {'; '.join(parts)}; "
                f"layouts: {layouts}")
        if multi:
            text += f"; {multi} extra execution folder(s) merged into their runs"
        copies = sum(len(c.duplicates) for c in self.scan.containers.values())
        if copies:
            text += f"; {copies} execution folder(s) found twice (the more complete copy is read)"
        if self.scan.unreadable:
            text += f"; {len(self.scan.unreadable)} run folder(s) cannot be read"
        return text

    def warnings(self) -> list[str]:
        """Folders skipped while scanning, unreadable metadata."""
        return list(self.scan.warnings)

    def list_runs(self) -> Iterator[RunKey]:
        """Every container, keyed by its uuid in the `--project` project."""
        uuids = set(self.scan.containers) | set(self.scan.unreadable)
        return iter(sorted(RunKey(self.project, SourceRunId(uuid)) for uuid in uuids))

    def export_run(self, key: RunKey, out: RunWriter) -> RunRecord:
        """Replay the container's queue(s), streaming points into `out`; then files and the record."""
        return _ContainerExport(self, self._container(key), key, out).run()

    def _container(self, key: RunKey) -> Container:
        container = self.scan.containers.get(key.run_id)
        if container is None:
            msg = self.scan.unreadable.get(key.run_id) or f"{key} is not in {self.scan.root}"
            raise SourceFormatError(msg)
        return container

    def fingerprint(self, key: RunKey) -> str:
        """Names (relative to each execution folder), sizes and counters of the container's queue files."""
        container = self._container(key)
        items: list[tuple[str, object]] = []
        for ex in _order(container.executions):
            items.append((ex.folder.name, (ex.last_put, ex.last_ack)))
            items.extend((f"{ex.folder.name}/{f.name}", f.stat().st_size) for f in ex.data_files)
            if ex.upload_dir.is_dir():
                items.extend((f"{ex.folder.name}/upload_path/{f.name}", f.stat().st_size)
                             for f in sorted(ex.upload_dir.iterdir()) if f.is_file())
        return fingerprint_files(items)

    def classify_error(self, error: Exception) -> ErrorKind:
        """Only file-system hiccups are transient."""
        return errors.classify_error(error)


class _ContainerExport:
    def __init__(self, source: NeptuneQueueSource, container: Container, key: RunKey, out: RunWriter) -> None:
        self.source = source
        self.container = container
        self.key = key
        self.out = out
        self.executions = _order(container.executions)
        self.losses: list[Loss] = []
        self.complete = True

    def run(self) -> RunRecord:
        discard = self._pre_pass()

        def flush(kind: SeriesKind, cols: dict[str, list[Any]]) -> None:
            self.out.add_points(kind, points_table(kind, cols))

        buffer = PointBuffer(BATCH_ROWS, flush)
        replay = Replay(self.container.uuid, buffer=buffer, discard=discard, store_image=self.out.store_bytes)
        stats = [ReadStats() for _ in self.executions]
        replay.run(merged_records(self.executions, stats))
        buffer.flush_all()
        for path, series in sorted(replay.series.items()):
            self.out.declare_series(series.kind, path, dict(series.config) if series.config else None)

        partial = self.container.mode in ("async", "sync")
        resolver = FileResolver(
            self.source.options.path_map, self.out.store_file, self.out.store_bytes,
            [e.upload_dir for e in self.executions], [e.last_ack for e in self.executions], leftover=partial,
        )
        for path, ref in sorted(replay.files.items()):
            resolver.file(path, ref)
        for path, ops in sorted(replay.file_sets.items()):
            resolver.file_set(path, ops)
        for path, art in sorted(replay.artifacts.items()):
            resolver.artifact(path, art)

        self._queue_losses(stats)
        self._replay_losses(replay)
        for sentence in self.container.duplicates:
            self._loss("duplicate_copy", None, 1, sentence, category=LossCategory.CHANGED_FORM)
        self.losses.extend(resolver.losses)
        created_at, created_from = self._created_at(stats)
        identity = build_identity(replay, created_at, partial=partial)
        record = RunRecord(
            key=self.key,
            kind=self.container.kind,
            system=identity.system,
            fields=identity.fields,
            files=tuple(resolver.entries),
            complete=self.complete,
            partial_copy=partial,
            losses=tuple(_merge_losses(self.losses)),
            absent=identity.absent,
            provenance=Provenance(
                source=NeptuneQueueSource.name,
                location=str(self.container.folder),
                files=tuple(str(p) for e in self.executions for p in e.data_files) + tuple(resolver.read),
                details=self._details(replay, stats, created_from),
            ),
        )
        return self._fill_times(record, stats)

    def _fill_times(self, record: RunRecord, stats: list[ReadStats]) -> RunRecord:
        """Creation time from the first point's `ts` when nothing better exists; end time from the last
        operation's `at` or the last point's `ts`, whichever is later; then cross-check the folder's date."""
        last_ats = [s.last_at for s in stats if s.last_at is not None]
        last_at = datetime.fromtimestamp(max(last_ats), timezone.utc) if last_ats else None
        last_point = self.out.last_point_at
        last: datetime | None
        if last_at is not None and (last_point is None or last_at >= last_point):
            last, last_label = last_at, "last operation"
        else:
            last, last_label = last_point, "last point"
        candidates: list[tuple[datetime | None, datetime | None, str, str]] = [
            (self.out.first_point_at, last, "first point's ts", last_label),
        ]
        local = [d for d in (_folder_local_date(e.folder.name) for e in self.executions) if d is not None]
        if local:
            candidates.append((min(local).replace(tzinfo=timezone.utc), None,
                               "exec folder's local date (time zone unknown, read as UTC)", ""))
        record = fill_times(record, candidates)
        created = record.system.created_at
        if local and created is not None:
            offset = (min(local) - created.replace(tzinfo=None)).total_seconds() / 3600
            details = dict(record.provenance.details)
            if abs(offset) <= _MAX_UTC_OFFSET_HOURS:
                details["created_at_check"] = (f"the exec folder's local date is {offset:+.1f} h from it "
                                               "(a plausible UTC offset)")
            else:
                details["created_at_check"] = (f"the exec folder's local date is {offset:+.1f} h from it: "
                                               "more than any UTC offset; kept the recorded timestamp")
            record = replace(record, provenance=replace(record.provenance, details=details))
        return record

    # -- pass 1 ---------------------------------------------------------------------------------
    def _pre_pass(self) -> dict[str, tuple[int, int]]:
        paths, client_format = reset_paths(self.executions)
        if not paths and client_format:
            return {}
        needles = path_needles(paths) if client_format else None
        pre = Replay(self.container.uuid, points=False)
        pre.run(merged_records(self.executions, None, needles))
        return dict(pre.last_reset)

    # -- report ---------------------------------------------------------------------------------
    def _loss(self, kind: str, path: str | None, count: int, detail: str, *, category: LossCategory) -> None:
        self.losses.append(Loss(kind, path, count, detail, category))

    def _queue_losses(self, stats: list[ReadStats]) -> None:
        for ex, st in zip(self.executions, stats, strict=True):
            where = ex.folder.name
            last = st.last_version or 0
            tail = (ex.last_put - last) if ex.last_put is not None and ex.last_put > last else 0
            if tail or st.torn_tail:
                missing = max(tail, 1)
                reasons = []
                if tail:
                    reasons.append(f"last_put_version is {ex.last_put} but the queue ends at version {last}")
                if st.torn_tail:
                    reasons.append(f"the last line ({st.torn_tail}) is cut mid-record")
                self._loss("truncated_queue", None, missing,
                           f"{where}: {'; '.join(reasons)}: {missing} operation(s) never reached the disk when "
                           "the process died (the client buffers queue writes)",
                           category=LossCategory.NOT_IN_SOURCE)
                self.complete = False
            gaps = list(st.gaps)
            first = st.first_version
            if first is not None and first > 1:
                gaps.insert(0, (1, first - 1))
            for lo, hi in gaps:
                acked = ex.last_ack is not None and hi <= ex.last_ack and ex.mode in ("async", "sync")
                if acked and lo == 1:
                    self._loss("acknowledged_ops_removed", None, hi - lo + 1,
                               f"{where}: versions {lo}..{hi} were acknowledged by the server and their "
                               "data-N.log deleted by the client", category=LossCategory.NOT_IN_SOURCE)
                else:
                    self._loss("missing_ops", None, hi - lo + 1,
                               f"{where}: versions {lo}..{hi} are not in the queue files",
                               category=LossCategory.LOST)
                    self.complete = False
            if st.unreadable:
                self._loss("unreadable_record", None, len(st.unreadable),
                           f"{where}: lines that are not a queue record: {', '.join(st.unreadable[:5])}"
                           + (" ..." if len(st.unreadable) > 5 else ""), category=LossCategory.LOST)
                self.complete = False

    def _replay_losses(self, replay: Replay) -> None:
        for path, n in sorted(replay.dropped_steps.items()):
            self._loss("non_increasing_step", path, n,
                       "points whose step is not greater than the series' previous step; the Neptune "
                       "server drops them too", category=LossCategory.CHANGED_FORM)
        for path, t in sorted(replay.conflicts.items()):
            self._loss("type_conflict", path, t.count, t.detail, category=LossCategory.CHANGED_FORM)
        for path, t in sorted(replay.unresolved_copies.items()):
            self._loss("unresolved_copy", path, t.count, t.detail, category=LossCategory.NOT_IN_SOURCE)
        for type_, t in sorted(replay.invalid.items()):
            self._loss("invalid_operation", None, t.count, f"malformed {type_} operation(s): {t.detail}",
                       category=LossCategory.LOST)
        for type_, n in sorted(replay.unknown_ops.items()):
            self._loss("unknown_operation", None, n, f"operation type {type_!r} is not known to this reader",
                       category=LossCategory.LOST)
        for path, t in sorted(replay.rounded.items()):
            self._loss("int_rounded_to_double", path, t.count, t.detail, category=LossCategory.CHANGED_FORM)
        for path, n in sorted(replay.empty_images.items()):
            self._loss("image_not_stored_by_client", path, n,
                       "the client wrote an empty image (over its size limit); a row without a file is kept",
                       category=LossCategory.NOT_IN_SOURCE)

    def _created_at(self, stats: list[ReadStats]) -> tuple[datetime | None, str]:
        meta = [e.started for e in self.executions if e.metadata and e.started is not None]
        if meta:
            return datetime.fromtimestamp(min(meta), timezone.utc), "metadata.json createdAt"
        ats = [s.first_at for s in stats if s.first_at is not None]
        if ats:
            return datetime.fromtimestamp(min(ats), timezone.utc), "first operation's at"
        named = [e.started for e in self.executions if e.started is not None]
        if named:
            return datetime.fromtimestamp(min(named), timezone.utc), "exec folder name"
        return None, "none"

    def _details(self, replay: Replay, stats: list[ReadStats], created_from: str) -> dict[str, str]:
        first_meta = next((e.metadata for e in self.executions if e.metadata), None) or {}
        details = {
            "mode": self.container.mode,
            "layout": ", ".join(self.container.generations),
            "executions": str(len(self.executions)),
            "folders": ", ".join(str(e.folder) for e in self.executions),
            "operations": str(replay.operations),
            "last_put_version": ", ".join(str(e.last_put) for e in self.executions),
            "last_ack_version": ", ".join("empty" if e.last_ack is None else str(e.last_ack)
                                          for e in self.executions),
            "created_at_from": created_from,
            "points_cleared": str(replay.discarded_points),
        }
        if self.container.duplicates:
            details["duplicate_copies"] = "; ".join(self.container.duplicates)
        out_of_order = sum(st.out_of_order for st in stats)
        if out_of_order:
            details["versions_out_of_order"] = str(out_of_order)
        if self.container.mode in ("async", "sync"):
            acked = "; ".join(f"{e.folder.name}: last_ack_version {'empty' if e.last_ack is None else e.last_ack}"
                              for e in self.executions)
            details["partial_copy"] = _PARTIAL_DETAIL.format(mode=self.container.mode) + f" ({acked})"
        for key in ("neptuneClientVersion", "structureVersion", "pythonVersion", "os"):
            if key in first_meta:
                details[key] = str(first_meta[key])
        return details


def _merge_losses(losses: list[Loss]) -> list[Loss]:
    """One loss per (kind, path): counts added, the first detail kept."""
    merged: dict[tuple[str, str | None, LossCategory], Loss] = {}
    for lo in losses:
        k = (lo.kind, lo.path, lo.category)
        old = merged.get(k)
        merged[k] = lo if old is None else Loss(lo.kind, lo.path, old.count + lo.count, old.detail, lo.category)
    return sorted(merged.values(), key=lambda lo: (lo.kind, lo.path or ""))


if TYPE_CHECKING:
    _: type[Source] = NeptuneQueueSource
