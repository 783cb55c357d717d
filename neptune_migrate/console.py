"""The one rich Console (stderr) and logging setup; called from the CLI only."""

from __future__ import annotations

import logging

from rich.console import Console

OFF_TERMINAL_WIDTH = 10_000
"""Off a terminal (a pipe, a file, CI) lines are never wrapped: paths and keys stay whole."""


def _console(*, stderr: bool) -> Console:
    made = Console(stderr=stderr, highlight=False, soft_wrap=True)
    if made.is_terminal:
        made.soft_wrap = False  # on a terminal, tables and progress fit the window
    else:
        made.width = OFF_TERMINAL_WIDTH
    return made


console = _console(stderr=True)
"""Human output goes to stderr; stdout is kept for machine-readable output (`--json`)."""
stdout = _console(stderr=False)


def setup_logging(verbose: int) -> None:
    """Log to stderr: through rich on a terminal, plain lines otherwise; `-v` for info, `-vv` for debug."""
    level = logging.WARNING if verbose <= 0 else logging.INFO if verbose == 1 else logging.DEBUG
    handler: logging.Handler
    if console.is_terminal:
        from rich.logging import RichHandler

        handler = RichHandler(console=console, show_path=False, markup=False)
        fmt = "%(message)s"
    else:
        handler = logging.StreamHandler(console.file)
        fmt = "%(levelname)s %(name)s: %(message)s"
    logging.basicConfig(level=level, format=fmt, handlers=[handler], force=True)
    for noisy in ("urllib3", "alembic", "mlflow", "wandb", "aim", "neptune", "botocore"):
        logging.getLogger(noisy).setLevel(max(level, logging.WARNING))
