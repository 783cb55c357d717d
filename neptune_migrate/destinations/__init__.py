"""Destination registry: name -> "module:Class", loaded lazily so `--help` stays fast."""

from __future__ import annotations

DESTINATIONS: dict[str, str] = {}
"""Filled by the destination issues: `"mlflow"`, `"wandb"`, `"aim"`."""

KNOWN_DESTINATIONS: tuple[str, ...] = ("mlflow", "wandb", "aim")
