"""Which MLflow errors are worth retrying.

Transient: connection errors and timeouts (anywhere in the exception chain), HTTP 429 and 5xx
(from the tracking REST API or the artifact proxy), MLflow error codes that mean "try later", and
SQLite's "database is locked". Everything else (bad requests, validation errors, missing runs,
permission errors) is permanent.
"""

from __future__ import annotations

import re

from neptune_migrate.destinations.classify import (
    exception_chain,
    is_network_error,
    is_transient_status,
    own_error_kind,
    response_status,
)
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
_NETWORK_WORDS = ("Connection", "Timeout", "MaxRetry", "Protocol", "ChunkedEncoding", "ReadTimeout",
                  "NewConnection", "ProxyError", "ResponseError")
"""Class-name parts of the requests and urllib3 errors that mean the server was not reached."""


def classify_error(error: Exception) -> ErrorKind:
    """Transient errors are retried by the pipeline; permanent ones fail the run."""
    own = own_error_kind(error)
    if own is not None:
        return own
    for err in exception_chain(error):
        if is_network_error(err, _NETWORK_WORDS):
            return "transient"
        if is_transient_status(response_status(err)):
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
                    return "transient" if is_transient_status(int(status.group(1))) else "permanent"
                if _TRANSIENT_TEXT.search(message):
                    return "transient"
        elif type(err).__module__.startswith("sqlalchemy") and _TRANSIENT_TEXT.search(str(err)):
            return "transient"
    return "permanent"

