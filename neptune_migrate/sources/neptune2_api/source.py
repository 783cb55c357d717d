"""Live self-hosted Neptune 2.x, read through the real `neptune` 1.x client in read-only mode.

The client's own bootstrap is used as it is (token exchange, OAuth session, the Swagger specs the
server publishes); the reads then go through the client's bravado session one request at a time,
so that this module decides the paging and the retries:

- runs are listed in ascending `sys/creation_time` order by offset up to the server's 10,000-offset
  limit, then by a new window `sys/creation_time >= <last seen>` that skips the runs already seen at
  that timestamp (neptune 1.x uses `>` there and loses runs sharing the boundary timestamp);
- series are paged with `skipToStep` = the last step seen (exclusive on the server);
- every request passes the shared `RequestBudget` and our `Retrier` (429 with a multi-digit
  `Retry-After` is honoured exactly; neptune 1.x reads only its first digit);
- pages of a long series are checkpointed under `options.state_dir`, so an interrupted export
  resumes inside the series;
- the model registry is listed after the runs of each project (`type=model`, then `type=modelVersion`,
  as `fetch_models_table` / `fetch_model_versions_table` do) and read like a run (the same attribute,
  series and download calls `init_model(with_id=..., mode="read-only")` makes); its records have kind
  `model` / `model_version` (`--no-models` leaves them out). The 2.x API holds a version's current
  `sys/stage` only, no stage history.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import os
import queue
import shutil
import tempfile
import threading
import zipfile
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar

import pyarrow as pa
import pyarrow.parquet as pq

from neptune_migrate.dump.writer import RunWriter
from neptune_migrate.errors import MissingDependencyError, SourceFormatError, UnreachableError, UsageError, redact
from neptune_migrate.model import (
    ContainerKind,
    ErrorKind,
    FileEntry,
    Loss,
    LossCategory,
    Provenance,
    RunKey,
    RunRecord,
    SeriesKind,
    SourceRunId,
)
from neptune_migrate.registry import model_to_run_kind
from neptune_migrate.retry import Retrier, RetryPolicy
from neptune_migrate.sources.base import RunSelection, SourceEstimate, SourceOptions, fingerprint_files
from neptune_migrate.sources.live_budget import BudgetedRuns, RequestBudget
from neptune_migrate.sources.neptune2_api import mapping
from neptune_migrate.sources.neptune2_api.errors import classify_error, status_of

log = logging.getLogger(__name__)

_MARSHAL_LOCK = threading.Lock()
"""Held while bravado builds a request: runs read at once share one client, and its marshalling
memoises through a recursion guard that trips when two threads enter it (seen under load)."""

_TIMEOUTS = {"connect_timeout": 30.0, "timeout": 300.0}


_KINDS: dict[str, ContainerKind] = {"run": "run", "model": "model", "modelVersion": "model_version"}
"""The 2.x API's container type (`type` of a listing or of `getExperiment`) -> record kind."""


@dataclass
class _Listed:
    uuid: str
    created: str | None
    modified: str | None
    kind: ContainerKind = "run"


class _RegistryRefused(Exception):  # noqa: N818 - a signal inside this module, not an error for users
    """The server refused a model / model version listing (an older server, a registry turned off)."""

    def __init__(self, status: int) -> None:
        super().__init__(status)
        self.status = status


class _Stop:
    """End-of-series marker in the page queue."""


class Neptune2ApiSource(BudgetedRuns):
    """`--from neptune2-api`: a self-hosted Neptune 2.x server (see the module docstring)."""

    name: ClassVar[str] = "neptune2-api"
    live: ClassVar[bool] = True
    """A live source holds the authoritative copy: a changed run replaces the dump's copy."""
    LIST_PAGE: ClassVar[int] = 100
    MAX_OFFSET: ClassVar[int] = 10_000
    """The 2.x server refuses `offset + limit` beyond this."""
    SERIES_PAGE: ClassVar[int] = 1000
    CHECKPOINT_PAGES: ClassVar[int] = 10
    """Pages of one series between two checkpoints of its progress."""
    PUT_WAIT: ClassVar[float] = 0.1
    """Seconds a fetching thread waits on the full page queue before it looks for a cancel."""
    policy: ClassVar[RetryPolicy] = RetryPolicy(max_wait=120.0, max_total=900.0, max_outage=0.0)
    """Retry-After up to 2 minutes is honoured exactly."""

    def __init__(self, options: SourceOptions) -> None:
        self.options = options
        token = options.api_token or os.environ.get("NEPTUNE_API_TOKEN")
        if not token:
            msg = "neptune2-api: no API token; pass --api-token or set NEPTUNE_API_TOKEN"
            raise UsageError(msg)
        self._token = token
        self._selection = RunSelection()
        self._listed: dict[RunKey, _Listed] = {}
        self._warnings: list[str] = []
        self.budget = RequestBudget(options.workers, options.rate)
        self.retrier = Retrier(classify_error, self.policy, sleep=self.budget.wait)
        self._backend: Any = None
        self._base_url = _token_address(token)
        self._lock = threading.Lock()

    @property
    def location(self) -> str:
        """The server's address (from the token; never the token itself)."""
        return self._base_url

    # -- protocol -------------------------------------------------------------------------------------
    def describe(self) -> str:
        projects = ", ".join(self._projects_hint()) or "(projects from --project / --workspace)"
        return f"Neptune 2.x server at {self._base_url}, {projects}, read with neptune 1.x (read-only)"

    def warnings(self) -> list[str]:
        return list(self._warnings)

    def classify_error(self, error: Exception) -> ErrorKind:
        return classify_error(error)

    def select(self, selection: RunSelection) -> None:
        """Take the export's selection, so that listing filters on the server."""
        self._selection = selection

    def list_runs(self) -> Iterator[RunKey]:
        for project in self._projects():
            query = self._query(self._selection)
            for entry in self._iter_entries(project, query):
                yield self._keep(project, entry, "run")
            if self.options.models:
                yield from self._list_models(project)

    def _list_models(self, project: str) -> Iterator[RunKey]:
        """The project's models, then its model versions (the run filters are for runs: only
        `--since-last` narrows this listing, and not when `registry_in_full`). A server that refuses
        the registry listing (400/403/404: an older server, a registry turned off) is a warning: the
        runs are exported without the registry."""
        since = None if self._selection.registry_in_full else self._selection.modified_after
        query = self._query(RunSelection(modified_after=since))
        try:
            for api_type in ("model", "modelVersion"):
                for entry in self._iter_entries(project, query, api_type):
                    yield self._keep(project, entry, _KINDS[api_type])
        except _RegistryRefused as refused:
            self._warnings.append(f"{project}: the server refused the model registry listing (HTTP "
                                  f"{refused.status}); registry not exported")

    def _keep(self, project: str, entry: dict[str, Any], kind: ContainerKind) -> RunKey:
        listed_type = entry.get("type")
        if listed_type is not None:
            got = _KINDS.get(str(listed_type))
        elif kind == "run":
            got = kind
        else:  # no type in the entry: its shape says (only runs have sys/failed, only versions sys/model_id)
            has_model_id = mapping.entry_value(entry, "sys/model_id") is not None
            is_run = mapping.entry_value(entry, "sys/failed") is not None
            got = "run" if is_run else ("model_version" if has_model_id else "model")
            listed_type = {"run": "run", "model": "model", "model_version": "modelVersion"}[got]
        if got != kind:
            msg = f"{project}: the server listed a {listed_type} where it was asked for {kind}s only"
            raise SourceFormatError(msg)
        key = RunKey(project, SourceRunId(str(mapping.entry_value(entry, "sys/id"))))
        self._listed[key] = _Listed(str(entry.get("experimentId")),
                                    mapping.entry_value(entry, "sys/creation_time"),
                                    mapping.entry_value(entry, "sys/modification_time"), kind)
        return key

    def listed_kind(self, key: RunKey) -> ContainerKind:
        """What the listing said `key` is: `run`, `model` or `model_version` (the pipeline selects
        models and versions by project only)."""
        listed = self._listed.get(key)
        return listed.kind if listed is not None else "run"

    def fingerprint(self, key: RunKey) -> str:
        """The run's `sys/modification_time` as listed (no request): unchanged runs are skipped."""
        listed = self._listed.get(key)
        if listed is None or listed.modified is None:
            return fingerprint_files([("uncached", str(key))])
        return fingerprint_files([("sys/modification_time", listed.modified)])

    def export_run(self, key: RunKey, out: RunWriter) -> RunRecord:
        uuid = self._uuid(key)
        doc = self._json(self._leaderboard(), "getExperimentAttributes", f"{key}: attributes", experimentId=uuid)
        attrs = mapping.split_attributes(doc.get("attributes", []))
        losses: list[Loss] = []
        for path, typ in attrs.unknown:
            losses.append(Loss("unknown_attribute_type", path, 1,
                               f"attribute type {typ!r} is not read by this tool", LossCategory.LOST))
        self._export_series(key, uuid, attrs.series, out)
        files: list[FileEntry] = []
        for path, name, _size in attrs.files:
            files.append(self._download_file(key, uuid, path, name, out))
        for path, _size in attrs.file_sets:
            files.extend(self._download_file_set(key, uuid, path, out))
        self._drop_state(key)
        return RunRecord(
            key=key,
            kind=self.listed_kind(key),
            system=attrs.system,
            fields=attrs.fields,
            provenance=Provenance(source=self.name, location=f"{self._base_url}/{key.project}",
                                  details={"experiment_uuid": uuid, "client": "neptune 1.x read-only"}),
            files=tuple(files),
            losses=tuple(losses),
            absent=attrs.absent,
        )

    def estimate(self, selection: RunSelection) -> SourceEstimate:
        """Runs from the listing, attributes per run, points from each series' `totalItemCount`
        (one request of one point per series), bytes from the file sizes the server reports."""
        self.select(selection)
        runs = attributes = points = size = 0
        details = {"files": 0, "float_points": 0, "string_points": 0, "file_points": 0, "models": 0,
                   "model_versions": 0, "model_to_run_runs": 0, "requests": 0}
        for key in self.list_runs():
            kind = self.listed_kind(key)
            if kind != "run":
                if not RunSelection(projects=selection.projects).matches_key(key):
                    continue
                details[f"{kind}s"] += 1
            elif not selection.matches_key(key):
                continue
            doc = self._json(self._leaderboard(), "getExperimentAttributes", f"{key}: attributes",
                             experimentId=self._uuid(key))
            attrs = mapping.split_attributes(doc.get("attributes", []))
            runs += kind == "run"
            if kind == "run" and model_to_run_kind(RunRecord(key=key, system=attrs.system, fields=attrs.fields,
                                                             provenance=Provenance(self.name, ""))) is not None:
                details["model_to_run_runs"] += 1  # what --models-from-runs would turn into registry records
            attributes += len(doc.get("attributes", []))
            for path, typ in attrs.series:
                page = self._json(self._leaderboard(), mapping.SERIES_OPERATION[typ], f"{key}: {path} count",
                                  experimentId=self._uuid(key), attribute=path, limit=1, offset=0)
                n = int(page.get("totalItemCount", 0))
                points += n
                details[f"{mapping.SERIES_TYPES[typ]}_points"] += n
            for _path, _name, fsize in attrs.files:
                details["files"] += 1
                size += fsize or 0
            for _path, fsize in attrs.file_sets:
                details["files"] += 1
                size += fsize or 0
        size += details["float_points"] * 24 + details["string_points"] * 64
        details["requests"] = self.budget.requests
        return SourceEstimate(runs=runs, attributes=attributes, points=points, bytes=size, details=details)

    # -- connection -----------------------------------------------------------------------------------
    def _connect(self) -> Any:
        with self._lock:
            if self._backend is not None:
                return self._backend
            try:
                from neptune.internal.backends.hosted_neptune_backend import HostedNeptuneBackend
                from neptune.internal.credentials import Credentials
            except ImportError as exc:
                raise MissingDependencyError("neptune", "neptune") from exc
            try:
                credentials = Credentials.from_token(self._token)
            except Exception as exc:
                msg = "neptune2-api: the API token is not a Neptune token (expected base64 JSON with api_address)"
                raise UsageError(msg) from exc
            try:
                self._backend = self.retrier("connect to the Neptune server",
                                             lambda: HostedNeptuneBackend(credentials))
            except Exception as exc:
                raise self._fatal(exc, f"connecting to {self._base_url}") from exc
            return self._backend

    def _fatal(self, exc: Exception, doing: str) -> Exception:
        """A one-line error for what stops the whole export (bad token, no access, server down)."""
        name = type(exc).__name__
        status = status_of(exc)
        if status == 401 or name in ("Unauthorized", "NeptuneInvalidApiTokenException"):
            return UsageError(f"neptune2-api: the server refused the API token (401) while {doing}; "
                              "check --api-token / NEPTUNE_API_TOKEN")
        if status == 403 or name == "Forbidden":
            return UsageError(f"neptune2-api: the token has no access (403) while {doing}")
        if classify_error(exc) == "transient" or name == "NeptuneConnectionLostException":
            return UnreachableError(f"neptune2-api: cannot reach {self._base_url} while {doing}: "
                                    f"{redact(' '.join(str(exc).split()))[:200]}")
        return UsageError(f"neptune2-api: {doing} failed: {name}: {redact(' '.join(str(exc).split()))[:200]}")

    def _leaderboard(self) -> Any:
        return self._connect().leaderboard_client

    def _raw(self, client: Any, op: str, what: str, **params: Any) -> Any:
        """One request through the client's bravado session, budgeted and retried by us."""
        from bravado.client import construct_request
        from bravado.config import RequestConfig

        def once() -> Any:
            with self.budget.request():
                with _MARSHAL_LOCK:  # bravado-core's marshalling is not thread-safe (RecursiveCallException)
                    request = construct_request(  # type: ignore[no-untyped-call]
                        getattr(client.api, op), dict(_TIMEOUTS), **params)
                future = client.swagger_spec.http_client.request(
                    request, operation=None, request_config=RequestConfig(dict(_TIMEOUTS), True))
                return future.response().incoming_response

        return self.retrier(what, once)

    def _json(self, client: Any, op: str, what: str, **params: Any) -> dict[str, Any]:
        doc = self._raw(client, op, what, **params).json()
        if not isinstance(doc, dict):
            msg = f"{what}: unexpected answer from the server ({type(doc).__name__})"
            raise SourceFormatError(msg)
        return doc

    # -- listing --------------------------------------------------------------------------------------
    def _projects_hint(self) -> list[str]:
        return list(self._selection.projects) or ([f"workspace {self.options.workspace}"]
                                                  if self.options.workspace else [])

    def _projects(self) -> list[str]:
        backend = self._connect()
        names = list(self._selection.projects)
        if not names and self.options.workspace:
            names = self._workspace_projects(backend, self.options.workspace)
        if not names:
            msg = "neptune2-api: name the project(s): --project WORKSPACE/PROJECT (repeatable) or --workspace WS"
            raise UsageError(msg)
        for name in names:
            try:
                self._raw(backend.backend_client, "getProject", f"project {name}", projectIdentifier=name)
            except Exception as exc:
                if status_of(exc) == 404:
                    msg = f"neptune2-api: project {name!r} not found on {self._base_url} (or no access)"
                    raise UsageError(msg) from exc
                raise self._fatal(exc, f"opening project {name}") from exc
        return names

    def _workspace_projects(self, backend: Any, workspace: str) -> list[str]:
        names: list[str] = []
        offset = 0
        while True:
            try:
                doc = self._json(backend.backend_client, "listProjects", f"projects of {workspace}",
                                 organizationIdentifier=workspace, offset=offset, limit=200)
            except Exception as exc:
                raise self._fatal(exc, f"listing the projects of workspace {workspace}") from exc
            entries = doc.get("entries", [])
            names.extend(f"{e['organizationName']}/{e['name']}" for e in entries)
            if len(entries) < 200:
                break
            offset += 200
        if not names:
            msg = f"neptune2-api: workspace {workspace!r} has no project on {self._base_url} (or no access)"
            raise UsageError(msg)
        return names

    @staticmethod
    def _query(selection: RunSelection) -> str:
        """NQL for what the server can filter exactly (ids, tags, times); the regex is applied by us."""
        parts: list[str] = []
        if selection.run_ids:
            parts.append("(" + " OR ".join(f'`sys/id`:string = "{_nql(r)}"' for r in selection.run_ids) + ")")
        parts.extend(f'`sys/tags`:stringSet CONTAINS "{_nql(t)}"' for t in selection.tags)
        if selection.created_after is not None:
            parts.append(f'`sys/creation_time`:datetime >= "{mapping.nql_time(selection.created_after)}"')
        if selection.created_before is not None:
            parts.append(f'`sys/creation_time`:datetime < "{mapping.nql_time(selection.created_before)}"')
        if selection.modified_after is not None:
            parts.append(f'`sys/modification_time`:datetime >= "{mapping.nql_time(selection.modified_after)}"')
        return " AND ".join(f"({p})" for p in parts)

    def _iter_entries(self, project: str, query: str, api_type: str = "run") -> Iterator[dict[str, Any]]:
        """Every matching container of `api_type` (`run`, `model`, `modelVersion`) once, ascending by
        creation time, across the 10,000-offset limit."""
        after: str | None = None
        seen_at_boundary: set[str] = set()
        paths = ["sys/id", "sys/creation_time", "sys/modification_time"]
        if api_type != "run":  # the shape of an entry without `type` (see `_keep`)
            paths += ["sys/model_id", "sys/failed"]
        columns = [{"path": p} for p in paths]
        while True:
            window = query
            if after is not None:
                atom = f'(`sys/creation_time`:datetime >= "{after}")'
                window = f"({query}) AND {atom}" if query else atom
            last: dict[str, Any] | None = None
            in_window: list[dict[str, Any]] = []
            full = True
            for offset in range(0, self.MAX_OFFSET, self.LIST_PAGE):
                limit = min(self.LIST_PAGE, self.MAX_OFFSET - offset)
                params = {"sorting": {"dir": "ascending", "aggregationMode": "none",
                                      "sortBy": {"name": "sys/creation_time", "type": "datetime"}},
                          "attributeFilters": columns, "query": {"query": window},
                          "pagination": {"limit": limit, "offset": offset}}
                try:
                    doc = self._json(self._leaderboard(), "searchLeaderboardEntries", f"{api_type}s of {project}",
                                     projectIdentifier=project, type=[api_type], params=params)
                except Exception as exc:
                    status = status_of(exc)
                    if api_type != "run" and status in (400, 403, 404):
                        raise _RegistryRefused(status or 0) from exc
                    if status in (401, 403, 404):
                        raise self._fatal(exc, f"listing the {api_type}s of {project}") from exc
                    raise
                entries = doc.get("entries", [])
                for entry in entries:
                    ident = str(entry.get("experimentId"))
                    if after is not None and mapping.entry_value(entry, "sys/creation_time") == after \
                            and ident in seen_at_boundary:
                        continue
                    in_window.append(entry)
                    yield entry
                if entries:
                    last = entries[-1]
                if len(entries) < limit:
                    full = False
                    break
            if not full or last is None:
                return
            boundary = mapping.entry_value(last, "sys/creation_time")
            if boundary == after:
                msg = (f"{project}: more than {self.MAX_OFFSET} runs share the creation time {after}; "
                       "the 2.x listing cannot page past them")
                raise SourceFormatError(msg)
            seen_at_boundary = {str(e.get("experimentId")) for e in in_window
                                if mapping.entry_value(e, "sys/creation_time") == boundary}
            after = str(boundary)

    def _uuid(self, key: RunKey) -> str:
        listed = self._listed.get(key)
        if listed is not None:
            return listed.uuid
        doc = self._json(self._leaderboard(), "getExperiment", f"{key}: run", experimentId=str(key))
        with self._lock:
            self._listed[key] = _Listed(str(doc["id"]), None, None, _KINDS.get(str(doc.get("type")), "run"))
        return str(doc["id"])

    # -- series ---------------------------------------------------------------------------------------
    def _state_dir(self, key: RunKey) -> Path | None:
        if self.options.state_dir is None:
            return None
        digest = hashlib.sha256(str(key).encode()).hexdigest()[:16]
        return self.options.state_dir / f"{self.name}-{digest}"

    def _drop_state(self, key: RunKey) -> None:
        folder = self._state_dir(key)
        if folder is not None and folder.exists():
            shutil.rmtree(folder, ignore_errors=True)

    def _export_series(self, key: RunKey, uuid: str, series: list[tuple[str, str]], out: RunWriter) -> None:
        """Page every series; up to `workers` series are fetched at once, the writes stay in this thread.

        When this thread leaves early (a fetch or a write failed, Ctrl-C), `cancel` stops the fetching
        threads: they put into the bounded queue with a short timeout, so none waits for a reader that
        is gone, and each stops after the request it is in."""
        if not series:
            return
        if len(series) == 1:  # one series (most small runs): read in this thread, no pool and no queue
            path, typ = series[0]
            kind = mapping.SERIES_TYPES[typ]
            out.declare_series(kind, path)
            for table in self._series_pages(key, uuid, path, typ, out):
                out.add_points(kind, table)
            return
        pages: queue.Queue[tuple[str, SeriesKind, pa.Table] | _Stop | BaseException] = queue.Queue(
            maxsize=2 * self.budget.workers)
        cancel = threading.Event()

        def put(item: tuple[str, SeriesKind, pa.Table] | _Stop | BaseException) -> bool:
            while not cancel.is_set():
                try:
                    pages.put(item, timeout=self.PUT_WAIT)
                except queue.Full:
                    continue
                return True
            return False

        def fetch(path: str, typ: str) -> None:
            if cancel.is_set():
                return
            try:
                kind = mapping.SERIES_TYPES[typ]
                for table in self._series_pages(key, uuid, path, typ, out):
                    if not put((path, kind, table)):
                        return
                put(_Stop())
            except BaseException as exc:  # noqa: BLE001 - handed to the writing thread, which raises it
                put(exc)

        with ThreadPoolExecutor(max_workers=min(self.budget.workers, len(series))) as pool:
            try:
                for path, typ in series:
                    out.declare_series(mapping.SERIES_TYPES[typ], path)
                    pool.submit(fetch, path, typ)
                done = 0
                while done < len(series):
                    item = pages.get()
                    if isinstance(item, _Stop):
                        done += 1
                    elif isinstance(item, BaseException):
                        raise item
                    else:
                        out.add_points(item[1], item[2])
            except BaseException:
                cancel.set()
                pool.shutdown(wait=False, cancel_futures=True)
                with contextlib.suppress(queue.Empty):
                    while True:  # drop what was fetched: the fetching threads' puts then return at once
                        pages.get_nowait()
                raise

    def _series_pages(self, key: RunKey, uuid: str, path: str, typ: str, out: RunWriter) -> Iterator[pa.Table]:
        """Pages of one series, resuming from a checkpoint; `skipToStep` is exclusive on the server."""
        kind = mapping.SERIES_TYPES[typ]
        op = mapping.SERIES_OPERATION[typ]
        checkpoint = _Checkpoint.open(self._state_dir(key), path)
        last_step: float | None = None
        if checkpoint is not None:
            for table in checkpoint.tables():
                yield table
            last_step = checkpoint.last_step
        page_no = 0
        while True:
            params: dict[str, Any] = {"experimentId": uuid, "attribute": path, "limit": self.SERIES_PAGE,
                                      "offset": 0}
            if last_step is not None:
                params["skipToStep"] = last_step
            doc = self._json(self._leaderboard(), op, f"{key}: {path}", **params)
            values = doc.get("values", [])
            if not values:
                return
            if kind == "file":
                table = self._image_page(key, uuid, path, values, out)
            else:
                table = mapping.points_table(kind, path, values)
            last_step = float(values[-1]["step"])
            page_no += 1
            if checkpoint is not None:
                checkpoint.add(table, last_step, flush=page_no % self.CHECKPOINT_PAGES == 0)
            yield table
            if len(values) < self.SERIES_PAGE:
                return

    def _image_page(self, key: RunKey, uuid: str, path: str, values: list[dict[str, Any]],
                    out: RunWriter) -> pa.Table:
        rows = []
        for v in values:
            index = int(v.get("index", 0))
            response = self._raw(self._leaderboard(), "getImageSeriesValue", f"{key}: {path}[{index}]",
                                 experimentId=uuid, attribute=path, index=index)
            sha, size = out.store_bytes(response.raw_bytes)
            rows.append((float(v["step"]), v.get("timestampMillis"), sha, size, f"{index}.png"))
        return mapping.file_points_table(path, rows)

    # -- files ----------------------------------------------------------------------------------------
    def _download(self, url_op: str, what: str, into: Path, **query: Any) -> None:
        """Stream one download to `into` (authenticated by the client's session), budgeted and retried."""
        from neptune.internal.backends.hosted_file_operations import _download_raw_data, _store_response_as_file
        from neptune.internal.backends.utils import build_operation_url

        client = self._leaderboard()

        def once() -> None:
            with self.budget.request():
                if url_op.startswith("http"):
                    url = url_op
                else:
                    url = build_operation_url(client.swagger_spec.api_url,
                                              getattr(client.api, url_op).operation.path_name)
                response = _download_raw_data(http_client=client.swagger_spec.http_client, url=url,
                                              headers={"Accept": "application/octet-stream"},
                                              query_params=query or None)
                _store_response_as_file(response, str(into))

        self.retrier(what, once)

    def _download_file(self, key: RunKey, uuid: str, path: str, name: str, out: RunWriter) -> FileEntry:
        with tempfile.TemporaryDirectory(prefix="nm-n2-") as tmp:
            target = Path(tmp) / "content"
            self._download("downloadAttribute", f"{key}: file {path}", target, experimentId=uuid, attribute=path)
            sha, size = out.store_file(target)
        return FileEntry(attribute_path=path, kind="file", name=name, sha256=sha, size=size)

    def _download_file_set(self, key: RunKey, uuid: str, path: str, out: RunWriter) -> list[FileEntry]:
        client = self._leaderboard()
        prepared = self._json(client, "prepareForDownloadFileSetAttributeZip", f"{key}: file set {path}",
                              experimentId=uuid, attribute=path)
        url: str | None = None
        for _ in range(60):
            request = self._json(client, "getDownloadPrepareRequest", f"{key}: file set {path}",
                                 id=prepared["id"])
            url = request.get("downloadUrl")
            if url:
                break
            threading.Event().wait(0.5)
        if not url:
            msg = f"{key}: file set {path}: the server did not prepare the download"
            raise SourceFormatError(msg)
        entries: list[FileEntry] = []
        with tempfile.TemporaryDirectory(prefix="nm-n2-") as tmp:
            target = Path(tmp) / "set.zip"
            self._download(url, f"{key}: file set {path}", target)
            with zipfile.ZipFile(target) as zf:
                for info in sorted(zf.infolist(), key=lambda i: i.filename):
                    if info.is_dir():
                        continue
                    with zf.open(info) as fh:
                        sha, size = out.dump.store_stream(fh)
                    entries.append(FileEntry(attribute_path=path, kind="file_set", name=info.filename,
                                             sha256=sha, size=size))
        return entries


class _Checkpoint:
    """Pages of one series already fetched, kept under the state folder until the run is committed."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder
        self.progress = folder / "progress.json"
        self.last_step: float | None = None
        self.parts: list[str] = []
        self._pending: list[pa.Table] = []
        self._pending_step: float | None = None
        if self.progress.exists():
            try:
                doc = json.loads(self.progress.read_text(encoding="utf-8"))
                self.parts = [p for p in doc["parts"] if (folder / p).exists()]
                self.last_step = float(doc["last_step"]) if len(self.parts) == len(doc["parts"]) else None
            except (ValueError, KeyError, TypeError):
                self.parts, self.last_step = [], None
            if self.last_step is None:
                self.parts = []

    @classmethod
    def open(cls, state: Path | None, path: str) -> _Checkpoint | None:
        if state is None:
            return None
        # Made by the first flush: a series read in fewer pages than a checkpoint never touches the disk.
        return cls(state / hashlib.sha256(path.encode()).hexdigest()[:16])

    def tables(self) -> Iterator[pa.Table]:
        for part in self.parts:
            yield pq.read_table(self.folder / part)

    def add(self, table: pa.Table, last_step: float, *, flush: bool) -> None:
        self._pending.append(table)
        self._pending_step = last_step
        if flush:
            self.flush()

    def flush(self) -> None:
        if not self._pending or self._pending_step is None:
            return
        name = f"part-{len(self.parts):06d}.parquet"
        self.folder.mkdir(parents=True, exist_ok=True)
        tmp = self.folder / (name + ".tmp")
        pq.write_table(pa.concat_tables(self._pending), tmp)
        tmp.replace(self.folder / name)
        self.parts.append(name)
        self._pending = []
        self.last_step = self._pending_step
        doc = {"parts": self.parts, "last_step": self.last_step}
        tmp_progress = self.progress.with_suffix(".tmp")
        tmp_progress.write_text(json.dumps(doc), encoding="utf-8")
        tmp_progress.replace(self.progress)


def _nql(value: str) -> str:
    return value.replace("\\", "\\\\").replace('"', '\\"')


def _token_address(token: str) -> str:
    """The server address inside an API token (never the token itself); `?` when unreadable."""
    import base64

    try:
        doc = json.loads(base64.b64decode(token))
        return str(doc.get("api_url") or doc.get("api_address") or "?")
    except (ValueError, TypeError):
        return "?"


if TYPE_CHECKING:
    from neptune_migrate.sources.base import ConcurrentRuns, Estimating, Source

    _: type[Source] = Neptune2ApiSource
    _e: type[Estimating] = Neptune2ApiSource
    _c: type[ConcurrentRuns] = Neptune2ApiSource
