"""The model registry in the neutral model: which records are models and versions, and their order.

Neptune 2.x held models (`PROJ-MOD`) and model versions (`PROJ-MOD-3`, `sys/model_id`, `sys/stage`).
Sources keep them as records of kind `model` / `model_version`; this module gives those records
their `RegistryInfo` (dump format 1.3) and groups a dump's records into models with their versions
in Neptune's order, for the destinations' registry writers and for `verify`. No vendor imports.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field, replace
from datetime import datetime, timezone

from neptune_migrate.model import STAGES, Field, RegistryInfo, RunRecord

REGISTRY_KINDS = ("model", "model_version")
"""Record kinds that belong to the model registry rather than to the runs."""

_VERSION_SUFFIX = re.compile(r"^(?P<model>.+)-(?P<number>\d+)$")


def version_number(version_id: str) -> int | None:
    """The version's number from its Neptune id (`PROJ-MOD-3` -> 3), or `None` if it has none."""
    m = _VERSION_SUFFIX.match(version_id)
    return int(m["number"]) if m else None


def _string(fields: Mapping[str, Field], path: str) -> str | None:
    f = fields.get(path)
    return f.value if f is not None and isinstance(f.value, str) and f.value else None


def derive_registry(record: RunRecord) -> RegistryInfo | None:
    """Registry facts of a native `model` / `model_version` record, read from its `sys/*` fields.

    A version's model is `sys/model_id` (else its id without the `-N` suffix); its stage is
    `sys/stage` when that is one of Neptune's four stages. Runs and projects get `None`.
    """
    if record.kind == "model":
        return RegistryInfo(model_id=record.key.run_id)
    if record.kind != "model_version":
        return None
    version_id = record.key.run_id
    m = _VERSION_SUFFIX.match(version_id)
    model_id = _string(record.fields, "sys/model_id") or (m["model"] if m else version_id)
    stage = _string(record.fields, "sys/stage")
    return RegistryInfo(model_id=model_id, version_id=version_id, version=version_number(version_id),
                        stage=stage if stage in STAGES else None)


def annotate(record: RunRecord) -> RunRecord:
    """The record with its `registry` filled in where it is a model or version and has none yet."""
    if record.registry is not None or record.kind not in REGISTRY_KINDS:
        return record
    info = derive_registry(record)
    return record if info is None else replace(record, registry=info)


_EPOCH = datetime(1970, 1, 1, tzinfo=timezone.utc)


@dataclass(slots=True)
class ModelGroup:
    """One model of a project with its versions, in Neptune's order (version number, then time)."""

    project: str
    model_id: str
    model: RunRecord | None = None
    """The model's own record; `None` when the dump holds versions of a model it does not hold."""
    versions: list[RunRecord] = field(default_factory=list)

    def sort(self) -> None:
        """Order versions as Neptune numbered them; unnumbered ones after, by creation time then id."""
        def order(r: RunRecord) -> tuple[int, int, datetime, str]:
            n = r.registry.version if r.registry is not None else None
            created = r.system.created_at or _EPOCH
            vid = (r.registry.version_id if r.registry is not None else None) or r.key.run_id
            return (0 if n is not None else 1, n or 0, created, vid)
        self.versions.sort(key=order)

    def stage_holders(self) -> dict[str, RunRecord]:
        """For each stage other than `none`, the newest version in it (the one an alias names)."""
        out: dict[str, RunRecord] = {}
        for v in self.versions:  # sorted oldest first: the last one seen is the newest
            stage = v.registry.stage if v.registry is not None else None
            if stage is not None and stage != "none":
                out[stage] = v
        return out


def group_models(records: Iterable[RunRecord]) -> list[ModelGroup]:
    """Models and versions among `records`, grouped by (project, model id), sorted by model id.

    Records without registry facts are annotated first; runs and projects are ignored.
    """
    groups: dict[tuple[str, str], ModelGroup] = {}
    for raw in records:
        record = annotate(raw)
        info = record.registry
        if info is None:
            continue
        key = (record.key.project, info.model_id)
        group = groups.setdefault(key, ModelGroup(project=key[0], model_id=key[1]))
        if record.kind == "model":
            group.model = record
        else:
            group.versions.append(record)
    for group in groups.values():
        group.sort()
    return [groups[k] for k in sorted(groups)]
