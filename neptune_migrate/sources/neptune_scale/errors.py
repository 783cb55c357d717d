"""Errors of the neptune-scale source, and which of them are worth retrying."""

from __future__ import annotations

import sqlite3

from neptune_migrate.errors import SourceFormatError
from neptune_migrate.model import ErrorKind
from neptune_migrate.sources.classify import classify_io_error


class ScaleDatabaseError(SourceFormatError):
    """A `.sqlite3` file is not a neptune-scale operation log we can read (no tables, no metadata...)."""


def classify_error(error: Exception) -> ErrorKind:
    """Reading a copied SQLite file is local work: only I/O hiccups and a busy database are transient."""
    if isinstance(error, sqlite3.OperationalError) and "locked" in str(error):
        return "transient"
    return classify_io_error(error)
