"""Which W&B errors are worth retrying.

Transient: connection errors and timeouts anywhere in the exception chain, HTTP 429 and 5xx
(W&B's filestream rate limit answers 429), and wandb's `CommError` wrapping one of those.
Permanent: HTTP 413 (a request too large does not shrink by retrying, wandb/wandb#8038), other
4xx, validation errors, local file errors, and everything this tool raises on purpose.
"""

from __future__ import annotations

import re

from neptune_migrate.errors import MigrateError, TransientError
from neptune_migrate.model import ErrorKind

_TRANSIENT_TEXT = re.compile(
    r"timed? ?out|timeout|connection (?:refused|reset|aborted)|max retries exceeded|"
    r"temporarily unavailable|rate limit|\b429\b|\b50[0234]\b",
    re.IGNORECASE,
)


def _chain(error: BaseException) -> list[BaseException]:
    seen: list[BaseException] = []
    current: BaseException | None = error
    while current is not None and current not in seen and len(seen) < 20:
        seen.append(current)
        current = current.__cause__ or current.__context__
    return seen


def _status(error: BaseException) -> int | None:
    response = getattr(error, "response", None)
    status = getattr(response, "status_code", None)
    if isinstance(status, int):
        return status
    status = getattr(error, "status_code", None)
    return status if isinstance(status, int) else None


def classify_error(error: Exception) -> ErrorKind:
    """Transient errors are retried by the pipeline; permanent ones fail the run."""
    if isinstance(error, TransientError):
        return "transient"
    if isinstance(error, MigrateError):
        return "permanent"
    for err in _chain(error):
        status = _status(err)
        if status is not None:
            return "transient" if status == 429 or status >= 500 else "permanent"
        if isinstance(err, ConnectionError | TimeoutError):
            return "transient"
        module = type(err).__module__
        if module.startswith(("requests", "urllib3")) and any(
            word in type(err).__name__ for word in ("Connection", "Timeout", "MaxRetry", "ChunkedEncoding")
        ):
            return "transient"
        if module.startswith("wandb") and type(err).__name__ == "CommError" and _TRANSIENT_TEXT.search(str(err)):
            return "transient"
    return "permanent"
