"""What every source's error classification shares: reading files is local I/O."""

from __future__ import annotations

import errno

from neptune_migrate.model import ErrorKind

TRANSIENT_ERRNOS = frozenset({errno.EAGAIN, errno.EINTR, errno.EBUSY, errno.ETIMEDOUT, errno.ESTALE})
"""Local or network file systems (NFS, SMB, FUSE mounts of a bucket) that hiccup."""


def classify_io_error(error: Exception) -> ErrorKind:
    """Only file-system hiccups (a timeout, a transient errno) are transient, everything else is permanent."""
    if isinstance(error, TimeoutError):
        return "transient"
    if isinstance(error, OSError) and error.errno in TRANSIENT_ERRNOS:
        return "transient"
    return "permanent"
