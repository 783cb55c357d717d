"""Which Aim errors are worth retrying.

Transient: a run or index lock held by another writer (RocksDB `LOCK: Resource temporarily
unavailable`, file-lock timeouts), SQLite `database is locked`, the experiment-name race of
parallel creators (`UNIQUE constraint failed: experiment.name`, aimhubio/aim#2489), and
connection errors or timeouts talking to a remote `aim server`. Everything else is permanent.
"""

from __future__ import annotations

import re

from neptune_migrate.destinations.classify import exception_chain, is_network_error, own_error_kind
from neptune_migrate.model import ErrorKind

_TRANSIENT_TEXT = re.compile(
    r"resource temporarily unavailable|database is locked|unique constraint failed: experiment\.name|"
    r"timed? ?out|timeout|connection (?:refused|reset|aborted)|remote end closed|temporarily unavailable",
    re.IGNORECASE,
)
_NETWORK_MODULES = ("requests", "urllib3", "websockets")
"""Libraries an `aim://` client talks to the server through."""
_NETWORK_WORDS = ("Connection", "Timeout", "Closed")
"""Class-name parts of their errors that mean the server was not reached."""


def classify_error(error: Exception) -> ErrorKind:
    """Transient errors are retried by the pipeline; permanent ones fail the run."""
    own = own_error_kind(error)
    if own is not None:
        return own
    for err in exception_chain(error):
        if is_network_error(err, _NETWORK_WORDS, _NETWORK_MODULES):
            return "transient"
        if type(err).__name__ == "Timeout" and type(err).__module__.startswith("filelock"):
            return "transient"
        if _TRANSIENT_TEXT.search(str(err)):
            return "transient"
    return "permanent"
