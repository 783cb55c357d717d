"""See the `Retry-After` of MLflow's HTTP answers, which MLflow's client does not expose.

With MLflow's own HTTP retries off (`MLFLOW_HTTP_REQUEST_MAX_RETRIES=0`), urllib3 still treats a
429 or 503 as "retries exhausted" and raises before any response reaches MLflow, so the header is
lost. `install()` wraps `mlflow.utils.request_utils._get_request_session` (the one function every
MLflow REST and artifact request gets its `requests.Session` from) so that each session carries
one adapter of ours: no retries at all, statuses returned as they are (MLflow then raises its usual
error with the status), and the `Retry-After` of a 429/503 remembered per thread. The destination
reads it back with `last_retry_after()` right after a failed request.
"""

from __future__ import annotations

import threading
import time
from typing import Any

from neptune_migrate.retry import RETRY_AFTER_STATUSES, parse_retry_after

_local = threading.local()
_install_lock = threading.Lock()
_MARK = "_neptune_migrate_tap"


def clear() -> None:
    """Forget the current thread's last `Retry-After` (call before each request)."""
    _local.deadline = None


def last_retry_after() -> float | None:
    """Seconds still to wait per the `Retry-After` of this thread's last 429/503, if it had one."""
    deadline: float | None = getattr(_local, "deadline", None)
    if deadline is None:
        return None
    return max(0.0, deadline - time.monotonic())


def _record(response: Any) -> None:
    if response.status_code in RETRY_AFTER_STATUSES:
        seconds = parse_retry_after(response.headers.get("Retry-After"))
        _local.deadline = None if seconds is None else time.monotonic() + seconds
    else:
        _local.deadline = None


def _tap_adapter() -> Any:
    from mlflow.environment_variables import MLFLOW_HTTP_POOL_CONNECTIONS, MLFLOW_HTTP_POOL_MAXSIZE
    from mlflow.utils.request_utils import TCPKeepAliveHTTPAdapter
    from urllib3.util import Retry

    class TapAdapter(TCPKeepAliveHTTPAdapter):
        def send(self, request: Any, *args: Any, **kwargs: Any) -> Any:
            response = super().send(request, *args, **kwargs)
            _record(response)
            return response

    return TapAdapter(
        pool_connections=MLFLOW_HTTP_POOL_CONNECTIONS.get(),  # type: ignore[no-untyped-call]
        pool_maxsize=MLFLOW_HTTP_POOL_MAXSIZE.get(),  # type: ignore[no-untyped-call]
        max_retries=Retry(total=0, connect=0, read=0, status=0, redirect=0, raise_on_status=False,
                          respect_retry_after_header=False),
    )


def install() -> bool:
    """Put the tap on every session MLflow uses in this process (idempotent). False when this
    MLflow version has no session factory to wrap (then waits fall back to backoff)."""
    from mlflow.utils import request_utils

    with _install_lock:
        original = getattr(request_utils, "_get_request_session", None)
        if original is None:
            return False
        if getattr(original, _MARK, False):
            return True

        def tapped(*args: Any, **kwargs: Any) -> Any:
            session = original(*args, **kwargs)
            if not getattr(session, _MARK, False):
                adapter = _tap_adapter()
                session.mount("http://", adapter)
                session.mount("https://", adapter)
                setattr(session, _MARK, True)
            return session

        setattr(tapped, _MARK, True)
        request_utils._get_request_session = tapped
        return True
