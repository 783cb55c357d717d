"""A fault-injecting, recording HTTP proxy in front of a real server (tests only).

`FaultProxy(upstream="127.0.0.1:5000", faults=[Fault("POST", "/log-batch", every=3, action="429")])`
forwards every request to the real server and records (method, path); a matching request may
instead get a 429 or 503 (with the fault's `Retry-After`, seconds or an HTTP-date), or a dropped
connection (closed before any response, after or before forwarding it upstream).

`chaos=RandomFaults(rate=0.2, seed=7)` faults that fraction of all requests, the action drawn
from a seeded RNG (deterministic for one client thread); `proxy.down(8)` makes the server look
dead (every connection dropped) for 8 s. `proxy.log` keeps (monotonic time, method, path, action)
of every request, so tests can measure the waits between them.
"""

from __future__ import annotations

import contextlib
import http.client
import random
import re
import socket
import threading
import time
from collections.abc import Callable
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
    retry_after: str | Callable[[], str] | None = None
    """`Retry-After` sent with a 429/503 (a callable is asked at send time, e.g. for an HTTP-date);
    None: "0.05" for a 429, none for a 503."""
    seen: int = 0
    fired: int = 0


@dataclass
class RandomFaults:
    """Fault a fraction of every request, with actions drawn from a seeded RNG."""

    rate: float
    seed: int = 0
    actions: tuple[Action, ...] = ("503", "429", "drop", "drop_after_forward")
    retry_after: str = "0"
    """`Retry-After` of the random 429s and 503s."""
    path_regex: str = ""
    """Only requests whose path matches (empty: all)."""

    def __post_init__(self) -> None:
        self.rng = random.Random(self.seed)


@dataclass
class FaultProxy:
    upstream: str
    faults: list[Fault] = field(default_factory=list)
    chaos: RandomFaults | None = None
    requests: list[tuple[str, str]] = field(default_factory=list)
    injected: list[tuple[str, str, str]] = field(default_factory=list)
    log: list[tuple[float, str, str, str | None]] = field(default_factory=list)
    """(time.monotonic(), method, path, injected action or None) of every request."""

    def __post_init__(self) -> None:
        self._lock = threading.Lock()
        self._down_until = 0.0
        proxy = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, format: str, *args: object) -> None:  # noqa: A002
                pass

            def _handle(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(length) if length else b""
                action, retry_after = proxy._decide(self.command, self.path)
                with proxy._lock:
                    proxy.requests.append((self.command, self.path))
                    proxy.log.append((time.monotonic(), self.command, self.path, action))
                if action == "drop":
                    self._drop()
                    return
                if action in ("429", "503"):
                    payload = b'{"error_code": "TEMPORARILY_UNAVAILABLE", "message": "injected"}'
                    self.send_response(int(action))
                    if retry_after is not None:
                        self.send_header("Retry-After", retry_after)
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

    def _decide(self, method: str, path: str) -> tuple[Action | None, str | None]:
        with self._lock:
            if time.monotonic() < self._down_until:
                self.injected.append((method, path, "down"))
                return "drop", None
            for f in self.faults:
                if f.method == method and re.search(f.path_regex, path):
                    f.seen += 1
                    if f.fired < f.limit and f.seen % f.every == 0:
                        f.fired += 1
                        self.injected.append((method, path, f.action))
                        value = f.retry_after() if callable(f.retry_after) else f.retry_after
                        if value is None and f.action == "429":
                            value = "0.05"
                        return f.action, value
            r = self.chaos
            if r is not None and re.search(r.path_regex, path) and r.rng.random() < r.rate:
                action = r.rng.choice(r.actions)
                self.injected.append((method, path, action))
                return action, r.retry_after if action in ("429", "503") else None
        return None, None

    def down(self, seconds: float) -> None:
        """Drop every connection for the next `seconds` (the server looks dead)."""
        with self._lock:
            self._down_until = time.monotonic() + seconds

    def up(self) -> None:
        """End a `down()` window now."""
        with self._lock:
            self._down_until = 0.0

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
