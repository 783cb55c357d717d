"""The Aim destination (`--to aim`): see docs/destinations/aim.md.

Importing this package does not import aim; the SDK is loaded on first use.
"""

from __future__ import annotations

from neptune_migrate.destinations.aim.destination import AimDestination

__all__ = ["AimDestination"]
