"""Which W&B errors are worth retrying.

Transient: connection errors and timeouts anywhere in the exception chain, HTTP 429 and 5xx
(W&B's filestream rate limit answers 429), and wandb's `CommError` wrapping one of those.
Permanent: HTTP 413 (a request too large does not shrink by retrying, wandb/wandb#8038), other
4xx, validation errors, local file errors, and everything this tool raises on purpose.
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

_TRANSIENT_TEXT = re.compile(
    r"timed? ?out|timeout|connection (?:refused|reset|aborted)|max retries exceeded|"
    r"temporarily unavailable|rate limit|\b429\b|\b50[0234]\b",
    re.IGNORECASE,
)
_NETWORK_WORDS = ("Connection", "Timeout", "MaxRetry", "ChunkedEncoding")
"""Class-name parts of the requests and urllib3 errors that mean the server was not reached."""


def _status(error: BaseException) -> int | None:
    status = response_status(error)
    if status is not None:
        return status
    status = getattr(error, "status_code", None)
    return status if isinstance(status, int) else None


def classify_error(error: Exception) -> ErrorKind:
    """Transient errors are retried by the pipeline; permanent ones fail the run."""
    own = own_error_kind(error)
    if own is not None:
        return own
    for err in exception_chain(error):
        status = _status(err)
        if status is not None:
            return "transient" if is_transient_status(status) else "permanent"
        if is_network_error(err, _NETWORK_WORDS):
            return "transient"
        module = type(err).__module__
        if module.startswith("wandb") and type(err).__name__ == "CommError" and _TRANSIENT_TEXT.search(str(err)):
            return "transient"
    return "permanent"
