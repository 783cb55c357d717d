"""Errors of the `.neptune` queue source, and which of them are worth retrying."""

from __future__ import annotations

from neptune_migrate.errors import SourceFormatError
from neptune_migrate.model import ErrorKind
from neptune_migrate.sources.classify import classify_io_error


class QueueLayoutError(SourceFormatError):
    """The path holds no `.neptune` queue folder this source recognises."""


def classify_error(error: Exception) -> ErrorKind:
    """Reading queue files is local I/O: only file-system hiccups are transient."""
    return classify_io_error(error)
