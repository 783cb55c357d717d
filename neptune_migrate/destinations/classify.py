"""What every destination's error classification shares.

Each destination's `errors.py` keeps its own rules (which SDK error codes, class names and messages
mean "try later"); these helpers only handle what comes from this tool, from Python, from requests
and from urllib3: the tool's own errors, the exception chain, network errors and HTTP statuses.
"""

from __future__ import annotations

from collections.abc import Iterable

from neptune_migrate.errors import MigrateError, TransientError
from neptune_migrate.model import ErrorKind

CHAIN_LIMIT = 20
"""Exceptions looked at in one chain (`__cause__` / `__context__`), the error itself included."""


def own_error_kind(error: BaseException) -> ErrorKind | None:
    """The kind of an error this tool raised on purpose (`TransientError` or another `MigrateError`), else None."""
    if isinstance(error, TransientError):
        return "transient"
    if isinstance(error, MigrateError):
        return "permanent"
    return None


def exception_chain(error: BaseException) -> list[BaseException]:
    """`error`, then its cause (or else its context), and so on: no repeats, at most `CHAIN_LIMIT`."""
    seen: list[BaseException] = []
    current: BaseException | None = error
    while current is not None and current not in seen and len(seen) < CHAIN_LIMIT:
        seen.append(current)
        current = current.__cause__ or current.__context__
    return seen


def response_status(error: BaseException) -> int | None:
    """The HTTP status of the response an error carries (`error.response.status_code`), if any."""
    response = getattr(error, "response", None)
    status = getattr(response, "status_code", None)
    return status if isinstance(status, int) else None


def is_transient_status(status: int | None) -> bool:
    """HTTP 429 (rate limited) and 5xx are worth retrying."""
    return status is not None and (status == 429 or status >= 500)


def is_network_error(
    error: BaseException, words: Iterable[str], modules: tuple[str, ...] = ("requests", "urllib3")
) -> bool:
    """A Python `ConnectionError` or `TimeoutError`, or an error of a class from one of `modules`
    (requests and urllib3 by default) whose name holds one of `words` (e.g. "Connection", "Timeout")."""
    if isinstance(error, ConnectionError | TimeoutError):
        return True
    if type(error).__module__.startswith(modules):
        name = type(error).__name__
        return any(word in name for word in words)
    return False
