"""The one rich Console (stderr) and logging setup; called from the CLI only.

Every text this process writes to the terminal goes through `errors.redact`: log records (message,
traceback and stack, at any level) are redacted by a filter on the one handler, uncaught
exceptions by the excepthook `setup_logging` installs, and both consoles write through a
redacting stream as a last guard.
"""

from __future__ import annotations

import logging
import sys
import traceback
from types import TracebackType
from typing import Any, TextIO

from rich.console import Console

from neptune_migrate.errors import redact


class _RedactingStream:
    """A text stream that redacts what it writes to `sys.stderr`/`sys.stdout` (looked up per write,
    so redirections and test capture keep working)."""

    def __init__(self, name: str) -> None:
        self._name = name

    @property
    def _stream(self) -> TextIO:
        stream: TextIO = getattr(sys, self._name)
        return stream

    def write(self, text: str) -> int:
        self._stream.write(redact(text))
        return len(text)

    def flush(self) -> None:
        self._stream.flush()

    def isatty(self) -> bool:
        return self._stream.isatty()

    def fileno(self) -> int:
        return self._stream.fileno()

    def __getattr__(self, name: str) -> Any:
        return getattr(self._stream, name)


OFF_TERMINAL_WIDTH = 10_000
"""Off a terminal (a pipe, a file, CI) lines are never wrapped: paths and keys stay whole."""


def _console(name: str) -> Console:
    made = Console(file=_RedactingStream(name), highlight=False, soft_wrap=True)  # type: ignore[arg-type]
    if made.is_terminal:
        made.soft_wrap = False  # on a terminal, tables and progress fit the window
    else:
        made.width = OFF_TERMINAL_WIDTH
    return made


console = _console("stderr")
"""Human output goes to stderr; stdout is kept for machine-readable output (`--json`)."""
stdout = _console("stdout")


class RedactingFilter(logging.Filter):
    """Turns a record into one redacted text (message, traceback, stack) before any handler formats it.

    The traceback is rendered here as plain text, so no handler can print an exception message
    or a frame that still holds a secret.
    """

    def filter(self, record: logging.LogRecord) -> bool:
        """Redact the record in place; never drops it."""
        text = record.getMessage()
        if record.exc_info and record.exc_info[0] is not None:
            text += "\n" + "".join(traceback.format_exception(*record.exc_info)).rstrip()
        elif record.exc_text:
            text += "\n" + record.exc_text
        if record.stack_info:
            text += "\n" + record.stack_info
        record.msg = redact(text)
        record.args = None
        record.exc_info = None
        record.exc_text = None
        record.stack_info = None
        return True


def _excepthook(et: type[BaseException], exc: BaseException, tb: TracebackType | None) -> None:
    sys.stderr.write(redact("".join(traceback.format_exception(et, exc, tb))))


def setup_logging(verbose: int) -> None:
    """Log to stderr: through rich on a terminal, plain lines otherwise; `-v` for info, `-vv` for
    debug; everything redacted."""
    level = logging.WARNING if verbose <= 0 else logging.INFO if verbose == 1 else logging.DEBUG
    handler: logging.Handler
    if console.is_terminal:
        from rich.logging import RichHandler

        handler = RichHandler(console=console, show_path=False, markup=False)
        fmt = "%(message)s"
    else:
        handler = logging.StreamHandler(console.file)
        fmt = "%(levelname)s %(name)s: %(message)s"
    handler.addFilter(RedactingFilter())
    logging.basicConfig(level=level, format=fmt, handlers=[handler], force=True)
    logging.captureWarnings(True)  # warnings (which may quote a URL) go through the same filter
    sys.excepthook = _excepthook
    for noisy in ("urllib3", "alembic", "mlflow", "wandb", "aim", "neptune", "botocore"):
        logging.getLogger(noisy).setLevel(max(level, logging.WARNING))
