"""MlflowDestination: writes runs through `MlflowClient` (SQL stores and tracking servers alike).

The mapping itself (keys, tags, param text, metric rows, artifact paths) is in `mapping.py`;
this module only talks to MLflow. mlflow is imported lazily, on first use of the client.

Every request goes through `_req`, so the import's retrier repeats one request, not a whole
method (`Capabilities.request_retry`). A request that may have taken effect before its answer was
lost (creating a run or an experiment) is looked up before it is sent again. Two imports racing
for one source key (different dumps or machines, so no shared lock) are settled here: a run is
claimed by a tag, checked after creation and again before the completion marker; the loser
deletes its copy (`ClaimLostError`).
"""

from __future__ import annotations

import contextlib
import hashlib
import importlib.util
import json
import logging
import os
import re
import shutil
import socket
import sqlite3
import tempfile
import threading
import time
import uuid
import warnings
from collections.abc import Callable, Iterator, Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field, replace
from datetime import datetime, timezone
from functools import partial
from pathlib import Path, PurePosixPath
from typing import TYPE_CHECKING, Any, ClassVar, TypeVar
from urllib.parse import urlsplit, urlunsplit

import pyarrow as pa

from neptune_migrate import __version__
from neptune_migrate.destinations.base import (
    Capabilities,
    DestinationOptions,
    DestinationRun,
    FileDigest,
    ModelSnapshot,
    PreparedRun,
    RegistryModel,
    RegistryVersion,
    RequestRetry,
    RunSnapshot,
    VersionSnapshot,
)
from neptune_migrate.destinations.mlflow import bulk, http
from neptune_migrate.destinations.mlflow import mapping as m
from neptune_migrate.destinations.mlflow.errors import classify_error
from neptune_migrate.destinations.mlflow.registry import MlflowRegistry
from neptune_migrate.destinations.probe import probe_http, probe_tcp
from neptune_migrate.dump.layout import fsync_dir
from neptune_migrate.dump.lock import FileLock
from neptune_migrate.dump.writer import sha256_file
from neptune_migrate.errors import ClaimLostError, MissingDependencyError, PermanentError, UsageError
from neptune_migrate.model import (
    DestinationRunId,
    ErrorKind,
    FileEntry,
    Loss,
    RunKey,
    SeriesKind,
)

if TYPE_CHECKING:
    from neptune_migrate.destinations.base import Destination, RegistryWriter

T = TypeVar("T")

HISTORY_PAGE = 25_000
"""Metric points per `get_metric_history` page read by verify (MLflow's own page size)."""

HEARTBEAT_EVERY = 30.0
"""Seconds between two heartbeat tags of a run being written."""
LEASE = 180.0
"""An in-progress run written from another machine whose heartbeat is older than this is taken
for the leftover of a crashed import (and repaired); a younger one is left to its import."""
_HOST = socket.gethostname()
log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class Claim:
    """Who created a run: parsed from the `neptune_migrate.claim` tag."""

    at: str
    host: str
    pid: int
    token: str

    @classmethod
    def new(cls) -> Claim:
        return cls(_now_iso(), _HOST, os.getpid(), uuid.uuid4().hex)

    @classmethod
    def parse(cls, value: str | None) -> Claim | None:
        parts = (value or "").split("|")
        if len(parts) != 4 or not parts[2].isdigit():
            return None
        return cls(parts[0], parts[1], int(parts[2]), parts[3])

    def __str__(self) -> str:
        return f"{self.at}|{self.host}|{self.pid}|{self.token}"

    @property
    def mine(self) -> bool:
        """Created by this process."""
        return self.host == _HOST and self.pid == os.getpid()


def _now_iso() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="milliseconds")


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _busy(tags: dict[str, str]) -> str | None:
    """Who is still writing an in-progress run (None: nobody, it is a leftover to repair).

    Same machine: the creating process is alive (and is not this one). Another machine: its
    heartbeat is younger than `LEASE`."""
    if tags.get(m.TAG_STATUS) == m.STATUS_COMPLETE:
        return None
    claim = Claim.parse(tags.get(m.TAG_CLAIM))
    if claim is None or claim.mine:
        return None
    beat = tags.get(m.TAG_HEARTBEAT) or claim.at
    if claim.host == _HOST:
        if _pid_alive(claim.pid):
            return f"process {claim.pid} on this machine, claimed at {claim.at}"
        return None
    try:
        age = (datetime.now(timezone.utc) - datetime.fromisoformat(beat)).total_seconds()
    except ValueError:
        return None
    if age < LEASE:
        return f"host {claim.host} pid {claim.pid}, last write {beat}"
    return None

def _quote(value: str) -> tuple[str, str]:
    """(operator, literal) matching `value` in an MLflow search filter.

    MLflow's filter grammar has no escape for quotes: use '...' or "...", and for a value holding
    both, a LIKE pattern with `_` for each quote (callers re-check the exact value).
    """
    if "'" not in value:
        return "=", f"'{value}'"
    if '"' not in value:
        return "=", f'"{value}"'
    return "LIKE", "'" + value.replace("'", "_").replace('"', "_") + "'"


def _redact(uri: str) -> str:
    """A tracking URI without user, password or query string."""
    try:
        parts = urlsplit(uri)
    except ValueError:
        return "<unparseable tracking URI>"
    netloc = parts.netloc.rpartition("@")[2]
    if not parts.netloc and uri.startswith(f"{parts.scheme}:///"):
        return f"{parts.scheme}://{parts.path}"  # sqlite:///x.db keeps its three slashes
    return urlunsplit((parts.scheme, netloc, parts.path, "", ""))


_DRIVER_PACKAGES = {
    "psycopg": ('"psycopg[binary]"', "psycopg2-binary", "postgresql+psycopg2"),
    "psycopg2": ("psycopg2-binary", '"psycopg[binary]"', "postgresql+psycopg"),
    "MySQLdb": ("mysqlclient", "pymysql", "mysql+pymysql"),
    "pymysql": ("pymysql", "mysqlclient", "mysql+mysqldb"),
}
"""Driver module SQLAlchemy wants -> (pip package, alternative package, URI scheme using it)."""


def check_db_driver(tracking_uri: str) -> None:
    """A database tracking URI (`postgresql://`, `mysql://`, ...) whose driver is not installed is a
    usage error with the install hint, before any connection (the URI is never quoted)."""
    scheme = tracking_uri.partition("://")[0].lower()
    if not scheme or scheme in ("http", "https", "file", "databricks", "sqlite") or "://" not in tracking_uri:
        return
    try:
        from sqlalchemy.engine.url import make_url
    except ImportError:
        return  # mlflow (which brings SQLAlchemy) is missing: that error comes when the client is built
    try:
        dialect = make_url(tracking_uri).get_dialect()
    except Exception:  # noqa: BLE001 - not a database URI SQLAlchemy knows; MLflow will say why
        return
    try:
        dialect.import_dbapi()
    except ImportError as exc:
        module = (getattr(exc, "name", None) or "").split(".")[0] or str(dialect.driver)
        package, other, other_scheme = _DRIVER_PACKAGES.get(module, (module, "", ""))
        alt = f" (or pip install {other} and use a {other_scheme}:// URI)" if other else ""
        msg = (f"{scheme}:// tracking URI: the database driver {module} is not installed; "
               f"install it with: pip install {package}{alt}")
        raise UsageError(msg) from None


_DB_PORTS = {"postgresql": 5432, "postgres": 5432, "mysql": 3306, "mariadb": 3306, "mssql": 1433}


def _probe_database(uri: str, what: str) -> None:
    """A database URI whose driver is missing is a usage error (exit 2); one whose server refuses
    connections is unreachable (exit 3), said in one line before any run; a Unix socket or an
    unknown backend is left to MLflow."""
    backend = uri.partition("://")[0].partition("+")[0].lower()
    if backend not in _DB_PORTS:
        return
    check_db_driver(uri)
    try:
        from sqlalchemy.engine.url import make_url
    except ImportError:
        return
    try:
        url = make_url(uri)
    except Exception:  # noqa: BLE001 - MLflow says what is wrong with it
        return
    if url.host:
        probe_tcp(url.host, url.port or _DB_PORTS[backend], what)


_SQLITE_SUFFIXES = (".db", ".sqlite", ".sqlite3")


def check_tracking_uri(uri: str) -> None:
    """Refuse a tracking URI that cannot work, with the fix in the message (a usage error, exit 2).

    `mlflow.db` (a file name, which MLflow would take for a file-store folder) and `sqlite://x.db`
    (two slashes: `x.db` would be a host name) both mean `sqlite:///x.db`.
    """
    parts = urlsplit(uri)
    if parts.scheme == "sqlite" and not uri.startswith("sqlite:///"):
        name = uri[len("sqlite:"):].lstrip("/") or "mlflow.db"
        msg = (f"--tracking-uri {uri!r} cannot work: a SQLite URI has three slashes before a relative path "
               f"(sqlite:///{name}) and four before an absolute one (sqlite:////abs/path/{Path(name).name})")
        raise UsageError(msg)
    if not parts.scheme and uri.lower().endswith(_SQLITE_SUFFIXES):
        fix = "sqlite:///" + uri.removeprefix("./")  # an absolute path gets its fourth slash from itself
        msg = f"--tracking-uri {uri!r} is a file name, not a tracking URI; for a SQLite store use {fix}"
        raise UsageError(msg)


def _make_client(tracking_uri: str) -> Any:
    """Build an `MlflowClient` with MLflow's console noise off (URL prints, progress bars)."""
    os.environ.setdefault("MLFLOW_SUPPRESS_PRINTING_URL_TO_STDOUT", "true")
    os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")
    # One place for retry (neptune_migrate/retry.py): MLflow's own HTTP retries are off, so a 429
    # or 5xx reaches our classifier at once instead of after minutes of hidden backoff.
    os.environ.setdefault("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "0")
    user_level = os.environ.get("MLFLOW_LOGGING_LEVEL")
    os.environ.setdefault("MLFLOW_LOGGING_LEVEL", "WARNING")
    try:
        from mlflow import MlflowClient
    except ImportError as exc:
        raise MissingDependencyError("mlflow", "mlflow") from exc
    if tracking_uri.startswith(("http://", "https://")):
        http.install()
    if user_level is None:
        logging.getLogger("mlflow").setLevel(logging.WARNING)
        logging.getLogger("alembic").setLevel(logging.WARNING)
    warnings.filterwarnings("ignore", module=r"mlflow(\..*)?$")
    warnings.filterwarnings("ignore", message=r".*noload.*")
    return MlflowClient(tracking_uri=tracking_uri)


def _store_lock(db: Path) -> FileLock:
    """The cross-process lock that serialises creating the schema of one SQLite store (beside it)."""
    return FileLock(db.with_name(f".{db.name}.neptune-migrate.lock"), f"creating the MLflow store {db}")


INIT_PREFIX = ".neptune-migrate-init-"
"""Temporary database a new SQLite store's schema is built in, beside it (`.<db name>.neptune-migrate-init-<pid>`)."""


def _create_store_atomically(db: Path) -> None:
    """Build MLflow's schema in a file beside `db`, then rename it into place (call under `_store_lock`).

    MLflow's migration of a fresh database takes seconds; a kill in the middle of it used to leave a
    half-migrated store (`table _alembic_tmp_... already exists`) on which every later import failed.
    Now a kill leaves only the temporary file, which the next creation removes.
    """
    for stale in db.parent.glob(f".{db.name}{INIT_PREFIX}*"):
        stale.unlink(missing_ok=True)
    tmp = db.with_name(f".{db.name}{INIT_PREFIX}{os.getpid()}")
    client = _make_client(f"sqlite:///{tmp}")
    client.search_experiments(max_results=1)  # the store is built (and migrated) on first use
    with contextlib.suppress(AttributeError):  # release MLflow's pooled connections to the temporary file
        client._tracking_client.store.engine.dispose()
    os.replace(tmp, db)
    fsync_dir(db.parent)


def _has_mlflow_schema(db: Path) -> bool:
    """Read only: the file exists and holds MLflow's `alembic_version` and `experiments` tables.

    A file that is not a SQLite database counts as a store (MLflow then reports what is wrong).
    """
    if not db.is_file() or db.stat().st_size == 0:
        return False
    try:
        with contextlib.closing(sqlite3.connect(f"{db.resolve().as_uri()}?mode=ro", uri=True, timeout=30)) as conn:
            names = {row[0] for row in conn.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
    except sqlite3.DatabaseError:
        return True
    return {"alembic_version", "experiments"} <= names


@dataclass
class _RunBuffers:
    """Series points of one run that become artifacts in `finish_series` (JSON lines on disk)."""

    root: Path
    files: dict[tuple[SeriesKind, str], Path] = field(default_factory=dict)
    uploaded: dict[str, str] = field(default_factory=dict)
    """File-series artifact path -> sha256 already written in this import."""

    def path(self, kind: SeriesKind, key: str) -> Path:
        found = self.files.get((kind, key))
        if found is None:
            leaf = PurePosixPath(m.series_artifact(kind, key)).name
            found = self.root / kind / str(len(self.files)) / leaf
            found.parent.mkdir(parents=True, exist_ok=True)
            found.touch()
            self.files[(kind, key)] = found
        return found

    def append(self, kind: SeriesKind, lines: dict[str, list[str]]) -> None:
        for key, rows in lines.items():
            with self.path(kind, key).open("a", encoding="utf-8") as fh:
                fh.write("".join(rows))


class MlflowDestination:
    """Imports runs into MLflow: one experiment per Neptune project, one MLflow run per Neptune run.

    Identity lives in tags set by `create_run` itself (`neptune.project`, `neptune.run_id`), the
    completion marker is the tag `neptune_migrate.status` = `complete`, written last.
    """

    name: ClassVar[str] = "mlflow"
    capabilities: Capabilities = Capabilities(
        integer_steps_only=True,
        single_step_axis=False,
        can_delete_runs=True,
        file_hashes=True,
        duplicate_steps="kept",
        parallel_runs=True,
        sanitize_key=m.sanitize_key,
        request_retry=True,
        registry="native",
    )

    def __init__(
        self,
        tracking_uri: str,
        experiment_template: str = "{project}",
        *,
        artifact_check: bool = True,
        artifact_location: str | None = None,
        bulk_mode: str = "auto",
        mlflow_db: str | None = None,
        read: str = "sql",
        write_workers: int = 1,
    ) -> None:
        """Args:
        tracking_uri: `http(s)://...` server, `sqlite:///...`, `postgresql://...`, ...
        experiment_template: experiment name per Neptune project; fields {project} (`ws/proj`),
            {workspace}, {project_name}.
        artifact_check: check each uploaded file's size, and hash artifacts on read-back.
        artifact_location: artifact root for experiments this tool creates (default: the
            server's or MLflow's own default, `./mlruns` for a local SQL store).
        bulk_mode: `--bulk`: float points straight into the tracking database (`bulk.py`) when it
            is a tested MLflow schema (`auto`), never, or always (refusing any other store).
        mlflow_db: `--mlflow-db`: the database behind an `http(s)://` tracking server.
        read: `--read`: float series read back by SQL (`sql`, where a database is known) or `api`.
        write_workers: `log_batch` requests of one run in flight at once on the API path.
        """
        self.tracking_uri = tracking_uri
        self.experiment_template = experiment_template
        self.artifact_check = artifact_check
        self.artifact_location = artifact_location
        self._lock = threading.Lock()
        self._client: Any = None
        self._experiments: dict[str, str] = {}
        self._buffers: dict[str, _RunBuffers] = {}
        self._blob_resolver: Callable[[str], Path] | None = None
        self._retry: RequestRetry | None = None
        self._claims: dict[str, Claim] = {}
        self._beats: dict[str, float] = {}
        self.bulk_mode, self.read_mode = bulk.check_mode(bulk_mode, read)
        if mlflow_db is not None and not bulk.is_database_uri(mlflow_db):
            msg = f"--mlflow-db {_redact(mlflow_db)!r}: expected a database URI (postgresql://..., sqlite:///...)"
            raise UsageError(msg)
        self.mlflow_db = mlflow_db
        self.write_workers = max(1, write_workers)
        self._sql: bulk.BulkStore | None = None
        self._sql_refusal: str | None = None
        self._sql_decided = False
        self._sql_lock = threading.Lock()
        self._bulk_on = False
        self._pool: ThreadPoolExecutor | None = None
        if self.write_workers > 1:  # bigger pieces per call, split here into requests sent in parallel
            self.capabilities = replace(self.capabilities,
                                        points_per_request=m.METRICS_PER_BATCH * self.write_workers * 4)

    @classmethod
    def from_options(cls, options: DestinationOptions) -> MlflowDestination:
        """From the CLI options. A local SQLite store keeps its artifacts beside the database
        (`<db folder>/mlartifacts`), not in the current directory."""
        if not options.tracking_uri:
            msg = "MLflow needs a tracking URI: pass --tracking-uri or set MLFLOW_TRACKING_URI"
            raise UsageError(msg)
        check_tracking_uri(options.tracking_uri)
        check_db_driver(options.tracking_uri)
        if importlib.util.find_spec("mlflow") is None:
            raise MissingDependencyError("mlflow", "mlflow")
        location = None
        uri = options.tracking_uri
        if uri.startswith("sqlite:///") and "?" not in uri:
            db = Path(uri[len("sqlite:///"):]).resolve()
            location = (db.parent / "mlartifacts").as_uri()
            uri = f"sqlite:///{db}"  # absolute: the same store has one name from any folder (locks, ledger)
        if options.mlflow_db is not None:
            check_db_driver(options.mlflow_db)
        return cls(uri, options.experiment_template, artifact_location=location, bulk_mode=options.bulk,
                   mlflow_db=options.mlflow_db, read=options.read, write_workers=options.write_workers)

    # -- plumbing -----------------------------------------------------------------------------

    @property
    def client(self) -> Any:
        """The `MlflowClient` (built, and mlflow imported, on first use). Building it on a SQLite
        file that is not an MLflow store yet creates the schema: that happens under the store lock."""
        if self._client is None:
            with self._lock:
                if self._client is None:
                    db = self._sqlite_path()
                    if db is not None and not _has_mlflow_schema(db):
                        with _store_lock(db).holding():
                            self._client = _make_client(self.tracking_uri)
                    else:
                        self._client = _make_client(self.tracking_uri)
        return self._client

    def _sqlite_path(self) -> Path | None:
        """The database file of a `sqlite:///` store, else None."""
        if not self.tracking_uri.startswith("sqlite:///"):
            return None
        return Path(self.tracking_uri[len("sqlite:///"):].partition("?")[0])

    def use_request_retry(self, retry: RequestRetry) -> None:
        """Route every request through `retry` (see `Capabilities.request_retry`)."""
        self._retry = retry

    def _req(self, what: str, fn: Callable[[], T]) -> T:
        """One request (idempotent on its own), retried as a unit when a retrier is set."""
        if self._retry is None:
            return fn()

        def attempt() -> T:
            http.clear()
            return fn()

        return self._retry(f"mlflow {what}", attempt, retry_after=http.last_retry_after)

    def _store_absent(self) -> bool:
        """True for a `sqlite:///` store that holds no MLflow schema yet (nothing can be in it)."""
        if self._client is not None:
            return False
        return not self.store_exists()

    def store_exists(self) -> bool:
        """A SQLite store exists when its file holds MLflow's tables; a server always counts."""
        db = self._sqlite_path()
        return db is None or _has_mlflow_schema(db)

    def prepare_store(self) -> str | None:
        """Create a SQLite store's schema once, under a lock beside the database file.

        MLflow migrates a fresh database when its client is first built; two processes doing that
        at once both fail and leave `_alembic_tmp_*` tables behind. A new database is built beside
        and renamed into place, so a kill during the migration leaves no half-made store. Other
        stores: nothing to do.
        """
        db = self._sqlite_path()
        if db is None:
            return self._bulk_notice()
        if not db.parent.is_dir():
            msg = f"{db.parent}: folder does not exist (for the MLflow store {db.name})"
            raise UsageError(msg)
        with _store_lock(db).holding():
            created = not _has_mlflow_schema(db)
            if created and (not db.exists() or db.stat().st_size == 0):
                _create_store_atomically(db)
            with self._lock:
                if self._client is None:
                    self._client = _make_client(self.tracking_uri)
        lines = [f"created the MLflow store {db}" if created else None, self._bulk_notice()]
        return "; ".join(line for line in lines if line) or None

    # -- the bulk path and the SQL read path ------------------------------------------------------

    def _sql_store(self) -> bulk.BulkStore | None:
        """The tracking database, when it is known (a database tracking URI or `--mlflow-db`) and
        the bulk path may touch it (tested dialect and schema revision); decided once."""
        with self._sql_lock:
            if self._sql_decided:
                return self._sql
            store: bulk.BulkStore | None = None
            if self.mlflow_db is not None:
                store = bulk.BulkStore.open(self.mlflow_db)
            elif bulk.is_database_uri(self.tracking_uri):
                store = bulk.BulkStore(self.client._tracking_client.store.engine, owned=False)
            refusal = ("the tracking URI is a server; pass --mlflow-db with the database behind it to use the "
                       "bulk path" if store is None else store.refusal())
            if store is not None and refusal is not None:
                store.close()
                store = None
            self._sql, self._sql_refusal, self._sql_decided = store, refusal, True
            self._bulk_on = self.bulk_mode != "never" and store is not None
            if self._bulk_on:
                self.capabilities = replace(self.capabilities, points_per_request=bulk.POINTS_PER_TRANSACTION)
            return store

    def _bulk_notice(self) -> str | None:
        """Decide the write path once, before any run; a line for the user when a database store is
        written through the API after all (None: nothing to say).

        `--bulk always` on a store the bulk path refuses is a usage error."""
        if self.bulk_mode == "never":
            return None
        self._sql_store()
        if self._bulk_on:
            return None  # the expected path on a database store: nothing to say
        if self.bulk_mode == "always":
            raise UsageError(f"--bulk always: {self._sql_refusal}")
        if self.mlflow_db is None and not bulk.is_database_uri(self.tracking_uri):
            return None  # a plain server import: the API path is the expected one, nothing to say
        return f"bulk path not used ({self._sql_refusal}): float points go through log_batch"

    @property
    def bulk_active(self) -> bool:
        """Float points go through the bulk path (decided on first use)."""
        if self.bulk_mode == "never":
            return False
        self._sql_store()
        return self._bulk_on

    def describe(self) -> str:
        """`mlflow <tracking URI>` without credentials."""
        return f"mlflow {_redact(self.tracking_uri)}"

    def check(self) -> None:
        """A tracking server: one GET with a short timeout (any HTTP answer will do); a tracking
        database (`postgresql://`, `mysql://`, ..., and `--mlflow-db`): its driver, then one TCP
        connection to its host and port; a local store: nothing."""
        if urlsplit(self.tracking_uri).scheme in ("http", "https"):
            probe_http(self.tracking_uri, "the MLflow tracking server")
        else:
            _probe_database(self.tracking_uri, "the MLflow tracking database")
        if self.mlflow_db is not None:
            _probe_database(self.mlflow_db, "the MLflow database (--mlflow-db)")

    def set_blob_resolver(self, resolver: Callable[[str], Path]) -> None:
        """Where file-series blobs are: sha256 -> local path (`DumpReader.blob_path`). Used for
        file-series chunks without a `local_path` column."""
        self._blob_resolver = resolver

    def classify_error(self, error: Exception) -> ErrorKind:
        """Transient errors are retried; permanent ones fail the run."""
        return classify_error(error)

    def close(self) -> None:
        """Drop buffered series of runs that were never finished; release the bulk database."""
        with self._lock:
            buffers = list(self._buffers.values())
            self._buffers.clear()
            pool, self._pool = self._pool, None
        with self._sql_lock:
            sql, self._sql, self._sql_decided = self._sql, None, False
        if sql is not None:
            sql.close()
        if pool is not None:
            pool.shutdown(wait=True)
        for buf in buffers:
            shutil.rmtree(buf.root, ignore_errors=True)

    def _log_bytes(self, run_id: str, artifact_path: str, data: bytes) -> None:
        path = PurePosixPath(artifact_path)
        with tempfile.TemporaryDirectory(prefix="neptune-migrate-") as tmp:
            local = Path(tmp) / path.name
            local.write_bytes(data)
            self._req("log_artifact", lambda: self.client.log_artifact(run_id, str(local), str(path.parent)))

    def _log_file(self, run_id: str, artifact_path: str, source: Path) -> None:
        """Upload `source` as `artifact_path` (its own name is irrelevant)."""
        path = PurePosixPath(artifact_path)
        with tempfile.TemporaryDirectory(prefix="neptune-migrate-") as tmp:
            local = Path(tmp) / path.name
            try:
                local.symlink_to(source.resolve())
            except OSError:
                shutil.copyfile(source, local)
            self._req("log_artifact", lambda: self.client.log_artifact(run_id, str(local), str(path.parent)))

    def _list(self, run_id: str, path: str) -> list[Any]:
        return self._req("list_artifacts", lambda: list(self.client.list_artifacts(run_id, path)))

    def _walk(self, run_id: str, path: str) -> Iterator[Any]:
        """Every file artifact under `path`, recursively."""
        for info in self._list(run_id, path):
            if info.is_dir:
                yield from self._walk(run_id, info.path)
            else:
                yield info

    def _download(self, run_id: str, path: str, into: Path) -> Path:
        return Path(self._req("download_artifacts", lambda: self.client.download_artifacts(run_id, path, str(into))))

    def _read_json_artifact(self, run_id: str, path: str) -> Any:
        with tempfile.TemporaryDirectory(prefix="neptune-migrate-") as tmp:
            return json.loads(self._download(run_id, path, Path(tmp)).read_text(encoding="utf-8"))

    # -- experiments ----------------------------------------------------------------------------

    def _experiment_id(self, project: str, *, create: bool) -> str | None:
        from mlflow.exceptions import MlflowException

        name = m.experiment_name(self.experiment_template, project)
        with self._lock:
            cached = self._experiments.get(name)
        if cached is not None:
            return cached
        exp = self._req("get_experiment_by_name", lambda: self.client.get_experiment_by_name(name))
        if exp is None:
            if not create:
                return None
            tries = 0

            def create_once() -> str:
                nonlocal tries
                tries += 1
                if tries > 1:  # the last attempt may have created it before its answer was lost
                    again = self.client.get_experiment_by_name(name)
                    if again is not None:
                        return str(again.experiment_id)
                try:
                    return str(self.client.create_experiment(
                        name, artifact_location=self._artifact_location(name),
                        tags={m.EXPERIMENT_KIND_TAG: m.EXPERIMENT_KIND}))
                except MlflowException as exc:
                    if exc.error_code != "RESOURCE_ALREADY_EXISTS":
                        raise
                    other = self.client.get_experiment_by_name(name)  # another import created it
                    if other is None:
                        raise
                    return str(other.experiment_id)

            exp_id = self._req("create_experiment", create_once)
        else:
            exp_id = exp.experiment_id
            if create and exp.lifecycle_stage != "deleted" and m.EXPERIMENT_KIND_TAG not in exp.tags:
                # An experiment created before (or by MLflow without a kind): open it on "Model
                # training"; a kind someone chose is left as it is.
                self._req("set_experiment_tag", lambda: self.client.set_experiment_tag(
                    exp_id, m.EXPERIMENT_KIND_TAG, m.EXPERIMENT_KIND))
        if exp is not None and exp.lifecycle_stage == "deleted":
            msg = (f"MLflow experiment {name!r} is deleted; restore it "
                   f"(mlflow experiments restore --experiment-id {exp_id}) or choose another experiment name")
            raise PermanentError(msg)
        with self._lock:
            self._experiments[name] = str(exp_id)
        return str(exp_id)

    def _artifact_location(self, experiment: str) -> str | None:
        if self.artifact_location is None:
            return None
        slug = re.sub(r"[^A-Za-z0-9_.-]+", "_", experiment).strip("._")[:80]
        digest = hashlib.sha256(experiment.encode()).hexdigest()[:8]
        return f"{self.artifact_location.rstrip('/')}/{slug}-{digest}"

    # -- finding runs -----------------------------------------------------------------------------

    def _search_once(self, exp_id: str, key: RunKey) -> list[Any]:
        """One `search_runs` request: active runs tagged with `key`, newest import first."""
        op_id, lit_id = _quote(str(key.run_id))
        op_p, lit_p = _quote(key.project)
        query = f"tags.`{m.TAG_RUN_ID}` {op_id} {lit_id} and tags.`{m.TAG_PROJECT}` {op_p} {lit_p}"
        runs = [
            r for r in self.client.search_runs([exp_id], query, max_results=1000)
            if r.data.tags.get(m.TAG_RUN_ID) == str(key.run_id) and r.data.tags.get(m.TAG_PROJECT) == key.project
        ]
        runs.sort(key=lambda r: (r.data.tags.get(m.TAG_IMPORTED_AT, ""), r.info.run_id), reverse=True)
        return runs

    def _search(self, key: RunKey) -> list[Any]:
        """Active runs tagged with `key`, newest import first."""
        exp_id = self._experiment_id(key.project, create=False)
        if exp_id is None:
            return []
        return self._req("search_runs", lambda: self._search_once(exp_id, key))

    def find_run(self, key: RunKey) -> DestinationRun | None:
        """The run imported for `key`: the newest complete one, else the newest (deleted runs are
        ignored). None when there is none. Other live runs of the key are listed as `duplicates`;
        an incomplete run that another import is still writing is marked `busy`."""
        if self._store_absent():
            return None  # a dry run against a new SQLite store must not create the database
        runs = self._search(key)
        if not runs:
            return None
        complete = [r for r in runs if m.current_tags(r.data.tags).get(m.TAG_STATUS) == m.STATUS_COMPLETE]
        best = (complete or runs)[0]
        tags = m.current_tags(best.data.tags)
        return DestinationRun(
            run_id=DestinationRunId(best.info.run_id),
            complete=tags.get(m.TAG_STATUS) == m.STATUS_COMPLETE,
            digest=tags.get(m.TAG_DIGEST),
            duplicates=tuple(DestinationRunId(r.info.run_id) for r in runs if r is not best),
            busy=_busy(tags),
            import_digest=tags.get(m.TAG_IMPORT_DIGEST),
            origin=tags.get(m.TAG_ORIGIN),
        )

    def _settle_claim(self, key: RunKey, run_id: str, claim: Claim) -> None:
        """Make sure this import's run is the one run of `key`; raise `ClaimLostError` (after
        deleting it) when another import's run wins.

        The winner among the live runs of the key: a complete run first, then the earliest claim
        (time, then run id). Incomplete runs whose import is gone are leftovers: deleted here.
        """
        contenders: list[tuple[int, str, str]] = [(1, claim.at, run_id)]
        for r in self._search(key):
            rid = r.info.run_id
            if rid == run_id:
                continue
            tags = m.current_tags(r.data.tags)
            done = tags.get(m.TAG_STATUS) == m.STATUS_COMPLETE
            other = Claim.parse(tags.get(m.TAG_CLAIM))
            if not done and _busy(tags) is None:
                self._delete(rid)  # left half-written by an import that is gone
                continue
            contenders.append((0 if done else 1, other.at if other else "", rid))
        winner = min(contenders)[2]
        if winner != run_id:
            self._delete(run_id)
            with self._lock:
                self._claims.pop(run_id, None)
            msg = f"another import claimed {key} first (MLflow run {winner}); this import's copy was deleted"
            raise ClaimLostError(msg)

    def _delete(self, run_id: str) -> None:
        from mlflow.exceptions import MlflowException

        try:
            self._req("delete_run", lambda: self.client.delete_run(run_id))
        except MlflowException as exc:
            if exc.error_code != "RESOURCE_DOES_NOT_EXIST":
                raise

    def _heartbeat(self, run_id: str) -> None:
        """Refresh the run's heartbeat tag at most every `HEARTBEAT_EVERY` seconds."""
        now = time.monotonic()
        with self._lock:
            last = self._beats.get(run_id)
            if last is not None and now - last < HEARTBEAT_EVERY:
                return
            self._beats[run_id] = now
        if last is not None:
            beat = _now_iso()
            self._req("set_tag", lambda: self.client.set_tag(run_id, m.TAG_HEARTBEAT, beat))

    # -- writing --------------------------------------------------------------------------------

    def import_settings(self) -> Mapping[str, str]:
        """The mapping version and the experiment template (part of the import digest)."""
        return {"mapping": m.MAPPING_VERSION, "experiment_template": self.experiment_template}

    def plan_run(self, run: PreparedRun) -> list[Loss]:
        """Truncated params/tags/name, empty metrics, series stored as artifacts."""
        return m.plan_losses(run)

    def chunk_losses(self, kind: SeriesKind, chunk: pa.Table) -> list[Loss]:
        """Per-point conversions of one chunk (clamped inf, dropped nulls, missing timestamps)."""
        return m.chunk_losses(kind, chunk)

    def create_run(self, run: PreparedRun) -> DestinationRunId:
        """Create the run (identity tags in the same call), log params and the `neptune/*.json`
        artifacts. Called again after an error, it reuses the in-progress run of the same digest."""
        from mlflow.entities import Param

        record = run.record
        exp_id = self._experiment_id(record.key.project, create=True)
        assert exp_id is not None
        reuse = [r for r in self._search(record.key)
                 if r.data.tags.get(m.TAG_STATUS) == m.STATUS_IN_PROGRESS
                 and r.data.tags.get(m.TAG_DIGEST) == run.digest
                 and r.data.tags.get(m.TAG_IMPORT_DIGEST, "") == run.import_digest
                 and r.info.run_id in self._claims]  # an earlier call of this import that raised
        if reuse:
            run_id = reuse[0].info.run_id
            claim = self._claims[run_id]
        else:
            claim = Claim.new()
            tags = m.run_tags(run, __version__)
            tags[m.TAG_IMPORTED_AT] = claim.at
            tags[m.TAG_CLAIM] = str(claim)
            tries = 0

            def create_once() -> str:
                nonlocal tries
                tries += 1
                if tries > 1:  # the last attempt may have created the run before its answer was lost
                    for r in self._search_once(exp_id, record.key):
                        if r.data.tags.get(m.TAG_CLAIM) == str(claim):
                            return str(r.info.run_id)
                created = self.client.create_run(
                    exp_id, start_time=m.start_time_ms(record.system), run_name=m.run_name(record), tags=tags,
                )
                return str(created.info.run_id)

            run_id = self._req("create_run", create_once)
            with self._lock:
                self._claims[run_id] = claim
                self._beats[run_id] = time.monotonic()
            self._settle_claim(record.key, run_id, claim)
        params = [Param(k, v) for k, v in m.run_params(run).items()]
        for i in range(0, len(params), m.PARAMS_PER_BATCH):
            batch = params[i:i + m.PARAMS_PER_BATCH]
            self._req("log_batch", partial(self.client.log_batch, run_id, params=batch))
        for key, text in m.long_params(run).items():
            self._log_bytes(run_id, m.param_artifact(key), text.encode("utf-8"))
        self._log_bytes(run_id, m.PARAMS_TYPES_ARTIFACT, _json_bytes(m.params_types(run)))
        self._log_bytes(run_id, m.KEY_MAP_ARTIFACT, _json_bytes(dict(sorted(run.key_map.items()))))
        self._log_bytes(run_id, m.RUN_ARTIFACT, _json_bytes(m.run_document(run, __version__)))
        return DestinationRunId(run_id)

    def _buffers_of(self, run_id: str) -> _RunBuffers:
        with self._lock:
            buf = self._buffers.get(run_id)
            if buf is None:
                buf = _RunBuffers(Path(tempfile.mkdtemp(prefix="neptune-migrate-mlflow-")))
                self._buffers[run_id] = buf
            return buf

    def write_series(self, run_id: DestinationRunId, kind: SeriesKind, chunk: pa.Table) -> None:
        """Float points: `log_batch` (1000 per call). Other kinds: buffered as JSON lines, uploaded
        as artifacts by `finish_series`; file-series blobs (from the chunk's `local_path` column,
        else the blob resolver) are uploaded now."""
        if chunk.num_rows == 0:
            return
        self._heartbeat(run_id)
        if kind == "float":
            self._write_metrics(run_id, chunk)
            return
        buf = self._buffers_of(run_id)
        lines: dict[str, list[str]] = {}
        local_paths: list[str | None] = (
            chunk.column("local_path").to_pylist() if "local_path" in chunk.column_names
            else [None] * chunk.num_rows
        )
        for (key, obj), local in zip(m.jsonl_lines(kind, chunk), local_paths, strict=True):
            if kind == "file":
                obj["artifact"] = self._upload_series_file(run_id, buf, key, obj, local)
            lines.setdefault(key, []).append(m.dumps_line(obj))
        buf.append(kind, lines)

    def _write_metrics(self, run_id: str, chunk: pa.Table) -> None:
        """The bulk path (one transaction per chunk), else `log_batch` per 1000 points, with up
        to `write_workers` requests of the run in flight (MLflow's store locks `latest_metrics`
        rows, so the result does not depend on the order the requests land in)."""
        if self.bulk_active:
            store = self._sql
            assert store is not None
            self._req("bulk insert", lambda: store.write(run_id, chunk))
            return
        from mlflow.entities import Metric

        metrics = list(map(Metric, *m.metric_columns(chunk)))
        batches = [metrics[i:i + m.METRICS_PER_BATCH] for i in range(0, len(metrics), m.METRICS_PER_BATCH)]
        if self.write_workers == 1 or len(batches) < 2:
            for batch in batches:
                self._req("log_batch", partial(self.client.log_batch, run_id, metrics=batch))
            return
        with self._lock:
            if self._pool is None:
                self._pool = ThreadPoolExecutor(self.write_workers, thread_name_prefix="mlflow-log-batch")
            pool = self._pool
        client = self.client
        futures = [pool.submit(self._req, "log_batch", partial(client.log_batch, run_id, metrics=batch))
                   for batch in batches]
        errors = [f.exception() for f in futures]  # wait for all: none is left running after a failure
        for error in errors:
            if error is not None:
                raise error

    def _upload_series_file(
        self, run_id: str, buf: _RunBuffers, key: str, obj: dict[str, Any], local: str | None
    ) -> str | None:
        sha = obj.get("sha256")
        if not sha:
            return None
        if local is not None:
            blob = Path(local)
        elif self._blob_resolver is not None:
            blob = self._blob_resolver(sha)
        else:
            msg = "file series need the dump's blobs: a `local_path` column or set_blob_resolver()"
            raise PermanentError(msg)
        if not blob.is_file():
            msg = f"blob {sha} of file series {key!r} is missing from the dump"
            raise PermanentError(msg)
        name = obj.get("name") or ""
        path = m.file_series_artifact(key, obj["dest_step"], name, sha, disambiguate=False)
        if buf.uploaded.get(path, sha) != sha:
            path = m.file_series_artifact(key, obj["dest_step"], name, sha, disambiguate=True)
        if buf.uploaded.get(path) != sha:
            self._log_file(run_id, path, blob)
            buf.uploaded[path] = sha
        return path

    def finish_series(self, run_id: DestinationRunId, run: PreparedRun) -> None:
        """Upload the buffered string/histogram series and file-series indexes (empty series as
        empty files)."""
        buf = self._buffers_of(run_id)
        for si in run.record.series:
            if si.kind != "float":
                buf.path(si.kind, m.dest_key(run, si.path))
        self._heartbeat(run_id)
        for (kind, key), local in sorted(buf.files.items()):
            artifact = PurePosixPath(m.series_artifact(kind, key))
            self._req("log_artifact", partial(self.client.log_artifact, run_id, str(local), str(artifact.parent)))
        with self._lock:
            self._buffers.pop(run_id, None)
        shutil.rmtree(buf.root, ignore_errors=True)

    def upload_file(self, run_id: DestinationRunId, entry: FileEntry, local_path: Path) -> None:
        """`neptune/files/<attribute key>/<name>`; with `artifact_check`, the stored size is checked."""
        if entry.sha256 is None:
            why = entry.missing or "no content"
            msg = f"file {entry.attribute_path} ({entry.name}) is missing from the dump: {why}"
            raise PermanentError(msg)
        artifact = m.file_entry_artifact(entry)
        self._heartbeat(run_id)
        self._log_file(run_id, artifact, local_path)
        if not self.artifact_check:
            return
        expected = entry.size if entry.size is not None else local_path.stat().st_size
        parent = str(PurePosixPath(artifact).parent)
        sizes = {info.path: info.file_size for info in self._list(run_id, parent)}
        if sizes.get(artifact) != expected:
            msg = f"artifact {artifact} has {sizes.get(artifact)} bytes after upload, expected {expected}"
            raise PermanentError(msg)

    def mark_complete(self, run_id: DestinationRunId, run: PreparedRun) -> None:
        """Check the claim again (another import may have completed the key meanwhile), terminate
        the run (status, end time), then set `neptune_migrate.status=complete` last."""
        system = run.record.system
        with self._lock:
            claim = self._claims.get(run_id)
        if claim is not None:
            self._settle_claim(run.record.key, run_id, claim)
        self._req("set_terminated", lambda: self.client.set_terminated(
            run_id, m.run_status(system, complete=run.record.complete),
            end_time=m.end_time_ms(system, run.end_time)))
        self._req("set_tag", lambda: self.client.set_tag(run_id, m.TAG_STATUS, m.STATUS_COMPLETE))
        with self._lock:
            self._claims.pop(run_id, None)
            self._beats.pop(run_id, None)

    def discard_run(self, run_id: DestinationRunId) -> None:
        """Delete the run (MLflow keeps it as `deleted` until `mlflow gc`; searches skip it)."""
        from mlflow.exceptions import MlflowException

        with self._lock:
            buf = self._buffers.pop(run_id, None)
        if buf is not None:
            shutil.rmtree(buf.root, ignore_errors=True)
        try:
            info = self._req("get_run", lambda: self.client.get_run(run_id)).info
        except MlflowException as exc:
            if exc.error_code == "RESOURCE_DOES_NOT_EXIST":
                return
            raise
        if info.lifecycle_stage != "deleted":
            self._delete(run_id)

    # -- reading back -----------------------------------------------------------------------------

    def expected_snapshot(self, run: PreparedRun) -> RunSnapshot:
        """What `read_snapshot` returns after a faithful import (see mapping.expected_snapshot)."""
        return m.expected_snapshot(run, __version__, hashes=self.artifact_check)

    def expected_series(self, kind: SeriesKind, points: pa.Table) -> pa.Table:
        """Dump points (with `dest_step`) as `read_series` returns them."""
        if kind == "float":
            return m.expected_float(points)
        table = m.expected_jsonl(kind, points)
        if kind == "file" and not self.artifact_check:
            idx = table.schema.get_field_index("sha256")
            table = table.set_column(idx, "sha256", pa.nulls(table.num_rows, pa.string()))
        return table

    def read_snapshot(self, run_id: DestinationRunId) -> RunSnapshot:
        """Run info, tags, params, point counts per series, and `neptune/files/**` artifacts."""
        mrun = self._req("get_run", lambda: self.client.get_run(run_id))
        info, tags = mrun.info, dict(mrun.data.tags)
        try:
            neptune_tags = frozenset(json.loads(tags.get(m.TAG_TAGS, "[]")))
        except ValueError:  # cut at 8000 chars: the full list is in run.json
            neptune_tags = frozenset(self._read_json_artifact(run_id, m.RUN_ARTIFACT)["system"]["tags"])
        snap = RunSnapshot(
            run_id=run_id,
            name=info.run_name,
            description=tags.get(m.TAG_NOTE),
            owner=tags.get(m.TAG_USER),
            status=info.status,
            start_time=None if info.start_time is None else m.from_ms(info.start_time),
            end_time=None if info.end_time is None else m.from_ms(info.end_time),
            tags=neptune_tags,
            params=dict(mrun.data.params),
            extra=m.comparable_tags(tags),
        )
        sql = self._sql_store() if self.read_mode == "sql" else None
        if sql is not None:
            counts = self._req("count metrics", lambda: sql.counts(run_id))
            for key in sorted(mrun.data.metrics):
                snap.series[("float", key)] = counts.get(key, 0)
        else:
            for key in sorted(mrun.data.metrics):
                snap.series[("float", key)] = self._count_history(run_id, key)
        with tempfile.TemporaryDirectory(prefix="neptune-migrate-") as tmp:
            for kind, root in (*m.SERIES_DIRS.items(), ("file", m.FILE_SERIES_DIR)):
                suffix = "/" + m.FILE_SERIES_INDEX if kind == "file" else ".jsonl"
                for art in self._walk(run_id, root):
                    if not art.path.endswith(suffix):
                        continue
                    key = art.path[len(root) + 1: -len(suffix)]
                    local = self._download(run_id, art.path, Path(tmp))
                    with local.open(encoding="utf-8") as fh:
                        snap.series[(kind, key)] = sum(1 for line in fh if line.strip())
            for art in self._walk(run_id, m.FILES_DIR):
                sha = None
                if self.artifact_check:
                    sha = sha256_file(self._download(run_id, art.path, Path(tmp)))
                snap.files[art.path] = FileDigest(art.file_size, sha)
        return snap

    def read_series(self, run_id: DestinationRunId, kind: SeriesKind, key: str) -> pa.Table:
        """A whole series: metrics via `get_metric_history` (not sampled), others from artifacts."""
        if kind == "float":
            sql = self._sql_store() if self.read_mode == "sql" else None
            if sql is not None:
                return self._req("read metrics", lambda: sql.read_series(run_id, key))
            history = self._req("get_metric_history", lambda: self.client.get_metric_history(run_id, key))
            return m.float_table([h.step for h in history], [h.timestamp for h in history],
                                 [h.value for h in history])
        artifact = m.series_artifact(kind, key)
        with tempfile.TemporaryDirectory(prefix="neptune-migrate-") as tmp:
            parent = str(PurePosixPath(artifact).parent)
            if artifact not in {a.path for a in self._list(run_id, parent)}:
                return m.JSONL_READ_SCHEMAS[kind].empty_table()
            local = self._download(run_id, artifact, Path(tmp))
            with local.open(encoding="utf-8") as fh:
                objects = [json.loads(line) for line in fh if line.strip()]
            if kind == "file":
                self._check_series_files(run_id, key, objects, Path(tmp))
        return m.jsonl_table(kind, objects)

    def read_series_page(
        self, run_id: DestinationRunId, kind: SeriesKind, key: str, token: str | None
    ) -> tuple[pa.Table, str | None]:
        """Metrics a page of `HISTORY_PAGE` points at a time (`--read sql`: keyset pages of the metrics
        table in step order; `--read api`: the store's own paging, ordered by timestamp then step);
        other kinds whole, from their artifact."""
        if kind != "float":
            return self.read_series(run_id, kind, key), None
        sql = self._sql_store() if self.read_mode == "sql" else None
        if sql is not None:  # step-ordered keyset pages straight from the metrics table
            return self._req("read metrics", lambda: sql.read_page(run_id, key, token, HISTORY_PAGE))
        page = self._history_page(run_id, key, token)
        table = m.float_table([h.step for h in page], [h.timestamp for h in page], [h.value for h in page])
        return table, page.token

    def _history_page(self, run_id: str, key: str, token: str | None) -> Any:
        """One page of `get_metric_history` from the client's store (`MlflowClient` reads all pages)."""
        store = self.client._tracking_client.store  # the paged read MlflowClient wraps
        return self._req("get_metric_history", lambda: store.get_metric_history(
            run_id, key, max_results=HISTORY_PAGE, page_token=token))

    def _count_history(self, run_id: str, key: str) -> int:
        """Points of a metric, counted page by page (memory of one page, not of the series)."""
        count, token = 0, None
        while True:
            page = self._history_page(run_id, key, token)
            count += len(page)
            token = page.token
            if not token:
                return count

    def _check_series_files(self, run_id: str, key: str, objects: list[dict[str, Any]], tmp: Path) -> None:
        """Replace the index's sha256/size by what the stored artifacts really hold."""
        sizes = {a.path: a.file_size for a in self._list(run_id, f"{m.FILE_SERIES_DIR}/{key}")}
        hashes: dict[str, str] = {}
        for obj in objects:
            path = obj.get("artifact")
            if path is None or path not in sizes:
                obj["sha256"], obj["size"] = None, None
                continue
            obj["size"] = sizes[path]
            if not self.artifact_check:
                obj["sha256"] = None
                continue
            if path not in hashes:
                hashes[path] = sha256_file(self._download(run_id, path, tmp))
            obj["sha256"] = hashes[path]

    def read_file(self, run_id: DestinationRunId, path: str, into: Path) -> Path | None:
        """Download one artifact into `into`."""
        into.mkdir(parents=True, exist_ok=True)
        return self._download(run_id, path, into)

    # -- the model registry (`RegistryWriter`, in registry.py) ------------------------------------

    @property
    def _registry(self) -> MlflowRegistry:
        return MlflowRegistry(self)

    def registry_name(self, name: str) -> str:
        """MLflow keeps a registered model's name as given."""
        return name

    def plan_model(self, model: RegistryModel) -> list[Loss]:
        """What the registry cannot carry of the model (see `registry.MlflowRegistry`)."""
        return self._registry.plan_model(model)

    def expected_model(self, model: RegistryModel) -> ModelSnapshot:
        """The registered model as `read_model` returns it after a faithful import."""
        return self._registry.expected_model(model)

    def read_model(self, model: RegistryModel, *, hashes: bool) -> ModelSnapshot | None:
        """The registered model tagged with the Neptune model id, its versions and aliases."""
        return self._registry.read_model(model, hashes=hashes)

    def ensure_model(self, model: RegistryModel) -> str:
        """Create the registered model, or update its description and tags."""
        return self._registry.ensure_model(model)

    def ensure_version(self, model: RegistryModel, name: str, version: RegistryVersion,
                       found: VersionSnapshot | None) -> VersionSnapshot:
        """Create the model version (logged model with the files first), or complete it."""
        return self._registry.ensure_version(model, name, version, found)

    def set_aliases(self, model: RegistryModel, name: str, holders: Mapping[str, str]) -> None:
        """Point the stage aliases at their versions."""
        self._registry.set_aliases(model, name, holders)


def _json_bytes(doc: Any) -> bytes:
    return (json.dumps(doc, ensure_ascii=False, indent=1, sort_keys=True) + "\n").encode("utf-8")


if TYPE_CHECKING:
    _: type[Destination] = MlflowDestination
    _r: type[RegistryWriter] = MlflowDestination
