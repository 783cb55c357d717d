"""A fault-injecting, recording HTTP proxy in front of a real server (tests only).

`FaultProxy(upstream="127.0.0.1:5000", faults=[Fault("POST", "/log-batch", every=3, action="429")])`
forwards every request to the real server and records (method, path); a matching request may
instead get a 429 with Retry-After, a 503, or a dropped connection (closed before any response,
after or before forwarding it upstream).
"""

from __future__ import annotations

import contextlib
import http.client
import re
import socket
import threading
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Literal

Action = Literal["429", "503", "drop", "drop_after_forward"]


@dataclass
class Fault:
    method: str
    path_regex: str
    action: Action
    every: int = 2
    """Fault every n-th matching request (1 = all of them)."""
    limit: int = 1_000_000
    """At most this many faults from this rule."""
    seen: int = 0
    fired: int = 0


@dataclass
class FaultProxy:
    upstream: str
    faults: list[Fault] = field(default_factory=list)
    requests: list[tuple[str, str]] = field(default_factory=list)
    injected: list[tuple[str, str, str]] = field(default_factory=list)

    def __post_init__(self) -> None:
        self._lock = threading.Lock()
        proxy = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, format: str, *args: object) -> None:  # noqa: A002
                pass

            def _handle(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(length) if length else b""
                action = proxy._decide(self.command, self.path)
                with proxy._lock:
                    proxy.requests.append((self.command, self.path))
                if action == "drop":
                    self._drop()
                    return
                if action in ("429", "503"):
                    payload = b'{"error_code": "TEMPORARILY_UNAVAILABLE", "message": "injected"}'
                    self.send_response(int(action))
                    if action == "429":
                        self.send_header("Retry-After", "0.05")
                    self.send_header("Content-Type", "application/json")
                    self.send_header("Content-Length", str(len(payload)))
                    self.end_headers()
                    self.wfile.write(payload)
                    return
                host, port = proxy.upstream.rsplit(":", 1)
                conn = http.client.HTTPConnection(host, int(port), timeout=120)
                headers = {k: v for k, v in self.headers.items() if k.lower() not in ("host", "connection")}
                conn.request(self.command, self.path, body=body, headers=headers)
                resp = conn.getresponse()
                data = resp.read()
                conn.close()
                if action == "drop_after_forward":
                    self._drop()
                    return
                self.send_response(resp.status)
                for k, v in resp.getheaders():
                    if k.lower() not in ("transfer-encoding", "connection", "content-length"):
                        self.send_header(k, v)
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def _drop(self) -> None:
                self.close_connection = True
                with contextlib.suppress(OSError):
                    self.connection.shutdown(socket.SHUT_RDWR)

            do_GET = do_POST = do_PUT = do_PATCH = do_DELETE = do_HEAD = _handle  # noqa: N815

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._server.daemon_threads = True
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)

    def _decide(self, method: str, path: str) -> Action | None:
        with self._lock:
            for f in self.faults:
                if f.method == method and re.search(f.path_regex, path):
                    f.seen += 1
                    if f.fired < f.limit and f.seen % f.every == 0:
                        f.fired += 1
                        self.injected.append((method, path, f.action))
                        return f.action
        return None

    @property
    def url(self) -> str:
        host, port = self._server.server_address[:2]
        return f"http://{host}:{port}"

    def __enter__(self) -> FaultProxy:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._server.shutdown()
        self._server.server_close()

    def mutating_requests(self) -> list[tuple[str, str]]:
        """Requests that could change server state (MLflow's read endpoints excluded)."""
        reads = re.compile(r"/(get|search|list|get-history|get-by-name)(\b|[-/?])|/artifacts\?|/health")
        return [(m, p) for m, p in self.requests
                if m not in ("GET", "HEAD") and not reads.search(p)]
