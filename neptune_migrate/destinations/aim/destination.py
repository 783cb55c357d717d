"""AimDestination: writes runs into a local Aim repository or a remote `aim server`, and reads
them back through Aim's SDK.

Identity: the Aim run hash is derived from the Neptune key (`mapping.run_hash`); Aim's public API
cannot choose a hash, so `Run()` is created while `aim.sdk.base_run.generate_run_hash` returns it
(under a process-wide lock; the result is checked). `find_run` is then an existence check plus a
read of the run's own metadata container (no repository index, no lock needed). Points go through
`RunTracker._track`, the path `run.track` takes, with the original timestamps. The rules are in
`mapping.py` and docs/destinations/aim.md. aim is imported lazily.
"""

from __future__ import annotations

import contextlib
import importlib
import json
import logging
import math
import os
import shutil
import sqlite3
import tempfile
import threading
import time
from collections.abc import Mapping
from datetime import datetime, timezone
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar
from urllib.parse import urlsplit

import numpy as np
import pyarrow as pa

from neptune_migrate import __version__
from neptune_migrate.destinations.aim import mapping as m
from neptune_migrate.destinations.aim.errors import classify_error
from neptune_migrate.destinations.aim.registry import AimRegistry
from neptune_migrate.destinations.base import (
    Capabilities,
    DestinationOptions,
    DestinationRun,
    FileDigest,
    ModelSnapshot,
    PreparedRun,
    RegistryModel,
    RegistryVersion,
    RunSnapshot,
    VersionSnapshot,
)
from neptune_migrate.destinations.probe import probe_tcp
from neptune_migrate.dump.layout import fsync_dir
from neptune_migrate.dump.lock import FileLock
from neptune_migrate.dump.schema import encode_float
from neptune_migrate.dump.writer import sha256_file
from neptune_migrate.errors import MissingDependencyError, PermanentError, UsageError
from neptune_migrate.model import DestinationRunId, ErrorKind, FileEntry, Loss, RunKey, SeriesKind

if TYPE_CHECKING:
    from neptune_migrate.destinations.base import Destination, RegistryWriter

log = logging.getLogger(__name__)

ARTIFACTS_ENV = "NEPTUNE_MIGRATE_AIM_ARTIFACTS_URI"
"""Overrides where run artifacts go (any URI Aim accepts: `file://...`, `s3://...`)."""
ARTIFACTS_DIR = "aim-artifacts"
"""Default artifacts folder, next to the repository's `.aim` folder (local repos)."""

_HASH_LOCK = threading.Lock()
"""`generate_run_hash` is patched module-wide while a Run is created: one creation at a time."""
LIST_TTL = 0.6
"""Seconds between two run listings of a remote repository (`aim server` caches them for 0.5 s)."""


def _aim(module: str = "aim") -> Any:
    """An Aim module, untyped (Aim's own annotations are partial): the SDK is loaded on first use."""
    try:
        return importlib.import_module(module)
    except ImportError as exc:
        raise MissingDependencyError("aim", "aim") from exc


REPO_LOCK = ".neptune-migrate-aim.lock"
"""Lock file beside `.aim`: one process creates or repairs a local repository at a time."""
BUILD_PREFIX = ".neptune-migrate-aim-build-"
"""Folders beside `.aim` where a new repository is built before it is renamed into place."""


def _repo_problem(aim_dir: Path) -> str | None:
    """Read only: why a local `.aim` is unusable (its metadata database lacks Aim's tables), or None."""
    db = aim_dir / "run_metadata.sqlite"
    if not db.is_file():
        return "run_metadata.sqlite is missing"
    if db.stat().st_size == 0:
        return "run_metadata.sqlite is empty"
    try:
        with contextlib.closing(sqlite3.connect(f"{db.resolve().as_uri()}?mode=ro", uri=True, timeout=30)) as conn:
            names = {row[0] for row in conn.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
    except sqlite3.DatabaseError as exc:
        return f"run_metadata.sqlite cannot be read: {exc}"
    return None if "run" in names else "run_metadata.sqlite has no run table"


def _has_runs(aim_dir: Path) -> bool:
    """Whether a `.aim` folder holds any run data (metadata or sequence chunks)."""
    for sub in ("meta/chunks", "seqs/chunks"):
        folder = aim_dir / sub
        if folder.is_dir() and any(folder.iterdir()):
            return True
    return False


def _build_repo(root: Path) -> Path:
    """Initialise a complete repository in a new folder beside `root/.aim`; return its `.aim`.

    Every handle Aim keeps on it (repository and database pools, the SQLite engine) is released,
    so the folder can be renamed."""
    import gc

    repo_cls = _aim().Repo
    db_cls = _aim("aim.storage.structured.db").DB
    build = Path(tempfile.mkdtemp(prefix=BUILD_PREFIX, dir=root))
    repo = repo_cls.from_path(str(build), init=True)
    repo_cls._pool.pop(repo.root_path, None)
    db_cls._pool.pop(repo.path, None)
    repo.structured_db.engine.dispose()
    repo.close()
    del repo
    gc.collect()
    return build / ".aim"


def _install(built: Path, aim_dir: Path) -> None:
    """Rename a built `.aim` into place (atomic), then drop its empty build folder."""
    built.rename(aim_dir)
    fsync_dir(aim_dir.parent)
    shutil.rmtree(built.parent, ignore_errors=True)


def _file_uri_path(uri: str) -> Path | None:
    parts = urlsplit(uri)
    return Path(parts.path) if parts.scheme == "file" else None


class AimDestination:
    """Writes Neptune runs into one Aim repository (path or `aim://host:port`)."""

    name: ClassVar[str] = "aim"

    def __init__(self, repo: str, *, experiment_template: str = "{project}", artifacts_uri: str | None = None) -> None:
        self.remote = repo.startswith("aim://")
        self.repo_path = repo if self.remote else str(Path(repo).expanduser().resolve())
        self.experiment_template = experiment_template
        if artifacts_uri is None:
            base = Path.cwd() / ARTIFACTS_DIR / repo.removeprefix("aim://").replace(":", "_") if self.remote \
                else Path(self.repo_path) / ARTIFACTS_DIR
            artifacts_uri = f"file://{base}"  # unquoted, as Aim's file storage reads it
        self.artifacts_uri = artifacts_uri
        self.capabilities = Capabilities(
            integer_steps_only=True,
            single_step_axis=False,
            can_delete_runs=True,
            file_hashes=True,
            duplicate_steps="overwritten",
            points_per_request=10_000,
            points_per_second=3_000.0,
            parallel_runs=True,
            sanitize_key=m.sanitize_key,
            registry="run_params",
        )
        self._repo: Any = None
        self._lock = threading.RLock()
        """Serialises what touches Aim's shared SQLite metadata: run creation, props, close, delete."""
        self._open: dict[str, Any] = {}
        self._index_dirty = True
        self._listed_at = -LIST_TTL

    @classmethod
    def from_options(cls, options: DestinationOptions) -> AimDestination:
        if not options.aim_repo:
            msg = "--to aim needs --aim-repo PATH (initialised if missing) or --aim-repo aim://HOST:PORT"
            raise UsageError(msg)
        _aim()
        return cls(options.aim_repo, experiment_template=options.experiment_template,
                   artifacts_uri=os.environ.get(ARTIFACTS_ENV) or None)

    # -- plumbing ---------------------------------------------------------------------------------
    @property
    def repo(self) -> Any:
        if self._repo is None:
            with self._lock:
                if self._repo is None:
                    if not self.remote:
                        aim_dir = Path(self.repo_path) / ".aim"
                        if not aim_dir.is_dir() or _repo_problem(aim_dir) is not None:
                            self.prepare_store()
                    self._repo = _aim().Repo.from_path(self.repo_path)
        return self._repo

    def store_exists(self) -> bool:
        """A local repository exists when its `.aim` folder does (a remote one always counts);
        one whose creation was interrupted is an error that names the repair."""
        if self.remote:
            return True
        aim_dir = Path(self.repo_path) / ".aim"
        if not aim_dir.is_dir():
            return False
        problem = _repo_problem(aim_dir)
        if problem is not None:
            repair = ("it holds runs: repair it with Aim's tools" if _has_runs(aim_dir)
                      else "`neptune-migrate import` (without --dry-run) repairs it")
            msg = f"Aim repository {self.repo_path} is damaged ({problem}); {repair}"
            raise UsageError(msg)
        return True

    def prepare_store(self) -> str | None:
        """Create a local repository atomically, or repair one whose creation was interrupted.

        The repository is built in a folder beside it and renamed into place, so a kill at any
        moment leaves either no `.aim` or a complete one. A damaged `.aim` (an empty or table-less
        `run_metadata.sqlite`, left by an interrupted creation) is moved aside to `.aim-broken-*`
        (never deleted) and replaced, unless it holds runs: then nothing is touched.
        """
        if self.remote:
            return None
        root = Path(self.repo_path)
        root.mkdir(parents=True, exist_ok=True)
        aim_dir = root / ".aim"
        with FileLock(root / REPO_LOCK, f"creating the Aim repository {root}").holding():
            for leftover in root.glob(f"{BUILD_PREFIX}*"):  # a build killed half-way (we hold the lock)
                shutil.rmtree(leftover, ignore_errors=True)
            if not aim_dir.exists():
                _install(_build_repo(root), aim_dir)
                return f"created the Aim repository {root}"
            problem = _repo_problem(aim_dir)
            if problem is None:
                return None
            if _has_runs(aim_dir):
                msg = (f"Aim repository {root} is damaged ({problem}) and holds runs: not repairing it; "
                       f"repair it with Aim's tools or move {aim_dir} away, then import again")
                raise UsageError(msg)
            built = _build_repo(root)
            aside = root / f".aim-broken-{datetime.now(timezone.utc).strftime('%Y%m%dT%H%M%SZ')}-{os.getpid()}"
            aim_dir.rename(aside)
            _install(built, aim_dir)
            return (f"repaired the Aim repository {root}: {problem} (its creation had been interrupted); "
                    f"the damaged one, which held no runs, is kept as {aside.name}")

    def _exists(self, run_hash: str) -> bool:
        repo = self.repo
        if not self.remote:
            return (Path(repo.path) / "meta" / "chunks" / run_hash).is_dir()
        # The server caches its run list for 0.5 s: never ask twice within that window, or a run
        # created right after the first answer would look missing.
        wait = LIST_TTL - (time.monotonic() - self._listed_at)
        if wait > 0:
            time.sleep(wait)
        hashes = set(repo._remote_repo_proxy.list_all_runs())
        self._listed_at = time.monotonic()
        return run_hash in hashes

    def _forget_readers(self) -> None:
        """Drop cached read-only containers so the next read sees what was written since."""
        pool = self.repo.container_pool
        for cfg in [c for c in list(pool.keys()) if getattr(c, "read_only", False)]:
            pool.pop(cfg, None)

    def _run_meta(self, run_hash: str) -> Any:
        """The run's own metadata tree, read-only: readable without the repository index."""
        self._forget_readers()
        meta = self.repo.request_tree("meta", run_hash, read_only=True).subtree("meta")
        return meta.subtree("chunks").subtree(run_hash)

    def _refresh_index(self, run_hash: str) -> None:
        """Make `Repo.get_run` / `query_runs` see the run (Aim indexes only under `aim up`)."""
        repo = self.repo
        if self.remote:
            if self._index_dirty:
                repo._remote_repo_proxy._recreate_index()
                self._index_dirty = False
        else:
            from aim.sdk.index_manager import RepoIndexManager

            RepoIndexManager.get_index_manager(repo).index(run_hash)
        self._forget_readers()

    def _writer(self, run_id: DestinationRunId) -> Any:
        run = self._open.get(run_id)
        if run is not None:
            return run
        # Resumed by a retry after `create_run` lost its answer: reopen the half-created run.
        with self._lock:
            run = _aim().Run(run_hash=run_id, repo=self.repo, force_resume=True, system_tracking_interval=None,
                      capture_terminal_logs=False, log_system_params=False)
            run.set_artifacts_uri(self.artifacts_uri)
            self._open[run_id] = run
        return run

    def _log_artifact(self, run: Any, source: Path, name: str) -> None:
        run.log_artifact(str(source), name=name, block=True)

    def _log_rows(self, run: Any, kind: SeriesKind, key: str, rows: list[dict[str, Any]]) -> None:
        with tempfile.TemporaryDirectory(prefix="nm-aim-") as tmp:
            part = Path(tmp) / "part.jsonl"
            part.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows), encoding="utf-8")
            self._log_artifact(run, part, m.series_part_artifact(kind, key, rows))

    # -- protocol ---------------------------------------------------------------------------------
    def describe(self) -> str:
        return f"aim {self.repo_path} (artifacts {self.artifacts_uri})"

    def import_settings(self) -> Mapping[str, str]:
        """The mapping version and the experiment template (the run's experiment, which a
        re-import under another template must change)."""
        return {"mapping": m.MAPPING_VERSION, "experiment_template": self.experiment_template}

    def check(self) -> None:
        """`aim://host:port`: one TCP connection with a short timeout; a local repository: nothing."""
        if self.remote:
            parts = urlsplit(self.repo_path)
            probe_tcp(parts.hostname or "127.0.0.1", parts.port or 53800, "the Aim server")

    def plan_run(self, run: PreparedRun) -> list[Loss]:
        return m.plan_losses(run)

    def chunk_losses(self, kind: SeriesKind, chunk: pa.Table) -> list[Loss]:
        return m.chunk_losses(kind, chunk)

    def expected_snapshot(self, run: PreparedRun) -> RunSnapshot:
        return m.expected_snapshot(run, m.experiment_name(self.experiment_template, run.record.key.project))

    def _parent_name(self, run: PreparedRun) -> str | None:
        """The Aim name of the fork parent's run, when the pipeline found it imported."""
        if run.parent_run_id is None or run.parent_run_id == m.run_hash(run.record.key):
            return None
        try:
            return str(self._reader(run.parent_run_id).name)
        except PermanentError:
            return None

    def expected_series(self, kind: SeriesKind, points: pa.Table) -> pa.Table:
        return m.expected_series(kind, points)

    def find_run(self, key: RunKey) -> DestinationRun | None:
        if not self.remote and not (Path(self.repo_path) / ".aim").is_dir():
            return None  # no repository, no run: and a dry run must not create one
        run_hash = m.run_hash(key)
        if not self._exists(run_hash):
            return None
        try:
            tool = self._run_meta(run_hash).collect(("attrs", m.TOOL))
        except KeyError:
            tool = {}
        tool = tool if isinstance(tool, dict) else {}
        return DestinationRun(DestinationRunId(run_hash), tool.get("status") == m.STATUS_COMPLETE,
                              tool.get("digest"), tool.get("import_digest"), tool.get("origin"))

    def create_run(self, run: PreparedRun) -> DestinationRunId:
        aim = _aim()
        base_run = _aim("aim.sdk.base_run")

        rec = run.record
        run_hash = m.run_hash(rec.key)
        parent_name = self._parent_name(run)
        with self._lock:
            if run_hash in self._open:  # a retry after a lost answer: the run is being written
                return DestinationRunId(run_hash)
            if self._exists(run_hash):  # left by an attempt that raised half-way: start over
                self._delete(run_hash)
            if rec.system.created_at is not None:
                created = rec.system.created_at.astimezone(timezone.utc).replace(tzinfo=None)
                self.repo.request_props(run_hash, read_only=False, created_at=created)
            with _HASH_LOCK:
                original = base_run.generate_run_hash
                base_run.generate_run_hash = lambda: run_hash
                try:
                    arun = aim.Run(repo=self.repo,
                                   experiment=m.experiment_name(self.experiment_template, rec.key.project),
                                   system_tracking_interval=None, capture_terminal_logs=False,
                                   log_system_params=False)
                finally:
                    base_run.generate_run_hash = original
            if arun.hash != run_hash:
                arun.close()
                msg = f"aim did not take the run hash {run_hash}: unsupported aim version"
                raise PermanentError(msg)
            self._open[run_hash] = arun
            self._index_dirty = True
            arun[m.TOOL] = m.tool_params(run, m.STATUS_IN_PROGRESS, __version__)
            arun[m.NEPTUNE] = m.neptune_params(run, parent_name)
            tree, _ = m.field_params(run.dest_fields())
            for top, value in tree.items():
                arun[top] = value
            arun.name = m.run_name(rec)
            if rec.system.description is not None:
                arun.description = rec.system.description
            for tag in sorted(rec.system.tags):
                arun.add_tag(tag)
            arun.set_artifacts_uri(self.artifacts_uri)
        return DestinationRunId(run_hash)

    def write_series(self, run_id: DestinationRunId, kind: SeriesKind, chunk: pa.Table) -> None:
        run = self._writer(run_id)
        track = run._tracker._track
        keys = chunk.column("key").to_pylist()
        steps = chunk.column("dest_step").to_pylist()
        times = m.seconds(chunk.column("timestamp"))
        if kind == "float":
            for k, s, v, t in zip(keys, steps, chunk.column("value").to_pylist(), times, strict=True):
                track(math.nan if v is None else float(v), t, name=k, step=int(s), context={})
        elif kind == "string":
            text = _aim().Text
            for k, s, v, t in zip(keys, steps, chunk.column("value").to_pylist(), times, strict=True):
                track(text("" if v is None else str(v)), t, name=k, step=int(s), context={})
        elif kind == "histogram":
            self._write_histograms(run, chunk, keys, steps, times)
        else:
            self._write_files(run, chunk, keys, steps, times)
        self._index_dirty = True

    def _write_histograms(self, run: Any, chunk: pa.Table, keys: list[str], steps: list[int],
                          times: list[float]) -> None:
        distribution = _aim().Distribution
        rows_by_key: dict[str, list[dict[str, Any]]] = {}
        for i, (edges, values, type_) in enumerate(zip(chunk.column("edges").to_pylist(),
                                                       chunk.column("values").to_pylist(),
                                                       chunk.column("type").to_pylist(), strict=True)):
            values = [float(v) for v in (values or [])]
            bins = m.rebuilt_edges(edges, len(values))
            run._tracker._track(distribution(hist=values, bin_range=(bins[0], bins[-1])), times[i],
                                name=keys[i], step=int(steps[i]), context={})
            rows_by_key.setdefault(keys[i], []).append({
                "key": keys[i], "step": int(steps[i]), "type": type_,
                "edges": None if edges is None else [encode_float(e) for e in edges],
            })
        for key, rows in rows_by_key.items():
            self._log_rows(run, "histogram", key, rows)

    def _write_files(self, run: Any, chunk: pa.Table, keys: list[str], steps: list[int],
                     times: list[float]) -> None:
        image = _aim().Image
        rows_by_key: dict[str, list[dict[str, Any]]] = {}
        columns = {c: chunk.column(c).to_pylist() for c in ("name", "sha256", "title", "description",
                                                            "mime_type", "local_path")}
        for i, key in enumerate(keys):
            step = int(steps[i])
            name = m.safe_name(columns["name"][i] or "file")
            local = columns["local_path"][i]
            if local is not None:
                self._log_artifact(run, Path(local), m.file_series_artifact(key, step, name))
                if m.is_image(local):
                    caption = columns["title"][i] or columns["name"][i] or ""
                    run._tracker._track(image(local, caption=caption), times[i], name=key, step=step, context={})
            rows_by_key.setdefault(key, []).append({
                "key": key, "step": step, "name": name, "time": times[i],
                "sha256": columns["sha256"][i] if local is not None else None,
                "stored": local is not None, "title": columns["title"][i],
                "description": columns["description"][i], "mime_type": columns["mime_type"][i],
            })
        for key, rows in rows_by_key.items():
            self._log_rows(run, "file", key, rows)

    def finish_series(self, run_id: DestinationRunId, run: PreparedRun) -> None:
        pass

    def upload_file(self, run_id: DestinationRunId, entry: FileEntry, local_path: Path) -> None:
        self._log_artifact(self._writer(run_id), local_path, m.file_artifact_name(entry))

    def mark_complete(self, run_id: DestinationRunId, run: PreparedRun) -> None:
        arun = self._writer(run_id)
        arun[m.TOOL] = m.tool_params(run, m.STATUS_COMPLETE, __version__)
        end = m.end_timestamp(run)
        with self._lock:
            self._open.pop(run_id, None)
            if end is not None:
                # Aim stamps the close time as the run's end; the source's end replaces it.
                # (the override holds the tree, not `resources`: no reference cycle that would keep
                # the run's containers open until a garbage collection)
                tree = arun._resources.meta_run_tree
                arun._resources.set_run_end_time = lambda: tree.__setitem__("end_time", end)
            arun.close()
        self._index_dirty = True
        if not self.remote:
            self._try_index(run_id)

    def _try_index(self, run_hash: str | None) -> None:
        """Index finished runs so `Repo.query_runs` and `aim up` see them at once (best effort:
        a running `aim up` holds the index and indexes them itself)."""
        try:
            if self.remote:
                self.repo._remote_repo_proxy._recreate_index()
                self._index_dirty = False
            elif run_hash is not None:
                from aim.sdk.index_manager import RepoIndexManager

                RepoIndexManager.get_index_manager(self.repo).index(run_hash)
        except Exception:  # the index is a cache; reads refresh it again
            log.debug("indexing aim run %s failed", run_hash, exc_info=True)

    def _delete(self, run_hash: str) -> None:
        with self._lock:
            run = self._open.pop(run_hash, None)
            if run is not None:
                run.close()
            if not self.repo.delete_run(run_hash):
                msg = f"aim could not delete the half-written run {run_hash} (see the warning above)"
                raise PermanentError(msg)
            if not self.remote:
                self.repo._all_run_hashes.cache_clear()
            base = _file_uri_path(self.artifacts_uri)
            if base is not None:
                shutil.rmtree(base / run_hash, ignore_errors=True)
            self._index_dirty = True
            self._forget_readers()

    def discard_run(self, run_id: DestinationRunId) -> None:
        self._delete(run_id)

    def _reader(self, run_id: DestinationRunId) -> Any:
        self._refresh_index(run_id)
        run = self.repo.get_run(run_id)
        if run is None:
            msg = f"aim run {run_id} is not in the repository"
            raise PermanentError(msg)
        return run

    def _artifact_path(self, artifact: Any, into: Path) -> Path:
        local = _file_uri_path(artifact.uri)
        if local is not None:
            return local
        return Path(artifact.download(str(into)))

    def _series_rows(self, run: Any, kind: SeriesKind, key: str | None) -> list[dict[str, Any]]:
        """The per-point records (JSON lines) of histogram or file series, of one key or all."""
        prefix = f"{m.SERIES_DIR}/{kind}/" + ("" if key is None else f"{m.series_dir(key)}/")
        rows: list[dict[str, Any]] = []
        with tempfile.TemporaryDirectory(prefix="nm-aim-") as tmp:
            for name, artifact in sorted(run.artifacts.items()):
                if name.startswith(prefix):
                    path = self._artifact_path(artifact, Path(tmp))
                    rows.extend(json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line)
        return rows

    def read_snapshot(self, run_id: DestinationRunId) -> RunSnapshot:
        from aim.storage.context import Context

        run = self._reader(run_id)
        attrs = run[...]
        neptune = attrs.get(m.NEPTUNE, {})
        created = run.creation_time
        snap = RunSnapshot(
            run_id=run_id,
            name=run.name,
            description=run.description,
            start_time=None if created is None else datetime.fromtimestamp(created, tz=timezone.utc),
            end_time=None if run.end_time is None else datetime.fromtimestamp(run.end_time, tz=timezone.utc),
            tags=frozenset(str(t) for t in run.tags),
            params=m.flatten_params(attrs),
            extra=m.meta_extra(neptune if isinstance(neptune, dict) else {}, run.experiment),
        )
        for name, dtypes in (("float", ("float", "int")), ("string", ("aim.text",)),
                             ("histogram", ("aim.distribution",))):
            for seq_name, ctx, _ in run.iter_sequence_info_by_type(dtypes):
                getter = {"float": run.get_metric, "string": run.get_text_sequence,
                          "histogram": run.get_distribution_sequence}[name]
                seq = getter(seq_name, Context(ctx.to_dict()) if not isinstance(ctx, Context) else ctx)
                snap.series[name, seq_name] = len(seq.data.indices_list()) if seq is not None else 0  # type: ignore[index]
        file_keys: dict[str, set[tuple[int, str]]] = {}
        for row in self._series_rows(run, "file", None):
            file_keys.setdefault(row["key"], set()).add((row["step"], row["name"]))
        for key, points in file_keys.items():
            snap.series["file", key] = len(points)
        with tempfile.TemporaryDirectory(prefix="nm-aim-") as tmp:
            for name, artifact in run.artifacts.items():
                if name.startswith(f"{m.FILES_DIR}/"):
                    path = self._artifact_path(artifact, Path(tmp))
                    sha, size = (sha256_file(path), path.stat().st_size) if path.is_file() else (None, None)
                    snap.files[name] = FileDigest(size, sha)
        return snap

    def read_series(self, run_id: DestinationRunId, kind: SeriesKind, key: str) -> pa.Table:
        from aim.storage.context import Context

        run = self._reader(run_id)
        if kind == "float":
            seq = run.get_metric(key, Context({}))
            if seq is None:
                return pa.table({})
            steps, (values, times) = seq.data.view(["val", "time"]).numpy()
            return pa.table({"step": pa.array(np.asarray(steps, np.int64), pa.int64()),
                             "timestamp": m.timestamps_from_seconds(np.asarray(times, np.float64)),
                             "value": pa.array(np.asarray(values, np.float64), pa.float64())})
        if kind == "string":
            seq = run.get_text_sequence(key, Context({}))
            if seq is None:
                return pa.table({})
            items = list(seq.data.items())
            return pa.table({"step": pa.array([int(s) for s, _ in items], pa.int64()),
                             "timestamp": m.timestamps_from_seconds(float(v[2]) for _, v in items),
                             "value": pa.array([str(v[0].data) for _, v in items], pa.string())})
        if kind == "histogram":
            return self._read_histograms(run, key)
        return self._read_files(run, key)

    def _read_histograms(self, run: Any, key: str) -> pa.Table:
        from aim.storage.context import Context

        seq = run.get_distribution_sequence(key, Context({}))
        if seq is None:
            return pa.table({})
        originals = {r["step"]: r for r in self._series_rows(run, "histogram", key)}
        steps, stamps, values, edges, original, types = [], [], [], [], [], []
        for step, (dist, _, t) in seq.data.items():
            weights, ranges = dist.to_np_histogram()
            steps.append(int(step))
            stamps.append(float(t))
            values.append([float(x) for x in weights])
            edges.append([float(x) for x in ranges])
            row = originals.get(int(step), {})
            raw = row.get("edges")
            original.append(None if raw is None else [float(e) if isinstance(e, str) else e for e in raw])
            types.append(row.get("type"))
        return pa.table({
            "step": pa.array(steps, pa.int64()),
            "timestamp": m.timestamps_from_seconds(stamps),
            "values": pa.array(values, pa.list_(pa.float64())),
            "edges": pa.array(edges, pa.list_(pa.float64())),
            "original_edges": pa.array([None if o is None else [float(x) for x in o] for o in original],
                                       pa.list_(pa.float64())),
            "type": pa.array(types, pa.string()),
        })

    def _read_files(self, run: Any, key: str) -> pa.Table:
        rows = {(r["step"], r["name"]): r for r in self._series_rows(run, "file", key)}
        artifacts = run.artifacts
        out: dict[str, list[Any]] = {"step": [], "timestamp": [], "name": [], "sha256": [], "size": []}
        with tempfile.TemporaryDirectory(prefix="nm-aim-") as tmp:
            for (step, name), row in sorted(rows.items()):
                artifact = artifacts.get(m.file_series_artifact(key, step, name))
                sha = size = None
                if artifact is not None:
                    path = self._artifact_path(artifact, Path(tmp))
                    if path.is_file():
                        sha, size = sha256_file(path), path.stat().st_size
                out["step"].append(step)
                out["timestamp"].append(float(row["time"]))
                out["name"].append(name)
                out["sha256"].append(sha)
                out["size"].append(size)
        return pa.table({
            "step": pa.array(out["step"], pa.int64()),
            "timestamp": m.timestamps_from_seconds(out["timestamp"]),
            "name": pa.array(out["name"], pa.string()),
            "sha256": pa.array(out["sha256"], pa.string()),
            "size": pa.array(out["size"], pa.int64()),
        })

    def read_series_page(
        self, run_id: DestinationRunId, kind: SeriesKind, key: str, token: str | None
    ) -> tuple[pa.Table, str | None]:
        """The whole series as one page: Aim cannot page a sequence in step order.

        Aim 3 (sequence format 2) keys each point by a hash of its step (`hash_auto(step)`), so its
        iterators (`SequenceV2Data.numpy`, `ArrayView.values`) return points in hash order and
        `SequenceData.range` is refused ("data stored with reservoir sampling"). A step-ordered
        page would need the whole step column first and one random read per point; reading the
        series once, column-wise into numpy (24 bytes a point), is both smaller and faster."""
        return self.read_series(run_id, kind, key), None

    def read_file(self, run_id: DestinationRunId, path: str, into: Path) -> Path | None:
        run = self._reader(run_id)
        artifact = run.artifacts.get(path)
        if artifact is None:
            return None
        source = self._artifact_path(artifact, into)
        if source.parent == into:
            return source
        out = into / "file"
        shutil.copyfile(source, out)
        return out

    def classify_error(self, error: Exception) -> ErrorKind:
        return classify_error(error)

    # -- the model registry as run params (`RegistryWriter`, in registry.py) -----------------------

    def read_top_param(self, run_id: DestinationRunId, name: str) -> Any:
        """One top-level param of a run (None when the run or the param is not there)."""
        if not self._exists(run_id):
            return None
        try:
            return self._run_meta(run_id).collect(("attrs", name))
        except KeyError:
            return None

    def set_top_param(self, run_id: DestinationRunId, name: str, value: Any) -> None:
        """Set one top-level param of a finished run, keeping its end time (Aim stamps the close)."""
        if self.read_top_param(run_id, name) == value:
            return
        try:  # read before the run is reopened: resuming clears it
            end = self._run_meta(run_id)["end_time"]
        except KeyError:
            end = None
        quiet = logging.getLogger("aim.sdk.lock_manager")
        level = quiet.level
        with self._lock:
            quiet.setLevel(logging.ERROR)  # "force-releasing locks": the run is finished, nobody writes it
            try:
                arun = _aim().Run(run_hash=run_id, repo=self.repo, force_resume=True,
                                  system_tracking_interval=None, capture_terminal_logs=False,
                                  log_system_params=False)
            finally:
                quiet.setLevel(level)
            tree = arun._resources.meta_run_tree
            arun[name] = value
            if end is not None:
                arun._resources.set_run_end_time = lambda: tree.__setitem__("end_time", end)
            arun.close()
        self._index_dirty = True
        if not self.remote:
            self._try_index(run_id)

    def registry_name(self, name: str) -> str:
        """Aim stores the name as a param value: unchanged."""
        return name

    def plan_model(self, model: RegistryModel) -> list[Loss]:
        """Aim has no registry: the facts become run params (changed form)."""
        return AimRegistry(self).plan_model(model)

    def expected_model(self, model: RegistryModel) -> ModelSnapshot:
        return AimRegistry(self).expected_model(model)

    def read_model(self, model: RegistryModel, *, hashes: bool) -> ModelSnapshot | None:
        return AimRegistry(self).read_model(model, hashes=hashes)

    def ensure_model(self, model: RegistryModel) -> str:
        return AimRegistry(self).ensure_model(model)

    def ensure_version(self, model: RegistryModel, name: str, version: RegistryVersion,
                       found: VersionSnapshot | None) -> VersionSnapshot:
        return AimRegistry(self).ensure_version(model, name, version, found)

    def set_aliases(self, model: RegistryModel, name: str, holders: Mapping[str, str]) -> None:
        AimRegistry(self).set_aliases(model, name, holders)

    def close(self) -> None:
        with self._lock:
            for run in self._open.values():
                try:
                    run.close()
                except Exception:  # closing must release every other run too
                    log.debug("closing aim run %s failed", run.hash, exc_info=True)
            self._open.clear()
            if self.remote and self._repo is not None and self._index_dirty:
                self._try_index(None)


if TYPE_CHECKING:
    _: type[Destination] = AimDestination
    _r: type[RegistryWriter] = AimDestination
