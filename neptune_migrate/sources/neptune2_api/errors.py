"""Errors of the live 2.x source, and which of them are worth retrying."""

from __future__ import annotations

from neptune_migrate.model import ErrorKind

TRANSIENT_STATUSES = frozenset({408, 429, 500, 502, 503, 504})
"""HTTP statuses retried (429 and 503 honour `Retry-After`, multi-digit values exactly)."""


def status_of(error: BaseException) -> int | None:
    """The HTTP status an error of the client stack carries (bravado or requests), if any."""
    status = getattr(error, "status_code", None)
    if isinstance(status, int):
        return status
    response = getattr(error, "response", None)
    status = getattr(response, "status_code", None)
    return status if isinstance(status, int) else None


def classify_error(error: Exception) -> ErrorKind:
    """429, 5xx, timeouts and dropped connections are transient; 401/403/404 and the rest are not."""
    status = status_of(error)
    if status is not None:
        return "transient" if status in TRANSIENT_STATUSES else "permanent"
    names = {cls.__name__ for cls in type(error).__mro__}
    transient_names = {"ConnectionError", "Timeout", "ChunkedEncodingError", "BravadoConnectionError",
                       "BravadoTimeoutError", "ProtocolError", "RemoteDisconnected", "IncompleteRead",
                       "ConnectionResetError", "TimeoutError", "ReadTimeout", "ConnectTimeout"}
    return "transient" if names & transient_names else "permanent"
