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

from neptune_migrate.model import STAGES, ContainerKind, Field, Loss, LossCategory, RegistryInfo, RunRecord

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


MODEL_TO_RUN_FIELDS = ("old_sys/id", "old_sys/model_id", "old_sys/stage")
"""`old_sys/*` fields of a `model_to_run.py` run that become registry facts (they stay fields too)."""


def model_to_run_kind(record: RunRecord) -> ContainerKind | None:
    """`model` / `model_version` when `record` is a run made by Neptune's `model_to_run.py`, else `None`.

    That script (`neptune-ai/examples:utils/migration_tools/model_registry_to_runs/model_to_run.py`)
    copies each model and model version into a new run: tag `model` or `model_version`, the model id
    as a group tag, `sys/custom_run_id` = the old id, and the read-only `sys/*` fields as `old_sys/*`
    (`old_sys/id`, `old_sys/model_id` and `old_sys/stage` on versions, `old_sys/creation_time`...),
    then adds the old container's own `sys/tags`. Neptune's `runs_migrator.py` also writes
    `old_sys/id` (on copied runs), so every mark the script always leaves is required:

    - a version: tag `model_version`, `old_sys/model_id` = M, `old_sys/id` = `M-<N>`, group tag M;
    - a model: tag `model`, `old_sys/id` = M, group tag M, no `old_sys/model_id`.

    A version the user had tagged `model` carries both tags: `old_sys/model_id` decides. Offline
    queues do not keep `sys/custom_run_id`; where it is kept it must equal `old_sys/id`.
    """
    if record.kind != "run":
        return None
    old_id = _string(record.fields, "old_sys/id")
    if old_id is None:
        return None
    custom = record.system.custom_run_id
    if custom and custom != old_id:
        return None
    model_id = _string(record.fields, "old_sys/model_id")
    tags, group_tags = record.system.tags, record.system.group_tags
    if model_id is not None:
        numbered = old_id.startswith(model_id + "-") and old_id[len(model_id) + 1:].isdigit()
        ok = "model_version" in tags and numbered and model_id in group_tags
        return "model_version" if ok else None
    return "model" if "model" in tags and old_id in group_tags else None


def _old_time(fields: Mapping[str, Field], path: str) -> datetime | None:
    f = fields.get(path)
    return f.value if f is not None and isinstance(f.value, datetime) else None


def from_model_to_run(record: RunRecord) -> RunRecord | None:
    """The `model` / `model_version` record a `model_to_run.py` run stands for, or `None` if it is not one.

    The record keeps its own key (the run's id), fields, series and files; its kind becomes the old
    container's and `registry` holds the old ids and stage (`origin="model_to_run"`). Each `old_sys/*`
    field that became a registry fact is reported as a changed-form item (it is kept as a field too).
    The script's own marks are removed, each reported as a changed-form item: its type tag (the user's
    tag of the same name stays when the old container carried both) and its model-id group tag.
    Creation time and owner are the old container's (`old_sys/creation_time`, `old_sys/owner`) when
    present; the migration run's own go to `provenance.details` (`model_to_run_created_at`,
    `model_to_run_owner`). A stage history is not in such a run (the script copied the current stage only).
    """
    kind = model_to_run_kind(record)
    if kind is None:
        return None
    old_id = _string(record.fields, "old_sys/id")
    assert old_id is not None  # checked by model_to_run_kind
    used = ["old_sys/id"]
    if kind == "model":
        model_id = old_id
        info = RegistryInfo(model_id=old_id, origin="model_to_run")
    else:
        model_id = _string(record.fields, "old_sys/model_id") or old_id
        used.append("old_sys/model_id")
        stage = _string(record.fields, "old_sys/stage")
        if stage in STAGES:
            used.append("old_sys/stage")
        info = RegistryInfo(model_id=model_id, version_id=old_id, version=version_number(old_id),
                            stage=stage if stage in STAGES else None, origin="model_to_run")
    what = "model" if kind == "model" else "model version"
    said = f"run made by Neptune's model_to_run.py from {what} {old_id}"
    losses = [Loss("registry_from_run", path, 1, f"{said}: {path} became a registry fact of the record "
                   "(kept as a field too)", LossCategory.CHANGED_FORM) for path in used]
    type_tag = "model" if kind == "model" else "model_version"
    system = record.system
    tags = system.tags - {type_tag}
    group_tags = system.group_tags - {model_id}
    losses.append(Loss("registry_script_mark", "sys/tags", 1, f"{said}: removed the tag {type_tag!r} the "
                       "script added", LossCategory.CHANGED_FORM))
    losses.append(Loss("registry_script_mark", "sys/group_tags", 1, f"{said}: removed the group tag "
                       f"{model_id!r} the script added", LossCategory.CHANGED_FORM))
    details = dict(record.provenance.details)
    created = _old_time(record.fields, "old_sys/creation_time")
    owner = _string(record.fields, "old_sys/owner")
    new_system = replace(system, tags=frozenset(tags), group_tags=frozenset(group_tags))
    if created is not None:
        if system.created_at is not None:
            details["model_to_run_created_at"] = system.created_at.isoformat()
        new_system = replace(new_system, created_at=created)
        losses.append(Loss("registry_from_run", "old_sys/creation_time", 1, f"{said}: the record's creation "
                           "time is the old one (the run's is in the provenance)", LossCategory.CHANGED_FORM))
    if owner is not None:
        if system.owner is not None:
            details["model_to_run_owner"] = system.owner
        new_system = replace(new_system, owner=owner)
        losses.append(Loss("registry_from_run", "old_sys/owner", 1, f"{said}: the record's owner is the old "
                           "one (the run's is in the provenance)", LossCategory.CHANGED_FORM))
    provenance = replace(record.provenance, details=details)
    return replace(record, kind=kind, registry=info, system=new_system, provenance=provenance,
                   losses=(*record.losses, *losses))


_EPOCH = datetime(1970, 1, 1, tzinfo=timezone.utc)


@dataclass(slots=True)
class ModelGroup:
    """One model of a project with its versions, in Neptune's order (version number, then time)."""

    project: str
    model_id: str
    model: RunRecord | None = None
    """The model's own record; `None` when the dump holds versions of a model it does not hold."""
    versions: list[RunRecord] = field(default_factory=list)
    duplicates: list[RunRecord] = field(default_factory=list)
    """Records of the same model or version id that were not chosen (see `group_models`)."""

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


def _preference(record: RunRecord) -> tuple[int, str]:
    """Which of two records of one model / version id wins: the registry's own, then the lowest key."""
    origin = record.registry.origin if record.registry is not None else "registry"
    return (0 if origin == "registry" else 1, record.key.run_id)


def group_models(records: Iterable[RunRecord]) -> list[ModelGroup]:
    """Models and versions among `records`, grouped by (project, model id), sorted by model id.

    Records without registry facts are annotated first; runs and projects are ignored. When two
    records stand for the same model or version id (a native one and one made from a `model_to_run.py`
    run), the native one is kept, deterministically whatever the order of `records`; the other goes to
    the group's `duplicates` (the export keeps such a run a run; this is the guard for older dumps).
    """
    groups: dict[tuple[str, str], ModelGroup] = {}
    versions: dict[tuple[str, str, str], RunRecord] = {}
    for raw in records:
        record = annotate(raw)
        info = record.registry
        if info is None:
            continue
        key = (record.key.project, info.model_id)
        group = groups.setdefault(key, ModelGroup(project=key[0], model_id=key[1]))
        if record.kind == "model":
            if group.model is None:
                group.model = record
                continue
            keep, drop = sorted((group.model, record), key=_preference)
            group.model = keep
            group.duplicates.append(drop)
            continue
        vkey = (*key, info.version_id or record.key.run_id)
        other = versions.get(vkey)
        if other is None:
            versions[vkey] = record
            continue
        keep, drop = sorted((other, record), key=_preference)
        versions[vkey] = keep
        group.duplicates.append(drop)
    for (project, model_id, _vid), record in versions.items():
        groups[(project, model_id)].versions.append(record)
    for group in groups.values():
        group.duplicates.sort(key=lambda r: r.key.run_id)
        group.sort()
    return [groups[k] for k in sorted(groups)]
