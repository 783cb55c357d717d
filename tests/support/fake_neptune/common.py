"""Shared parts of the fake Neptune servers (2.x and 3.x protocols), tests only.

`FakeServer` is a `ThreadingHTTPServer` on 127.0.0.1 (port 0) that:
- issues API tokens (`api_token()`: base64 JSON `{api_address, api_url, api_key}` pointing back at
  itself) and exchanges them for long-lived HS256 JWTs (`exp`, `azp`, `iss`), refreshable at the
  Keycloak-style `.../protocol/openid-connect/token` route;
- refuses calls without a valid bearer token (401) and keys it has revoked (`revoke(key)`);
- counts requests (`counts[(method, path)]`, `log` of (method, path, query)) so tests can assert
  how many requests an export made;
- injects faults by rule (`fault(...)`): a 429 with a `Retry-After` (multi-digit values, such as
  Neptune's `12`), a 503, a 401 or 403, or a dropped connection.

A protocol subclass implements `route(request) -> Reply`.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import re
import socket
import threading
import time
import uuid
from collections import Counter
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Literal
from urllib.parse import parse_qs, urlsplit

FaultAction = Literal["429", "503", "401", "403", "drop"]

_JWT_SECRET = b"fake-neptune-secret"
OPEN_PATHS = ("/swagger.json", "/v1/clients/config", "/authorization/oauth-token", "/openid-connect/token")
"""Routes answered without a bearer token (as on a real server)."""


def _b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def make_jwt(claims: dict[str, Any]) -> str:
    """An HS256 JWT (the clients decode it without verifying)."""
    header = _b64url(json.dumps({"alg": "HS256", "typ": "JWT"}).encode())
    body = _b64url(json.dumps(claims).encode())
    sig = hmac.new(_JWT_SECRET, f"{header}.{body}".encode(), hashlib.sha256).digest()
    return f"{header}.{body}.{_b64url(sig)}"


def jwt_claims(token: str) -> dict[str, Any] | None:
    """The claims of a JWT this server signed, or None."""
    try:
        header, body, sig = token.split(".")
    except ValueError:
        return None
    good = _b64url(hmac.new(_JWT_SECRET, f"{header}.{body}".encode(), hashlib.sha256).digest())
    if not hmac.compare_digest(good, sig):
        return None
    claims: dict[str, Any] = json.loads(base64.urlsafe_b64decode(body + "=" * (-len(body) % 4)))
    return claims


@dataclass
class Fault:
    """Answer matching requests with a fault instead of the real reply."""

    path_regex: str
    action: FaultAction
    times: int = 1
    """How many matching requests get the fault (then the rule is spent)."""
    retry_after: str | None = None
    """`Retry-After` header of a 429/503 (e.g. "12": two digits, which neptune 1.x reads as 1)."""
    method: str | None = None
    skip: int = 0
    """Let this many matching requests through before faulting."""
    fired: int = 0


@dataclass
class Request:
    method: str
    path: str
    query: dict[str, list[str]]
    body: bytes
    headers: dict[str, str]

    def arg(self, name: str, default: str | None = None) -> str | None:
        values = self.query.get(name)
        return values[0] if values else default

    def json(self) -> Any:
        return json.loads(self.body or b"{}")


@dataclass
class Reply:
    status: int = 200
    body: bytes = b""
    content_type: str = "application/json"
    headers: dict[str, str] = field(default_factory=dict)

    @classmethod
    def of_json(cls, doc: Any, status: int = 200) -> Reply:
        return cls(status, json.dumps(doc).encode())

    @classmethod
    def error(cls, status: int, title: str) -> Reply:
        return cls.of_json({"code": status, "title": title, "message": title}, status)


class FakeServer:
    """The protocol-independent half of a fake Neptune server (see the module docstring)."""

    def __init__(self) -> None:
        self.api_keys: set[str] = {"key-" + uuid.uuid4().hex}
        self.revoked: set[str] = set()
        self.counts: Counter[tuple[str, str]] = Counter()
        self.log: list[tuple[str, str, str]] = []
        self.times: list[float] = []
        """`time.monotonic()` at the arrival of each request in `log`."""
        self.faults: list[Fault] = []
        self.in_flight = 0
        self.max_in_flight = 0
        """Most requests the server was answering at once (for `--workers` tests)."""
        self.latency = 0.0
        """Seconds each reply is delayed (for concurrency and rate tests)."""
        self._lock = threading.Lock()
        self._httpd: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None

    # -- lifecycle --------------------------------------------------------------------------------
    def start(self) -> FakeServer:
        server = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def setup(self) -> None:
                super().setup()
                # Headers and body go out in two writes: without TCP_NODELAY, Nagle's algorithm and the
                # client's delayed ACK hold every answer ~40 ms, and the fake measures that, not the client.
                self.connection.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)

            def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - stdlib signature
                return

            def _serve(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(length) if length else b""
                parts = urlsplit(self.path)
                req = Request(self.command, parts.path, parse_qs(parts.query, keep_blank_values=True), body,
                              {k.lower(): v for k, v in self.headers.items()})
                reply = server.handle(req)
                if reply is None:  # dropped connection
                    self.close_connection = True
                    self.connection.close()
                    return
                self.send_response(reply.status)
                self.send_header("Content-Type", reply.content_type)
                self.send_header("Content-Length", str(len(reply.body)))
                for k, v in reply.headers.items():
                    self.send_header(k, v)
                self.end_headers()
                self.wfile.write(reply.body)

            do_GET = do_POST = do_PUT = _serve  # noqa: N815 - stdlib names

        self._httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._httpd.daemon_threads = True
        self._thread = threading.Thread(target=self._httpd.serve_forever, daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        if self._httpd is not None:
            self._httpd.shutdown()
            self._httpd.server_close()
            self._httpd = None

    def __enter__(self) -> FakeServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    @property
    def base_url(self) -> str:
        assert self._httpd is not None
        host, port = self._httpd.server_address[:2]
        return f"http://{host}:{port}"

    # -- tokens -----------------------------------------------------------------------------------
    def api_token(self, key: str | None = None) -> str:
        """An API token for this server (base64 JSON, as Neptune issues them)."""
        doc = {"api_address": self.base_url, "api_url": self.base_url,
               "api_key": key or next(iter(self.api_keys))}
        return base64.b64encode(json.dumps(doc).encode()).decode()

    def revoke(self, key: str | None = None) -> None:
        self.revoked.add(key or next(iter(self.api_keys)))

    def access_token(self, key: str) -> str:
        now = int(time.time())
        return make_jwt({"exp": now + 3600, "iat": now, "azp": "neptune-cli", "sub": key,
                         "iss": f"{self.base_url}/auth/realms/neptune"})

    def valid_key(self, key: str | None) -> bool:
        return key is not None and key in self.api_keys and key not in self.revoked

    def bearer_ok(self, req: Request) -> bool:
        auth = req.headers.get("authorization", "")
        if not auth.lower().startswith("bearer "):
            return False
        claims = jwt_claims(auth[7:].strip())
        return claims is not None and self.valid_key(str(claims.get("sub")))

    def api_key_of(self, header_token: str | None) -> str | None:
        """The `api_key` inside an API token sent in `X-Neptune-Api-Token`."""
        if not header_token:
            return None
        try:
            doc = json.loads(base64.b64decode(header_token))
        except (ValueError, TypeError):
            return None
        return str(doc.get("api_key")) if isinstance(doc, dict) else None

    # -- faults and counting ----------------------------------------------------------------------
    def fault(self, path_regex: str, action: FaultAction, *, times: int = 1, retry_after: str | None = None,
              method: str | None = None, skip: int = 0) -> Fault:
        rule = Fault(path_regex, action, times, retry_after, method, skip)
        with self._lock:
            self.faults.append(rule)
        return rule

    def count(self, path_regex: str = "", method: str | None = None) -> int:
        """Requests seen whose path matches `path_regex` (faulted ones included)."""
        rx = re.compile(path_regex)
        with self._lock:
            return sum(n for (m, p), n in self.counts.items()
                       if rx.search(p) and (method is None or m == method))

    def reset_counts(self) -> None:
        with self._lock:
            self.counts.clear()
            self.log.clear()
            self.times.clear()

    def _pick_fault(self, req: Request) -> Fault | None:
        with self._lock:
            for rule in self.faults:
                if rule.fired >= rule.times:
                    continue
                if rule.method is not None and rule.method != req.method:
                    continue
                if not re.search(rule.path_regex, req.path):
                    continue
                if rule.skip > 0:
                    rule.skip -= 1
                    continue
                rule.fired += 1
                return rule
        return None

    def handle(self, req: Request) -> Reply | None:
        with self._lock:
            self.counts[(req.method, req.path)] += 1
            self.log.append((req.method, req.path, json.dumps(req.query, sort_keys=True)))
            self.times.append(time.monotonic())
            self.in_flight += 1
            self.max_in_flight = max(self.max_in_flight, self.in_flight)
        try:
            return self._handle(req)
        finally:
            with self._lock:
                self.in_flight -= 1

    def _handle(self, req: Request) -> Reply | None:
        if self.latency:
            time.sleep(self.latency)
        rule = self._pick_fault(req)
        if rule is not None:
            if rule.action == "drop":
                return None
            headers = {"Retry-After": rule.retry_after} if rule.retry_after is not None else {}
            title = {"429": "Too Many Requests", "503": "Service Unavailable", "401": "Unauthorized",
                     "403": "Forbidden"}[rule.action]
            return Reply(int(rule.action), json.dumps({"title": title}).encode(), headers=headers)
        if not any(req.path.endswith(p) for p in OPEN_PATHS) and not self.bearer_ok(req):
            return Reply.error(401, "Unauthorized")
        try:
            return self.route(req)
        except KeyError as exc:
            return Reply.error(404, f"not found: {exc}")

    def route(self, req: Request) -> Reply:
        raise NotImplementedError
