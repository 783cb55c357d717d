"""MLflow's model registry: registered models, versions in Neptune's order, stage aliases.

The `RegistryWriter` half of `MlflowDestination` (which delegates here): a Neptune model is a
registered model tagged `neptune.model_id`; a version is a model version tagged
`neptune.version_id` and `neptune.stage`, whose files are an MLflow 3 logged model (where the
installed MLflow has `create_logged_model`, else the `neptune/files` artifacts of the version's
carrier run); the newest version of each stage gets the alias `production`, `staging` or
`archived`. Every request goes through the destination's `_req` (one request retried at a time);
a request that may have taken effect before its answer was lost is looked up before it is sent
again. mlflow is imported lazily.
"""

from __future__ import annotations

import json
import shutil
import tempfile
from collections.abc import Callable, Mapping
from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING, Any

from neptune_migrate.destinations.base import (
    FILES_DIGEST_TAG,
    FileDigest,
    ModelSnapshot,
    RegistryModel,
    RegistryVersion,
    VersionSnapshot,
)
from neptune_migrate.destinations.mlflow import mapping as m
from neptune_migrate.dump.writer import sha256_file
from neptune_migrate.errors import PermanentError
from neptune_migrate.model import Loss, LossCategory

if TYPE_CHECKING:
    from neptune_migrate.destinations.mlflow.destination import MlflowDestination

TAG_MODEL_ID = "neptune.model_id"
TAG_PROJECT = "neptune.project"
TAG_VERSION_ID = "neptune.version_id"
TAG_VERSION = "neptune.version"
TAG_STAGE = "neptune.stage"
TAG_STAGE_HISTORY = "neptune.stage_history"
TAG_SOURCE_RUN = "neptune.source_run"
TAG_CARRIER_RUN = "neptune.carrier_run_id"
TAG_TAGS = "neptune.tags"
STAGE_ALIASES = frozenset({"production", "staging", "archived"})
"""The aliases the registry step gives and takes away (the values of `pipeline.registry.ALIAS_OF_STAGE`)."""
TAG_LOGGED_MODEL = "nm.logged_model_id"
"""The MLflow 3 logged model holding a version's files (so verify can find them)."""


def _lit(value: str) -> str:
    """A quoted literal for MLflow's registry filters (no escapes: pick the other quote)."""
    if "'" not in value:
        return f"'{value}'"
    if '"' not in value:
        return f'"{value}"'
    msg = f"{value!r} holds both quote characters; MLflow's registry search cannot match it"
    raise PermanentError(msg)


def is_file_store(uri: str) -> bool:
    """An MLflow file store (`./mlruns`, a path, `file:` URI): it writes a model version and its
    tags in separate steps, so a kill in between leaves a version no re-run can recognise."""
    from urllib.parse import urlparse

    scheme = urlparse(uri).scheme
    return scheme in ("", "file") or len(scheme) == 1  # a bare path (also `C:\\...`)


FILE_STORE_REFUSED = ("the MLflow registry is not written to a file store (`./mlruns`, `file:`): it tags a version "
                      "after creating it, so a crash leaves a version no re-run can recognise; use a "
                      "`sqlite:///` or server store, or --no-registry")


def file_path(version: RegistryVersion, index: int) -> str:
    """Where a version's file sits among the logged model's artifacts: `<attribute key>/<name>`."""
    fe = version.files[index][0]
    return m.file_entry_artifact(fe).removeprefix(m.FILES_DIR + "/")


def model_tags(model: RegistryModel) -> dict[str, str]:
    tags = {TAG_MODEL_ID: model.model_id, TAG_PROJECT: model.project}
    if model.carrier_run_id is not None:
        tags[TAG_CARRIER_RUN] = model.carrier_run_id
    if model.tags:
        tags[TAG_TAGS] = json.dumps(sorted(model.tags), ensure_ascii=False)
    return tags


def version_tags(model: RegistryModel, version: RegistryVersion) -> dict[str, str]:
    """Every tag a version carries (identity first: it is set in the creating request)."""
    tags = {TAG_VERSION_ID: version.version_id, TAG_MODEL_ID: model.model_id, TAG_PROJECT: model.project}
    if version.stage is not None:
        tags[TAG_STAGE] = version.stage
    if version.number is not None:
        tags[TAG_VERSION] = str(version.number)
    if version.stage_history:
        tags[TAG_STAGE_HISTORY] = json.dumps(
            [{"stage": c.stage, "at": None if c.at is None else c.at.isoformat()} for c in version.stage_history])
    if version.tags:
        tags[TAG_TAGS] = json.dumps(sorted(version.tags), ensure_ascii=False)
    if version.source_run is not None:
        tags[TAG_SOURCE_RUN] = str(version.source_run)
    if version.carrier_run_id is not None:
        tags[TAG_CARRIER_RUN] = version.carrier_run_id
    tags[FILES_DIGEST_TAG] = version.files_digest()  # a version's files cannot change: a re-run compares it
    return tags


class MlflowRegistry:
    """Registry requests of one `MlflowDestination` (its client, retrier and experiments)."""

    def __init__(self, dest: MlflowDestination) -> None:
        self.dest = dest

    @property
    def client(self) -> Any:
        return self.dest.client

    def _req(self, what: str, fn: Callable[[], Any]) -> Any:
        return self.dest._req(what, fn)

    @property
    def logged_models(self) -> bool:
        """The installed MLflow has MLflow 3 logged models (files are the version's own). Asked of
        the class: building a client would create a SQLite store, which a dry run must not."""
        from mlflow import MlflowClient

        return hasattr(MlflowClient, "create_logged_model")

    # -- planning -----------------------------------------------------------------------------

    def plan_model(self, model: RegistryModel) -> list[Loss]:
        if is_file_store(self.dest.tracking_uri):
            raise PermanentError(FILE_STORE_REFUSED)  # the model fails (exit 1); its runs are imported
        losses: list[Loss] = []
        if model.record_key is not None:
            losses.append(Loss("registry_model_data", f"{model.project}/{model.model_id}", 1,
                               "a registered model holds no fields or files: the model's own stay on "
                               f"its imported run (the registered model's tag {TAG_CARRIER_RUN})"))
        for v in model.versions:
            if v.source_run is not None and v.source_run_id is None:
                losses.append(Loss("version_source_run_not_imported", f"{model.project}/{v.version_id}", 1,
                                   f"source run {v.source_run} is not in MLflow; the version links its own "
                                   "imported run and keeps the source as tag " + TAG_SOURCE_RUN))
            if not self.logged_models and v.files and v.carrier_run_id is None:
                losses.append(Loss("version_files_not_carried", f"{model.project}/{v.version_id}", len(v.files),
                                   "this MLflow has no logged models and the version's run was not imported",
                                   category=LossCategory.LOST))
        return losses

    def expected_model(self, model: RegistryModel) -> ModelSnapshot:
        versions = []
        for v in model.versions:
            files = {file_path(v, i): FileDigest(fe.size, fe.sha256) for i, (fe, _) in enumerate(v.files)}
            versions.append(VersionSnapshot(version_id=v.version_id, number=str(v.position),
                                            description=v.description or None,
                                            tags=version_tags(model, v), files=files,
                                            run_id=v.source_run_id or v.carrier_run_id))
        holders = {alias: v.version_id for v in model.versions for alias in v.aliases}
        return ModelSnapshot(name=model.name, description=model.description or None, tags=model_tags(model),
                             versions=versions, aliases=holders)

    # -- reading --------------------------------------------------------------------------------

    def _registered(self, model: RegistryModel) -> Any:
        query = f"tags.`{TAG_MODEL_ID}` = {_lit(model.model_id)}"
        found = self._req("search_registered_models",
                          lambda: list(self.client.search_registered_models(query, max_results=1000)))
        ours = [r for r in found if r.tags.get(TAG_MODEL_ID) == model.model_id
                and r.tags.get(TAG_PROJECT) == model.project]
        ours.sort(key=lambda r: r.creation_timestamp or 0)
        return ours[0] if ours else None

    def _versions(self, name: str) -> list[Any]:
        query = f"name = {_lit(name)}"
        out: list[Any] = []
        token = None
        while True:
            page = self._req("search_model_versions", partial(self.client.search_model_versions,
                query, max_results=1000, page_token=token))
            out.extend(page)
            token = page.token
            if not token:
                break
        out.sort(key=lambda v: int(v.version))
        return out

    def read_model(self, model: RegistryModel, *, hashes: bool) -> ModelSnapshot | None:
        if self.dest._store_absent():
            return None  # a dry run against a new SQLite store must not create it
        rm = self._registered(model)
        if rm is None:
            return None
        snap = ModelSnapshot(name=rm.name, description=rm.description or None,
                             tags={k: v for k, v in rm.tags.items() if k.startswith("neptune.")})
        by_number: dict[str, str] = {}
        with tempfile.TemporaryDirectory(prefix="neptune-migrate-") as tmp:
            for mv in self._versions(rm.name):
                vid = mv.tags.get(TAG_VERSION_ID)
                if vid is None:
                    continue  # a version someone else made: not part of the migrated history
                by_number[str(mv.version)] = vid
                vs = VersionSnapshot(version_id=vid, number=str(mv.version), description=mv.description or None,
                                     tags={k: v for k, v in mv.tags.items() if k.startswith("neptune.")},
                                     run_id=mv.run_id or None)
                if hashes:
                    vs.files = self._version_files(mv, Path(tmp) / str(mv.version))
                snap.versions.append(vs)
        snap.aliases = {a: by_number[str(n)] for a, n in (rm.aliases or {}).items() if str(n) in by_number}
        return snap

    def _version_files(self, mv: Any, into: Path) -> dict[str, FileDigest]:
        """Every file of the version, downloaded and hashed (logged model artifacts, else the
        carrier run's `neptune/files`)."""
        from mlflow.artifacts import download_artifacts, list_artifacts

        into.mkdir(parents=True, exist_ok=True)
        uri = mv.source
        if uri.startswith("runs:/"):
            local = Path(self._req("download_artifacts", lambda: download_artifacts(
                artifact_uri=uri, dst_path=str(into), tracking_uri=self.dest.tracking_uri)))
        else:
            lm = self._req("get_logged_model", lambda: self.client.get_logged_model(mv.tags[TAG_LOGGED_MODEL])) \
                if TAG_LOGGED_MODEL in mv.tags else None
            location = lm.artifact_location if lm is not None else uri
            listed = self._req("list_artifacts", lambda: list_artifacts(
                artifact_uri=location, tracking_uri=self.dest.tracking_uri))
            if not listed:  # a version without files: its logged model has no artifacts folder at all
                return {}
            local = Path(self._req("download_artifacts", lambda: download_artifacts(
                artifact_uri=location, dst_path=str(into), tracking_uri=self.dest.tracking_uri)))
        out: dict[str, FileDigest] = {}
        for f in sorted(local.rglob("*")):
            if f.is_file():
                rel = f.relative_to(local).as_posix()
                out[rel] = FileDigest(f.stat().st_size, sha256_file(f))
        return out

    # -- writing --------------------------------------------------------------------------------

    def ensure_model(self, model: RegistryModel) -> str:
        from mlflow.exceptions import MlflowException

        rm = self._registered(model)
        tags = model_tags(model)
        if rm is None:
            name = model.name
            for candidate in (model.name, f"{model.name}-{model.model_id}"):
                name = candidate
                other = self._req("get_registered_model", partial(self._get_or_none, candidate))
                if other is None:
                    break
                if other.tags.get(TAG_MODEL_ID) == model.model_id and other.tags.get(TAG_PROJECT) == model.project:
                    return str(other.name)
            else:
                msg = f"registered model names {model.name!r} and {name!r} both belong to other models"
                raise PermanentError(msg)

            def create_once() -> str:
                try:
                    self.client.create_registered_model(name, tags=tags, description=model.description)
                except MlflowException as exc:
                    if exc.error_code != "RESOURCE_ALREADY_EXISTS":
                        raise
                    again = self._get_or_none(name)  # a lost answer of an earlier attempt
                    if again is None or again.tags.get(TAG_MODEL_ID) != model.model_id:
                        raise
                return name

            return str(self._req("create_registered_model", create_once))
        name = str(rm.name)
        for k, v in tags.items():
            if rm.tags.get(k) != v:
                self._req("set_registered_model_tag",
                          partial(self.client.set_registered_model_tag, name, k, v))
        for k in sorted(set(rm.tags) - set(tags)):
            if k.startswith("neptune."):  # e.g. neptune.tags after the model's tags were removed
                self._req("delete_registered_model_tag",
                          partial(self.client.delete_registered_model_tag, name, k))
        if (rm.description or None) != (model.description or None):
            self._req("update_registered_model",
                      lambda: self.client.update_registered_model(name, description=model.description or ""))
        return name

    def _get_or_none(self, name: str) -> Any:
        from mlflow.exceptions import MlflowException

        try:
            return self.client.get_registered_model(name)
        except MlflowException as exc:
            if exc.error_code == "RESOURCE_DOES_NOT_EXIST":
                return None
            raise

    def _find_version(self, name: str, version_id: str) -> Any:
        query = f"name = {_lit(name)} and tags.`{TAG_VERSION_ID}` = {_lit(version_id)}"
        found = [v for v in self.client.search_model_versions(query, max_results=1000)
                 if v.tags.get(TAG_VERSION_ID) == version_id]
        found.sort(key=lambda v: int(v.version))
        return found[0] if found else None

    def _logged_model(self, model: RegistryModel, version: RegistryVersion, run_id: str | None) -> Any:
        """The version's files as a READY logged model: found by its Neptune id, else created;
        a pending one (a crash before it was finalised) gets its files again and is finalised."""
        exp_id = self.dest._experiment_id(model.project, create=True)
        assert exp_id is not None
        query = f"tags.`{TAG_VERSION_ID}` = {_lit(version.version_id)}"
        found = [lm for lm in self._req("search_logged_models", lambda: list(
            self.client.search_logged_models([exp_id], filter_string=query, max_results=100)))
            if lm.tags.get(TAG_VERSION_ID) == version.version_id and lm.tags.get(TAG_PROJECT) == model.project]
        ready = [lm for lm in found if str(lm.status).endswith("READY")]
        if ready:
            return ready[0]
        tries = 0

        def create_once() -> Any:
            nonlocal tries
            tries += 1
            if tries > 1:  # an earlier attempt may have created it before its answer was lost
                again = [lm for lm in self.client.search_logged_models([exp_id], filter_string=query, max_results=100)
                         if lm.tags.get(TAG_VERSION_ID) == version.version_id
                         and lm.tags.get(TAG_PROJECT) == model.project]
                if again:
                    return again[0]
            return self.client.create_logged_model(
                exp_id, name=_logged_model_name(version.version_id), source_run_id=run_id,
                tags={TAG_VERSION_ID: version.version_id, TAG_PROJECT: model.project, TAG_MODEL_ID: model.model_id})

        lm = found[0] if found else self._req("create_logged_model", create_once)
        if version.files:
            with tempfile.TemporaryDirectory(prefix="neptune-migrate-") as tmp:
                for i, (_, blob) in enumerate(version.files):
                    target = Path(tmp) / file_path(version, i)
                    target.parent.mkdir(parents=True, exist_ok=True)
                    shutil.copyfile(blob, target)
                self._req("log_model_artifacts", lambda: self.client.log_model_artifacts(lm.model_id, tmp))
        return self._req("finalize_logged_model",
                         lambda: self.client.finalize_logged_model(lm.model_id, "READY"))

    def ensure_version(self, model: RegistryModel, name: str, version: RegistryVersion,
                       found: VersionSnapshot | None) -> VersionSnapshot:
        tags = version_tags(model, version)
        mv = self._req("search_model_versions", lambda: self._find_version(name, version.version_id))
        if mv is None:
            run_id = version.source_run_id or version.carrier_run_id
            if self.logged_models:
                lm = self._logged_model(model, version, run_id)
                source, model_id = lm.artifact_location, lm.model_id
                tags[TAG_LOGGED_MODEL] = lm.model_id
            elif version.carrier_run_id is not None:
                source, model_id = f"runs:/{version.carrier_run_id}/{m.FILES_DIR}", None
            else:
                msg = f"{version.version_id}: no place for the version's files (no logged models, no imported run)"
                raise PermanentError(msg)
            tries = 0

            def create_once() -> Any:
                nonlocal tries
                tries += 1
                if tries > 1:  # an earlier attempt may have created it before its answer was lost
                    again = self._find_version(name, version.version_id)
                    if again is not None:
                        return again
                kwargs: dict[str, Any] = {"run_id": run_id, "tags": tags,
                                          "description": version.description or None}
                if model_id is not None and run_id is not None:
                    # Without a run, MLflow looks the logged model up through the process-wide
                    # tracking URI (not this client's): a local store fails. The source names it.
                    kwargs["model_id"] = model_id
                return self.client.create_model_version(name, source, **kwargs)

            mv = self._req("create_model_version", create_once)
        else:  # half-made: complete its tags and description, never create a second one
            for k, v in tags.items():
                if mv.tags.get(k) != v:
                    self._req("set_model_version_tag", partial(
                        self.client.set_model_version_tag, name, mv.version, k, v))
            for k in sorted(set(mv.tags) - set(tags)):
                if k.startswith("neptune."):  # a tag the dump no longer has (neptune.tags, stage_history)
                    self._req("delete_model_version_tag", partial(
                        self.client.delete_model_version_tag, name, mv.version, k))
            if (mv.description or None) != (version.description or None):
                self._req("update_model_version", lambda: self.client.update_model_version(
                    name, mv.version, description=version.description or ""))
        return VersionSnapshot(version_id=version.version_id, number=str(mv.version),
                               description=version.description or None, tags=tags, run_id=mv.run_id or None)

    def set_aliases(self, model: RegistryModel, name: str, holders: Mapping[str, str]) -> None:
        """Point each stage alias at its holder, and delete a stage alias (`production`, `staging`,
        `archived`) that points at one of our versions but has no holder any more (also when no
        alias has one): its stage was left in Neptune. Aliases on versions not ours are left alone."""
        versions = self._versions(name)
        numbers = {v.tags.get(TAG_VERSION_ID): str(v.version) for v in versions}
        ours = {str(v.version) for v in versions if v.tags.get(TAG_VERSION_ID) is not None}
        current = self._req("get_registered_model", lambda: self.client.get_registered_model(name)).aliases or {}
        for alias, number in sorted(current.items()):
            if alias in STAGE_ALIASES and alias not in holders and str(number) in ours:
                self._req("delete_registered_model_alias",
                          partial(self.client.delete_registered_model_alias, name, alias))
        for alias, vid in sorted(holders.items()):
            number = numbers.get(vid)
            if number is None:
                msg = f"alias {alias}: version {vid} is not in registered model {name!r}"
                raise PermanentError(msg)
            if str(current.get(alias)) != number:
                self._req("set_registered_model_alias",
                          partial(self.client.set_registered_model_alias, name, alias, number))


def _logged_model_name(version_id: str) -> str:
    """A logged model name MLflow accepts (its run-name rules): the version id, `/` and `:` replaced."""
    return version_id.replace("/", "_").replace(":", "_")
