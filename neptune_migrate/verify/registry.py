"""verify for the model registry: models, versions (order), tags, aliases and version files.

Each Neptune model becomes one entry of the verify report next to the runs (key
`model:<project>/<model id>`), with findings of the usual kinds: `missing`, `extra`, `differs`,
`error`. Items: `model`, `model:name`, `model:description`, `model:tag:<key>`, `version:<id>`,
`version:<id>:order`, `version:<id>:description`, `version:<id>:run`, `version:<id>:tag:<key>`, `alias:<alias>`,
`file:<version id>/<path>`. Files are compared by size and sha256 (downloaded from the destination).
"""

from __future__ import annotations

import logging
from collections.abc import Iterable

from neptune_migrate.destinations.base import FileDigest, ModelSnapshot, RegistryModel, VersionSnapshot
from neptune_migrate.destinations.retrying import RetryingDestination
from neptune_migrate.dump.reader import DumpReader, DumpRun
from neptune_migrate.errors import one_line, redact
from neptune_migrate.pipeline.registry import ALIAS_OF_STAGE, build_model, named_groups
from neptune_migrate.pipeline.shard import Shard
from neptune_migrate.verify.findings import Finding
from neptune_migrate.verify.verifier import RunVerification

log = logging.getLogger(__name__)


def verify_registry(reader: DumpReader, dest: RetryingDestination, runs: Iterable[DumpRun],
                    shard: Shard | None = None) -> list[RunVerification]:
    """One verification per model of the (selected) runs; nothing when the destination has no registry."""
    if dest.capabilities.registry == "none":
        return []
    groups, names, _ = named_groups(runs, shard, dest.registry_name)
    out: list[RunVerification] = []
    for group in groups:
        key = f"model:{group.project}/{group.model_id}"
        result = RunVerification(key=key, destination_run_id=None, status="match",
                                 name=names[group.project, group.model_id])
        try:
            model, _ = build_model(dest, reader, group, names[group.project, group.model_id])
            expected = dest.expected_model(model)
            actual = dest.read_model(model, hashes=dest.capabilities.file_hashes)
            if actual is None:
                result.status = "missing"
                result.findings.append(Finding(key, "missing", "model", detail="not in the destination's registry"))
                out.append(result)
                continue
            result.destination_run_id = actual.name
            result.params_compared = len(expected.tags) + sum(len(v.tags) for v in expected.versions)
            result.files_compared = sum(len(v.files) for v in expected.versions)
            result.findings.extend(compare_models(key, model, expected, actual,
                                                  hashes=dest.capabilities.file_hashes))
        except Exception as exc:  # verification goes on with the next model
            log.debug("verify of %s failed", key, exc_info=True)
            result.findings.append(Finding(key, "error", "model", detail=redact(one_line(exc))))
        if result.findings:
            result.status = "error" if any(f.kind == "error" for f in result.findings) else "mismatch"
        out.append(result)
    return out


def _tags(key: str, item: str, expected: dict[str, str], actual: dict[str, str]) -> list[Finding]:
    out = []
    for k, v in sorted(expected.items()):
        got = actual.get(k)
        if got is None:
            out.append(Finding(key, "missing", f"{item}tag:{k}", expected=v))
        elif got != v:
            out.append(Finding(key, "differs", f"{item}tag:{k}", expected=v, actual=got))
    out.extend(Finding(key, "extra", f"{item}tag:{k}", actual=got)  # e.g. a stale neptune.tags
               for k, got in sorted(actual.items()) if k not in expected)
    return out


def _files(key: str, vid: str, expected: dict[str, FileDigest], actual: dict[str, FileDigest],
           *, hashes: bool) -> list[Finding]:
    out = []
    for path in sorted(set(expected) | set(actual)):
        item = f"file:{vid}/{path}"
        want, got = expected.get(path), actual.get(path)
        if got is None:
            out.append(Finding(key, "missing", item))
        elif want is None:
            out.append(Finding(key, "extra", item))
        elif want.size is not None and got.size is not None and want.size != got.size:
            out.append(Finding(key, "differs", item, expected=f"{want.size} bytes", actual=f"{got.size} bytes"))
        elif hashes and want.sha256 != got.sha256:
            out.append(Finding(key, "differs", item, expected=f"sha256 {want.sha256}",
                               actual=f"sha256 {got.sha256}"))
    return out


def compare_models(key: str, model: RegistryModel, expected: ModelSnapshot, actual: ModelSnapshot,
                   *, hashes: bool = True) -> list[Finding]:
    """Pure: every difference between the registered model as it should be and as read back."""
    out: list[Finding] = []
    if actual.name not in (expected.name, f"{expected.name}-{model.model_id}"):
        out.append(Finding(key, "differs", "model:name", expected=expected.name, actual=actual.name))
    if (expected.description or None) != (actual.description or None):
        out.append(Finding(key, "differs", "model:description", expected=expected.description,
                           actual=actual.description))
    out.extend(_tags(key, "model:", expected.tags, actual.tags))
    have: dict[str, VersionSnapshot] = {}
    for v in actual.versions:
        if v.version_id in have:
            out.append(Finding(key, "extra", f"version:{v.version_id}", expected=have[v.version_id].number,
                               actual=v.number, detail="a second destination version of one Neptune version"))
            continue
        have[v.version_id] = v
    wanted = {v.version_id for v in expected.versions}
    out.extend(Finding(key, "extra", f"version:{v.version_id}", actual=v.number,
                       detail="not a version of this model in the dump")
               for v in actual.versions if v.version_id not in wanted)
    order = [v.version_id for v in actual.versions if v.version_id in wanted]
    expected_order = [v.version_id for v in expected.versions if v.version_id in have]
    first_seen = list(dict.fromkeys(order))
    if first_seen != expected_order:
        for want_vid, got_vid in zip(expected_order, first_seen, strict=True):
            if want_vid != got_vid:
                out.append(Finding(key, "differs", f"version:{want_vid}:order",
                                   expected=" < ".join(expected_order), actual=" < ".join(first_seen),
                                   detail="versions are not in Neptune's order"))
                break
    for want in expected.versions:
        got = have.get(want.version_id)
        vitem = f"version:{want.version_id}"
        if got is None:
            out.append(Finding(key, "missing", vitem))
            continue
        if (want.description or None) != (got.description or None):
            out.append(Finding(key, "differs", f"{vitem}:description", expected=want.description,
                               actual=got.description))
        if want.run_id is not None and got.run_id != want.run_id:
            out.append(Finding(key, "differs", f"{vitem}:run", expected=want.run_id, actual=got.run_id,
                               detail="linked to another run than its source run (or its own)"))
        out.extend(_tags(key, f"{vitem}:", want.tags, got.tags))
        out.extend(_files(key, want.version_id, want.files, got.files, hashes=hashes))
    for alias, vid in sorted(expected.aliases.items()):
        holder = actual.aliases.get(alias)
        if holder is None:
            out.append(Finding(key, "missing", f"alias:{alias}", expected=vid))
        elif holder != vid:
            out.append(Finding(key, "differs", f"alias:{alias}", expected=vid, actual=holder))
    for alias, vid in sorted(actual.aliases.items()):
        if alias not in expected.aliases and alias in ALIAS_OF_STAGE.values() and vid in wanted:
            out.append(Finding(key, "extra", f"alias:{alias}", actual=vid))
    return out
