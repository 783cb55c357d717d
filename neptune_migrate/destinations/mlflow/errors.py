"""Which MLflow errors are worth retrying.

Transient: connection errors and timeouts (anywhere in the exception chain), HTTP 429 and 5xx
(from the tracking REST API or the artifact proxy), MLflow error codes that mean "try later", and
SQLite's "database is locked". Everything else (bad requests, validation errors, missing runs,
permission errors) is permanent.
"""

from __future__ import annotations

import re

from neptune_migrate.errors import MigrateError, TransientError
from neptune_migrate.model import ErrorKind

TRANSIENT_CODES = frozenset({
    "TEMPORARILY_UNAVAILABLE",
    "REQUEST_LIMIT_EXCEEDED",
    "RESOURCE_EXHAUSTED",
    "DEADLINE_EXCEEDED",
    "ABORTED",
    "SERVICE_UNDER_MAINTENANCE",
    "WORKSPACE_TEMPORARILY_UNAVAILABLE",
})
"""MLflow `error_code` names that mean "try again later"."""

_TRANSIENT_TEXT = re.compile(
    r"failed with exception|timed? ?out|timeout|connection (?:refused|reset|aborted)|"
    r"max retries exceeded|database is locked|remote end closed|temporarily unavailable",
    re.IGNORECASE,
)
_STATUS_TEXT = re.compile(r"failed with error code (\d{3})")


def _http_status(error: BaseException) -> int | None:
    response = getattr(error, "response", None)
    status = getattr(response, "status_code", None)
    return status if isinstance(status, int) else None


def _transient_status(status: int | None) -> bool:
    return status is not None and (status == 429 or status >= 500)


def _chain(error: BaseException) -> list[BaseException]:
    seen: list[BaseException] = []
    current: BaseException | None = error
    while current is not None and current not in seen and len(seen) < 20:
        seen.append(current)
        current = current.__cause__ or current.__context__
    return seen


def _network_error(error: BaseException) -> bool:
    """A connection error or timeout from Python, requests or urllib3."""
    if isinstance(error, ConnectionError | TimeoutError):
        return True
    module = type(error).__module__
    if module.startswith(("requests", "urllib3")):
        name = type(error).__name__
        return any(word in name for word in ("Connection", "Timeout", "MaxRetry", "Protocol", "ChunkedEncoding",
                                              "ReadTimeout", "NewConnection", "ProxyError", "ResponseError"))
    return False


def classify_error(error: Exception) -> ErrorKind:
    """Transient errors are retried by the pipeline; permanent ones fail the run."""
    if isinstance(error, TransientError):
        return "transient"
    if isinstance(error, MigrateError):
        return "permanent"
    for err in _chain(error):
        if _network_error(err):
            return "transient"
        if _transient_status(_http_status(err)):
            return "transient"
        code = getattr(err, "error_code", None)
        if isinstance(code, str) and type(err).__module__.startswith("mlflow"):
            if code in TRANSIENT_CODES:
                return "transient"
            if code == "INTERNAL_ERROR":
                if type(err).__name__ == "RestException":
                    return "transient"  # the server answered 500
                message = str(err)
                status = _STATUS_TEXT.search(message)
                if status is not None:
                    return "transient" if _transient_status(int(status.group(1))) else "permanent"
                if _TRANSIENT_TEXT.search(message):
                    return "transient"
        elif type(err).__module__.startswith("sqlalchemy") and _TRANSIENT_TEXT.search(str(err)):
            return "transient"
    return "permanent"

