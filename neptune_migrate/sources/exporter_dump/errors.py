"""Errors of the neptune-exporter dump source, and which of them are worth retrying."""

from __future__ import annotations

from neptune_migrate.errors import PermanentError
from neptune_migrate.model import ErrorKind
from neptune_migrate.sources.classify import classify_io_error


class IncompleteRunError(PermanentError):
    """The exporter did not finish writing this run (no `part_0`, `.tmp` leftovers, unreadable part)."""


def classify_error(error: Exception) -> ErrorKind:
    """Reading a dump is local I/O: only file-system hiccups are transient, everything else is permanent."""
    return classify_io_error(error)
