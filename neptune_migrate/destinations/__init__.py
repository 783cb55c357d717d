"""Destination registry: name -> "module:Class", loaded lazily so `--help` stays fast.

Each destination class has `from_options(options: DestinationOptions)`; the CLI knows the
options, never the classes.
"""

from __future__ import annotations

import importlib
from typing import cast

from neptune_migrate.destinations.base import Destination, DestinationOptions
from neptune_migrate.errors import UsageError

DESTINATIONS: dict[str, str] = {
    "mlflow": "neptune_migrate.destinations.mlflow.destination:MlflowDestination",
    "wandb": "neptune_migrate.destinations.wandb.destination:WandbDestination",
    "aim": "neptune_migrate.destinations.aim.destination:AimDestination",
}
"""Every destination by its `--to` name (a known one not listed here is not available yet)."""

KNOWN_DESTINATIONS: tuple[str, ...] = ("mlflow", "wandb", "aim")
__all__ = ["DESTINATIONS", "KNOWN_DESTINATIONS", "DestinationOptions", "load_destination"]


def load_destination(name: str, options: DestinationOptions) -> Destination:
    """Build a destination; an unknown name lists the valid ones."""
    if name not in KNOWN_DESTINATIONS:
        msg = f"unknown destination {name!r}; choose one of: {', '.join(KNOWN_DESTINATIONS)}"
        raise UsageError(msg)
    target = DESTINATIONS.get(name)
    if target is None:
        from neptune_migrate import __version__

        msg = f"destination {name!r} is not available yet in neptune-migrate {__version__}"
        raise UsageError(msg)
    module_name, _, class_name = target.partition(":")
    cls = getattr(importlib.import_module(module_name), class_name)
    return cast(Destination, cls.from_options(options))
