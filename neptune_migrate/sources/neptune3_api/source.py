"""Live self-hosted Neptune 3.x servers, read through the real neptune-query client.

The HTTP calls, token exchange and protobuf decoding are neptune-query's own (its generated
`neptune_api` client); this module decides what to ask and in which order, so that paging never
loses or repeats a run or a point (see docs/sources/neptune3-api.md):

* runs are listed **ascending** by `sys/creation_time` in keyset pages of at most 10,000 (created at
  or after the last run seen, skipping that instant's runs already seen **by id**, whatever order the
  server gives runs sharing a timestamp), and the ids are de-duplicated: runs created while the
  listing runs land on later pages instead of shifting the earlier ones (the server's default
  descending order would), and offsets stay at 0 (an instant that fills a whole page is listed on its
  own, sorted by the unique `sys/id`);
* the source is live: each run's fingerprint is its listed `sys/modification_time`, so a run that
  changed on the server since the dump's copy is read again, and an unchanged one is skipped without
  a request;
* runs are read ahead in listing order, `RUNS_PER_BATCH` at a time: their attribute values in one
  request, the first page of their float series 100 series per request (a run missing from the shared
  answer is read with its own requests); each run is still written and committed on its own;
* float series come newest-first in pages of `perSeriesPointsLimit` (`afterStep` goes downwards); a
  page is full when it holds exactly the limit, and then one more page is asked for;
* string, file and histogram series are paged with `searchAfter` tokens;
* series are read with `lineage: NONE`: a fork holds only its own points, the fork point is recorded;
* files go through `storagebridge/v1/signedUrl` and a plain GET of the signed URL, streamed into the
  dump's content-addressed store (sha256).

Pages of a run's series are spilled to `options.state_dir` (or a temporary folder) with a checkpoint
after each page, so an interrupted export resumes within a long series. Every request goes through
one `Retrier` (`retry.py`): 429 (its `Retry-After` honoured exactly), 5xx and broken connections are
retried; 401/403 and an unknown project are one-line errors.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import re
import shutil
import tempfile
import threading
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar, TypeVar

import pyarrow as pa
import pyarrow.parquet as pq

from neptune_migrate.dump.writer import RunWriter
from neptune_migrate.errors import MissingDependencyError, UsageError
from neptune_migrate.model import (
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
from neptune_migrate.retry import Retrier, RetryPolicy
from neptune_migrate.sources.base import RunSelection, SourceEstimate, SourceOptions, fingerprint_files
from neptune_migrate.sources.live_budget import BudgetedRuns, RequestBudget
from neptune_migrate.sources.neptune3_api.errors import (
    TRANSIENT_STATUSES,
    ServerAnswerError,
    ServerBusyError,
    ServerUnreachableError,
    TokenRejectedError,
    UnknownProjectError,
    classify_error,
)
from neptune_migrate.sources.neptune3_api.mapping import (
    ESTIMATE_ATTRIBUTES,
    LISTING_ATTRIBUTES,
    attribute_value,
    created_from_nql,
    float_table,
    leaf,
    object_table,
    selection_nql,
    split_attributes,
)

T = TypeVar("T")

_SYSTEM_FIELDS = ("name", "description", "owner", "state", "created_at", "modified_at")
"""System fields a 3.x server may lack for a run (`name` and `state` it never has)."""

LIST_PAGE = 10_000
"""Runs per listing page: the largest the 3.x server accepts."""
POINTS_PAGE = 100_000
"""Float points per page (`perSeriesPointsLimit`); bounds memory per page (the client itself asks for
up to 1,000,000)."""
VALUES_PAGE = 10_000
"""Attribute values per page."""
FILES_PER_REQUEST = 100
"""Files signed per `signedUrl` request."""
FLOAT_SERIES_PER_REQUEST = 100
"""Float series whose first page shares one request."""
RUNS_PER_BATCH = 100
"""Listed runs whose attribute values (and the first page of their float series) share requests: a small
run then costs a few hundredths of a request instead of two."""
DEFAULT_POLICY = RetryPolicy(max_attempts=12, initial_wait=0.5, max_wait=300.0, max_total=1800.0, max_outage=0.0)
"""Live servers: a `Retry-After` up to 5 minutes is honoured as given; give up on a call after 30 minutes."""


def _import_client() -> Any:
    try:
        import neptune_query.generated.neptune_api as api
    except ImportError as exc:
        raise MissingDependencyError("neptune-query", "neptune") from exc
    return api


def _safe(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]+", "_", text)[:80] + "-" + hashlib.sha256(text.encode()).hexdigest()[:10]


@dataclass
class _Listed:
    sys_id: str
    label: str
    modified: int | None = None
    """`sys/modification_time` (epoch ms) as listed; None when the run was not listed."""


def _datetime_ms(entry: Any, name: str) -> int | None:
    for a in entry.attributes:
        if a.name == name and a.HasField("datetime_properties"):
            return int(a.datetime_properties.value)
    return None


def _created_ms(entry: Any) -> int:
    return _datetime_ms(entry, "sys/creation_time") or 0


def _sys_id(entry: Any) -> str:
    for a in entry.attributes:
        if a.name == "sys/id":
            return str(a.string_properties.value)
    return str(entry.experiment_id)


class Neptune3ApiSource(BudgetedRuns):
    """`--from neptune3-api`: runs of one or more projects on a live Neptune 3.x server."""

    name: ClassVar[str] = "neptune3-api"
    live: ClassVar[bool] = True
    """A live source holds the authoritative copy: a changed run replaces the dump's copy."""

    def __init__(self, options: SourceOptions) -> None:
        self.options = options
        token = options.api_token or os.environ.get("NEPTUNE_API_TOKEN")
        if not token:
            msg = "no Neptune API token: pass --api-token or set NEPTUNE_API_TOKEN"
            raise UsageError(msg)
        self._token = token
        projects = [p.strip() for p in (options.project or "").split(",") if p.strip()]
        if not projects:
            msg = "--from neptune3-api needs --project WORKSPACE/PROJECT (Neptune 3.x has no project listing)"
            raise UsageError(msg)
        for p in projects:
            if p.count("/") != 1:
                msg = f"--project {p!r}: expected WORKSPACE/PROJECT"
                raise UsageError(msg)
        self.projects = tuple(projects)
        self.selection = RunSelection()
        self.budget = RequestBudget(options.workers, options.rate)
        self.retrier = Retrier(classify_error, DEFAULT_POLICY, sleep=self.budget.wait)
        self.retry_after_scale = 1.0
        """Multiplies every `Retry-After` (tests only: a `Retry-After: 12` then waits 12 x scale)."""
        self.list_page = LIST_PAGE
        self.points_page = POINTS_PAGE
        self.requests = 0
        """Requests sent (retries included)."""
        self._count_lock = threading.Lock()
        self._client: Any = None
        self._client_lock = threading.Lock()
        self._base_url: str | None = None
        self._listed: dict[RunKey, _Listed] = {}
        self.runs_per_batch = RUNS_PER_BATCH
        """Runs read ahead together (1: every run with its own requests)."""
        self._batch = _Batch()
        self._warnings: list[str] = []
        self._checked = False

    @property
    def retry_policy(self) -> RetryPolicy:
        return self.retrier.policy

    @retry_policy.setter
    def retry_policy(self, policy: RetryPolicy) -> None:
        self.retrier = Retrier(classify_error, policy, sleep=self.budget.wait)

    # -- the client ------------------------------------------------------------------------------
    def _api(self) -> Any:
        with self._client_lock:  # run threads may ask at once (the listing usually made it already)
            return self._make_api()

    def _make_api(self) -> Any:
        if self._client is None:
            _import_client()
            from neptune_query.generated.neptune_api.credentials import Credentials
            from neptune_query.internal.api_utils import create_auth_api_client

            try:
                credentials = Credentials.from_api_key(api_key=self._token)
            except Exception:  # noqa: BLE001 - the client's own error for a malformed token (never shown: it may echo it)
                msg = "the Neptune API token is malformed (not the base64 JSON token Neptune issues)"
                raise TokenRejectedError(msg) from None
            self._base_url = credentials.base_url
            self._client = create_auth_api_client(credentials=credentials)
        return self._client

    @property
    def base_url(self) -> str:
        self._api()
        return str(self._base_url)

    @property
    def location(self) -> str:
        """The server's address (from the token; never the token itself)."""
        return self.base_url

    def _call(self, what: str, fn: Callable[..., Any], *, project: str | None = None, check: bool = True) -> Any:
        """One API call through the retrier; returns the response (2xx) or raises a classified error."""
        from neptune_query.generated.neptune_api.errors import ApiKeyRejectedError, UnableToExchangeApiKeyError

        client = self._api()

        def attempt() -> Any:
            with self._count_lock:
                self.requests += 1
            try:
                with self.budget.request():
                    response = fn(client=client)
            except (ApiKeyRejectedError, UnableToExchangeApiKeyError) as exc:
                msg = f"{self.base_url} rejected the Neptune API token ({type(exc).__name__})"
                raise TokenRejectedError(msg) from None
            return self._check(what, response, project) if check else response

        try:
            return self.retrier(what, attempt)
        except ServerBusyError as exc:
            told = "did not answer" if exc.status is None else f"still answered HTTP {exc.status}"
            msg = f"{self.base_url} {told} ({what}) after the retries"
            raise ServerUnreachableError(msg) from exc
        except Exception as exc:
            if classify_error(exc) == "transient":
                msg = f"{self.base_url} did not answer ({what}) after the retries ({type(exc).__name__})"
                raise ServerUnreachableError(msg) from exc
            raise

    def _retry_after(self, headers: Any) -> float | None:
        """The `Retry-After` seconds (a multi-digit value read whole), times the test scale."""
        raw = headers.get("retry-after")
        if raw is None:
            return None
        try:
            return float(raw) * self.retry_after_scale
        except ValueError:
            return None

    def _check(self, what: str, response: Any, project: str | None) -> Any:
        status = int(response.status_code)
        if 200 <= status < 300:
            return response
        if status in TRANSIENT_STATUSES:
            raise ServerBusyError(what, status, self._retry_after(response.headers))
        if status in (401, 403):
            msg = f"{self.base_url} refused {what} (HTTP {status}): the API token lacks access"
            raise TokenRejectedError(msg)
        if status == 404 and project is not None:
            msg = f"project {project!r} not found on {self.base_url} (or the token cannot see it)"
            raise UnknownProjectError(msg)
        text = bytes(response.content[:200]).decode("utf-8", "replace").replace("\n", " ")
        msg = f"{what}: HTTP {status} from {self.base_url}: {text}"
        raise ServerAnswerError(msg)

    # -- listing ---------------------------------------------------------------------------------
    def select(self, selection: RunSelection) -> None:
        """Apply `selection` on the server (NQL) from the next listing on."""
        self.selection = selection

    def _search(self, project: str, offset: int, limit: int, attributes: tuple[str, ...],
                nql: str | None, sort_by: tuple[str, str] = ("sys/creation_time", "datetime")) -> Any:
        from neptune_query.generated.neptune_api.api.retrieval import search_leaderboard_entries_proto
        from neptune_query.generated.neptune_api.models import SearchLeaderboardEntriesParamsDTO
        from neptune_query.generated.neptune_api.proto.neptune_pb.api.v1.model.leaderboard_entries_pb2 import (
            ProtoLeaderboardEntriesSearchResultDTO,
        )

        params: dict[str, Any] = {
            "attributeFilters": [{"path": a} for a in attributes],
            "pagination": {"limit": limit, "offset": offset},
            "experimentLeader": False,
            "sorting": {"dir": "ascending", "sortBy": {"name": sort_by[0], "type": sort_by[1]}},
        }
        if nql:
            params["query"] = {"query": nql}
        body = SearchLeaderboardEntriesParamsDTO.from_dict(params)
        response = self._call(f"listing runs of {project}", partial(
            search_leaderboard_entries_proto.sync_detailed, body=body, project_identifier=project, type=["run"]),
            project=project)
        return ProtoLeaderboardEntriesSearchResultDTO.FromString(response.content)

    def _pages(self, project: str, attributes: tuple[str, ...]) -> Iterator[Any]:
        """Every selected run, ascending by creation time, by keyset pages: each page asks for runs
        created at or after the last instant seen and drops the runs of that instant already seen,
        by id, so offsets stay at 0 (no offset limit is reached) and runs sharing a timestamp at a
        page boundary are neither skipped nor repeated, in whatever order the server gives them.

        When one instant fills a whole page, that instant is listed on its own, sorted by the unique
        `sys/id` (offsets into it then mean the same in every request), and the listing goes on
        after it."""
        base = selection_nql(self.selection)
        for needed in ("sys/id", "sys/creation_time"):
            if needed not in attributes:
                attributes = (*attributes, needed)
        since: int | None = None
        after = False  # True: the runs of `since` are all listed; go on strictly after it
        seen: set[str] = set()  # ids of the runs created at `since` already yielded
        while True:
            nql = base if since is None else created_from_nql(base, since, ">" if after else ">=")
            page = self._search(project, 0, self.list_page, attributes, nql)
            entries = list(page.entries)
            for entry in entries:
                if since is not None and _created_ms(entry) == since and _sys_id(entry) in seen:
                    continue
                yield entry
            if len(entries) < self.list_page:
                return
            last = _created_ms(entries[-1])
            at_last = {_sys_id(e) for e in entries if _created_ms(e) == last}
            if last == since:  # the whole page shares the instant: list it alone, by id
                yield from self._instant(project, attributes, base, last, seen | at_last)
                after, seen = True, set()
            else:
                since, seen, after = last, at_last, False

    def _instant(self, project: str, attributes: tuple[str, ...], base: str | None, created_ms: int,
                 seen: set[str]) -> Iterator[Any]:
        """The runs created at `created_ms` and not in `seen`, by offset pages sorted by `sys/id`."""
        nql = created_from_nql(base, created_ms, "==")
        offset = 0
        while True:
            page = self._search(project, offset, self.list_page, attributes, nql, ("sys/id", "string"))
            entries = list(page.entries)
            yield from (e for e in entries if _sys_id(e) not in seen)
            if len(entries) < self.list_page:
                return
            offset += len(entries)

    def _list(self) -> dict[RunKey, _Listed]:
        listed: dict[RunKey, _Listed] = {}
        seen: set[tuple[str, str]] = set()
        for project in self.projects:
            if self.selection.projects and project not in self.selection.projects:
                continue
            for entry in self._pages(project, LISTING_ATTRIBUTES):
                values = {a.name: a.string_properties.value for a in entry.attributes
                          if a.HasField("string_properties")}
                sys_id = values.get("sys/id")
                if not sys_id or (project, sys_id) in seen:
                    continue  # the same run on two pages: the listing shifted under us
                seen.add((project, sys_id))
                label = values.get("sys/custom_run_id") or sys_id
                key = RunKey(project, SourceRunId(label))
                if key in listed:
                    self._warnings.append(f"{project}: runs {listed[key].sys_id} and {sys_id} share the custom "
                                          f"run id {label!r}; the second is exported as {sys_id}")
                    key = RunKey(project, SourceRunId(sys_id))
                listed[key] = _Listed(sys_id, label, _datetime_ms(entry, "sys/modification_time"))
        return listed

    def describe(self) -> str:
        counts = []
        for project in self.projects:
            page = self._search(project, 0, 1, ("sys/id",), None)
            counts.append(f"{project} ({page.matching_item_count} run(s))")
        self._checked = True
        return f"Neptune 3.x server at {self.base_url}: " + ", ".join(counts)

    def warnings(self) -> list[str]:
        return list(self._warnings)

    def list_runs(self) -> Iterator[RunKey]:
        self._listed = self._list()
        self._batch = _Batch(list(self._listed))
        yield from self._listed

    def fingerprint(self, key: RunKey) -> str:
        """The run's `sys/modification_time` as listed (no request): unchanged runs are skipped."""
        listed = self._listed.get(key)
        if listed is None or listed.modified is None:
            return fingerprint_files([("uncached", str(key))])
        return fingerprint_files([("sys/modification_time", listed.modified)])

    def classify_error(self, error: Exception) -> ErrorKind:
        return classify_error(error)

    def estimate(self, selection: RunSelection) -> SourceEstimate:
        """The server's own counts (`sys/diagnostics/*`, `sys/size`) for the selected runs; no series read."""
        self.select(selection)
        runs = attributes = points = size = 0
        for project in self.projects:
            if selection.projects and project not in selection.projects:
                continue
            for entry in self._pages(project, ESTIMATE_ATTRIBUTES):
                runs += 1
                for a in entry.attributes:
                    if a.name == "sys/diagnostics/attributes/total_count":
                        attributes += int(a.int_properties.value)
                    elif a.name == "sys/diagnostics/attributes/total_series_datapoints":
                        points += int(a.int_properties.value)
                    elif a.name == "sys/size":
                        size += int(a.int_properties.value)
        return SourceEstimate(runs=runs, attributes=attributes, points=points, bytes=size,
                              details={"requests": self.requests})

    # -- one run ---------------------------------------------------------------------------------
    def _values(self, project: str, sys_id: str) -> list[tuple[str, str, Any]]:
        return self._values_of(project, [sys_id]).get(sys_id, [])

    def _values_of(self, project: str, sys_ids: list[str]) -> dict[str, list[tuple[str, str, Any]]]:
        """The attribute values of the runs `sys_ids` of `project` (one request per page of values);
        a run the server does not answer for is missing from the result."""
        from neptune_query.generated.neptune_api.api.retrieval import query_attributes_within_project_proto
        from neptune_query.generated.neptune_api.models import QueryAttributesBodyDTO
        from neptune_query.generated.neptune_api.proto.neptune_pb.api.v1.model.attributes_pb2 import (
            ProtoQueryAttributesResultDTO,
        )

        out: dict[str, list[tuple[str, str, Any]]] = {}
        token: str | None = None
        what = f"attributes of {project}/{sys_ids[0]}" + (f" and {len(sys_ids) - 1} other run(s)"
                                                            if len(sys_ids) > 1 else "")
        wanted = set(sys_ids)
        while True:
            params: dict[str, Any] = {"experimentIdsFilter": [f"{project}/{i}" for i in sys_ids],
                                      "attributeNameFilter": {}, "nextPage": {"limit": VALUES_PAGE}}
            if token:
                params["nextPage"]["nextPageToken"] = token
            body = QueryAttributesBodyDTO.from_dict(params)
            response = self._call(what, partial(query_attributes_within_project_proto.sync_detailed, body=body,
                                                project_identifier=project), project=project)
            data = ProtoQueryAttributesResultDTO.FromString(response.content)
            for entry in data.entries:
                owner = str(entry.experimentShortId) if len(sys_ids) > 1 else sys_ids[0]
                if owner not in wanted:
                    continue  # not a run asked for (the answer names runs by their sys/id)
                values = out.setdefault(owner, [])
                for attr in entry.attributes:
                    typ, value = attribute_value(attr)
                    values.append((str(attr.name), typ, value))
            token = data.nextPage.nextPageToken or None
            if not token:
                return out

    def _read_ahead(self, key: RunKey, project: str, sys_id: str) -> _Ahead | None:
        """`key`'s values and float first pages from a shared read of the next listed runs (None: read
        the run on its own). Runs are read ahead in listing order, `runs_per_batch` at a time, only runs
        of the same project not handed out yet; one thread reads while the others wait for it."""
        batch = self._batch
        if self.runs_per_batch <= 1:
            return None
        with batch.lock:
            ahead = batch.ready.pop(key, None)
            if ahead is not None or key in batch.taken:
                batch.taken.add(key)
                return ahead
            group = [k for k in batch.following(key, self.runs_per_batch, behind=self.budget.workers)
                     if k.project == project and k in self._listed]
            ids = {k: self._listed[k].sys_id for k in group}
            try:
                values = self._values_of(project, list(ids.values()))
                firsts = self._float_firsts(project, [
                    (ids[k], path) for k in group if ids[k] in values and not self._resuming(k)
                    for path, kind in split_attributes(project, values[ids[k]]).series if kind == "float"])
            except ServerAnswerError:
                return None  # the shared read was refused: each run is read on its own (and fails alone)
            for k in group:
                got = values.get(ids[k])
                if got is not None and k not in batch.taken:
                    batch.ready[k] = _Ahead(got, {path: page for (i, path), page in firsts.items() if i == ids[k]})
            batch.trim(key, self.runs_per_batch)
            batch.taken.add(key)
            return batch.ready.pop(key, None)

    def _float_firsts(self, project: str, wanted: list[tuple[str, str]]) -> dict[tuple[str, str], _Page]:
        """The first page of each float series `(sys_id, path)`, `FLOAT_SERIES_PER_REQUEST` per request."""
        firsts: dict[tuple[str, str], _Page] = {}
        for start in range(0, len(wanted), FLOAT_SERIES_PER_REQUEST):
            chunk = wanted[start:start + FLOAT_SERIES_PER_REQUEST]
            pages = self._float_request(project, [(i, path, None) for i, path in chunk])
            firsts.update(zip(chunk, pages, strict=True))
        return firsts

    def export_run(self, key: RunKey, out: RunWriter) -> RunRecord:
        listed = self._listed.get(key)
        if listed is None:
            self._listed = self._listed or self._list()
            listed = self._listed.get(key)
        if listed is None:
            msg = f"{key}: no such run on {self.base_url}"
            raise ServerAnswerError(msg)
        project, sys_id = key.project, listed.sys_id
        ahead = self._read_ahead(key, project, sys_id)
        attrs = split_attributes(project, ahead.values if ahead is not None else self._values(project, sys_id))
        losses: list[Loss] = [Loss("unsupported_type", path, 1, f"a {typ} attribute is not carried",
                                   LossCategory.LOST) for path, typ in attrs.skipped]
        work, temporary = self._work_dir(key)
        files: list[FileEntry] = []
        try:
            spills = [_Spill(work / f"{index:05d}", path, kind) for index, (path, kind) in enumerate(attrs.series)]

            def fetch(spill: _Spill) -> None:
                if spill.kind == "float":
                    self._fetch_float(project, sys_id, spill)
                else:
                    self._fetch_objects(project, sys_id, spill.path, spill.kind, spill, out, losses)

            # The first page of every float series in a few shared requests (most series fit in it);
            # then the rest side by side (at most `workers` requests in flight), each into its own
            # spill; the dump writer takes them one after another.
            fresh = [sp for sp in spills if sp.kind == "float" and sp.pages == 0 and not sp.done]
            if ahead is not None:  # first pages read with the batch (a series not in it is read here)
                for sp in fresh:
                    page = ahead.firsts.get(sp.path)
                    if page is not None:
                        sp.add(page.table, cursor=page.cursor, done=page.done)
                fresh = [sp for sp in fresh if sp.pages == 0]
            for start in range(0, len(fresh), FLOAT_SERIES_PER_REQUEST):
                if len(fresh) > 1:
                    self._float_page(project, sys_id, fresh[start:start + FLOAT_SERIES_PER_REQUEST])
            unread = [sp for sp in spills if not sp.done]
            if len(unread) == 1:
                fetch(unread[0])
            elif unread:  # no pool (and no thread) for a run whose series are all read already
                with ThreadPoolExecutor(max_workers=max(1, self.options.workers)) as pool:
                    for _ in pool.map(fetch, unread):
                        pass
            for spill in spills:
                spill.replay(out)
                out.declare_series(spill.kind, spill.path)
            stored = self._download(project, [(storage, size) for _, storage, size, _ in attrs.files], out, work)
            for path, storage, size, mime in attrs.files:
                sha, got, missing = stored[storage]
                files.append(FileEntry(attribute_path=path, kind="file", name=leaf(storage), sha256=sha,
                                       size=got, mime_type=mime or None, missing=missing, origin=storage))
                if missing:
                    losses.append(Loss("file_missing", path, 1, missing, LossCategory.LOST))
                elif got != size:
                    losses.append(Loss("file_size_differs", path, 1, f"the server recorded {size} bytes, "
                                       f"the download has {got}", LossCategory.CHANGED_FORM))
        finally:
            if temporary:
                shutil.rmtree(work, ignore_errors=True)
        if not temporary:
            shutil.rmtree(work, ignore_errors=True)  # the run is read in full: its resume state is done
        details = {"server": self.base_url, "sys_id": sys_id, "lineage": "NONE"}
        return RunRecord(
            key=key,
            system=attrs.system,
            fields=attrs.fields,
            provenance=Provenance(source=self.name, location=f"{self.base_url}/{project}", details=details),
            fork=attrs.fork,
            files=tuple(files),
            losses=tuple(losses),
            absent=tuple(n for n in _SYSTEM_FIELDS if getattr(attrs.system, n) is None),
        )

    def _resuming(self, key: RunKey) -> bool:
        """True when an interrupted export left `key`'s pages in the state folder (they are not read again)."""
        return self.options.state_dir is not None and (self.options.state_dir / _safe(str(key))).exists()

    def _work_dir(self, key: RunKey) -> tuple[Path, bool]:
        if self.options.state_dir is None:
            return Path(tempfile.mkdtemp(prefix="neptune3-api-")), True
        # Made when something is written into it (a page of a long series, a download): a small run
        # read in one go never touches the disk here.
        return self.options.state_dir / _safe(str(key)), False

    def _holder(self, project: str, sys_id: str, path: str) -> dict[str, Any]:
        return {"holder": {"identifier": f"{project}/{sys_id}", "type": "experiment"}, "attribute": path,
                "lineage": "NONE", "lineageEntityType": "EXPERIMENT",
                "includePreview": self.options.include_previews}

    def _fetch_float(self, project: str, sys_id: str, spill: _Spill) -> None:
        while not spill.done:
            self._float_page(project, sys_id, [spill])

    def _float_page(self, project: str, sys_id: str, spills: list[_Spill]) -> None:
        """One request for the next page of each of `spills` (float series of one run)."""
        pages = self._float_request(project, [(sys_id, sp.path, sp.cursor) for sp in spills])
        for spill, page in zip(spills, pages, strict=True):
            spill.add(page.table, cursor=page.cursor, done=page.done)

    def _float_request(self, project: str, series: list[tuple[str, str, float | str | None]]) -> list[_Page]:
        """One request for the next page of each float series `(sys_id, path, cursor)`."""
        from neptune_query.generated.neptune_api.api.retrieval import get_multiple_float_series_values_proto
        from neptune_query.generated.neptune_api.models import FloatTimeSeriesValuesRequest
        from neptune_query.generated.neptune_api.proto.neptune_pb.api.v1.model.series_values_pb2 import (
            ProtoFloatSeriesValuesResponseDTO,
        )

        # The server caps one request at POINTS_PAGE points in all, as neptune-query assumes.
        limit = max(1, self.points_page // len(series))
        requests: list[dict[str, Any]] = []
        for i, (sys_id, path, cursor) in enumerate(series):
            request: dict[str, Any] = {"requestId": str(i), "series": self._holder(project, sys_id, path)}
            if cursor is not None:
                request["afterStep"] = float(cursor)
            requests.append(request)
        body = FloatTimeSeriesValuesRequest.from_dict({
            "requests": requests, "perSeriesPointsLimit": limit,
            "stepRange": {"from": None, "to": None}, "order": "descending"})
        sys_id, path, _ = series[0]
        what = f"float series {path}{' and others' if len(series) > 1 else ''} of {project}/{sys_id}"
        response = self._call(what, partial(get_multiple_float_series_values_proto.sync_detailed, body=body))
        data = ProtoFloatSeriesValuesResponseDTO.FromString(response.content)
        by_id: dict[str, list[Any]] = {str(i): [] for i in range(len(series))}
        for s in data.series:
            if s.requestId in by_id:
                by_id[s.requestId].extend(s.series.values)
        pages: list[_Page] = []
        for i, (_, path, _) in enumerate(series):
            values = by_id[str(i)]
            table = float_table(path, values, include_previews=self.options.include_previews)
            # Full page (exactly the limit): there may be more below its last step.
            pages.append(_Page(table, float(values[-1].step) if values else None, len(values) != limit))
        return pages

    def _fetch_objects(self, project: str, sys_id: str, path: str, kind: SeriesKind, spill: _Spill,
                       out: RunWriter, losses: list[Loss]) -> None:
        from neptune_query.generated.neptune_api.api.retrieval import get_series_values_proto
        from neptune_query.generated.neptune_api.models import SeriesValuesRequest
        from neptune_query.generated.neptune_api.proto.neptune_pb.api.v1.model.series_values_pb2 import (
            ProtoSeriesValuesResponseDTO,
        )

        while not spill.done:
            request: dict[str, Any] = {"requestId": "0", "series": self._holder(project, sys_id, path)}
            if spill.cursor is not None:
                request["searchAfter"] = {"finished": False, "token": str(spill.cursor)}
            body = SeriesValuesRequest.from_dict({"requests": [request], "stepRange": {"from": None, "to": None},
                                                  "order": "descending"})
            response = self._call(f"{kind} series {path} of {project}/{sys_id}",
                                  partial(get_series_values_proto.sync_detailed, body=body,
                                          use_deprecated_string_fields=False))
            data = ProtoSeriesValuesResponseDTO.FromString(response.content)
            mine = [s for s in data.series if s.requestId == "0"]
            points = [v for s in mine for v in s.seriesValues.values]
            stored = None
            if kind == "file" and points:
                refs = {str(p.object.fileRef.path): int(p.object.fileRef.sizeBytes) for p in points}
                got = self._download(project, list(refs.items()), out, spill.folder)
                stored = {k: (sha, size, missing) for k, (sha, size, missing) in got.items()}
                for k, (_, _, missing) in got.items():
                    if missing:
                        losses.append(Loss("file_missing", path, 1, f"{k}: {missing}", LossCategory.LOST))
            table = object_table(path, kind, points, stored)
            after = mine[0].searchAfter if mine and mine[0].HasField("searchAfter") else None
            finished = after is None or bool(after.finished) or not points
            spill.add(table, cursor=None if after is None else str(after.token), done=finished)

    def _download(self, project: str, refs: list[tuple[str, int]], out: RunWriter,
                  scratch: Path) -> dict[str, tuple[str | None, int | None, str | None]]:
        """Sign and fetch files by storage path; `(sha256, size, missing)` per path."""
        import httpx
        from neptune_query.generated.neptune_api.api.storage import signed_url_generic
        from neptune_query.generated.neptune_api.models import CreateSignedUrlsRequest

        result: dict[str, tuple[str | None, int | None, str | None]] = {}
        paths = list(dict.fromkeys(p for p, _ in refs))
        scratch.mkdir(parents=True, exist_ok=True)
        for start in range(0, len(paths), FILES_PER_REQUEST):
            chunk = paths[start:start + FILES_PER_REQUEST]
            body = CreateSignedUrlsRequest.from_dict({"files": [
                {"path": p, "project_identifier": project, "permission": "read"} for p in chunk]})
            response = self._call(f"signing {len(chunk)} file URL(s) of {project}",
                                  partial(signed_url_generic.sync_detailed, body=body))
            signed = json.loads(response.content)
            urls = {f["path"]: (f.get("provider"), f["url"]) for f in signed.get("files", [])}
            for p in chunk:
                if p not in urls:
                    result[p] = (None, None, "the server gave no signed URL for it")
                    continue
                provider, url = urls[p]
                if provider not in ("aws", "gcp"):
                    result[p] = (None, None, f"stored on {provider}, which this source does not download")
                    continue
                tmp = scratch / ("download-" + hashlib.sha256(p.encode()).hexdigest()[:16])

                def fetch(*, client: Any, what: str = f"downloading {p}", url: str = url, tmp: Path = tmp) -> Any:
                    del client  # a signed URL is fetched without the API's credentials
                    with httpx.stream("GET", url, timeout=60.0) as r:
                        if r.status_code == 200:
                            with tmp.open("wb") as fh:
                                for chunk_bytes in r.iter_bytes(1024 * 1024):
                                    fh.write(chunk_bytes)
                            return r
                        if r.status_code in TRANSIENT_STATUSES:
                            raise ServerBusyError(what, r.status_code, self._retry_after(r.headers))
                        msg = f"{what}: the storage answered HTTP {r.status_code}"
                        raise ServerAnswerError(msg)

                try:
                    self._call(f"downloading {p}", fetch, check=False)
                except ServerAnswerError as exc:
                    result[p] = (None, None, str(exc))
                    continue
                sha, size = out.store_file(tmp)
                tmp.unlink()
                result[p] = (sha, size, None)
        return result


@dataclass(frozen=True)
class _Page:
    """One page of a float series: its points (newest first), the cursor below it, whether it is the last."""

    table: pa.Table
    cursor: float | None
    done: bool


@dataclass(frozen=True)
class _Ahead:
    """A run read with others: its attribute values and the first page of its float series by path."""

    values: list[tuple[str, str, Any]]
    firsts: dict[str, _Page]


class _Batch:
    """The runs read ahead (in listing order) and not yet handed to their export; bounded."""

    def __init__(self, order: list[RunKey] | None = None) -> None:
        self.order = order or []
        self.position = {k: i for i, k in enumerate(self.order)}
        self.ready: dict[RunKey, _Ahead] = {}
        self.taken: set[RunKey] = set()
        self.lock = threading.Lock()

    def following(self, key: RunKey, count: int, behind: int = 0) -> list[RunKey]:
        """`key` and the listed runs around it not handed out yet, `count` at most, from up to `behind`
        runs before it (runs whose threads started with this one's and have not asked yet: otherwise
        the thread that asks first decides the batch and each neighbour before it needs one more)."""
        start = self.position.get(key)
        if start is None:
            return [key]
        out: list[RunKey] = [key]
        for k in self.order[max(0, start - behind):]:
            if k == key:
                continue
            if k not in self.taken and k not in self.ready:
                out.append(k)
                if len(out) == count:
                    break
        return out

    def trim(self, key: RunKey, window: int) -> None:
        """Drop read-ahead runs listed more than `window` runs before `key` (mostly runs whose export
        skipped them as unchanged; a run dropped here that is still to come is read on its own)."""
        here = self.position.get(key, 0)
        for k in [k for k in self.ready if self.position.get(k, here) < here - window]:
            del self.ready[k]


class _Spill:
    """One series' pages on disk with a checkpoint after each page (resume within a long series).

    Pages arrive newest-first; `replay` hands them to the writer oldest-first, in bounded pieces.
    """

    def __init__(self, folder: Path, path: str, kind: SeriesKind) -> None:
        self.folder = folder
        self.path = path
        self.kind = kind
        self.pages = 0
        self.cursor: float | str | None = None
        self.done = False
        self.memory: pa.Table | None = None
        state = folder / "checkpoint.json"
        if state.exists():
            with contextlib.suppress(ValueError, OSError):
                doc = json.loads(state.read_text(encoding="utf-8"))
                if doc.get("path") == path and doc.get("kind") == kind and all(
                        (folder / f"page-{i:06d}.parquet").exists() for i in range(int(doc["pages"]))):
                    self.pages, self.cursor, self.done = int(doc["pages"]), doc["cursor"], bool(doc["done"])

    def add(self, table: pa.Table, *, cursor: float | str | None, done: bool) -> None:
        if self.pages == 0 and done:  # a one-page series (most of them): nothing to resume, keep it in memory
            self.memory = table
            self.pages, self.cursor, self.done = 1, cursor, True
            return
        page = self.folder / f"page-{self.pages:06d}.parquet"
        self.folder.mkdir(parents=True, exist_ok=True)
        tmp = page.with_suffix(".tmp")
        pq.write_table(table, tmp)
        os.replace(tmp, page)
        self.pages += 1
        self.cursor = cursor
        self.done = done
        state = self.folder / "checkpoint.json"
        tmp_state = state.with_suffix(".tmp")
        tmp_state.write_text(json.dumps({"path": self.path, "kind": self.kind, "pages": self.pages,
                                         "cursor": cursor, "done": done}), encoding="utf-8")
        os.replace(tmp_state, state)

    def replay(self, out: RunWriter) -> None:
        if self.memory is not None:
            if self.memory.num_rows:
                out.add_points(self.kind, self.memory.take(pa.array(range(self.memory.num_rows - 1, -1, -1))))
            return
        for i in reversed(range(self.pages)):
            table = pq.read_table(self.folder / f"page-{i:06d}.parquet")
            if table.num_rows:
                out.add_points(self.kind, table.take(pa.array(range(table.num_rows - 1, -1, -1))))


if TYPE_CHECKING:
    from neptune_migrate.sources.base import ConcurrentRuns, Estimating, Source

    _: type[Source] = Neptune3ApiSource
    _e: type[Estimating] = Neptune3ApiSource
    _c: type[ConcurrentRuns] = Neptune3ApiSource
