"""Reachability probes for `Destination.check()`: one cheap request with a short timeout.

A destination that refuses connections is reported up front (exit 3, `UnreachableError`), before
any run is tried, instead of after minutes of retries per run. Anything that answers at all (any
HTTP status, a TLS handshake error) counts as reachable: authentication and the rest are the
import's business.
"""

from __future__ import annotations

import socket
import ssl
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from urllib.parse import urlsplit, urlunsplit

from neptune_migrate.errors import UnreachableError, one_line

PROBE_BUDGET = 8.0
"""Seconds one probe may take in all (the contract: detected in under 10 s)."""
PROBE_ATTEMPTS = 3
"""Connections tried before a destination counts as unreachable (a restarting server gets a second chance)."""


def public_url(url: str) -> str:
    """`url` without user, password, query or fragment (for messages)."""
    parts = urlsplit(url)
    return urlunsplit((parts.scheme, parts.netloc.rpartition("@")[2], parts.path, "", ""))


def _attempts(what: str, where: str, connect: Callable[[float], None]) -> None:
    deadline = time.monotonic() + PROBE_BUDGET
    last: BaseException | None = None
    for attempt in range(PROBE_ATTEMPTS):
        left = deadline - time.monotonic()
        if left <= 0.2:
            break
        try:
            connect(min(3.0, left))
        except OSError as exc:
            last = exc
            if attempt + 1 < PROBE_ATTEMPTS:
                time.sleep(min(0.5, max(0.0, deadline - time.monotonic())))
            continue
        return
    cause = one_line(last) if last is not None else "no answer"
    msg = f"cannot reach {what} at {where}: {cause} (checked before any run; nothing was written)"
    raise UnreachableError(msg) from last


def probe_http(url: str, what: str) -> None:
    """Raise `UnreachableError` unless something answers HTTP at `url` (any status will do)."""
    parts = urlsplit(url)
    target = urlunsplit((parts.scheme, parts.netloc.rpartition("@")[2], parts.path or "/", "", ""))

    def connect(timeout: float) -> None:
        request = urllib.request.Request(target, method="GET", headers={"User-Agent": "neptune-migrate probe"})
        try:
            with urllib.request.urlopen(request, timeout=timeout):
                return
        except urllib.error.HTTPError:
            return  # an answer: reachable
        except urllib.error.URLError as exc:
            if isinstance(exc.reason, ssl.SSLError):
                return  # a TLS peer answered; certificate trouble is not reachability
            if isinstance(exc.reason, OSError):
                raise exc.reason from None
            raise OSError(str(exc.reason)) from exc
        except ssl.SSLError:
            return

    _attempts(what, public_url(url), connect)


def probe_tcp(host: str, port: int, what: str) -> None:
    """Raise `UnreachableError` unless `host:port` accepts a TCP connection."""

    def connect(timeout: float) -> None:
        with socket.create_connection((host, port), timeout=timeout):
            return

    _attempts(what, f"{host}:{port}", connect)
