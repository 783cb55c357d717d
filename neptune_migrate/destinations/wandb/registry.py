"""W&B's registry: one model artifact collection per Neptune model, one artifact version per version.

The `RegistryWriter` half of `WandbDestination` (which delegates here). Each model gets a registry
run of its own (`job_type` `neptune-registry`, a deterministic id) that logs, in Neptune's order,
one artifact of type `model` per version: name = the collection, the version's files, its
description, and as metadata the Neptune facts (version id, model id, number, stage, stage history,
source run, tags); the newest version of each stage is logged with the alias `production`,
`staging` or `archived`. W&B numbers the artifact versions `v0`, `v1`, ... in that order.

Offline (the mode the tests run in), `run.link_artifact` is not implemented by the SDK (0.31 raises
`NotImplementedError` and logs a duplicate artifact record), so the link into the registry
(`wandb-registry-model/<collection>`) cannot be recorded in the run file: the target path is kept in
each artifact's metadata (`link_target`) and in the run's config, and `docs/registry.md` gives the
two lines that link them after `wandb sync`. Online mode is not implemented yet (a clear error).

The registry run is the unit of resume: its summary carries the completion marker and a digest of
everything it holds; an incomplete one, or one holding another version of the dump, is deleted and
written again whole (offline runs can be deleted), so a crash never leaves a duplicate version.
File bytes are staged inside the W&B folder (`<dir>/neptune-migrate-staging`), not in the user's
data folder, so the offline folder is complete for `wandb sync`. wandb is imported lazily.
"""

from __future__ import annotations

import base64
import contextlib
import hashlib
import json
import os
import re
import time
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

from neptune_migrate.destinations.base import (
    FileDigest,
    ModelSnapshot,
    RegistryModel,
    RegistryVersion,
    VersionSnapshot,
)
from neptune_migrate.destinations.wandb import mapping as m
from neptune_migrate.destinations.wandb.records import iter_records, read_marker
from neptune_migrate.dump.writer import sha256_file
from neptune_migrate.errors import PermanentError
from neptune_migrate.model import DestinationRunId, Loss

if TYPE_CHECKING:
    from neptune_migrate.destinations.wandb.destination import WandbDestination

REGISTRY_DIGEST_KEY = f"{m.MARK}/registry_digest"
LINK_ROOT = "wandb-registry-model"
STAGING = "neptune-migrate-staging"
FLUSH_TIMEOUT = 60.0
_UNSAFE = re.compile(r"[^A-Za-z0-9_.-]+")
IDENTITY_FILE = "neptune_version.json"
"""A small file in every version artifact naming the version: W&B dedupes artifact versions by the
digest of their files (metadata is not in it), so two versions with the same files (or none) would
become one after `wandb sync` without it. Never clashes with a Neptune file (`<attribute>/<name>`)."""

ONLINE_REFUSED = ("the W&B registry is written in offline mode only (online registry import is not implemented "
                  "yet): import with --wandb-mode offline, then `wandb sync`; or leave it out with --no-registry")


def collection_name(name: str) -> str:
    """A model name with W&B's artifact name characters only (empty when none is left)."""
    return _UNSAFE.sub("-", name).strip("-.")


def collection(model: RegistryModel) -> str:
    """The artifact (and registry collection) name: the model's name with W&B's characters only."""
    return collection_name(model.name) or model.model_id


def file_path(version: RegistryVersion, index: int) -> str:
    fe = version.files[index][0]
    return f"{fe.attribute_path}/{fe.name}"


def version_metadata(model: RegistryModel, version: RegistryVersion) -> dict[str, Any]:
    doc: dict[str, Any] = {"neptune_version_id": version.version_id, "neptune_model_id": model.model_id,
                           "neptune_project": model.project, "position": version.position,
                           "link_target": f"{LINK_ROOT}/{collection(model)}"}
    if version.number is not None:
        doc["neptune_version"] = version.number
    if version.stage is not None:
        doc["neptune_stage"] = version.stage
    if version.stage_history:
        doc["neptune_stage_history"] = [{"stage": c.stage, "at": None if c.at is None else c.at.isoformat()}
                                        for c in version.stage_history]
    if version.source_run is not None:
        doc["neptune_source_run"] = str(version.source_run)
    if version.tags:
        doc["neptune_tags"] = sorted(version.tags)
    return doc


def identity_bytes(model: RegistryModel, version: RegistryVersion) -> bytes:
    """The content of the version's `neptune_version.json` (deterministic: verify hashes it)."""
    doc = {"neptune_project": model.project, "neptune_model_id": model.model_id,
           "neptune_version_id": version.version_id, "neptune_stage": version.stage}
    return json.dumps(doc, sort_keys=True).encode()


def _text(doc: Mapping[str, Any]) -> dict[str, str]:
    return {k: v if isinstance(v, str) else json.dumps(v, sort_keys=True) for k, v in doc.items()}


def md5_b64(path: Path) -> str:
    """W&B's manifest digest of a file (base64 of its md5)."""
    h = hashlib.md5()
    with path.open("rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            h.update(block)
    return base64.b64encode(h.digest()).decode()


@contextlib.contextmanager
def _staging(directory: Path) -> Iterator[None]:
    """Stage artifact files in the W&B folder (W&B reads `WANDB_DATA_DIR` when it stages)."""
    before = os.environ.get("WANDB_DATA_DIR")
    os.environ["WANDB_DATA_DIR"] = str(directory / STAGING)
    try:
        yield
    finally:
        if before is None:
            os.environ.pop("WANDB_DATA_DIR", None)
        else:
            os.environ["WANDB_DATA_DIR"] = before


class WandbRegistry:
    """Registry runs of one `WandbDestination` (one open at a time)."""

    def __init__(self, dest: WandbDestination) -> None:
        self.dest = dest
        self.open: dict[str, Any] = {}
        """Run id -> the registry run being written."""
        self.logged: dict[str, set[int]] = {}
        """Run id -> positions of the versions logged into the open run."""

    def run_id(self, model: RegistryModel) -> str:
        project = m.project_name(self.dest.project_template, model.project)
        return m.run_id_for(project, f"{model.project}/{model.model_id}#neptune-registry")

    def digest(self, model: RegistryModel) -> str:
        doc = {"model": self.model_config(model), "identity_file": IDENTITY_FILE,
               "versions": [[version_metadata(model, v), v.description, list(v.aliases),
                             [[file_path(v, i), fe.sha256] for i, (fe, _) in enumerate(v.files)]]
                            for v in model.versions]}
        return hashlib.sha256(json.dumps(doc, sort_keys=True).encode()).hexdigest()

    def model_config(self, model: RegistryModel) -> dict[str, Any]:
        doc: dict[str, Any] = {"neptune_model_id": model.model_id, "neptune_project": model.project,
                               "name": model.name, "collection": collection(model),
                               "link_target": f"{LINK_ROOT}/{collection(model)}"}
        if model.description:
            doc["description"] = model.description
        if model.tags:
            doc["neptune_tags"] = sorted(model.tags)
        return doc

    # -- pure -----------------------------------------------------------------------------------

    def plan_model(self, model: RegistryModel) -> list[Loss]:
        where = f"{model.project}/{model.model_id}"
        if self.dest.mode == "online":
            raise PermanentError(ONLINE_REFUSED)  # a dry run says would_fail, as the real run fails
        return [Loss("registry_link_after_sync", where, len(model.versions),
                     f"W&B cannot link artifacts offline: versions are model artifacts {collection(model)}:vN; "
                     f"link them to {LINK_ROOT}/{collection(model)} after `wandb sync` (docs/registry.md)")]

    def expected_model(self, model: RegistryModel) -> ModelSnapshot:
        versions = []
        for i, v in enumerate(model.versions):
            files = {file_path(v, j): FileDigest(fe.size, fe.sha256) for j, (fe, _) in enumerate(v.files)}
            ident = identity_bytes(model, v)
            files[IDENTITY_FILE] = FileDigest(len(ident), hashlib.sha256(ident).hexdigest())
            versions.append(VersionSnapshot(version_id=v.version_id, number=f"v{i}",
                                            description=v.description or None,
                                            tags=_text(version_metadata(model, v)), files=files))
        holders = {a: v.version_id for v in model.versions for a in v.aliases}
        return ModelSnapshot(name=collection(model), description=model.description or None,
                             tags=_text(self.model_config(model)), versions=versions, aliases=holders)

    # -- read -----------------------------------------------------------------------------------

    def _log_file(self, model: RegistryModel) -> Path | None:
        dirs = self.dest.run_dirs(self.run_id(model))
        if len(dirs) != 1:
            return None
        path = dirs[0] / f"run-{self.run_id(model)}.wandb"
        return path if path.is_file() else None

    def read_model(self, model: RegistryModel, *, hashes: bool) -> ModelSnapshot | None:
        """The complete registry run holding this version of the model (None: absent, incomplete,
        or written from another version of the dump; then it is written again whole)."""
        if self.dest.mode == "online":
            return None
        path = self._log_file(model)
        if path is None:
            return None
        marker = read_marker(path, m.STATUS_KEY, REGISTRY_DIGEST_KEY)
        if not marker.exited or marker.status != m.STATUS_COMPLETE or marker.digest != self.digest(model):
            return None
        snap = read_registry_run(path, hashes=hashes)
        if not hashes and not staged_intact(path):
            return None  # the marker is intact but the bytes `wandb sync` would upload are not: rewrite it
        return snap

    # -- write ----------------------------------------------------------------------------------

    def ensure_model(self, model: RegistryModel) -> str:
        if self.dest.mode == "online":
            raise PermanentError(ONLINE_REFUSED)
        rid = self.run_id(model)
        if rid in self.open:
            return collection(model)
        if self.read_model(model, hashes=False) is not None:
            return collection(model)  # complete and the same: nothing to write
        self._reopen(model)
        return collection(model)

    def _reopen(self, model: RegistryModel) -> None:
        """Discard the model's registry run (if any) and open a new one, empty."""
        rid = self.run_id(model)
        wandb = self.dest.wandb_module()
        self.dest.discard_run(DestinationRunId(rid))
        project = m.project_name(self.dest.project_template, model.project)
        self.dest.directory.mkdir(parents=True, exist_ok=True)
        run = wandb.init(
            id=rid, project=project, entity=self.dest.entity, dir=str(self.dest.directory),
            name=f"registry {model.name}", job_type="neptune-registry", notes=model.description or None,
            config={"neptune_registry": self.model_config(model)}, settings=self.dest.settings(),
            reinit="finish_previous",
        )
        self.open[rid] = run
        self.logged[rid] = set()

    def ensure_version(self, model: RegistryModel, name: str, version: RegistryVersion,
                       found: VersionSnapshot | None) -> VersionSnapshot:
        run = self.open.get(self.run_id(model))
        if run is None:  # found complete by ensure_model, yet a version needs writing: rewrite it whole
            self._reopen(model)
            for earlier in model.versions[:version.position - 1]:
                self._log(model, earlier)
        self._log(model, version)
        return VersionSnapshot(version_id=version.version_id, number=f"v{version.position - 1}",
                               description=version.description or None,
                               tags=_text(version_metadata(model, version)))

    def _log(self, model: RegistryModel, version: RegistryVersion) -> None:
        """Log one version artifact into the open registry run (once per run)."""
        wandb = self.dest.wandb_module()
        rid = self.run_id(model)
        run = self.open[rid]
        done = self.logged.setdefault(rid, set())
        if version.position in done:
            return
        art = wandb.Artifact(collection(model), type="model", description=version.description or None,
                             metadata=version_metadata(model, version))
        ident = self.dest.directory / STAGING / "identity" / self.run_id(model) / f"{version.position}.json"
        ident.parent.mkdir(parents=True, exist_ok=True)
        ident.write_bytes(identity_bytes(model, version))
        with _staging(self.dest.directory):
            for i, (_, blob) in enumerate(version.files):
                art.add_file(str(blob), name=file_path(version, i))
            art.add_file(str(ident), name=IDENTITY_FILE)
            run.log_artifact(art, aliases=list(version.aliases))
        done.add(version.position)

    def set_aliases(self, model: RegistryModel, name: str, holders: Mapping[str, str]) -> None:
        """The aliases were logged with their versions: write the marker and finish the run."""
        rid = self.run_id(model)
        run = self.open.get(rid)
        if run is None:
            return
        for version in model.versions:  # a run reopened mid-model: the versions skipped after it
            self._log(model, version)
        del self.open[rid]
        self.logged.pop(rid, None)
        digest = self.digest(model)
        run.summary[REGISTRY_DIGEST_KEY] = digest
        run.summary[m.STATUS_KEY] = m.STATUS_COMPLETE
        run.finish(exit_code=0)
        path = None
        deadline = time.monotonic() + FLUSH_TIMEOUT
        while True:  # finish may return before wandb-core flushed the marker
            path = path or self._log_file(model)
            if path is not None:
                marker = read_marker(path, m.STATUS_KEY, REGISTRY_DIGEST_KEY)
                if marker.exited and marker.digest == digest:
                    return
            if time.monotonic() > deadline:
                msg = f"W&B did not finish writing registry run {rid} within {FLUSH_TIMEOUT:.0f} s"
                raise PermanentError(msg)
            time.sleep(0.02)

    def close(self) -> None:
        for run in self.open.values():
            with contextlib.suppress(Exception):
                run.finish(exit_code=1)  # no marker: written again whole next time
        self.open.clear()
        self.logged.clear()


def staged_intact(path: Path) -> bool:
    """Every file of every model artifact in the registry run is still staged with the bytes its
    manifest names (W&B's md5): what `wandb sync` uploads. A local read of the staged bytes."""
    for record in iter_records(path):
        if record.WhichOneof("record_type") == "artifact" and record.artifact.type == "model":
            for entry in record.artifact.manifest.contents:
                local = Path(entry.local_path) if entry.local_path else None
                if local is None or not local.is_file() or local.stat().st_size != int(entry.size) \
                        or md5_b64(local) != entry.digest:
                    return False
    return True


def read_registry_run(path: Path, *, hashes: bool) -> ModelSnapshot:
    """A registry run file read back with our own reader: config, then each `model` artifact record
    in log order (W&B's v0, v1, ...), its metadata, aliases and manifest (files and digests)."""
    snap = ModelSnapshot(name="")
    for record in iter_records(path):
        which = record.WhichOneof("record_type")
        if which == "run":
            for item in record.run.config.update:
                if item.key == "neptune_registry":
                    cfg = json.loads(item.value_json)
                    snap.name = str(cfg.get("collection", ""))
                    snap.description = cfg.get("description") or None
                    snap.tags = _text(cfg)
        elif which == "artifact" and record.artifact.type == "model":
            art = record.artifact
            meta = json.loads(art.metadata) if art.metadata else {}
            vid = str(meta.get("neptune_version_id", ""))
            files: dict[str, FileDigest] = {}
            for entry in art.manifest.contents:
                local = Path(entry.local_path) if entry.local_path else None
                sha = None
                if hashes and local is not None and local.is_file():
                    sha = sha256_file(local) if md5_b64(local) == entry.digest else "differs from the manifest"
                files[entry.path] = FileDigest(int(entry.size), sha)
            vs = VersionSnapshot(version_id=vid, number=f"v{len(snap.versions)}",
                                 description=art.description or None, tags=_text(meta), files=files)
            snap.versions.append(vs)
            for alias in art.aliases:
                if alias != "latest":
                    snap.aliases[alias] = vid
    return snap
