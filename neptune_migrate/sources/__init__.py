"""Source registry: name -> "module:Class", loaded lazily so `--help` stays fast."""

from __future__ import annotations

import importlib
from typing import cast

from neptune_migrate.errors import UsageError
from neptune_migrate.sources.base import Source, SourceOptions

SOURCES: dict[str, str] = {
    "neptune-exporter": "neptune_migrate.sources.exporter_dump.source:ExporterDumpSource",
    "neptune2-api": "neptune_migrate.sources.neptune2_api.source:Neptune2ApiSource",
    "neptune-offline": "neptune_migrate.sources.neptune_queue.source:NeptuneQueueSource",
    "neptune-scale": "neptune_migrate.sources.neptune_scale.source:NeptuneScaleSource",
    "neptune3-api": "neptune_migrate.sources.neptune3_api.source:Neptune3ApiSource",
}
"""Every source form by its `--from` name."""


def load_source(name: str, options: SourceOptions) -> Source:
    """Build a source by its registry name; an unknown name lists the valid ones."""
    target = SOURCES.get(name)
    if target is None:
        valid = ", ".join(sorted(SOURCES)) or "(none yet)"
        msg = f"unknown source {name!r}; available: {valid}"
        raise UsageError(msg)
    module_name, _, class_name = target.partition(":")
    module = importlib.import_module(module_name)
    cls = getattr(module, class_name)
    return cast(Source, cls(options))
