"""Errors of the neptune-scale source, and which of them are worth retrying."""

from __future__ import annotations

import errno
import sqlite3

from neptune_migrate.errors import SourceFormatError
from neptune_migrate.model import ErrorKind

_TRANSIENT_ERRNOS = frozenset({errno.EAGAIN, errno.EINTR, errno.EBUSY, errno.ETIMEDOUT, errno.ESTALE})
"""File systems (NFS, SMB, FUSE mounts) that hiccup while we copy a database."""


class ScaleDatabaseError(SourceFormatError):
    """A `.sqlite3` file is not a neptune-scale operation log we can read (no tables, no metadata...)."""


def classify_error(error: Exception) -> ErrorKind:
    """Reading a copied SQLite file is local work: only I/O hiccups and a busy database are transient."""
    if isinstance(error, TimeoutError):
        return "transient"
    if isinstance(error, sqlite3.OperationalError) and "locked" in str(error):
        return "transient"
    if isinstance(error, OSError) and error.errno in _TRANSIENT_ERRNOS:
        return "transient"
    return "permanent"
