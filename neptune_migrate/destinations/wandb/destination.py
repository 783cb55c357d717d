"""WandbDestination: writes runs with the real wandb SDK, offline (run folders for `wandb sync`)
or online, and reads them back (the `.wandb` transaction log offline, `wandb.Api` online).

W&B has one monotonic step axis per run and drops a point logged below the current step, while
the pipeline streams series kind by kind and path by path. So `write_series` only buffers (in
step buckets, spilled to Arrow files past a bound) and `finish_series` merges every series of the
run into one step-ordered stream: one `run.log(row, step=s, commit=True)` per distinct step. The
mapping rules are in `mapping.py` and docs/destinations/wandb.md. wandb is imported lazily.
"""

from __future__ import annotations

import contextlib
import importlib.util
import json
import logging
import math
import netrc
import os
import shutil
import tempfile
import threading
import time
from collections import defaultdict
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar
from urllib.parse import urlsplit

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from neptune_migrate import __version__
from neptune_migrate.destinations.base import (
    Capabilities,
    DestinationRun,
    FileDigest,
    ModelSnapshot,
    PreparedRun,
    RegistryModel,
    RegistryVersion,
    RunSnapshot,
    VersionSnapshot,
)
from neptune_migrate.destinations.probe import probe_http
from neptune_migrate.destinations.wandb import mapping as m
from neptune_migrate.destinations.wandb.errors import classify_error
from neptune_migrate.destinations.wandb.records import LoggedRun, read_history_page, read_marker, read_run
from neptune_migrate.destinations.wandb.registry import WandbRegistry, collection_name
from neptune_migrate.dump.schema import FORMAT_VERSION
from neptune_migrate.dump.writer import sha256_file
from neptune_migrate.errors import MissingDependencyError, PermanentError, UsageError
from neptune_migrate.model import DestinationRunId, ErrorKind, FileEntry, Loss, RunKey, SeriesKind

if TYPE_CHECKING:
    from neptune_migrate.destinations import DestinationOptions
    from neptune_migrate.destinations.base import Destination, RegistryWriter

log = logging.getLogger(__name__)

BUCKET_POINTS = 250_000
"""Target points per step bucket: `finish_series` holds one bucket in memory at a time."""
SPILL_ROWS = 250_000
"""Buffered points per run before they are spilled to Arrow files."""
FLUSH_TIMEOUT = 120.0
"""Seconds to wait for wandb-core to flush a finished run's log."""


def has_credentials(base_url: str | None = None) -> bool:
    """An API key in `WANDB_API_KEY`, an identity token file, or a netrc entry for the W&B host.

    Only checks that credentials are present (no network); the key itself is never read out.
    """
    if os.environ.get("WANDB_API_KEY") or os.environ.get("WANDB_IDENTITY_TOKEN_FILE"):
        return True
    host = urlsplit(base_url or os.environ.get("WANDB_BASE_URL") or "https://api.wandb.ai").hostname
    path = Path(os.environ.get("NETRC") or Path("~/.netrc").expanduser())
    try:
        auth = netrc.netrc(str(path)).authenticators(host or "")
    except (OSError, netrc.NetrcParseError):
        return False
    return auth is not None and bool(auth[2])


def _wandb() -> Any:
    try:
        import wandb
    except ImportError as exc:
        raise MissingDependencyError("wandb", "wandb") from exc
    return wandb


# ---------------------------------------------------------------------------------------------
# buffering: points of one run, bucketed by destination step


_COLUMNS: dict[str, pa.DataType] = {
    "key": pa.string(), "dest_step": pa.int64(), "step": pa.float64(), "ts": pa.int64(), "seq": pa.int64(),
}
_PAYLOAD: dict[SeriesKind, dict[str, pa.DataType]] = {
    "float": {"value": pa.float64()},
    "string": {"value": pa.string()},
    "histogram": {"edges": pa.list_(pa.float64()), "values": pa.list_(pa.float64())},
}


@dataclass
class _Spill:
    """Points in step buckets: bucket i only holds steps below bucket i+1's, so emitting the
    buckets in order, each sorted, gives one globally step-ordered stream."""

    root: Path
    low: int
    width: int
    count: int
    memory: dict[tuple[SeriesKind, int], list[pa.Table]] = field(default_factory=lambda: defaultdict(list))
    buffered: int = 0
    files: dict[tuple[SeriesKind, int], list[Path]] = field(default_factory=lambda: defaultdict(list))
    written: int = 0

    def add(self, kind: SeriesKind, table: pa.Table) -> None:
        steps = table.column("dest_step").to_numpy()
        buckets = np.clip((steps - self.low) // self.width, 0, self.count - 1)
        for b in np.unique(buckets):
            part = table.filter(pa.array(buckets == b)) if self.count > 1 else table
            self.memory[kind, int(b)].append(part)
        self.buffered += table.num_rows
        if self.buffered >= SPILL_ROWS:
            self.flush()

    def flush(self) -> None:
        for (kind, b), tables in self.memory.items():
            if not tables:
                continue
            path = self.root / f"{kind}-{b}-{self.written}.arrow"
            self.written += 1
            table = pa.concat_tables(tables)
            with pa.OSFile(str(path), "wb") as sink, pa.ipc.new_file(sink, table.schema) as writer:
                writer.write_table(table)
            self.files[kind, b].append(path)
        self.memory.clear()
        self.buffered = 0

    def bucket(self, kind: SeriesKind, b: int) -> pa.Table | None:
        tables = list(self.memory.get((kind, b), []))
        for path in self.files.get((kind, b), []):
            with pa.memory_map(str(path)) as source:
                tables.append(pa.ipc.open_file(source).read_all())
        if not tables:
            return None
        table = pa.concat_tables(tables)
        return table.take(pc.sort_indices(table, [("dest_step", "ascending"), ("seq", "ascending")]))


def _plan_buckets(run: PreparedRun) -> tuple[int, int, int]:
    """(lowest step, bucket width, bucket count) estimated from the record's series summaries."""
    low, high, total = None, None, 0
    for si in run.record.series:
        if not si.count or si.first_step is None or si.last_step is None:
            continue
        total += si.count
        plan = run.steps.get((si.kind, si.path))
        if plan is not None and plan.policy == "rank":
            first, last = 0.0, float(si.count)
        elif plan is not None and plan.policy == "scale":
            first, last = si.first_step * plan.scale, si.last_step * plan.scale
        else:
            first, last = si.first_step, si.last_step
        if not (math.isfinite(first) and math.isfinite(last)):
            continue
        low = math.floor(first) if low is None else min(low, math.floor(first))
        high = math.ceil(last) if high is None else max(high, math.ceil(last))
    if low is None or high is None:
        return 0, 1, 1
    count = max(1, min(10_000, math.ceil(total / BUCKET_POINTS)))
    width = max(1, math.ceil((high - low + 1) / count))
    return low, width, count


@dataclass
class _Active:
    """One run being written."""

    run: Any
    run_id: str
    spill: _Spill
    files_root: Path
    seq: int = 0
    logged_through: int = -1
    """Highest step logged so far (a retried `finish_series` skips rows up to it)."""
    skip_through: int = -1
    """Online resume: rows up to this step are already on the server."""
    file_rows: dict[str, list[dict[str, Any]]] = field(default_factory=lambda: defaultdict(list))


@dataclass
class _Item:
    """One non-float point in the merged stream."""

    seq: int
    key: str
    ts: int | None
    step: float
    value: Any


class WandbDestination:
    """Imports runs into W&B: one W&B project per Neptune project (template), one run per run.

    Identity is the run id, derived from the W&B project and the source key, so a re-import
    finds the same run. The completion marker is the summary key `neptune_migrate/status` =
    `complete` (with `neptune_migrate/digest`), written after every point and file, just before
    `finish`.
    """

    name: ClassVar[str] = "wandb"

    def __init__(
        self,
        *,
        mode: str = "offline",
        directory: Path | None = None,
        entity: str | None = None,
        project_template: str = "{project_name}",
    ) -> None:
        if mode not in ("online", "offline"):
            msg = f"--wandb-mode must be online or offline, not {mode!r}"
            raise UsageError(msg)
        if importlib.util.find_spec("wandb") is None:
            raise MissingDependencyError("wandb", "wandb")
        if mode == "offline" and directory is None:
            msg = "--wandb-mode offline needs --wandb-dir DIR (where the offline runs are written)"
            raise UsageError(msg)
        if mode == "online" and not has_credentials():
            msg = ("W&B online mode needs credentials: set WANDB_API_KEY (or run `wandb login`); "
                   "use --wandb-mode offline --wandb-dir DIR to write runs for a later `wandb sync`")
            raise UsageError(msg)
        self.mode = mode
        self.entity = entity
        self.project_template = project_template
        self._own_dir = directory is None
        self.directory = (directory or Path(tempfile.mkdtemp(prefix="neptune-migrate-wandb-"))).absolute()
        self.capabilities = Capabilities(
            integer_steps_only=True,
            single_step_axis=True,
            can_delete_runs=mode == "offline",
            file_hashes=True,
            duplicate_steps="dropped",
            points_per_request=10_000,
            points_per_second=25_000.0,
            parallel_runs=False,
            sanitize_key=m.sanitize_key,
            registry="native",
        )
        self._active: dict[str, _Active] = {}
        self._registry = WandbRegistry(self)
        self._projects: dict[str, str] = {}
        self._cache: tuple[str, tuple[float, int], LoggedRun] | None = None
        self._api: Any = None

    @classmethod
    def from_options(cls, options: DestinationOptions) -> WandbDestination:
        return cls(mode=options.wandb_mode, directory=options.wandb_dir, entity=options.entity,
                   project_template=options.project_template)

    # -- identity ---------------------------------------------------------------------------------
    def check(self) -> None:
        """Online: one GET to the W&B API host with a short timeout; offline: nothing."""
        if self.mode == "online":
            probe_http(os.environ.get("WANDB_BASE_URL") or "https://api.wandb.ai", "the W&B server")

    def describe(self) -> str:
        if self.mode == "offline":
            return f"wandb offline {self.directory}"
        return f"wandb online {self.entity or '(default entity)'}/{self.project_template}"

    def store_exists(self) -> bool:
        """Offline: the `DIR/wandb` folder of earlier offline runs exists. Online: the server counts."""
        return self.mode == "online" or (self.directory / "wandb").is_dir()

    def prepare_store(self) -> str | None:
        """Nothing to prepare: `wandb.init` creates each offline run's own folder."""
        return None

    def project_for(self, key: RunKey) -> str:
        return m.project_name(self.project_template, key.project)

    def run_id_for(self, key: RunKey) -> DestinationRunId:
        project = self.project_for(key)
        rid = DestinationRunId(m.run_id_for(project, str(key)))
        self._projects[rid] = project
        return rid

    def run_dirs(self, run_id: str) -> list[Path]:
        """Offline run folders of one run id (normally one)."""
        return sorted((self.directory / "wandb").glob(f"offline-run-*-{run_id}"))

    # -- pure -------------------------------------------------------------------------------------
    def import_settings(self) -> Mapping[str, str]:
        return {"mapping": m.MAPPING_VERSION, "project_template": self.project_template}

    def plan_run(self, run: PreparedRun) -> list[Loss]:
        return m.plan_losses(run)

    def chunk_losses(self, kind: SeriesKind, chunk: pa.Table) -> list[Loss]:
        return m.chunk_losses(kind, chunk)

    def expected_snapshot(self, run: PreparedRun) -> RunSnapshot:
        return m.expected_snapshot(run, __version__, FORMAT_VERSION)

    def expected_series(self, kind: SeriesKind, points: pa.Table) -> pa.Table:
        return m.expected_series(kind, points)

    # -- find -------------------------------------------------------------------------------------
    def find_run(self, key: RunKey) -> DestinationRun | None:
        rid = self.run_id_for(key)
        if self.mode == "online":
            return self._find_online(rid)
        dirs = self.run_dirs(rid)
        if not dirs:
            return None
        markers = []
        for d in dirs:
            log_file = d / f"run-{rid}.wandb"
            markers.append(read_marker(log_file, m.STATUS_KEY, m.DIGEST_KEY, m.MARKER_KEYS)
                           if log_file.is_file() else None)
        last = markers[-1]
        complete = (len(dirs) == 1 and last is not None and last.exited
                    and last.status == m.STATUS_COMPLETE)
        if last is None:
            return DestinationRun(rid, complete, None)
        return DestinationRun(rid, complete, last.digest, _text(last.values.get(m.IMPORT_DIGEST_KEY)),
                              _text(last.values.get(m.ORIGIN_KEY)))

    def _api_run(self, rid: str) -> Any:
        wandb = _wandb()
        if self._api is None:
            self._api = wandb.Api(overrides={"entity": self.entity} if self.entity else {})
        entity = self.entity or self._api.default_entity
        try:
            return self._api.run(f"{entity}/{self._projects[rid]}/{rid}")
        except Exception as exc:
            if "not found" in str(exc).lower() or "could not find" in str(exc).lower():
                return None
            raise

    def _find_online(self, rid: DestinationRunId) -> DestinationRun | None:
        run = self._api_run(rid)
        if run is None:
            return None
        summary = dict(run.summary)
        complete = summary.get(m.STATUS_KEY) == m.STATUS_COMPLETE and run.state in ("finished", "failed")
        return DestinationRun(rid, complete, summary.get(m.DIGEST_KEY), _text(summary.get(m.IMPORT_DIGEST_KEY)),
                              _text(summary.get(m.ORIGIN_KEY)))

    # -- write ------------------------------------------------------------------------------------
    def create_run(self, run: PreparedRun) -> DestinationRunId:
        wandb = _wandb()
        record = run.record
        rid = self.run_id_for(record.key)
        skip_through = -1
        resume: str | None = None
        if self.mode == "offline":
            self.discard_run(rid)  # a fresh run folder; never two folders of one id
        else:
            existing = self._api_run(rid)
            if existing is not None:
                summary = dict(existing.summary)
                if summary.get(m.STATUS_KEY) == m.STATUS_COMPLETE and (
                        summary.get(m.DIGEST_KEY) != run.digest
                        or summary.get(m.IMPORT_DIGEST_KEY) != run.import_digest):
                    msg = (f"W&B run {rid} holds an import of another version of the dump (or one made "
                           "with other options) and W&B cannot rewrite history: delete that run in W&B, "
                           "then import again")
                    raise PermanentError(msg)
                skip_through = int(getattr(existing, "lastHistoryStep", -1) or -1)
                resume = "allow"
        self._close_active()
        settings = wandb.Settings(
            mode=self.mode, silent=True, console="off", save_code=False, disable_git=True,
            disable_job_creation=True, x_disable_stats=True, x_disable_meta=True,
            x_disable_machine_info=True, x_save_requirements=False,
        )
        self.directory.mkdir(parents=True, exist_ok=True)
        with _run_start(m.start_micros(record)):
            wrun = wandb.init(
                id=rid, project=self._projects[rid], entity=self.entity, dir=str(self.directory),
                name=m.run_name(record), notes=record.system.description or None, tags=m.run_tags(record),
                group=m.run_group(record), config=m.run_config(run, __version__, FORMAT_VERSION),
                settings=settings, resume=resume, reinit="finish_previous",
            )
        # who is writing this run, before any point: a crash leaves a run that names its dump
        wrun.summary[m.ORIGIN_KEY] = run.origin
        wrun.summary[m.IMPORT_DIGEST_KEY] = run.import_digest
        low, width, count = _plan_buckets(run)
        spill = _Spill(Path(tempfile.mkdtemp(prefix=f"nm-wandb-{rid}-")), low, width, count)
        self._active[rid] = _Active(wrun, rid, spill, Path(wrun.settings.files_dir), skip_through=skip_through)
        return rid

    def _state(self, run_id: str) -> _Active:
        state = self._active.get(run_id)
        if state is None:
            msg = f"W&B run {run_id} is not open for writing in this process"
            raise PermanentError(msg)
        return state

    def write_series(self, run_id: DestinationRunId, kind: SeriesKind, chunk: pa.Table) -> None:
        state = self._state(run_id)
        n = chunk.num_rows
        seq = pa.array(np.arange(state.seq, state.seq + n, dtype=np.int64))
        state.seq += n
        if kind == "file":
            chunk = chunk.append_column("seq", seq)
            for row in chunk.to_pylist():
                state.file_rows[row["key"]].append(row)
            return
        cols: dict[str, Any] = {
            "key": chunk.column("key"), "dest_step": chunk.column("dest_step").cast(pa.int64()),
            "step": chunk.column("step"), "ts": chunk.column("timestamp").cast(pa.int64()), "seq": seq,
        }
        for name, typ in _PAYLOAD[kind].items():
            cols[name] = chunk.column(name).cast(typ)
        state.spill.add(kind, pa.table(cols))

    def finish_series(self, run_id: DestinationRunId, run: PreparedRun) -> None:
        state = self._state(run_id)
        wrun = state.run
        converted = {m.dest_key(run, path) for (_, path), plan in run.steps.items() if plan.policy != "int"}
        wrun.define_metric(f"{m.COMPANION}/*", hidden=True)
        for key in sorted(converted):
            wrun.define_metric(key, step_metric=m.step_key(key))
        images: dict[int, list[tuple[str, _Item]]] = defaultdict(list)
        for key, rows in sorted(state.file_rows.items()):
            if _all_images(rows):
                for r in rows:
                    images[int(r["dest_step"])].append(
                        ("file", _Item(r["seq"], key, _ts(r["timestamp"]), r["step"], r)))
            else:
                self._write_file_series(state, key, rows)
        image_buckets: dict[int, dict[int, list[tuple[str, _Item]]]] = defaultdict(dict)
        sp = state.spill
        for step, items in images.items():
            b = min(max((step - sp.low) // sp.width, 0), sp.count - 1)
            image_buckets[b][step] = items
        for b in range(sp.count):
            self._emit_bucket(state, b, converted, image_buckets.get(b, {}))

    def _emit_bucket(
        self, state: _Active, b: int, converted: set[str], images: dict[int, list[tuple[str, _Item]]]
    ) -> None:
        others: dict[int, list[tuple[str, _Item]]] = defaultdict(list)
        for step, items in images.items():
            others[step].extend(items)
        for kind in ("string", "histogram"):
            table = state.spill.bucket(kind, b)
            if table is None:
                continue
            for r in table.to_pylist():
                value = r["value"] if kind == "string" else (r["edges"], r["values"])
                others[int(r["dest_step"])].append(
                    (kind, _Item(r["seq"], r["key"], r["ts"], r["step"], value)))
        floats = state.spill.bucket("float", b)
        f_steps: np.ndarray = np.array([], np.int64)
        starts: np.ndarray = np.array([], np.int64)
        ends = t_min = t_max = orig_steps = ts_arr = starts
        any_null = ts_null = np.array([], bool)
        any_conv: np.ndarray | None = None
        keys: list[str] = []
        values: list[Any] = []
        if floats is not None:
            f_steps = floats.column("dest_step").to_numpy()
            starts = np.flatnonzero(np.r_[True, f_steps[1:] != f_steps[:-1]])
            key_col = floats.column("key").combine_chunks().dictionary_encode()
            names = key_col.dictionary.to_pylist()
            key_idx = key_col.indices.to_numpy()
            keys = np.array(names, dtype=object)[key_idx].tolist()
            values = floats.column("value").to_pylist()
            ts_col = floats.column("ts")
            ts_null = ts_col.is_null().to_numpy(zero_copy_only=False)
            ts_arr = ts_col.fill_null(0).to_numpy()
            orig_steps = floats.column("step").to_numpy()
            conv = np.array([n in converted for n in names], bool)[key_idx] if converted else None
            # per step group: can the row be built fast (one timestamp, no companions)?
            ends = np.r_[starts[1:], len(f_steps)]
            t_min = np.minimum.reduceat(ts_arr, starts) if len(starts) else ts_arr
            t_max = np.maximum.reduceat(ts_arr, starts) if len(starts) else ts_arr
            any_null = np.logical_or.reduceat(ts_null, starts) if len(starts) else ts_null
            any_conv = np.logical_or.reduceat(conv, starts) if conv is not None and len(starts) else None
        group_of = {int(f_steps[s]): g for g, s in enumerate(starts)}
        for step in sorted(set(group_of) | set(others)):
            if step <= state.logged_through or step <= state.skip_through or step < 0:
                continue
            g = group_of.get(step)
            row: dict[str, Any]
            if g is not None and step not in others and not any_null[g] and t_min[g] == t_max[g] and (
                    any_conv is None or not any_conv[g]):
                s, e = starts[g], ends[g]
                row = dict(zip(keys[s:e], values[s:e], strict=True))
                row["_timestamp"] = m.seconds(int(t_max[g]))
            else:
                points: list[tuple[str, _Item]] = []
                if g is not None:
                    points.extend(
                        ("float", _Item(0, keys[i], None if ts_null[i] else int(ts_arr[i]),
                                        float(orig_steps[i]), values[i]))
                        for i in range(starts[g], ends[g]))
                points.extend(sorted(others.get(step, []), key=lambda p: p[1].seq))
                row = self._slow_row(state, points, converted)
            state.run.log(row, step=step, commit=True)
            state.logged_through = step

    def _slow_row(self, state: _Active, points: list[tuple[str, _Item]], converted: set[str]) -> dict[str, Any]:
        wandb = _wandb()
        kept: dict[str, tuple[str, _Item]] = {}
        for kind, item in points:
            kept[item.key] = (kind, item)  # later points of one key at one step win (duplicates)
        row: dict[str, Any] = {}
        row_ts = m.row_timestamp(item.ts for _, item in kept.values())
        for key, (kind, item) in kept.items():
            if kind == "histogram":
                edges, counts = item.value
                if edges is None or counts is None:
                    row[key] = None
                elif len(counts) > m.MAX_HISTOGRAM_BINS:
                    e2, c2 = m.rebin(edges, counts)
                    row[key] = wandb.Histogram(np_histogram=(c2, e2))
                    row[m.histogram_key(key)] = json.dumps({"bins": edges, "values": counts})
                else:
                    row[key] = wandb.Histogram(np_histogram=(counts, edges))
            elif kind == "file":
                row[key] = self._image(state, item.value)
            else:
                row[key] = item.value
            if item.ts != row_ts:
                row[m.timestamp_key(key)] = None if item.ts is None else m.seconds(item.ts)
            if key in converted:
                row[m.step_key(key)] = item.step
        if row_ts is not None:
            row["_timestamp"] = m.seconds(row_ts)
        return row

    def _image(self, state: _Active, r: dict[str, Any]) -> Any:
        wandb = _wandb()
        ext = m.IMAGE_EXTENSIONS[str(r["mime_type"]).lower()]
        tmp = state.spill.root / f"image-{r['seq']}.{ext}"
        shutil.copyfile(r["local_path"], tmp)
        return wandb.Image(str(tmp), caption=r.get("title") or r.get("name"))

    def _write_file_series(self, state: _Active, key: str, rows: list[dict[str, Any]]) -> None:
        """A file series that is not all images: blobs as run files plus an index (JSON lines)."""
        lines = []
        for r in sorted(rows, key=lambda r: (r["dest_step"], r["seq"])):
            obj = {
                "dest_step": int(r["dest_step"]), "step": r["step"],
                "timestamp": _ts(r["timestamp"]), "name": r.get("name"), "mime_type": r.get("mime_type"),
                "title": r.get("title"), "description": r.get("description"), "sha256": r.get("sha256"),
                "size": r.get("size"), "missing": r.get("missing"), "file": None,
            }
            if r.get("local_path") and r.get("sha256"):
                rel = m.file_series_blob(key, int(r["dest_step"]), int(r["seq"]), r.get("name"))
                self._save_file(state, Path(r["local_path"]), rel)
                obj["file"] = rel
            else:
                obj["sha256"] = None
                obj["size"] = None
            lines.append(json.dumps(obj, sort_keys=True, ensure_ascii=False))
        index = state.files_root / m.file_series_index(key)
        index.parent.mkdir(parents=True, exist_ok=True)
        index.write_text("\n".join(lines) + "\n", encoding="utf-8")
        state.run.save(str(index), base_path=str(state.files_root), policy="now", glob=False)

    def _save_file(self, state: _Active, source: Path, rel: str) -> None:
        target = state.files_root / rel
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(source, target)
        state.run.save(str(target), base_path=str(state.files_root), policy="now", glob=False)

    def upload_file(self, run_id: DestinationRunId, entry: FileEntry, local_path: Path) -> None:
        self._save_file(self._state(run_id), local_path, m.file_path(entry))

    def mark_complete(self, run_id: DestinationRunId, run: PreparedRun) -> None:
        state = self._state(run_id)
        for k, v in m.marker_summary(run).items():
            state.run.summary[k] = v
        state.run.finish(exit_code=m.exit_code(run.record))
        self._active.pop(run_id, None)
        shutil.rmtree(state.spill.root, ignore_errors=True)
        if self.mode == "offline":
            self._wait_written(run_id, run.digest)

    def _wait_written(self, run_id: str, digest: str) -> None:
        """`finish` can return before wandb-core has flushed the log's last records: wait until
        the marker and the exit record are on disk, so "complete" is durable when we return."""
        deadline = time.monotonic() + FLUSH_TIMEOUT
        dirs = self.run_dirs(run_id)
        path = dirs[-1] / f"run-{run_id}.wandb" if dirs else None
        while True:
            if path is not None and path.is_file():
                marker = read_marker(path, m.STATUS_KEY, m.DIGEST_KEY)
                if marker.exited and marker.status == m.STATUS_COMPLETE and marker.digest == digest:
                    return
            if time.monotonic() > deadline:
                msg = f"W&B did not finish writing run {run_id} within {FLUSH_TIMEOUT:.0f} s"
                raise PermanentError(msg)
            time.sleep(0.02)

    def discard_run(self, run_id: DestinationRunId) -> None:
        """Offline: delete the run's folders (refused once one was uploaded with `wandb sync`)."""
        if self.mode == "online":
            msg = f"W&B runs are not deleted by this tool: run {run_id} is resumed instead"
            raise PermanentError(msg)
        for d in self.run_dirs(run_id):
            if any(d.glob("*.wandb.synced")):
                msg = (f"{d} was already uploaded with `wandb sync` and the dump changed since: delete "
                       "the W&B run and this folder, then import again")
                raise PermanentError(msg)
        for d in self.run_dirs(run_id):
            _remove_tree(d)

    def _close_active(self) -> None:
        for state in list(self._active.values()):
            try:
                state.run.finish(exit_code=1)  # left without a marker: stays incomplete
            except Exception:
                log.debug("finishing an abandoned W&B run failed", exc_info=True)
            shutil.rmtree(state.spill.root, ignore_errors=True)
        self._active.clear()

    # -- read back --------------------------------------------------------------------------------
    def _run_file(self, run_id: str) -> Path:
        """The offline run's `run-<id>.wandb` (its newest folder)."""
        dirs = self.run_dirs(run_id)
        if not dirs:
            msg = f"no offline run folder for W&B run {run_id} in {self.directory / 'wandb'}"
            raise PermanentError(msg)
        return dirs[-1] / f"run-{run_id}.wandb"

    def _logged(self, run_id: str) -> LoggedRun:
        if self.mode == "online":
            return self._logged_online(run_id)
        path = self._run_file(run_id)
        st = path.stat()
        stamp = (st.st_mtime, st.st_size)
        if self._cache is not None and self._cache[0] == run_id and self._cache[1] == stamp:
            return self._cache[2]
        # A small file is decoded once, history included (every series then comes from memory); a
        # larger one keeps counts only and its series are streamed page by page.
        logged = read_run(path, history=st.st_size <= STREAM_ABOVE)
        self._cache = (run_id, stamp, logged)
        return logged

    def _logged_online(self, run_id: str) -> LoggedRun:
        if self._cache is not None and self._cache[0] == run_id:
            return self._cache[2]
        api_run = self._api_run(run_id)
        if api_run is None:
            msg = f"W&B run {run_id} not found"
            raise PermanentError(msg)
        out = LoggedRun(run_id=run_id, project=self._projects.get(run_id, ""), name=api_run.name,
                        notes=api_run.notes or None, group=api_run.group or None, tags=tuple(api_run.tags),
                        config=dict(api_run.config), summary=dict(api_run.summary))
        out.exit_code = {"finished": 0, "failed": 1}.get(api_run.state)
        out.files = [f.name for f in api_run.files()]
        for row in api_run.scan_history(page_size=10_000):  # never history(): it samples
            step = row.pop("_step", None)
            ts = row.pop("_timestamp", None)
            for key, value in row.items():
                if value is None or (key.startswith("_") and not key.startswith(f"{m.COMPANION}/")):
                    continue
                out.history.setdefault(key, []).append((int(step or 0), ts, value))
                out.counts[key] = out.counts.get(key, 0) + 1
                out.first.setdefault(key, value)
        self._cache = (run_id, (0.0, 0), out)
        return out

    def _files_dir(self, run_id: str) -> Path | None:
        if self.mode == "online":
            return None
        dirs = self.run_dirs(run_id)
        return dirs[-1] / "files" if dirs else None

    def read_snapshot(self, run_id: DestinationRunId) -> RunSnapshot:
        logged = self._logged(run_id)
        own = logged.config.get(m.OWN)
        kinds: dict[str, str] = dict(own.get("series", {})) if isinstance(own, dict) else {}
        snap = RunSnapshot(
            run_id=run_id,
            name=logged.name,
            description=logged.notes,
            status=None if logged.exit_code is None else ("finished" if logged.exit_code == 0 else "failed"),
            # offline: the run record's own start (what `wandb sync` reads); online: the summary copy
            start_time=(m.from_micros(logged.start_micros) if logged.start_micros is not None
                        else m.summary_time(logged.summary, m.START_KEY)),
            end_time=m.summary_time(logged.summary, m.END_KEY),
            tags=frozenset(logged.tags),
            params=m.params_from_config(logged.config),
            extra=m.extra_from(logged.config, logged.summary, logged.group),
        )
        for key, count in logged.counts.items():
            if key.startswith("_"):
                continue
            kind = kinds.get(key, "float")
            if kind == "float" and isinstance(logged.first.get(key), str):
                kind = "string"
            snap.series[(kind, key)] = count  # type: ignore[index]
        files_dir = self._files_dir(run_id)
        for path in sorted(set(logged.files)):
            if path.startswith(f"{m.FILE_SERIES_DIR}/") and path.endswith("/index.jsonl"):
                key = path[len(m.FILE_SERIES_DIR) + 1: -len("/index.jsonl")]
                snap.series[("file", key)] = len(self._index(run_id, key))
            elif path.startswith(f"{m.FILES_DIR}/"):
                local = None if files_dir is None else files_dir / path
                if local is not None and local.is_file():
                    snap.files[path] = FileDigest(local.stat().st_size, sha256_file(local))
                else:
                    snap.files[path] = FileDigest(None, None)
        return snap

    def _index(self, run_id: str, key: str) -> list[dict[str, Any]]:
        files_dir = self._files_dir(run_id)
        rel = m.file_series_index(key)
        if files_dir is None:
            with tempfile.TemporaryDirectory() as tmp:
                got = self.read_file(DestinationRunId(run_id), rel, Path(tmp))
                text = "" if got is None else got.read_text(encoding="utf-8")
        else:
            path = files_dir / rel
            text = path.read_text(encoding="utf-8") if path.is_file() else ""
        return [json.loads(line) for line in text.splitlines() if line.strip()]

    def read_series(self, run_id: DestinationRunId, kind: SeriesKind, key: str) -> pa.Table:
        if kind == "file":
            lines = self._index(run_id, key)
            if lines:
                return m.index_table(lines)
        if self._streamed(run_id):
            history, _ = read_history_page(self._run_file(run_id), key, _companions(key), 0, None)
        else:
            history = self._logged(run_id).history
        return m.history_table(kind, m.history_points(history, key))

    def _streamed(self, run_id: str) -> bool:
        """An offline run file larger than `STREAM_ABOVE`: its series are read from the file."""
        return self.mode != "online" and self._run_file(run_id).stat().st_size > STREAM_ABOVE

    def read_series_page(
        self, run_id: DestinationRunId, kind: SeriesKind, key: str, token: str | None
    ) -> tuple[pa.Table, str | None]:
        """Float and string series of an offline run file larger than `STREAM_ABOVE`: `HISTORY_PAGE`
        rows at a time, streamed from the file in its row order (W&B's `_step`, increasing); the
        token is the file offset to go on from. Smaller files (decoded once for all series), file
        series, histograms and online runs (the API's `scan_history` has no resumable position):
        the whole series as one page."""
        if kind not in ("float", "string") or not self._streamed(run_id):
            return self.read_series(run_id, kind, key), None
        start = 0 if token is None else int(token)
        history, end = read_history_page(self._run_file(run_id), key, _companions(key), start, HISTORY_PAGE)
        table = m.history_table(kind, m.history_points(history, key))
        return table, None if end is None else str(end)

    def read_file(self, run_id: DestinationRunId, path: str, into: Path) -> Path | None:
        files_dir = self._files_dir(run_id)
        if files_dir is not None:
            source = files_dir / path
            if not source.is_file():
                return None
            target = into / Path(path).name
            shutil.copyfile(source, target)
            return target
        api_run = self._api_run(run_id)
        if api_run is None:
            return None
        try:
            api_run.file(path).download(root=str(into), replace=True)
        except Exception as exc:  # a missing file is None, anything else is raised
            if "not found" in str(exc).lower():
                return None
            raise
        return into / path

    # -- the model registry (`RegistryWriter`, in registry.py) ------------------------------------

    def wandb_module(self) -> Any:
        """wandb, imported on first use (with the one-line hint when it is missing)."""
        return _wandb()

    def settings(self) -> Any:
        """The `wandb.Settings` of runs this tool writes (no console, stats, git or code capture)."""
        return _wandb().Settings(
            mode=self.mode, silent=True, console="off", save_code=False, disable_git=True,
            disable_job_creation=True, x_disable_stats=True, x_disable_meta=True,
            x_disable_machine_info=True, x_save_requirements=False,
        )

    def registry_name(self, name: str) -> str:
        """The artifact collection name W&B allows (`[A-Za-z0-9_.-]`, see `registry.collection`)."""
        return collection_name(name)

    def plan_model(self, model: RegistryModel) -> list[Loss]:
        """What the W&B registry cannot carry (offline: the link into the registry)."""
        return self._registry.plan_model(model)

    def expected_model(self, model: RegistryModel) -> ModelSnapshot:
        return self._registry.expected_model(model)

    def read_model(self, model: RegistryModel, *, hashes: bool) -> ModelSnapshot | None:
        return self._registry.read_model(model, hashes=hashes)

    def ensure_model(self, model: RegistryModel) -> str:
        self._close_active()
        return self._registry.ensure_model(model)

    def ensure_version(self, model: RegistryModel, name: str, version: RegistryVersion,
                       found: VersionSnapshot | None) -> VersionSnapshot:
        return self._registry.ensure_version(model, name, version, found)

    def set_aliases(self, model: RegistryModel, name: str, holders: Mapping[str, str]) -> None:
        self._registry.set_aliases(model, name, holders)

    def classify_error(self, error: Exception) -> ErrorKind:
        return classify_error(error)

    def close(self) -> None:
        self._close_active()
        self._registry.close()
        if self._own_dir:
            shutil.rmtree(self.directory, ignore_errors=True)


HISTORY_PAGE = 50_000
"""Rows of one series per `read_series_page` of a streamed offline run."""
STREAM_ABOVE = 32 * 1024 * 1024
"""Offline run files up to this size are decoded once with their whole history (fast for runs with
many series: one pass); larger ones are streamed once per series, one page in memory at a time."""


def _companions(key: str) -> tuple[str, ...]:
    """The hidden keys `history_points` reads next to `key` (same rows)."""
    return (m.timestamp_key(key), m.histogram_key(key))


_START_LOCK = threading.Lock()


@contextlib.contextmanager
def _run_start(micros: int | None) -> Iterator[None]:
    """Within `wandb.init`, stamp the run record with the source's start instead of `time.time()`.

    wandb 0.31 takes the record's `start_time` from `Run._start_time`, set in `Run.__init__` with
    no setting to change it (`x_start_time` is overwritten by `init`); the record is built by
    `InterfaceBase._make_run`, wrapped here for the duration of one `init` (under a lock, like the
    Aim destination's run-hash hook). When the hook is gone (another wandb), the start stays the
    import time and verify reports the difference.
    """
    if micros is None:
        yield
        return
    from wandb.sdk.interface.interface import InterfaceBase

    original = getattr(InterfaceBase, "_make_run", None)
    if original is None:
        yield
        return

    def make_run(self: Any, run: Any) -> Any:
        proto = original(self, run)
        proto.start_time.FromMicroseconds(micros)
        return proto

    with _START_LOCK:
        InterfaceBase._make_run = make_run  # type: ignore[method-assign]
        try:
            yield
        finally:
            InterfaceBase._make_run = original  # type: ignore[method-assign]


def _text(value: Any) -> str | None:
    return value if isinstance(value, str) else None


def _remove_tree(path: Path) -> None:
    """Delete a run folder; wandb-core may still be closing its logs there, so retry briefly."""
    for attempt in range(10):
        try:
            shutil.rmtree(path)
        except FileNotFoundError:
            return
        except OSError:
            if attempt == 9:
                raise
            time.sleep(0.1 * (attempt + 1))
        else:
            return


def _ts(value: Any) -> int | None:
    """A timestamp from `to_pylist` (datetime) or an int64 column as microseconds."""
    if value is None:
        return None
    if isinstance(value, int):
        return value
    from datetime import datetime, timezone

    assert isinstance(value, datetime)
    epoch = datetime(1970, 1, 1, tzinfo=timezone.utc)
    delta = value - epoch
    return (delta.days * 86_400 + delta.seconds) * 1_000_000 + delta.microseconds


def _all_images(rows: list[dict[str, Any]]) -> bool:
    """Whether every point of a file series is a PNG/JPEG/GIF image that decodes (then it is
    logged as `wandb.Image`, byte for byte); otherwise the series is kept as run files."""
    try:
        from PIL import Image
    except ImportError:
        return False
    for r in rows:
        if not r.get("local_path") or str(r.get("mime_type") or "").lower() not in m.IMAGE_EXTENSIONS:
            return False
        try:
            with Image.open(r["local_path"]) as im:
                im.verify()
        except Exception:  # noqa: BLE001 - not decodable: keep the series as files
            return False
    return True


if TYPE_CHECKING:
    _: type[Destination] = WandbDestination
    _r: type[RegistryWriter] = WandbDestination
