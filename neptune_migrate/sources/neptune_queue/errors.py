"""Errors of the `.neptune` queue source, and which of them are worth retrying."""

from __future__ import annotations

import errno

from neptune_migrate.errors import SourceFormatError
from neptune_migrate.model import ErrorKind

_TRANSIENT_ERRNOS = frozenset({errno.EAGAIN, errno.EINTR, errno.EBUSY, errno.ETIMEDOUT, errno.ESTALE})
"""File systems (NFS, SMB, FUSE mounts) that hiccup while we read a queue or a referenced file."""


class QueueLayoutError(SourceFormatError):
    """The path holds no `.neptune` queue folder this source recognises."""


def classify_error(error: Exception) -> ErrorKind:
    """Reading queue files is local I/O: only file-system hiccups are transient."""
    if isinstance(error, TimeoutError):
        return "transient"
    if isinstance(error, OSError) and error.errno in _TRANSIENT_ERRNOS:
        return "transient"
    return "permanent"
