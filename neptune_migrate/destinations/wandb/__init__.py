"""The Weights & Biases destination (`--to wandb`): see docs/destinations/wandb.md.

Importing this package does not import wandb; the SDK is loaded on first use.
"""

from __future__ import annotations

from neptune_migrate.destinations.wandb.destination import WandbDestination

__all__ = ["WandbDestination"]
