"""The registry step: after the runs, rebuild Neptune's model registry in the destination.

Every model and version record is imported as a run first (nothing is lost, and the run path is
idempotent already); this step then builds the registry from `registry.group_models`: one
registered model per Neptune model, its versions created one at a time in Neptune's order (the
destination numbers them itself), then the stage aliases. The destination is the truth: a model or
version is looked up by its Neptune id before anything is created, so a re-run creates nothing and
a crash between two versions resumes at the next one. Every call goes through
`RetryingDestination`; each finished model and version is appended to the ledger after the write.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

from neptune_migrate.destinations.base import (
    FILES_DIGEST_TAG,
    ModelSnapshot,
    RegistryModel,
    RegistryVersion,
    VersionSnapshot,
)
from neptune_migrate.destinations.retrying import RetryingDestination
from neptune_migrate.dump.reader import DumpReader, DumpRun
from neptune_migrate.errors import MigrateError, PermanentError, one_line, redact
from neptune_migrate.model import DestinationRunId, Loss, LossCategory, RunKey, RunRecord, SourceRunId
from neptune_migrate.pipeline.ledger import Ledger
from neptune_migrate.pipeline.shard import Shard, owned_scan
from neptune_migrate.registry import REGISTRY_KINDS, ModelGroup, group_models
from neptune_migrate.sources.base import RunSelection

log = logging.getLogger(__name__)

ALIAS_OF_STAGE = {"production": "production", "staging": "staging", "archived": "archived"}
"""Neptune stage -> alias given to the newest version in it (`none` gets no alias)."""
_RESERVED_ALIAS = re.compile(r"^(v\d+|latest)$", re.IGNORECASE)
_NAME_UNSAFE = re.compile(r"[/:\\]")


def model_key(model_id: str) -> str:
    """The model's key within its project (`PROJ-MOD` -> `MOD`); the id itself when it has no prefix."""
    head, sep, tail = model_id.partition("-")
    return tail if sep and head and tail else model_id


def base_name(group: ModelGroup) -> str:
    """The model's Neptune name, else its key; `/`, `:` and `\\` (refused by registries) become `_`."""
    name = (group.model.system.name if group.model is not None else None) or model_key(group.model_id)
    return _NAME_UNSAFE.sub("_", name).strip() or model_key(group.model_id)


def registry_names(groups: list[ModelGroup], final: Callable[[str], str] | None = None,
                   ) -> tuple[dict[tuple[str, str], str], list[Loss]]:
    """Destination name per (project, model id), unique: the first model (by project, then id) of a
    name keeps it, the others get `<name>-<model id>`. Every renamed model is reported. Names are
    compared as the destination will store them (`final`, the destination's `registry_name`: W&B
    turns "my model" and "my-model" into one collection name)."""
    def key(name: str) -> str:
        return (final(name) if final is not None else name).lower()

    names: dict[tuple[str, str], str] = {}
    losses: list[Loss] = []
    taken: dict[str, tuple[str, str]] = {}
    for g in sorted(groups, key=lambda g: (g.project, g.model_id)):
        want = base_name(g)
        name = want
        if key(name) in taken:
            name = f"{want}-{g.model_id}"
            first = taken[key(want)]
            losses.append(Loss("model_renamed", f"{g.project}/{g.model_id}", 1,
                               f"name {want!r} is also {first[0]}/{first[1]}'s (as the destination stores "
                               f"names); registered as {name!r}"))
        taken[key(name)] = (g.project, g.model_id)
        names[g.project, g.model_id] = name
    return names, losses


@dataclass
class RegistryResult:
    """One line of the registry part of the import report: a model, a version or an alias."""

    key: str
    """`model:<project>/<model id>`, `version:<project>/<version id>`, `alias:<project>/<model id>@<alias>`."""
    status: str
    """created, completed, updated, skipped, set, removed (a stage alias no version holds any more),
    conflict (an existing version whose files changed in the dump: kept, a `version_files_changed` loss),
    failed, not_carried (`import --no-registry`), deferred (a shard's model whose version runs
    other shards have not imported yet); in a dry run would_create, would_complete, would_skip,
    would_set, would_remove, would_fail, would_conflict."""
    destination: str | None = None
    """The destination's name for it (model name, version number, alias target)."""
    message: str = ""
    losses: list[dict[str, Any]] = field(default_factory=list)

    def to_json(self) -> dict[str, object]:
        return {"key": self.key, "status": self.status, "destination": self.destination,
                "message": self.message, "losses": self.losses}


def _run_id(dest: RetryingDestination, key: RunKey | None) -> DestinationRunId | None:
    if key is None:
        return None
    found = dest.find_run(key)
    return found.run_id if found is not None and found.complete else None


def _version(dest: RetryingDestination, reader: DumpReader, record: RunRecord, position: int,
             aliases: tuple[str, ...]) -> tuple[RegistryVersion, list[Loss]]:
    info = record.registry
    assert info is not None
    vid = info.version_id or record.key.run_id
    files = []
    losses: list[Loss] = []
    for fe in record.files:
        if fe.sha256 is None:
            continue  # the source no longer held it: the version's run reports that loss once, not here again
        if not reader.blob_path(fe.sha256).is_file():
            losses.append(Loss("version_file_missing", f"{vid}:{fe.attribute_path}", 1,
                               f"{fe.name}: its blob is gone from the dump, so not in the registered version",
                               category=LossCategory.LOST))
            continue
        files.append((fe, reader.blob_path(fe.sha256)))  # hashed right before it is handed over
    source = info.source_run
    return RegistryVersion(
        version_id=vid, number=info.version, position=position, stage=info.stage,
        stage_history=info.stage_history, description=record.system.description,
        tags=record.system.tags, record_key=record.key, carrier_run_id=_run_id(dest, record.key),
        source_run=source, source_run_id=_run_id(dest, source), files=tuple(files), aliases=aliases,
    ), losses


def build_model(dest: RetryingDestination, reader: DumpReader, group: ModelGroup,
                name: str) -> tuple[RegistryModel, list[Loss]]:
    """The neutral model handed to the destination: versions in Neptune's order, carrier and
    source runs resolved in the destination, aliases given to the newest version of each stage."""
    holders = {id(v): stage for stage, v in group.stage_holders().items()}
    losses: list[Loss] = []
    versions = []
    for i, record in enumerate(group.versions, start=1):
        stage = holders.get(id(record))
        alias = ALIAS_OF_STAGE.get(stage or "")
        aliases = (alias,) if alias is not None and not _RESERVED_ALIAS.match(alias) else ()
        version, lost = _version(dest, reader, record, i, aliases)
        versions.append(version)
        losses.extend(lost)
    m = group.model
    return RegistryModel(
        project=group.project, model_id=group.model_id, name=name,
        description=m.system.description if m is not None else None,
        tags=m.system.tags if m is not None else frozenset(),
        record_key=m.key if m is not None else None,
        carrier_run_id=_run_id(dest, m.key) if m is not None else None,
        versions=tuple(versions),
    ), losses


def owned_groups(runs: Iterable[DumpRun], shard: Shard | None) -> list[ModelGroup]:
    """Models among `runs` (selected, of every shard); with a shard, only the models it owns (by the
    model's own key), so two shards never build the same model, and each builds its models whole."""
    groups = group_models(r.record for r in runs)
    if shard is None:
        return groups
    return [g for g in groups if shard.owns(RunKey(g.project, SourceRunId(g.model_id)))]


def named_groups(runs: Iterable[DumpRun], shard: Shard | None, final: Callable[[str], str] | None = None,
                 ) -> tuple[list[ModelGroup], dict[tuple[str, str], str], list[Loss]]:
    """The models this shard builds, with names chosen over every model of `runs` (all shards'), so
    two shards never both give a name to two models that share it."""
    every = owned_groups(runs, None)
    names, renamed = registry_names(every, final)
    if shard is None:
        return every, names, renamed
    return [g for g in every if shard.owns(RunKey(g.project, SourceRunId(g.model_id)))], names, renamed


def registry_runs(reader: DumpReader, selection: RunSelection) -> list[DumpRun]:
    """The selected model and version records of the whole dump (every shard's)."""
    return [r for r in reader.scan() if isinstance(r, DumpRun) and r.record.kind in REGISTRY_KINDS
            and selection.matches_record(r.record)]


def _waiting(reader: DumpReader, model: RegistryModel, owned: set[RunKey]) -> list[str]:
    """Runs of the model's versions (their own, or the runs they were made from) that another shard
    imports and has not yet: the model waits for them. A run of this shard that is not in the
    destination failed for good: a version's own run fails the model, a source run is a reported loss."""
    waiting: list[str] = []
    for v in model.versions:
        if v.carrier_run_id is None:
            if v.record_key in owned:
                msg = f"the run of version {v.version_id} failed to import (see its run entry): fix it and re-run"
                raise PermanentError(msg)
            waiting.append(str(v.record_key))
        if (v.source_run is not None and v.source_run_id is None and v.source_run not in owned
                and reader.get_run(v.source_run) is not None):
            waiting.append(str(v.source_run))
    return list(dict.fromkeys(waiting))


def holders_of(model: RegistryModel) -> dict[str, str]:
    """Alias -> Neptune version id."""
    return {alias: v.version_id for v in model.versions for alias in v.aliases}


def not_carried(runs: Iterable[DumpRun], shard: Shard | None) -> list[RegistryResult]:
    """`import --no-registry`: one `not_carried` line per model (its records were imported as runs)."""
    return [RegistryResult(f"model:{g.project}/{g.model_id}", "not_carried", None,
                           "--no-registry: the model and its versions are imported as runs only")
            for g in owned_groups(runs, shard)]


def import_registry(
    reader: DumpReader,
    dest: RetryingDestination,
    runs: Iterable[DumpRun],
    *,
    dry_run: bool,
    shard: Shard | None = None,
    ledger: Ledger | None = None,
) -> list[RegistryResult]:
    """Build (or, with `dry_run`, plan) the registry of the selected models; one result per model,
    version and alias. A failing model is reported and the next one is tried."""
    if dest.capabilities.registry == "none":
        return []
    groups, names, renamed = named_groups(runs, shard, dest.registry_name)
    out: list[RegistryResult] = []
    owned: set[RunKey] | None = None
    for group in groups:
        mkey = f"model:{group.project}/{group.model_id}"
        result = RegistryResult(key=mkey, status="would_fail" if dry_run else "failed")
        out.append(result)
        try:
            model, losses = build_model(dest, reader, group, names[group.project, group.model_id])
            if shard is not None and not dry_run:
                if owned is None:
                    owned = {r.key for r in owned_scan(reader.scan(), shard) if isinstance(r, DumpRun)}
                waiting = _waiting(reader, model, owned)
                if waiting:
                    # Runs of other shards not imported yet: building now would link versions to the
                    # wrong run (MLflow cannot change a version's run later). Not done: exit non-zero.
                    result.status = "deferred"
                    result.message = (f"{len(waiting)} run(s) of its versions ({', '.join(waiting[:5])}) are not "
                                      "imported yet (other shards): run `import --registry-only` (or this shard "
                                      "again) once every shard finished")
                    continue
            losses += [lo for lo in renamed if lo.path == f"{group.project}/{group.model_id}"]
            losses += dest.plan_model(model)
            result.losses = [lo.to_json() for lo in losses]
            out.extend(_import_model(reader, dest, model, result, dry_run=dry_run, ledger=ledger))
        except Exception as exc:  # one model's failure must not stop the others
            if not isinstance(exc, MigrateError):
                log.debug("registry import of %s failed", mkey, exc_info=True)
            result.status = "would_fail" if dry_run else "failed"
            result.message = redact(one_line(exc))
            if ledger is not None and not dry_run:
                ledger.append({"key": f"registry:{mkey}", "status": "failed", "message": result.message})
    return out


def _import_model(reader: DumpReader, dest: RetryingDestination, model: RegistryModel, result: RegistryResult,
                  *, dry_run: bool, ledger: Ledger | None) -> list[RegistryResult]:
    found = dest.read_model(model, hashes=False)
    expected = dest.expected_model(model)
    by_id: dict[str, VersionSnapshot] = {v.version_id: v for v in (found.versions if found else [])}
    out: list[RegistryResult] = []
    if dry_run:
        if found is None:
            result.status, result.destination = "would_create", expected.name
        else:
            same = found.description == expected.description and found.tags == expected.tags
            result.status, result.destination = ("would_skip" if same else "would_update"), found.name
        for v, want in zip(model.versions, expected.versions, strict=True):
            have = by_id.get(v.version_id)
            changed = _files_changed(model, v, have, want)
            status = "would_create" if have is None else "would_conflict" if changed else (
                "would_skip" if _version_done(have, want) else "would_complete")
            out.append(RegistryResult(f"version:{model.project}/{v.version_id}", status,
                                      None if have is None else have.number,
                                      losses=changed + _order_losses(model, v, have, by_id)))
        for alias, vid in sorted(holders_of(model).items()):
            done = found is not None and found.aliases.get(alias) == vid
            out.append(RegistryResult(f"alias:{model.project}/{model.model_id}@{alias}",
                                      "would_skip" if done else "would_set", vid))
        out.extend(RegistryResult(f"alias:{model.project}/{model.model_id}@{alias}", "would_remove", vid,
                                  "no version holds its stage any more")
                   for alias, vid in _stale_aliases(found, holders_of(model)))
        return out
    name = dest.ensure_model(model)
    if found is None:
        result.status = "created"
    elif found.description == expected.description and found.tags == expected.tags:
        result.status = "skipped"
    else:
        result.status = "updated"
    result.destination = name
    if name != expected.name:
        result.message = f"registered as {name!r}: {expected.name!r} belongs to another model"
    for v, want in zip(model.versions, expected.versions, strict=True):
        vkey = f"version:{model.project}/{v.version_id}"
        have = by_id.get(v.version_id)
        changed = _files_changed(model, v, have, want)
        if changed:  # the registry cannot give an existing version new files: left as it is, reported
            out.append(RegistryResult(vkey, "conflict", have.number if have else None,
                                      "its files changed in the dump; the registry keeps the old ones",
                                      losses=changed))
            continue
        if have is not None and _version_done(have, want):
            out.append(RegistryResult(vkey, "skipped", have.number, "already in the registry",
                                      losses=_link_losses(model, v, have, want)))
            continue
        for fe, _ in v.files:  # a corrupt blob fails the model before anything of it is written
            reader.verified_blob(fe.sha256 or "")
        made = dest.ensure_version(model, name, v, have)
        status = "created" if have is None else "completed"
        out.append(RegistryResult(vkey, status, made.number, losses=_link_losses(model, v, have, want)
                                  + _order_losses(model, v, have, by_id, made.number, want.number)))
        if ledger is not None:
            ledger.append({"key": f"registry:{vkey}", "status": status, "model": name,
                           "destination_version": made.number})
    holders = holders_of(model)
    dest.set_aliases(model, name, holders)  # the model's last write, also without aliases
    for alias, vid in sorted(holders.items()):
        done = found is not None and found.aliases.get(alias) == vid
        out.append(RegistryResult(f"alias:{model.project}/{model.model_id}@{alias}",
                                  "skipped" if done else "set", vid))
    out.extend(RegistryResult(f"alias:{model.project}/{model.model_id}@{alias}", "removed", vid,
                              "no version holds its stage any more")
               for alias, vid in _stale_aliases(found, holders))
    if ledger is not None:
        ledger.append({"key": f"registry:{result.key}", "status": result.status, "model": name})
    return out


def _link_losses(model: RegistryModel, v: RegistryVersion, have: VersionSnapshot | None,
                 want: VersionSnapshot) -> list[dict[str, Any]]:
    """An existing version linked to another run than it should be now (e.g. made while its source
    run was not imported): the destination cannot change it, so it is lost by us until fixed by hand."""
    if have is None or want.run_id is None or have.run_id is None or have.run_id == want.run_id:
        return []
    return [Loss("version_run_link_differs", f"{model.project}/{v.version_id}", 1,
                 f"version {have.number} is linked to run {have.run_id}, not {want.run_id} (its source run, "
                 "imported since); the registry cannot change it: delete the version and import again",
                 category=LossCategory.LOST).to_json()]


def _files_changed(model: RegistryModel, v: RegistryVersion, have: VersionSnapshot | None,
                   want: VersionSnapshot) -> list[dict[str, Any]]:
    """An existing version whose files differ from the dump's now (a re-export changed them), told by
    the files digest tag of a destination that records it. The old bytes stay, the new ones are not
    in the destination: lost by us (exit 1) until the version is deleted by hand and imported again."""
    old, new = (have.tags.get(FILES_DIGEST_TAG) if have else None), want.tags.get(FILES_DIGEST_TAG)
    if old is None or new is None or old == new:
        return []
    return [Loss("version_files_changed", f"{model.project}/{v.version_id}", max(len(v.files), 1),
                 f"version {have.number if have else '?'} holds other files than the dump now; a registry "
                 "version's files cannot be replaced: delete the version and import again",
                 category=LossCategory.LOST).to_json()]


def _order_losses(model: RegistryModel, v: RegistryVersion, have: VersionSnapshot | None,
                  by_id: dict[str, VersionSnapshot], made: str | None = None,
                  want: str | None = None) -> list[dict[str, Any]]:
    """A version new in the dump placed before versions already migrated: the destination appends
    it (its number is not Neptune's order). Planned from the later versions found; at import, told
    by the number it got."""
    if have is not None:
        return []
    if made is not None:
        if want is None or made == want:
            return []
    else:
        later = [x.version_id for x in model.versions if x.position > v.position and x.version_id in by_id]
        if not later:
            return []
    return [Loss("version_out_of_order", f"{model.project}/{v.version_id}", 1,
                 f"new in the dump before versions already migrated: appended as version "
                 f"{made or 'after them'}, not at Neptune's place {v.position}",
                 category=LossCategory.CHANGED_FORM).to_json()]


def _stale_aliases(found: ModelSnapshot | None, holders: dict[str, str]) -> list[tuple[str, str]]:
    """Stage aliases on our versions that no version holds any more (removed by `set_aliases`)."""
    if found is None:
        return []
    stages = set(ALIAS_OF_STAGE.values())
    return [(a, vid) for a, vid in sorted(found.aliases.items()) if a in stages and a not in holders]


def _version_done(have: VersionSnapshot, want: VersionSnapshot) -> bool:
    """The version's tags are exactly the ones the import sets (none missing, none stale, e.g.
    `neptune.tags` after its tags were removed), and the description is right."""
    return have.tags == want.tags and (want.description or None) == (have.description or None)
