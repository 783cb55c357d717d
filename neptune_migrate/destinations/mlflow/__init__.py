"""The MLflow destination (`--to mlflow`): see docs/destinations/mlflow.md.

Importing this package does not import mlflow; the client is built on first use.
"""

from __future__ import annotations

from neptune_migrate.destinations.mlflow.destination import MlflowDestination

__all__ = ["MlflowDestination"]
