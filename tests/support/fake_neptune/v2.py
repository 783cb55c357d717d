"""A fake self-hosted Neptune 2.x server for the real `neptune` 1.x client (tests only).

The client downloads its Swagger specs from the server, so this module writes them by hand: each
operation the client (or our source, through the client's bravado session) calls, with every
parameter name it passes. Routes follow `reference/neptune-sources.md` §3.3 and
`reference/live-registry-scale.md` §3 (the 10,000-offset listing limit, search-after on
`sys/creation_time`, exclusive `skipToStep`).

Models and model versions (`add_model`, `add_model_version`) are containers of `type` `model` /
`modelVersion` beside the runs: listed only when `searchLeaderboardEntries` asks for their type, read
through the same attribute, series and download routes, with the `sys` attributes a 2.x server gives
them (no `sys/failed` or `sys/group_tags`; versions add `sys/model_id` and `sys/stage`).

Knobs: `max_offset` (400 when `offset + limit` passes it; 10,000 like the real server),
`tie_order_seed` (runs sharing a creation time come back in an arbitrary but fixed order),
`on_list_page` (called after each listing page, e.g. to add runs while a listing is in progress),
plus the faults and counters of `common.FakeServer`.
"""

from __future__ import annotations

import bisect
import io
import json
import random
import re
import uuid
import zipfile
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from typing import Any

from tests.support.fake_neptune.common import FakeServer, Reply, Request


def iso(when: datetime) -> str:
    return when.astimezone(timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.") + f"{when.microsecond // 1000:03d}Z"


def parse_iso(text: str) -> datetime:
    return datetime.fromisoformat(text.replace("Z", "+00:00"))


@dataclass
class FakeRun2:
    """One run as a 2.x server holds it."""

    sys_id: str
    created: datetime
    modified: datetime | None = None
    name: str = ""
    description: str = ""
    owner: str = "alice"
    state: str = "idle"
    failed: bool = False
    trashed: bool = False
    tags: set[str] = field(default_factory=set)
    group_tags: set[str] = field(default_factory=set)
    custom_run_id: str | None = None
    fields: dict[str, tuple[str, Any]] = field(default_factory=dict)
    """path -> (backend type: float int bool string datetime stringSet, value)."""
    float_series: dict[str, list[tuple[float, float, int]]] = field(default_factory=dict)
    """path -> [(step, value, timestamp millis)], steps strictly increasing."""
    string_series: dict[str, list[tuple[float, str, int]]] = field(default_factory=dict)
    files: dict[str, tuple[bytes, str]] = field(default_factory=dict)
    """path -> (content, extension)."""
    file_names: dict[str, str] = field(default_factory=dict)
    """path -> the uploaded file's name without extension (default: the attribute's last segment)."""
    file_sets: dict[str, dict[str, bytes]] = field(default_factory=dict)
    image_series: dict[str, list[tuple[float, bytes, int]]] = field(default_factory=dict)
    uuid: str = field(default_factory=lambda: str(uuid.uuid4()))
    container_type: str = "run"
    """`run`, `model` or `modelVersion` (the API's spelling)."""
    model_id: str | None = None
    """A model version's model (`PROJ-MOD`)."""
    stage: str = "none"
    """A model version's `sys/stage`."""

    def touch(self, when: datetime | None = None) -> None:
        self.modified = when or datetime.now(timezone.utc)

    def sys_attributes(self) -> list[dict[str, Any]]:
        mod = self.modified or self.created
        out: list[dict[str, Any]] = [
            _attr("sys/id", "string", self.sys_id),
            _attr("sys/name", "string", self.name),
            _attr("sys/description", "string", self.description),
            _attr("sys/owner", "string", self.owner),
            _attr("sys/creation_time", "datetime", iso(self.created)),
            _attr("sys/modification_time", "datetime", iso(mod)),
            _attr("sys/ping_time", "datetime", iso(mod)),
            _attr("sys/state", "experimentState", self.state),
            _attr("sys/trashed", "bool", self.trashed),
            _attr("sys/tags", "stringSet", sorted(self.tags)),
            _attr("sys/size", "float", 0.0),
            _attr("sys/running_time", "float", 0.0),
        ]
        if self.container_type == "run":
            out.insert(8, _attr("sys/failed", "bool", self.failed))
            out.insert(11, _attr("sys/group_tags", "stringSet", sorted(self.group_tags)))
        if self.container_type == "modelVersion":
            out.append(_attr("sys/model_id", "string", self.model_id))
            out.append(_attr("sys/stage", "string", self.stage))
        if self.custom_run_id is not None:
            out.append(_attr("sys/custom_run_id", "string", self.custom_run_id))
        return out

    def attributes(self) -> list[dict[str, Any]]:
        out = self.sys_attributes()
        for path, (typ, value) in self.fields.items():
            out.append(_attr(path, typ, iso(value) if isinstance(value, datetime) else value))
        for path, pts in self.float_series.items():
            out.append({"name": path, "type": "floatSeries", "floatSeriesProperties": {
                "attributeName": path, "attributeType": "floatSeries",
                "last": pts[-1][1] if pts else None, "lastStep": pts[-1][0] if pts else None}})
        for path, spts in self.string_series.items():
            out.append({"name": path, "type": "stringSeries", "stringSeriesProperties": {
                "attributeName": path, "attributeType": "stringSeries",
                "last": spts[-1][1] if spts else None, "lastStep": spts[-1][0] if spts else None}})
        for path, (content, ext) in self.files.items():
            out.append({"name": path, "type": "file", "fileProperties": {
                "name": self.file_names.get(path, path.rsplit("/", 1)[-1]), "ext": ext, "size": len(content)}})
        for path, members in self.file_sets.items():
            out.append({"name": path, "type": "fileSet", "fileSetProperties": {
                "size": sum(len(b) for b in members.values())}})
        for path, ipts in self.image_series.items():
            out.append({"name": path, "type": "imageSeries", "imageSeriesProperties": {
                "attributeName": path, "attributeType": "imageSeries",
                "lastStep": ipts[-1][0] if ipts else None}})
        return out

    def value_of(self, path: str) -> Any:
        if path == "sys/id":
            return self.sys_id
        if path in ("sys/creation_time", "sys/modification_time"):
            return iso(self.created if path == "sys/creation_time" else self.modified or self.created)
        for attr in self.sys_attributes():
            if attr["name"] == path:
                props = attr[f"{attr['type']}Properties"]
                return props.get("value", props.get("values"))
        if path in self.fields:
            return self.fields[path][1]
        return None


def _attr(name: str, typ: str, value: Any) -> dict[str, Any]:
    key = "values" if typ == "stringSet" else "value"
    return {"name": name, "type": typ, f"{typ}Properties": {"attributeName": name, "attributeType": typ, key: value}}


@dataclass
class FakeProject2:
    workspace: str
    name: str
    key: str
    runs: list[FakeRun2] = field(default_factory=list)
    id: str = field(default_factory=lambda: str(uuid.uuid4()))
    counter: int = 0

    @property
    def qualified(self) -> str:
        return f"{self.workspace}/{self.name}"


# -- NQL: the atoms the clients emit, combined with AND / OR and parentheses -----------------------
_ATOM = re.compile(r'`(?P<name>[^`]+)`:(?P<type>\w+)\s+(?P<op>>=|<=|!=|=|>|<|CONTAINS|MATCHES)\s+'
                   r'(?:"(?P<q>(?:[^"\\]|\\.)*)"|(?P<bare>[\w.:+-]+))')


def nql_matcher(query: str) -> Callable[[FakeRun2], bool]:
    """A predicate for the NQL atoms `our` clients emit (an empty query matches everything)."""
    atoms: list[tuple[str, str, str, str]] = []

    def sub(m: re.Match[str]) -> str:
        value = m.group("q") if m.group("q") is not None else m.group("bare")
        atoms.append((m.group("name"), m.group("type"), m.group("op"), value.replace('\\"', '"')))
        return f" __a{len(atoms) - 1} "

    expr = _ATOM.sub(sub, query).replace(" AND ", " and ").replace(" OR ", " or ").strip()
    if not expr:
        return lambda run: True
    if re.sub(r"__a\d+|and|or|not|[()\s]", "", expr):
        msg = f"unsupported NQL: {query}"
        raise ValueError(msg)

    def test(run: FakeRun2, atom: tuple[str, str, str, str]) -> bool:
        name, typ, op, raw = atom
        actual = run.value_of(name)
        if typ == "stringSet":
            values = set(actual or ())
            return raw in values if op == "CONTAINS" else False
        if actual is None:
            return op == "!="
        wanted: Any = raw
        if typ == "datetime":
            actual, wanted = parse_iso(actual) if isinstance(actual, str) else actual, parse_iso(raw)
        elif typ == "bool":
            wanted = raw.lower() == "true"
        elif typ in ("float", "integer", "int"):
            wanted = float(raw)
        if op == "MATCHES":
            return re.search(str(wanted), str(actual)) is not None
        ops: dict[str, Callable[[Any, Any], bool]] = {
            "=": lambda a, b: a == b, "!=": lambda a, b: a != b, ">": lambda a, b: a > b,
            ">=": lambda a, b: a >= b, "<": lambda a, b: a < b, "<=": lambda a, b: a <= b,
            "CONTAINS": lambda a, b: b in a}
        return ops[op](actual, wanted)

    code = compile(expr, "<nql>", "eval")

    def match(run: FakeRun2) -> bool:
        env = {f"__a{i}": test(run, a) for i, a in enumerate(atoms)}
        return bool(eval(code, {"__builtins__": {}}, env))

    return match


def _param(name: str, where: str = "query", typ: str = "string", *, required: bool = False,
           array: bool = False) -> dict[str, Any]:
    p: dict[str, Any] = {"name": name, "in": where, "required": required}
    if where == "body":
        p["schema"] = {"type": "object"}
    elif array:
        p.update(type="array", items={"type": typ}, collectionFormat="multi")
    else:
        p["type"] = typ
    return p


def _spec(base_path: str, ops: dict[str, tuple[str, str, list[dict[str, Any]], str | None]],
          definitions: dict[str, Any]) -> dict[str, Any]:
    paths: dict[str, dict[str, Any]] = {}
    for op_id, (method, path, params, model) in ops.items():
        response: dict[str, Any] = {"description": "ok"}
        if model is not None:
            response["schema"] = {"$ref": f"#/definitions/{model}"}
        paths.setdefault(base_path + path, {})[method] = {
            "operationId": op_id, "tags": ["api"], "parameters": params,
            "produces": ["application/json", "application/octet-stream"],
            "responses": {"200": response}}
    return {"swagger": "2.0", "info": {"title": "fake neptune", "version": "2.x"}, "basePath": "/",
            "schemes": ["http"], "consumes": ["application/json"], "produces": ["application/json"],
            "paths": paths, "definitions": definitions}


_TOKEN_HEADER = _param("X-Neptune-Api-Token", "header")
_DEFS: dict[str, Any] = {
    "ClientConfig": {"type": "object", "properties": {
        "apiUrl": {"type": "string"}, "applicationUrl": {"type": "string"},
        "pyLibVersions": {"$ref": "#/definitions/ClientVersions"},
        "multiPartUpload": {"$ref": "#/definitions/Enabled"}, "artifacts": {"$ref": "#/definitions/Enabled"}}},
    "ClientVersions": {"type": "object", "properties": {
        "minRecommendedVersion": {"type": "string"}, "minCompatibleVersion": {"type": "string"},
        "maxCompatibleVersion": {"type": "string"}}},
    "Enabled": {"type": "object", "properties": {"enabled": {"type": "boolean"}}},
    "AuthTokens": {"type": "object", "properties": {
        "accessToken": {"type": "string"}, "refreshToken": {"type": "string"}, "username": {"type": "string"}}},
    "ProjectWithRoleDTO": {"type": "object", "properties": {
        "id": {"type": "string"}, "name": {"type": "string"}, "organizationName": {"type": "string"},
        "organizationId": {"type": "string"}, "projectKey": {"type": "string"}, "version": {"type": "integer"}}},
}
BACKEND_SPEC = _spec("/api/backend", {
    "getClientConfig": ("get", "/v1/clients/config", [_TOKEN_HEADER, _param("alpha")], "ClientConfig"),
    "exchangeApiToken": ("get", "/v1/authorization/oauth-token", [_TOKEN_HEADER], "AuthTokens"),
    "getProject": ("get", "/v1/projects/get", [_param("projectIdentifier", required=True)], "ProjectWithRoleDTO"),
    "listProjects": ("get", "/v1/projects", [
        _param("organizationIdentifier"), _param("offset", typ="integer"), _param("limit", typ="integer"),
        _param("searchTerm"), _param("sortBy", array=True), _param("sortDirection", array=True),
        _param("userRelation")], None),
    "listOrganizations": ("get", "/v1/myOrganizations", [], None),
}, _DEFS)
_ANY: dict[str, Any] = {}
_ATTRIBUTE_TYPES = ("float", "int", "bool", "string", "datetime", "stringSet", "experimentState", "floatSeries",
                    "stringSeries", "imageSeries", "file", "fileSet", "notebookRef", "gitRef")
_MODEL_DEFS: dict[str, Any] = {
    # What the neptune 1.x client parses into objects (its reads in `init_model(mode="read-only")`,
    # `fetch_*_table`, `fetch_values`); our source reads the same answers as plain JSON.
    "Props": {"type": "object", "properties": {
        "attributeName": {"type": "string"}, "attributeType": {"type": "string"}, "value": _ANY, "values": _ANY,
        "last": _ANY, "lastStep": _ANY, "name": _ANY, "ext": _ANY, "size": _ANY}},
    "AttributeDTO": {"type": "object", "properties": {
        "name": {"type": "string"}, "type": {"type": "string"},
        **{f"{t}Properties": {"$ref": "#/definitions/Props"} for t in _ATTRIBUTE_TYPES}}},
    "Attributes": {"type": "object", "properties": {
        "id": {"type": "string"}, "attributes": {"type": "array", "items": {"$ref": "#/definitions/AttributeDTO"}}}},
    "LeaderboardEntry": {"type": "object", "properties": {
        "experimentId": {"type": "string"}, "type": {"type": "string"},
        "attributes": {"type": "array", "items": {"$ref": "#/definitions/AttributeDTO"}}}},
    "LeaderboardEntries": {"type": "object", "properties": {
        "matchingItemCount": {"type": "integer"},
        "entries": {"type": "array", "items": {"$ref": "#/definitions/LeaderboardEntry"}}}},
    "AttributeDefinition": {"type": "object", "properties": {"name": {"type": "string"}, "type": {"type": "string"}}},
    "AttributeDefinitions": {"type": "object", "properties": {
        "entries": {"type": "array", "items": {"$ref": "#/definitions/AttributeDefinition"}}}},
    "FloatPoint": {"type": "object", "properties": {
        "step": {"type": "number"}, "value": {"type": "number"}, "timestampMillis": {"type": "integer"}}},
    "FloatSeriesValues": {"type": "object", "properties": {
        "totalItemCount": {"type": "integer"},
        "values": {"type": "array", "items": {"$ref": "#/definitions/FloatPoint"}}}},
}
_SERIES_PARAMS = [_param("experimentId", required=True), _param("attribute", required=True),
                  _param("limit", typ="integer"), _param("offset", typ="integer"),
                  _param("skipToStep", typ="number")]
LEADERBOARD_SPEC = _spec("/api/leaderboard", {
    "getExperiment": ("get", "/v1/experiments", [_param("experimentId", required=True)], "Experiment"),
    "getExperimentAttributes": ("get", "/v1/attributes", [_param("experimentId", required=True)], "Attributes"),
    "getStringAttribute": ("get", "/v1/attributes/string", [
        _param("experimentId", required=True), _param("attribute", required=True)], "Props"),
    "getFloatSeriesValues": ("get", "/v1/attributes/series/float", _SERIES_PARAMS, "FloatSeriesValues"),
    "getStringSeriesValues": ("get", "/v1/attributes/series/string", _SERIES_PARAMS, None),
    "getImageSeriesValues": ("get", "/v1/attributes/series/image", _SERIES_PARAMS, None),
    "getImageSeriesValue": ("get", "/v1/attributes/series/image/value", [
        _param("experimentId"), _param("attribute"), _param("index", typ="integer")], None),
    "downloadAttribute": ("get", "/v1/attributes/download", [
        _param("experimentId", required=True), _param("attribute", required=True)], None),
    "prepareForDownloadFileSetAttributeZip": ("post", "/v1/attributes/downloadFileSetZip", [
        _param("experimentId", required=True), _param("attribute", required=True)], None),
    "getDownloadPrepareRequest": ("get", "/v1/storage/downloadRequest", [_param("id", required=True)], None),
    "searchLeaderboardAttributes": ("post", "/v1/leaderboard/attributes/search", [
        _param("projectIdentifier", required=True), _param("search"), _param("type", array=True),
        _param("params", "body")], "AttributeDefinitions"),
    "searchLeaderboardEntries": ("post", "/v1/leaderboard/entries/search", [
        _param("projectIdentifier", required=True), _param("type", array=True),
        _param("params", "body")], "LeaderboardEntries"),
}, {**_MODEL_DEFS, "Experiment": {"type": "object", "properties": {
    "id": {"type": "string"}, "type": {"type": "string"}, "shortId": {"type": "string"},
    "organizationName": {"type": "string"}, "projectName": {"type": "string"}, "trashed": {"type": "boolean"}}}})
ARTIFACTS_SPEC = _spec("/api/artifacts", {}, {})


class FakeNeptune2(FakeServer):
    """The 2.x protocol over `FakeServer` (see the module docstring)."""

    def __init__(self) -> None:
        super().__init__()
        self.projects: dict[str, FakeProject2] = {}
        self.max_offset = 10_000
        self.tie_order_seed = 7
        self.on_list_page: Callable[[int], None] | None = None
        self.refuse_types: dict[str, int] = {}
        """Knob: a listing of this container type (`model`, `modelVersion`) is answered with this status
        (an older server, a registry turned off)."""
        self.mix_into: dict[str, str] = {}
        """Knob: a listing of the key type also returns the containers of the value type (a broken server)."""
        self.omit_type = False
        """Knob: listing entries carry no `type` (the source must judge them by their shape)."""
        self._zips: dict[str, bytes] = {}
        self._list_pages = 0
        self._run_index: dict[str, FakeRun2] = {}

    # -- data -------------------------------------------------------------------------------------
    def project(self, qualified: str, key: str = "PROJ") -> FakeProject2:
        if qualified not in self.projects:
            ws, name = qualified.split("/")
            self.projects[qualified] = FakeProject2(ws, name, key)
        return self.projects[qualified]

    def add_run(self, qualified: str, created: datetime | None = None, **kw: Any) -> FakeRun2:
        proj = self.project(qualified)
        proj.counter += 1
        created = created or datetime(2024, 1, 1, tzinfo=timezone.utc) + timedelta(minutes=proj.counter)
        run = FakeRun2(sys_id=f"{proj.key}-{proj.counter}", created=created, **kw)
        if run.modified is None:
            run.modified = created
        proj.runs.append(run)
        return run

    def add_model(self, qualified: str, key: str, created: datetime | None = None, **kw: Any) -> FakeRun2:
        """A model `PROJ-<key>` (as `init_model(key=...)` makes it)."""
        proj = self.project(qualified)
        created = created or datetime(2024, 2, 1, tzinfo=timezone.utc) + timedelta(minutes=len(proj.runs))
        model = FakeRun2(sys_id=f"{proj.key}-{key}", created=created, container_type="model", **kw)
        model.modified = model.modified or created
        proj.runs.append(model)
        return model

    def add_model_version(self, qualified: str, model: FakeRun2, created: datetime | None = None,
                          **kw: Any) -> FakeRun2:
        """The model's next version `PROJ-<key>-<n>` (as `init_model_version(model=...)` makes it)."""
        proj = self.project(qualified)
        n = 1 + sum(1 for r in proj.runs if r.container_type == "modelVersion" and r.model_id == model.sys_id)
        created = created or model.created + timedelta(minutes=n)
        version = FakeRun2(sys_id=f"{model.sys_id}-{n}", created=created, container_type="modelVersion",
                           model_id=model.sys_id, **kw)
        version.modified = version.modified or created
        proj.runs.append(version)
        return version

    def _find_run(self, experiment_id: str) -> FakeRun2:
        # An index rebuilt on a miss (runs are added while the server runs): a linear scan per request
        # made the 10,000-run benchmark quadratic in the fake, not in the reader.
        index = self._run_index
        run = index.get(experiment_id)
        if run is None:
            index = {}
            for proj in self.projects.values():
                for each in proj.runs:
                    index[each.uuid] = index[f"{proj.qualified}/{each.sys_id}"] = each
            self._run_index = index
            run = index.get(experiment_id)
        if run is None:
            raise KeyError(experiment_id)
        return run

    # -- routes -----------------------------------------------------------------------------------
    def route(self, req: Request) -> Reply:
        p = req.path
        if p == "/api/backend/swagger.json":
            return Reply.of_json(BACKEND_SPEC)
        if p == "/api/leaderboard/swagger.json":
            return Reply.of_json(LEADERBOARD_SPEC)
        if p == "/api/artifacts/swagger.json":
            return Reply.of_json(ARTIFACTS_SPEC)
        if p == "/api/backend/v1/clients/config":
            return Reply.of_json({
                "apiUrl": self.base_url, "applicationUrl": self.base_url,
                "pyLibVersions": {"minRecommendedVersion": "1.0.0", "minCompatibleVersion": "1.0.0",
                                  "maxCompatibleVersion": "1.99.0"},
                "multiPartUpload": {"enabled": False}, "artifacts": {"enabled": False}})
        if p == "/api/backend/v1/authorization/oauth-token":
            key = self.api_key_of(req.headers.get("x-neptune-api-token"))
            if not self.valid_key(key):
                return Reply.error(401, "Invalid API token")
            assert key is not None
            return Reply.of_json({"accessToken": self.access_token(key), "refreshToken": "refresh-" + key,
                                  "username": "alice"})
        if p.endswith("/protocol/openid-connect/token"):
            form = dict(x.split("=", 1) for x in req.body.decode().split("&") if "=" in x)
            key = form.get("refresh_token", "").removeprefix("refresh-")
            if not self.valid_key(key):
                return Reply.error(401, "invalid_grant")
            return Reply.of_json({"access_token": self.access_token(key), "refresh_token": "refresh-" + key,
                                  "token_type": "Bearer", "expires_in": 3600})
        if p == "/api/backend/v1/projects/get":
            ident = req.arg("projectIdentifier") or ""
            proj = self.projects.get(ident)
            if proj is None:
                return Reply.error(404, f"Project {ident} not found")
            return Reply.of_json(self._project_doc(proj))
        if p == "/api/backend/v1/projects":
            ws = req.arg("organizationIdentifier")
            entries = [self._project_doc(pr) for pr in self.projects.values() if ws in (None, pr.workspace)]
            off, lim = int(req.arg("offset") or 0), int(req.arg("limit") or 200)
            return Reply.of_json({"entries": entries[off:off + lim], "matchingItemCount": len(entries),
                                  "totalItemCount": len(entries)})
        if p == "/api/backend/v1/myOrganizations":
            return Reply.of_json([{"id": ws, "name": ws} for ws in sorted({pr.workspace for pr in
                                                                            self.projects.values()})])
        if p == "/api/leaderboard/v1/leaderboard/entries/search":
            return self._search(req)
        if p == "/api/leaderboard/v1/leaderboard/attributes/search":  # a column's type (for sorting)
            ident = req.arg("projectIdentifier") or ""
            proj = next((pr for pr in self.projects.values() if ident in (pr.id, pr.qualified)), None)
            types = req.query.get("type") or ["run"]
            found = {(a["name"], a["type"]) for r in (proj.runs if proj else []) if r.container_type in types
                     for a in r.attributes() if (req.arg("search") or "") in a["name"]}
            return Reply.of_json({"entries": [{"name": n, "type": t} for n, t in sorted(found)]})
        if p.startswith("/api/leaderboard/v1/storage/blob/"):
            return Reply(200, self._zips[p.rsplit("/", 1)[-1]], "application/zip")
        if p == "/api/leaderboard/v1/storage/downloadRequest":
            ident = req.arg("id") or ""
            url = f"{self.base_url}/api/leaderboard/v1/storage/blob/{ident}"
            return Reply.of_json({"id": ident, "downloadUrl": url})
        ident = req.arg("experimentId") or ""
        project = next((pr for pr in self.projects.values() if ident in (pr.id, pr.qualified)), None)
        if project is not None and p == "/api/leaderboard/v1/attributes":  # the project as a container
            return Reply.of_json({"id": project.id, "attributes": [
                _attr("sys/id", "string", project.key), _attr("sys/name", "string", project.name)]})
        run = self._find_run(ident)
        attribute = req.arg("attribute") or ""
        if p == "/api/leaderboard/v1/experiments":
            proj = next(pr for pr in self.projects.values() if run in pr.runs)
            return Reply.of_json({"id": run.uuid, "shortId": run.sys_id, "organizationName": proj.workspace,
                                  "projectName": proj.name, "type": run.container_type, "trashed": run.trashed})
        if p == "/api/leaderboard/v1/attributes":
            return Reply.of_json({"id": run.uuid, "attributes": run.attributes()})
        if p == "/api/leaderboard/v1/attributes/string":
            attr = next((a for a in run.attributes() if a["name"] == attribute), None)
            if attr is None:
                return Reply.error(404, f"attribute {attribute} not found")
            return Reply.of_json(attr[f"{attr['type']}Properties"])
        if p == "/api/leaderboard/v1/attributes/series/float":
            return self._series(req, run.float_series[attribute])
        if p == "/api/leaderboard/v1/attributes/series/string":
            return self._series(req, run.string_series[attribute])
        if p == "/api/leaderboard/v1/attributes/series/image":
            images = run.image_series[attribute]
            return self._series(req, [(s, f"{i}", ts) for i, (s, _, ts) in enumerate(images)], with_index=True)
        if p == "/api/leaderboard/v1/attributes/series/image/value":
            return Reply(200, run.image_series[attribute][int(req.arg("index") or 0)][1], "image/png")
        if p == "/api/leaderboard/v1/attributes/download":
            content, ext = run.files[attribute]
            name = attribute.rsplit("/", 1)[-1] + (f".{ext}" if ext else "")
            return Reply(200, content, "application/octet-stream",
                         {"Content-Disposition": f'attachment; filename="{name}"'})
        if p == "/api/leaderboard/v1/attributes/downloadFileSetZip":
            members = run.file_sets[attribute]
            buf = io.BytesIO()
            with zipfile.ZipFile(buf, "w") as zf:
                for name, content in sorted(members.items()):
                    zf.writestr(name, content)
            ident = str(uuid.uuid4())
            self._zips[ident] = buf.getvalue()
            return Reply.of_json({"id": ident})
        return Reply.error(404, f"no route {req.method} {p}")

    @staticmethod
    def _project_doc(proj: FakeProject2) -> dict[str, Any]:
        return {"id": proj.id, "name": proj.name, "organizationName": proj.workspace,
                "organizationId": proj.workspace, "projectKey": proj.key, "version": 2}

    def _series(self, req: Request, points: list[tuple[float, Any, int]], *, with_index: bool = False) -> Reply:
        limit = int(req.arg("limit") or 1000)
        offset = int(req.arg("offset") or 0)
        skip = req.arg("skipToStep")
        # Steps are strictly increasing: the first step after `skipToStep` (exclusive) by bisection.
        start = 0 if skip is None else bisect.bisect_right(points, float(skip), key=lambda pt: pt[0])
        page = points[start + offset:start + offset + limit]
        values = []
        for step, value, ts in page:
            doc: dict[str, Any] = {"step": step, "timestampMillis": ts}
            if with_index:
                doc["index"] = int(value)
            else:
                doc["value"] = value
            values.append(doc)
        return Reply.of_json({"totalItemCount": len(points), "values": values})

    def _search(self, req: Request) -> Reply:
        ident = req.arg("projectIdentifier") or ""  # the client passes the project's name or its uuid
        proj = next((pr for pr in self.projects.values() if ident in (pr.id, pr.qualified)), None)
        if proj is None:
            return Reply.error(404, f"Project {ident} not found")
        params = req.json()
        pagination = params.get("pagination", {})
        offset, limit = int(pagination.get("offset", 0)), int(pagination.get("limit", 100))
        if offset + limit > self.max_offset:
            return Reply.error(400, f"offset + limit must not exceed {self.max_offset}")
        try:
            match = nql_matcher(params.get("query", {}).get("query", ""))
        except ValueError as exc:
            return Reply.error(400, "Syntax error: " + str(exc))
        types = req.query.get("type") or ["run"]
        for t in types:
            if t in self.refuse_types:
                return Reply.error(self.refuse_types[t], f"Unsupported container type {t}")
        types = [*types, *(self.mix_into[t] for t in types if t in self.mix_into)]
        runs = [r for r in proj.runs if r.container_type in types and match(r)]
        rng = random.Random(self.tie_order_seed)
        tie = {r.uuid: rng.random() for r in runs}
        sorting = params.get("sorting") or {}
        sort_by = (sorting.get("sortBy") or {}).get("name", "sys/creation_time")
        descending = sorting.get("dir", "descending") == "descending"

        def key(r: FakeRun2) -> tuple[Any, float]:
            if sort_by == "sys/creation_time":
                return (r.created, tie[r.uuid])
            v = r.value_of(sort_by)
            return (parse_iso(v) if sort_by.endswith("_time") and isinstance(v, str) else v, tie[r.uuid])

        runs.sort(key=key, reverse=descending)
        wanted = [f["path"] for f in params.get("attributeFilters", [])] or ["sys/id", "sys/creation_time"]
        entries = []
        for r in runs[offset:offset + limit]:
            attrs = [a for a in r.attributes() if a["name"] in wanted]
            entry = {"experimentId": r.uuid, "type": r.container_type, "attributes": attrs}
            if self.omit_type:
                del entry["type"]
            entries.append(entry)
        self._list_pages += 1
        if self.on_list_page is not None and limit > 0:
            self.on_list_page(self._list_pages)
        return Reply.of_json({"matchingItemCount": len(runs), "entries": entries})


def small_project(server: FakeNeptune2, qualified: str = "ws/proj") -> list[FakeRun2]:
    """Three runs with every field kind (the default-run test data)."""
    base = datetime(2024, 3, 1, 12, 0, tzinfo=timezone.utc)
    r1 = server.add_run(qualified, base, name="baseline", description="first try", tags={"a", "b"},
                        group_tags={"g1"}, state="idle")
    r1.fields.update({
        "params/lr": ("float", 0.01), "params/epochs": ("int", 10), "params/use_bn": ("bool", True),
        "params/optimizer": ("string", "adam"), "params/started": ("datetime", base + timedelta(seconds=5)),
        "params/labels": ("stringSet", ["cat", "dog"]),
    })
    ts0 = int(base.timestamp() * 1000)
    r1.float_series["train/loss"] = [(float(s), 1.0 / (s + 1), ts0 + s * 1000) for s in range(25)]
    r1.float_series["monitoring/cpu"] = [(float(s), 10.0 + s, ts0 + s * 500) for s in range(5)]
    r1.string_series["logs/stdout"] = [(float(s), f"line {s}", ts0 + s) for s in range(4)]
    r1.files["model/weights"] = (b"\x00\x01weights" * 10, "bin")
    r1.file_sets["source_code/files"] = {"train.py": b"print('hi')\n", "cfg/a.yaml": b"a: 1\n"}
    r2 = server.add_run(qualified, base + timedelta(hours=1), name="second", tags={"b"}, failed=True)
    r2.float_series["train/loss"] = [(float(s), 2.0 - s / 10, ts0 + 3_600_000 + s) for s in range(7)]
    r2.fields["params/lr"] = ("float", 0.1)
    r3 = server.add_run(qualified, base + timedelta(hours=2), name="third", custom_run_id="custom-3")
    r3.fields["eval/acc"] = ("float", 0.93)
    return [r1, r2, r3]


def small_registry(server: FakeNeptune2, qualified: str = "ws/proj") -> dict[str, FakeRun2]:
    """Two models, four versions in every stage, with fields, series and files (registry test data)."""
    base = datetime(2024, 2, 1, 9, 0, tzinfo=timezone.utc)
    ts0 = int(base.timestamp() * 1000)
    clf = server.add_model(qualified, "CLF", base, name="classifier", description="resnet classifier",
                           tags={"vision", "prod-line"})
    clf.fields["info/owner_team"] = ("string", "ml-core")
    clf.files["docs/card"] = (b"# model card\n", "md")
    out = {"CLF": clf}
    stages = ["archived", "production", "staging", "production"]
    for n, stage in enumerate(stages, start=1):
        v = server.add_model_version(qualified, clf, base + timedelta(hours=n), name=f"clf v{n}",
                                     description=f"version {n}", tags={f"v{n}"}, stage=stage)
        v.fields["params/lr"] = ("float", 0.1 / n)
        v.fields["source/run"] = ("string", "PROJ-1")
        v.float_series["val/acc"] = [(float(s), 0.5 + n / 10 + s / 100, ts0 + n * 3_600_000 + s * 1000)
                                     for s in range(6)]
        v.files["model/weights"] = (bytes([n]) * 100 + b"weights", "pt")
        out[f"CLF-{n}"] = v
    det = server.add_model(qualified, "DET", base + timedelta(days=1), name="detector", tags=set())
    out["DET"] = det
    out["DET-1"] = server.add_model_version(qualified, det, base + timedelta(days=1, hours=1), name="",
                                            stage="none")
    return out


def _json_default(value: Any) -> Any:  # pragma: no cover - debugging helper
    return iso(value) if isinstance(value, datetime) else str(value)


def dump_state(server: FakeNeptune2) -> str:  # pragma: no cover - debugging helper
    return json.dumps({q: [r.sys_id for r in p.runs] for q, p in server.projects.items()}, default=_json_default)
