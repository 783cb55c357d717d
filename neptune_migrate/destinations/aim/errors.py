"""Which Aim errors are worth retrying.

Transient: a run or index lock held by another writer (RocksDB `LOCK: Resource temporarily
unavailable`, file-lock timeouts), SQLite `database is locked`, the experiment-name race of
parallel creators (`UNIQUE constraint failed: experiment.name`, aimhubio/aim#2489), and
connection errors or timeouts talking to a remote `aim server`. Everything else is permanent.
"""

from __future__ import annotations

import re

from neptune_migrate.errors import MigrateError, TransientError
from neptune_migrate.model import ErrorKind

_TRANSIENT_TEXT = re.compile(
    r"resource temporarily unavailable|database is locked|unique constraint failed: experiment\.name|"
    r"timed? ?out|timeout|connection (?:refused|reset|aborted)|remote end closed|temporarily unavailable",
    re.IGNORECASE,
)


def _chain(error: BaseException) -> list[BaseException]:
    seen: list[BaseException] = []
    current: BaseException | None = error
    while current is not None and current not in seen and len(seen) < 20:
        seen.append(current)
        current = current.__cause__ or current.__context__
    return seen


def classify_error(error: Exception) -> ErrorKind:
    """Transient errors are retried by the pipeline; permanent ones fail the run."""
    if isinstance(error, TransientError):
        return "transient"
    if isinstance(error, MigrateError):
        return "permanent"
    for err in _chain(error):
        if isinstance(err, ConnectionError | TimeoutError):
            return "transient"
        name = type(err).__name__
        module = type(err).__module__
        if name == "Timeout" and module.startswith("filelock"):
            return "transient"
        if module.startswith(("requests", "urllib3", "websockets")) and any(
            w in name for w in ("Connection", "Timeout", "Closed")
        ):
            return "transient"
        if _TRANSIENT_TEXT.search(str(err)):
            return "transient"
    return "permanent"
