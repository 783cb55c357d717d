"""Errors of the live Neptune 3.x source, and which of them are worth retrying."""

from __future__ import annotations

from neptune_migrate.errors import MigrateError, UnreachableError, UsageError
from neptune_migrate.model import ErrorKind

TRANSIENT_STATUSES = frozenset({408, 429, 500, 502, 503, 504})
"""HTTP statuses retried (through `retry.py`); every other 4xx is final."""


class ServerBusyError(MigrateError):
    """The server answered 429 / 5xx, or the connection broke: worth retrying."""

    def __init__(self, what: str, status: int | None, retry_after: float | None = None) -> None:
        """`retry_after`: the seconds to wait the server asked for (already scaled), if any."""
        told = f"HTTP {status}" if status is not None else "connection error"
        super().__init__(f"{what}: {told}")
        self.status = status
        self.retry_after = retry_after


class ServerAnswerError(MigrateError):
    """The server refused a request for good (a 4xx other than 401/403/404/429, an unreadable answer)."""


class TokenRejectedError(UsageError):
    """401/403: the API token is wrong or lacks access. Never retried; the token is never printed."""

    shows_cause = False


class UnknownProjectError(UsageError):
    """The server does not know the project (404)."""

    shows_cause = False


class ServerUnreachableError(UnreachableError):
    """The server did not answer at all (after the retries)."""


def classify_error(error: Exception) -> ErrorKind:
    """429 / 5xx / resets are transient; everything else (auth, unknown project, bad answers) is permanent."""
    if isinstance(error, ServerBusyError):
        return "transient"
    if isinstance(error, MigrateError):
        return "permanent"
    try:
        import httpx
    except ImportError:  # pragma: no cover - httpx comes with neptune-query
        return "permanent"
    if isinstance(error, httpx.TransportError):
        return "transient"
    if isinstance(error, (ConnectionError, TimeoutError)):
        return "transient"
    return "permanent"
