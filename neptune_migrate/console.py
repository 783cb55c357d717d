"""The one rich Console (stderr) and logging setup; called from the CLI only."""

from __future__ import annotations

import logging

from rich.console import Console

console = Console(stderr=True, highlight=False)
"""Human output goes to stderr; stdout is kept for machine-readable output (`--json`)."""
stdout = Console(highlight=False, soft_wrap=True)


def setup_logging(verbose: int) -> None:
    """Log to stderr through rich; `-v` for info, `-vv` for debug."""
    from rich.logging import RichHandler

    level = logging.WARNING if verbose <= 0 else logging.INFO if verbose == 1 else logging.DEBUG
    logging.basicConfig(
        level=level,
        format="%(message)s",
        handlers=[RichHandler(console=console, show_path=False, markup=False)],
        force=True,
    )
    for noisy in ("urllib3", "alembic", "mlflow", "wandb", "aim", "neptune", "botocore"):
        logging.getLogger(noisy).setLevel(max(level, logging.WARNING))
