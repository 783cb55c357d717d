"""Aim has no model registry: a model's and its versions' registry facts become params of their runs.

The `RegistryWriter` half of `AimDestination` (which delegates here). Each model and version record
was imported as a run; the registry step adds one top-level param, `neptune_registry`, to those
runs: on a version's run the model id and name, the version id, Neptune's number and order, the
stage, the stage history and the alias the version would hold in a registry (the newest version of
a stage); on the model's run its name and its versions in order. Query them in Aim with e.g.
`run.neptune_registry.alias == "production"`. Reported as changed form, never as carried.
Writing reopens the finished run and keeps its end time. aim is imported lazily.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from neptune_migrate.destinations.aim import mapping as m
from neptune_migrate.destinations.base import ModelSnapshot, RegistryModel, RegistryVersion, VersionSnapshot
from neptune_migrate.errors import PermanentError
from neptune_migrate.model import DestinationRunId, Loss, LossCategory

if TYPE_CHECKING:
    from neptune_migrate.destinations.aim.destination import AimDestination


def _text(doc: Mapping[str, Any]) -> dict[str, str]:
    """A params document as compared by verify: every value as text (lists as JSON)."""
    return {k: v if isinstance(v, str) else json.dumps(v, sort_keys=True) for k, v in doc.items()}


def model_doc(model: RegistryModel) -> dict[str, Any]:
    doc: dict[str, Any] = {"kind": "model", "model_id": model.model_id, "name": model.name,
                           "versions": [v.version_id for v in model.versions]}
    holders = {a: v.version_id for v in model.versions for a in v.aliases}
    if holders:
        doc["aliases"] = holders
    return doc


def version_doc(model: RegistryModel, version: RegistryVersion) -> dict[str, Any]:
    doc: dict[str, Any] = {"kind": "model_version", "model_id": model.model_id, "model_name": model.name,
                           "version_id": version.version_id, "position": version.position}
    if version.number is not None:
        doc["version"] = version.number
    if version.stage is not None:
        doc["stage"] = version.stage
    if version.aliases:
        doc["alias"] = version.aliases[0]
    if version.stage_history:
        doc["stage_history"] = [{"stage": c.stage, "at": None if c.at is None else c.at.isoformat()}
                                for c in version.stage_history]
    if version.source_run is not None:
        doc["source_run"] = str(version.source_run)
    return doc


class AimRegistry:
    """Registry params of one `AimDestination`."""

    def __init__(self, dest: AimDestination) -> None:
        self.dest = dest

    def plan_model(self, model: RegistryModel) -> list[Loss]:
        return [Loss("registry_as_params", f"{model.project}/{model.model_id}", 1 + len(model.versions),
                     f"Aim has no model registry: the model and its versions are runs with the param "
                     f"{m.REGISTRY} (model, version, stage, the alias it would hold)",
                     category=LossCategory.CHANGED_FORM)]

    def expected_model(self, model: RegistryModel) -> ModelSnapshot:
        versions = [VersionSnapshot(version_id=v.version_id, number=str(v.position),
                                    tags=_text(version_doc(model, v))) for v in model.versions]
        tags = _text(model_doc(model)) if model.record_key is not None else {}
        holders = {a: v.version_id for v in model.versions for a in v.aliases}
        return ModelSnapshot(name=model.name, tags=tags, versions=versions, aliases=holders)

    def _doc(self, run_id: DestinationRunId | None) -> dict[str, Any] | None:
        if run_id is None:
            return None
        doc = self.dest.read_top_param(run_id, m.REGISTRY)
        return dict(doc) if isinstance(doc, Mapping) else None

    def read_model(self, model: RegistryModel, *, hashes: bool) -> ModelSnapshot | None:
        mdoc = self._doc(model.carrier_run_id)
        vdocs = [(v, self._doc(v.carrier_run_id)) for v in model.versions]
        found = [(v, d) for v, d in vdocs if d is not None]
        if mdoc is None and not found:
            return None
        name = str((mdoc or {}).get("name") or next((d.get("model_name") for _, d in found), model.name))
        snap = ModelSnapshot(name=name, tags=_text(mdoc) if mdoc is not None else {})
        for _, d in sorted(found, key=lambda p: int(p[1].get("position", 0))):
            snap.versions.append(VersionSnapshot(version_id=str(d.get("version_id")),
                                                 number=str(d.get("position")), tags=_text(d)))
            if "alias" in d:
                snap.aliases[str(d["alias"])] = str(d.get("version_id"))
        return snap

    def ensure_model(self, model: RegistryModel) -> str:
        if model.carrier_run_id is not None:
            self.dest.set_top_param(model.carrier_run_id, m.REGISTRY, model_doc(model))
        return model.name

    def ensure_version(self, model: RegistryModel, name: str, version: RegistryVersion,
                       found: VersionSnapshot | None) -> VersionSnapshot:
        if version.carrier_run_id is None:
            msg = f"{version.version_id}: its run is not in Aim (its import failed): nowhere to record the version"
            raise PermanentError(msg)
        doc = version_doc(model, version)
        self.dest.set_top_param(version.carrier_run_id, m.REGISTRY, doc)
        return VersionSnapshot(version_id=version.version_id, number=str(version.position), tags=_text(doc))

    def set_aliases(self, model: RegistryModel, name: str, holders: Mapping[str, str]) -> None:
        """Nothing more: each version's alias is in its own params (written by `ensure_version`)."""
