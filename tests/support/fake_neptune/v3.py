"""A fake self-hosted Neptune 3.x server for the real `neptune-query` client, on 127.0.0.1.

Standard library `ThreadingHTTPServer`; responses are the protobuf classes neptune-query ships.
Routes (see `shared/reference/neptune-sources.md` §3.2/§3.4):

* `GET  /api/backend/v1/authorization/oauth-token`       token exchange (401 for an unknown key)
* `POST /api/leaderboard/v1/proto/leaderboard/entries/search/`   offset paging (limit <= 10,000), NQL, sort
* `POST /api/leaderboard/v1/leaderboard/attributes/definitions/query`   JSON names and types
* `POST /api/leaderboard/v1/proto/leaderboard/attributes/query`   values, `nextPage` tokens
* `POST /api/leaderboard/v1/proto/attributes/series/float`   descending `afterStep` pages, lineage FULL/NONE
* `POST /api/leaderboard/v1/proto/attributes/series`   string/file/histogram, `searchAfter` tokens
* `POST /api/storagebridge/v1/signedUrl` and `GET /blob/<key>?X-Amz-Signature=...`   files

Knobs for tests: `faults` (status + headers, or a dropped connection, for the next N requests of a
route), `counts` (requests per route), `on_search` (called before each listing page: add runs while
a listing is in progress), `series_page` (points per `searchAfter` page), `max_points_per_page`,
`shuffle_ties` (runs sharing a creation time come in a new order in every listing answer).
"""

from __future__ import annotations

import base64
import json
import random
import re
import socket
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import datetime, timezone
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, urlparse

API_KEY = "fake-api-key-3f9c2b7e"
"""The `api_key` inside tokens the fake accepts."""

SEARCH_LIMIT_MAX = 10_000
"""The 3.x server refuses a listing page larger than this."""


def make_token(base_url: str, api_key: str = API_KEY) -> str:
    """A Neptune API token (base64 JSON) pointing at `base_url`."""
    raw = json.dumps({"api_address": base_url, "api_url": base_url, "api_key": api_key})
    return base64.b64encode(raw.encode()).decode()


@dataclass
class Point:
    """One series point: step, timestamp (ms since the epoch) and value (float, str, histogram dict,
    or file dict `{path, size, mime}`)."""

    step: float
    ts_ms: int
    value: Any
    preview: bool = False
    completion: float = 0.0


@dataclass
class FakeRun:
    """One run as the server holds it."""

    project: str
    sys_id: str
    custom_run_id: str
    created: datetime
    modified: datetime | None = None
    name: str = ""
    """`sys/name`: the experiment name in 3.x."""
    description: str = ""
    owner: str = "tester"
    tags: set[str] = field(default_factory=set)
    group_tags: set[str] = field(default_factory=set)
    trashed: bool = False
    failed: bool = False
    fields: dict[str, tuple[str, Any]] = field(default_factory=dict)
    """name -> (backend type `float|int|string|bool|datetime|stringSet|fileRef`, value); a fileRef
    value is `{path, size, mime}`."""
    series: dict[str, tuple[str, list[Point]]] = field(default_factory=dict)
    """name -> (`floatSeries|stringSeries|fileRefSeries|histogramSeries`, points ascending)."""
    fork_parent: str | None = None
    """custom run id of the parent (same project)."""
    fork_step: float | None = None

    def sys_fields(self) -> dict[str, tuple[str, Any]]:
        out: dict[str, tuple[str, Any]] = {
            "sys/id": ("string", self.sys_id),
            "sys/custom_run_id": ("string", self.custom_run_id),
            "sys/name": ("string", self.name),
            "sys/description": ("string", self.description),
            "sys/owner": ("string", self.owner),
            "sys/creation_time": ("datetime", self.created),
            "sys/modification_time": ("datetime", self.modified or self.created),
            "sys/tags": ("stringSet", set(self.tags)),
            "sys/group_tags": ("stringSet", set(self.group_tags)),
            "sys/trashed": ("bool", self.trashed),
            "sys/failed": ("bool", self.failed),
            "sys/diagnostics/attributes/total_count": ("int", len(self.fields) + len(self.series)),
            "sys/diagnostics/attributes/total_series_datapoints": (
                "int", sum(len(p) for _, p in self.series.values())),
            "sys/size": ("int", self.size_bytes()),
        }
        if self.fork_parent is not None:
            out["sys/forking/parent"] = ("string", self.fork_parent)
            out["sys/forking/step"] = ("float", float(self.fork_step or 0.0))
        return out

    def size_bytes(self) -> int:
        total = sum(int(v["size"]) for t, v in self.fields.values() if t == "fileRef")
        total += sum(16 * len(pts) for _, pts in self.series.values())
        return total

    def all_fields(self) -> dict[str, tuple[str, Any]]:
        return {**self.sys_fields(), **self.fields}


@dataclass
class Fault:
    """Answer the next `times` requests whose path contains `route` with `status` (+ `headers`), or
    drop the connection without an answer when `drop`."""

    route: str
    status: int = 503
    headers: dict[str, str] = field(default_factory=dict)
    times: int = 1
    drop: bool = False
    after: int = 0
    """Let this many matching requests through first."""


class FakeNeptune3:
    """The store and the HTTP server. Use as a context manager (`with FakeNeptune3() as fake:`)."""

    def __init__(self, projects: tuple[str, ...] = ("my-ws/my-proj",)) -> None:
        self.projects: set[str] = set(projects)
        self.runs: list[FakeRun] = []
        self.blobs: dict[str, bytes] = {}
        self.faults: list[Fault] = []
        self.counts: Counter[str] = Counter()
        self.requests: list[tuple[str, dict[str, Any]]] = []
        """(route, JSON body) of every POST, in order (bodies of series requests only)."""
        self.on_search: Callable[[FakeNeptune3, int], None] | None = None
        """Called with the page offset before each listing page is answered."""
        self.series_page = 1000
        """Points per `searchAfter` page of string/file/histogram series."""
        self.delay = 0.0
        """Seconds to sleep before answering a series page (to kill a client in the middle)."""
        self.api_keys = {API_KEY}
        self.max_offset: int | None = None
        """Refuse listing pages beyond this offset + limit (like 2.x's 10,000; None: no limit)."""
        self.searches: list[dict[str, Any]] = []
        """JSON bodies of every listing request, in order."""
        self.shuffle_ties = False
        """Order runs sharing a sort value differently in each listing answer (a server whose sort is
        not stable across queries); False: insertion order."""
        self.latency = 0.0
        self.left_out_of_shared: set[str] = set()
        """sys/ids of runs the values route leaves out of an answer for several runs (not for one)."""
        """Seconds every request but the token exchange waits before it is answered (`--workers` tests)."""
        self.in_flight = 0
        self.max_in_flight = 0
        """Most requests the server was answering at once (token exchange excluded)."""
        self._lock = threading.Lock()
        self._server: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None
        self._next_id: Counter[str] = Counter()
        self._index: dict[str, FakeRun] = {}

    # -- store ---------------------------------------------------------------------------------
    def add_run(self, custom_run_id: str, *, project: str = "my-ws/my-proj",
                created: datetime | None = None, **kw: Any) -> FakeRun:
        key = project.split("/")[-1].upper()[:4]
        with self._lock:
            self._next_id[project] += 1
            sys_id = f"{key}-{self._next_id[project]}"
            run = FakeRun(project=project, sys_id=sys_id, custom_run_id=custom_run_id,
                          created=created or datetime(2025, 1, 1, tzinfo=timezone.utc), **kw)
            self.runs.append(run)
        return run

    def add_blob(self, path: str, data: bytes) -> dict[str, Any]:
        self.blobs[path] = data
        return {"path": path, "size": len(data), "mime": "application/octet-stream"}

    def find(self, project: str, identifier: str) -> FakeRun | None:
        """A run by `ws/proj/SYS-ID` or `CUSTOM/ws/proj/<custom id>`."""
        for run in self.runs:
            if run.project != project:
                continue
            if identifier in (f"{project}/{run.sys_id}", f"CUSTOM/{project}/{run.custom_run_id}"):
                return run
        return None

    def _by_identifier(self, identifier: str) -> FakeRun | None:
        # An index rebuilt on a miss (runs are added while the server runs): a scan of every run per
        # series request made the 10,000-run benchmark quadratic in the fake, not in the readers.
        run = self._index.get(identifier)
        if run is None and len(self._index) != 2 * len(self.runs):
            with self._lock:
                index: dict[str, FakeRun] = {}
                for each in reversed(self.runs):  # the first run wins, as the scan did
                    index[f"{each.project}/{each.sys_id}"] = each
                    index[f"CUSTOM/{each.project}/{each.custom_run_id}"] = each
                self._index = index
            run = self._index.get(identifier)
        return run

    # -- server --------------------------------------------------------------------------------
    @property
    def base_url(self) -> str:
        assert self._server is not None
        host, port = self._server.server_address[:2]
        return f"http://{host}:{port}"

    def token(self, api_key: str = API_KEY) -> str:
        return make_token(self.base_url, api_key)

    def __enter__(self) -> FakeNeptune3:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def start(self) -> None:
        fake = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def setup(self) -> None:
                super().setup()
                # Headers and body go out in two writes: without TCP_NODELAY, Nagle's algorithm and the
                # client's delayed ACK hold every answer ~40 ms, and the fake measures that, not the client.
                self.connection.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)

            def log_message(self, fmt: str, *args: Any) -> None:
                pass

            def do_GET(self) -> None:
                fake._handle(self, "GET")

            def do_POST(self) -> None:
                fake._handle(self, "POST")

        class Server(ThreadingHTTPServer):
            def handle_error(self, request: Any, client_address: Any) -> None:
                pass  # a client killed mid-request (kill -9 tests) is expected

        self._server = Server(("127.0.0.1", 0), Handler)
        self._server.daemon_threads = True
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)
        self._thread.start()

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None

    @contextmanager
    def fault(self, *faults: Fault) -> Iterator[None]:
        self.faults.extend(faults)
        try:
            yield
        finally:
            for f in faults:
                if f in self.faults:
                    self.faults.remove(f)

    # -- dispatch ------------------------------------------------------------------------------
    _ROUTES = (
        ("GET", "/api/backend/v1/authorization/oauth-token", "auth"),
        ("POST", "/api/leaderboard/v1/proto/leaderboard/entries/search/", "search"),
        ("POST", "/api/leaderboard/v1/leaderboard/attributes/definitions/query", "definitions"),
        ("POST", "/api/leaderboard/v1/proto/leaderboard/attributes/query", "values"),
        ("POST", "/api/leaderboard/v1/proto/attributes/series/float", "float"),
        ("POST", "/api/leaderboard/v1/proto/attributes/series", "series"),
        ("POST", "/api/storagebridge/v1/signedUrl", "signed"),
        ("GET", "/blob/", "blob"),
    )

    def _route(self, method: str, path: str) -> str | None:
        for m, prefix, name in self._ROUTES:
            if m == method and (path == prefix or (name == "blob" and path.startswith(prefix))):
                return name
        return None

    def _handle(self, h: BaseHTTPRequestHandler, method: str) -> None:
        counted = not urlparse(h.path).path.endswith("/oauth-token")
        if counted:
            with self._lock:
                self.in_flight += 1
                self.max_in_flight = max(self.max_in_flight, self.in_flight)
        try:
            if counted and self.latency:
                time.sleep(self.latency)
            self._answer(h, method)
        finally:
            if counted:
                with self._lock:
                    self.in_flight -= 1

    def _answer(self, h: BaseHTTPRequestHandler, method: str) -> None:
        url = urlparse(h.path)
        length = int(h.headers.get("Content-Length") or 0)
        raw = h.rfile.read(length) if length else b""
        route = self._route(method, url.path)
        if route is None:
            self._send(h, 404, b'{"message": "no such route"}')
            return
        with self._lock:
            self.counts[route] += 1
            fault = None
            for f in self.faults:
                if f.route == route:
                    if f.after > 0:
                        f.after -= 1
                        continue
                    fault = f
                    f.times -= 1
                    if f.times <= 0:
                        self.faults.remove(f)
                    break
        if fault is not None:
            if fault.drop:
                h.close_connection = True
                return
            self._send(h, fault.status, b'{"message": "injected"}', fault.headers)
            return
        if route != "auth" and route != "blob":
            auth = h.headers.get("Authorization", "")
            if not auth.startswith("Bearer "):
                self._send(h, 401, b'{"message": "no bearer token"}')
                return
        query = {k: v[0] for k, v in parse_qs(url.query).items()}
        body: dict[str, Any] = json.loads(raw) if raw else {}
        if route in ("float", "series"):
            with self._lock:
                self.requests.append((route, body))
            if self.delay:
                time.sleep(self.delay)
        try:
            status, payload, ctype = getattr(self, f"_r_{route}")(h, query, body)
        except _HttpError as e:
            self._send(h, e.status, json.dumps({"message": e.message}).encode())
            return
        self._send(h, status, payload, {"Content-Type": ctype})

    @staticmethod
    def _send(h: BaseHTTPRequestHandler, status: int, payload: bytes,
              headers: dict[str, str] | None = None) -> None:
        h.send_response(status)
        for k, v in (headers or {}).items():
            h.send_header(k, v)
        if "Content-Type" not in (headers or {}):
            h.send_header("Content-Type", "application/json")
        h.send_header("Content-Length", str(len(payload)))
        h.end_headers()
        h.wfile.write(payload)

    # -- routes --------------------------------------------------------------------------------
    def _r_auth(self, h: BaseHTTPRequestHandler, q: dict[str, str], b: dict[str, Any]) -> tuple[int, bytes, str]:
        import jwt

        token = h.headers.get("X-Neptune-Api-Token", "")
        try:
            key = json.loads(base64.b64decode(token)).get("api_key")
        except ValueError:
            key = None
        if key not in self.api_keys:
            raise _HttpError(401, "API token rejected")
        now = int(time.time())
        access = jwt.encode({"exp": now + 36000, "azp": "neptune-cli", "iss": f"{self.base_url}/auth/realms/neptune",
                             "iat": now}, "fake-secret-for-hs256-signing-of-tokens", algorithm="HS256")
        out = {"accessToken": access, "refreshToken": "refresh-" + str(now), "username": "tester"}
        return 200, json.dumps(out).encode(), "application/json"

    def _project(self, q: dict[str, str]) -> str:
        project = q.get("projectIdentifier", "")
        if project not in self.projects:
            raise _HttpError(404, f"Project {project} not found")
        return project

    def _r_search(self, h: BaseHTTPRequestHandler, q: dict[str, str], b: dict[str, Any]) -> tuple[int, bytes, str]:
        from neptune_query.generated.neptune_api.proto.neptune_pb.api.v1.model import leaderboard_entries_pb2 as le

        project = self._project(q)
        page = b.get("pagination", {})
        offset, limit = int(page.get("offset", 0)), int(page.get("limit", 100))
        if limit > SEARCH_LIMIT_MAX:
            raise _HttpError(400, f"pagination.limit must be at most {SEARCH_LIMIT_MAX}")
        if self.max_offset is not None and offset + limit > self.max_offset:
            raise _HttpError(400, f"offset + limit must be at most {self.max_offset}")
        with self._lock:
            self.searches.append(b)
        if self.on_search is not None:
            self.on_search(self, offset)
        with self._lock:
            runs = [r for r in self.runs if r.project == project]
        nql = (b.get("query") or {}).get("query", "")
        if nql:
            pred = parse_nql(nql)
            runs = [r for r in runs if pred(r)]
        sorting = b.get("sorting") or {}
        sort_name = (sorting.get("sortBy") or {}).get("name", "sys/creation_time")
        desc = sorting.get("dir", "descending") == "descending"
        if self.shuffle_ties:  # a new order of the ties for every request (seeded: reproducible)
            random.Random(len(self.searches)).shuffle(runs)
        # A stable sort on the one key: runs sharing a timestamp keep their insertion (or shuffled) order.
        runs.sort(key=lambda r: _sort_value(r.all_fields().get(sort_name, ("string", ""))[1]), reverse=desc)
        selected = runs[offset: offset + limit]
        names = [a["path"] for a in b.get("attributeFilters", [])]
        result = le.ProtoLeaderboardEntriesSearchResultDTO(matching_item_count=len(runs))
        for run in selected:
            entry = result.entries.add(experiment_id=f"uuid-{run.sys_id}", type="run", project_name=project)
            fields = run.all_fields()
            for name in names:
                if name in fields:
                    _fill_attr(entry.attributes.add(), name, *fields[name], run=run)
        return 200, result.SerializeToString(), "application/x-protobuf"

    def _r_definitions(self, h: BaseHTTPRequestHandler, q: dict[str, str],
                       b: dict[str, Any]) -> tuple[int, bytes, str]:
        runs = self._runs_for(b.get("experimentIdsFilter"), b.get("projectIdentifiers"))
        seen: dict[str, str] = {}
        for run in runs:
            for name, (typ, _) in run.all_fields().items():
                seen.setdefault(name, typ)
            for name, (typ, _) in run.series.items():
                seen.setdefault(name, typ)
        entries = [{"name": n, "type": t} for n, t in sorted(seen.items())
                   if _name_ok(n, b.get("attributeNameFilter")) and _type_ok(t, b.get("attributeFilter"))]
        return 200, json.dumps({"entries": entries, "nextPage": {}}).encode(), "application/json"

    def _runs_for(self, ids: list[str] | None, projects: list[str] | None) -> list[FakeRun]:
        if ids:
            found = [self._by_identifier(i) for i in ids]
            return [r for r in found if r is not None]
        return [r for r in self.runs if not projects or r.project in projects]

    def _r_values(self, h: BaseHTTPRequestHandler, q: dict[str, str], b: dict[str, Any]) -> tuple[int, bytes, str]:
        from neptune_query.generated.neptune_api.proto.neptune_pb.api.v1.model import attributes_pb2 as at

        project = self._project(q)
        runs = [r for r in self._runs_for(b.get("experimentIdsFilter"), [project]) if r.project == project]
        if len(b.get("experimentIdsFilter") or ()) > 1:
            runs = [r for r in runs if r.sys_id not in self.left_out_of_shared]
        wanted = b.get("attributeNamesFilter")
        pairs: list[tuple[FakeRun, str, str, Any]] = []
        for run in runs:
            every = {**run.all_fields(), **{n: (t, pts) for n, (t, pts) in run.series.items()}}
            for name, (typ, value) in every.items():
                if wanted is not None and name not in wanted:
                    continue
                if wanted is None and not (_name_ok(name, b.get("attributeNameFilter"))
                                           and _type_ok(typ, b.get("attributeFilter"))):
                    continue
                pairs.append((run, name, typ, value))
        page = b.get("nextPage") or {}
        start = int(page.get("nextPageToken") or 0)
        limit = int(page.get("limit") or 10_000)
        chunk = pairs[start: start + limit]
        result = at.ProtoQueryAttributesResultDTO()
        by_run: dict[str, Any] = {}
        for run, name, typ, value in chunk:
            entry = by_run.get(run.sys_id)
            if entry is None:
                entry = by_run[run.sys_id] = result.entries.add(
                    experimentId=f"uuid-{run.sys_id}", experimentShortId=run.sys_id)
            _fill_attr(entry.attributes.add(), name, typ, value, run=run)
        if start + limit < len(pairs):
            result.nextPage.nextPageToken = str(start + limit)
        return 200, result.SerializeToString(), "application/x-protobuf"

    def _series_points(self, req: dict[str, Any], kind: str) -> tuple[FakeRun | None, list[Point]]:
        series = req["series"]
        run = self._by_identifier(series["holder"]["identifier"])
        if run is None:
            return None, []
        got = run.series.get(series["attribute"])
        points = list(got[1]) if got is not None and got[0] == kind else []
        if series.get("lineage") == "FULL" and run.fork_parent is not None:
            chain: list[Point] = []
            child, parent = run, self.find(run.project, f"CUSTOM/{run.project}/{run.fork_parent}")
            while parent is not None and child.fork_parent is not None:
                pg = parent.series.get(series["attribute"])
                fork_step = child.fork_step if child.fork_step is not None else float("inf")
                inherited = [p for p in (pg[1] if pg is not None else []) if p.step <= fork_step]
                chain = inherited + chain
                child = parent
                parent = (self.find(parent.project, f"CUSTOM/{parent.project}/{parent.fork_parent}")
                          if parent.fork_parent else None)
            points = chain + points
        return run, points

    def _r_float(self, h: BaseHTTPRequestHandler, q: dict[str, str], b: dict[str, Any]) -> tuple[int, bytes, str]:
        from neptune_query.generated.neptune_api.proto.neptune_pb.api.v1.model import series_values_pb2 as sv

        limit = int(b.get("perSeriesPointsLimit") or 10_000)
        desc = b.get("order", "descending") == "descending"
        lo, hi = _range(b.get("stepRange"))
        result = sv.ProtoFloatSeriesValuesResponseDTO()
        for req in b.get("requests", []):
            _, points = self._series_points(req, "floatSeries")
            include_preview = bool(req["series"].get("includePreview", False))
            points = [p for p in points if (include_preview or not p.preview) and lo <= p.step <= hi]
            after = req.get("afterStep")
            if desc:
                points = points[::-1]
                if after is not None:
                    points = [p for p in points if p.step < float(after)]
            elif after is not None:
                points = [p for p in points if p.step > float(after)]
            one = result.series.add(requestId=req["requestId"])
            one.series.total_item_count = len(points)
            for p in points[:limit]:
                one.series.values.add(timestamp_millis=p.ts_ms, step=p.step, value=float(p.value),
                                      is_preview=p.preview, completion_ratio=p.completion)
        return 200, result.SerializeToString(), "application/x-protobuf"

    def _r_series(self, h: BaseHTTPRequestHandler, q: dict[str, str], b: dict[str, Any]) -> tuple[int, bytes, str]:
        from neptune_query.generated.neptune_api.proto.neptune_pb.api.v1.model import series_values_pb2 as sv

        desc = b.get("order", "descending") == "descending"
        tail = b.get("perSeriesPointsLimit")
        lo, hi = _range(b.get("stepRange"))
        result = sv.ProtoSeriesValuesResponseDTO()
        for req in b.get("requests", []):
            run, _ = self._series_points(req, "")
            if run is None:
                continue
            got = run.series.get(req["series"]["attribute"])
            if got is None or got[0] == "floatSeries":
                continue
            _, points = self._series_points(req, got[0])
            points = [p for p in points if lo <= p.step <= hi]
            if desc:
                points = points[::-1]
            if tail is not None:
                points = points[: int(tail)]
            start = int((req.get("searchAfter") or {}).get("token") or 0)
            chunk = points[start: start + self.series_page]
            one = result.series.add(requestId=req["requestId"])
            end = start + len(chunk)
            one.searchAfter.token = str(end)
            one.searchAfter.finished = end >= len(points)
            for p in chunk:
                v = one.seriesValues.values.add(timestamp_millis=p.ts_ms, step=p.step)
                if got[0] == "stringSeries":
                    v.object.stringValue = str(p.value)
                elif got[0] == "histogramSeries":
                    v.object.histogram.type = p.value["type"]
                    v.object.histogram.edges.extend(p.value["edges"])
                    v.object.histogram.values.extend(p.value["values"])
                else:
                    v.object.fileRef.path = p.value["path"]
                    v.object.fileRef.sizeBytes = int(p.value["size"])
                    v.object.fileRef.mimeType = p.value["mime"]
        return 200, result.SerializeToString(), "application/x-protobuf"

    def _r_signed(self, h: BaseHTTPRequestHandler, q: dict[str, str], b: dict[str, Any]) -> tuple[int, bytes, str]:
        files = []
        for f in b.get("files", []):
            key = base64.urlsafe_b64encode(f["path"].encode()).decode()
            files.append({"path": f["path"], "project_identifier": f["project_identifier"], "provider": "aws",
                          "url": f"{self.base_url}/blob/{key}?X-Amz-Signature=s3cr3t-signature-value"})
        return 200, json.dumps({"files": files}).encode(), "application/json"

    def _r_blob(self, h: BaseHTTPRequestHandler, q: dict[str, str], b: dict[str, Any]) -> tuple[int, bytes, str]:
        key = urlparse(h.path).path[len("/blob/"):]
        path = base64.urlsafe_b64decode(key.encode()).decode()
        data = self.blobs.get(path)
        if data is None:
            raise _HttpError(404, "NoSuchKey")
        return 200, data, "application/octet-stream"


class _HttpError(Exception):
    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


def _range(step_range: dict[str, Any] | None) -> tuple[float, float]:
    lo = (step_range or {}).get("from")
    hi = (step_range or {}).get("to")
    return (float("-inf") if lo is None else float(lo), float("inf") if hi is None else float(hi))


def _sort_value(value: Any) -> Any:
    if isinstance(value, datetime):
        return value.timestamp()
    return value


_BACKEND_TO_PYTHON = {"float": "float", "int": "int", "string": "string", "bool": "bool", "datetime": "datetime",
                      "stringSet": "string_set", "floatSeries": "float_series", "stringSeries": "string_series",
                      "fileRef": "file", "fileRefSeries": "file_series", "histogramSeries": "histogram_series"}


def _name_ok(name: str, flt: dict[str, Any] | None) -> bool:
    alts = (flt or {}).get("mustMatchAny") or []
    if not alts:
        return True
    for alt in alts:
        must = alt.get("mustMatchRegexes") or []
        must_not = alt.get("mustNotMatchRegexes") or []
        if all(re.search(r, name) for r in must) and not any(re.search(r, name) for r in must_not):
            return True
    return False


def _type_ok(typ: str, flt: list[dict[str, Any]] | None) -> bool:
    if not flt:
        return True
    return any(f.get("attributeType") == typ for f in flt)


def _millis(value: datetime) -> int:
    return round(value.timestamp() * 1000)


def _fill_attr(attr: Any, name: str, typ: str, value: Any, *, run: FakeRun) -> None:
    attr.name, attr.type = name, typ
    if typ == "float":
        attr.float_properties.value = float(value)
    elif typ == "int":
        attr.int_properties.value = int(value)
    elif typ == "string":
        attr.string_properties.value = str(value)
    elif typ == "bool":
        attr.bool_properties.value = bool(value)
    elif typ == "datetime":
        attr.datetime_properties.value = _millis(value)
    elif typ == "stringSet":
        attr.string_set_properties.value.extend(sorted(value))
    elif typ == "fileRef":
        attr.file_ref_properties.path = value["path"]
        attr.file_ref_properties.sizeBytes = int(value["size"])
        attr.file_ref_properties.mimeType = value["mime"]
    elif typ in ("floatSeries", "stringSeries", "fileRefSeries", "histogramSeries"):
        points: list[Point] = value
        last = points[-1] if points else None
        if typ == "floatSeries":
            p = attr.float_series_properties
            vals = [float(x.value) for x in points if not x.preview]
            if vals:
                p.last, p.min, p.max = vals[-1], min(vals), max(vals)
                p.average = sum(vals) / len(vals)
            p.last_step = last.step if last else 0.0
            p.has_preview = any(x.preview for x in points)
        elif typ == "stringSeries":
            attr.string_series_properties.last_step = last.step if last else 0.0
            attr.string_series_properties.last = str(last.value) if last else ""
        elif typ == "fileRefSeries":
            attr.file_ref_series_properties.last_step = last.step if last else 0.0
            if last:
                attr.file_ref_series_properties.last.path = last.value["path"]
                attr.file_ref_series_properties.last.sizeBytes = int(last.value["size"])
                attr.file_ref_series_properties.last.mimeType = last.value["mime"]
        else:
            attr.histogram_series_properties.last_step = last.step if last else 0.0
            if last:
                attr.histogram_series_properties.last.type = last.value["type"]
                attr.histogram_series_properties.last.edges.extend(last.value["edges"])
                attr.histogram_series_properties.last.values.extend(last.value["values"])


# -- NQL: the atoms neptune-query and our source emit -------------------------------------------

_ATOM = re.compile(r'^\(*\s*`(?P<name>[^`]+)`(?::(?P<type>\w+))?\s+(?P<op>==|!=|>=|<=|>|<|MATCHES|NOT MATCHES|'
                   r'CONTAINS|NOT CONTAINS|EXISTS|NOT EXISTS)\s*(?P<value>"(?:[^"\\]|\\.)*"|\S+)?\s*\)*$')


def parse_nql(text: str) -> Callable[[FakeRun], bool]:
    """A predicate for an NQL query made of atoms joined by AND / OR (parentheses for grouping)."""
    tokens = _tokenize(text)
    pos = 0

    def expr() -> Callable[[FakeRun], bool]:
        nonlocal pos
        left = term()
        while pos < len(tokens) and tokens[pos] == "OR":
            pos += 1
            right = term()
            left = (lambda a, b: lambda r: a(r) or b(r))(left, right)
        return left

    def term() -> Callable[[FakeRun], bool]:
        nonlocal pos
        left = factor()
        while pos < len(tokens) and tokens[pos] == "AND":
            pos += 1
            right = factor()
            left = (lambda a, b: lambda r: a(r) and b(r))(left, right)
        return left

    def factor() -> Callable[[FakeRun], bool]:
        nonlocal pos
        tok = tokens[pos]
        if tok == "(":
            pos += 1
            inner = expr()
            pos += 1  # ")"
            return inner
        pos += 1
        return _atom(tok)

    return expr()


def _tokenize(text: str) -> list[str]:
    out: list[str] = []
    i = 0
    buf = ""
    depth_quote = False
    while i < len(text):
        c = text[i]
        if depth_quote:
            buf += c
            if c == "\\" and i + 1 < len(text):
                buf += text[i + 1]
                i += 1
            elif c == '"':
                depth_quote = False
            i += 1
            continue
        if c == '"':
            depth_quote = True
            buf += c
        elif c == "(" and not buf.strip():
            out.append("(")
        elif c == ")" and buf.strip():
            out.append(buf.strip())
            buf = ""
            out.append(")")
        elif c == ")":
            out.append(")")
        elif text.startswith(" AND ", i) or text.startswith(" OR ", i):
            word = "AND" if text.startswith(" AND ", i) else "OR"
            if buf.strip():
                out.append(buf.strip())
            buf = ""
            out.append(word)
            i += len(word) + 2
            continue
        else:
            buf += c
        i += 1
    if buf.strip():
        out.append(buf.strip())
    return out


def _atom(text: str) -> Callable[[FakeRun], bool]:
    m = _ATOM.match(text)
    if m is None:
        msg = f"fake NQL: cannot parse {text!r}"
        raise _HttpError(400, msg)
    name, op, raw = m.group("name"), m.group("op"), m.group("value")
    value: Any = json.loads(raw) if raw and raw.startswith('"') else raw

    def pred(run: FakeRun) -> bool:
        fields = run.all_fields()
        if op in ("EXISTS", "NOT EXISTS"):
            return (name in fields) == (op == "EXISTS")
        if name not in fields:
            return False
        typ, current = fields[name]
        if typ == "stringSet":
            has = value in current
            return has if op == "CONTAINS" else not has
        if op in ("MATCHES", "NOT MATCHES"):
            return bool(re.search(str(value), str(current))) == (op == "MATCHES")
        other: Any = value
        if typ == "datetime":
            other = datetime.fromisoformat(str(value).replace("Z", "+00:00")).timestamp()
            current = current.timestamp()
        elif typ == "bool":
            other = str(value).lower() == "true"
        elif typ in ("float", "int"):
            other = float(value)
        ops: dict[str, Callable[[Any, Any], bool]] = {
            "==": lambda a, b: a == b, "!=": lambda a, b: a != b, ">": lambda a, b: a > b,
            ">=": lambda a, b: a >= b, "<": lambda a, b: a < b, "<=": lambda a, b: a <= b}
        return ops[op](current, other)

    return pred
