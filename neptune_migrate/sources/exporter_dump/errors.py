"""Errors of the neptune-exporter dump source, and which of them are worth retrying."""

from __future__ import annotations

import errno

from neptune_migrate.errors import PermanentError
from neptune_migrate.model import ErrorKind

_TRANSIENT_ERRNOS = frozenset({errno.EAGAIN, errno.EINTR, errno.EBUSY, errno.ETIMEDOUT, errno.ESTALE})
"""Local or network file systems (NFS, SMB, FUSE mounts of a bucket) that hiccup."""


class IncompleteRunError(PermanentError):
    """The exporter did not finish writing this run (no `part_0`, `.tmp` leftovers, unreadable part)."""


def classify_error(error: Exception) -> ErrorKind:
    """Reading a dump is local I/O: only file-system hiccups are transient, everything else is permanent."""
    if isinstance(error, TimeoutError):
        return "transient"
    if isinstance(error, OSError) and error.errno in _TRANSIENT_ERRNOS:
        return "transient"
    return "permanent"
