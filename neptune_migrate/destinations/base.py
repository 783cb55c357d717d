"""The Destination protocol: MLflow, W&B and Aim behind one seam.

The import pipeline (`pipeline/import_.py`) owns the order of calls and the resume logic; a
destination only knows how to write and read back its own system. Every method may be called
again after it raised: transient errors are retried by `destinations/retrying.py`, and a whole
import may be re-run after a crash.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import ClassVar, Literal, Protocol, TypeVar

import pyarrow as pa

from neptune_migrate.model import (
    DestinationRunId,
    ErrorKind,
    Field,
    FileEntry,
    Loss,
    RunKey,
    RunRecord,
    SeriesKind,
    StageChange,
)

T = TypeVar("T")


@dataclass(frozen=True, slots=True)
class DestinationOptions:
    """Every destination's command-line options; each destination reads its own."""

    tracking_uri: str | None = None
    """MLflow: tracking URI (`http://...`, `sqlite:///...`); default `MLFLOW_TRACKING_URI`."""
    experiment_template: str = "{project}"
    """MLflow/Aim: experiment name from `{project}`, `{workspace}`, `{project_name}`."""
    entity: str | None = None
    """W&B: entity (team or user)."""
    project_template: str = "{project_name}"
    """W&B: project name template."""
    wandb_mode: str = "online"
    wandb_dir: Path | None = None
    aim_repo: str | None = None
    """Aim: repository path or `aim://host:port`."""
    bulk: str = "auto"
    """MLflow `--bulk`: never, auto (float points straight into a tested tracking database), always."""
    mlflow_db: str | None = None
    """MLflow `--mlflow-db`: the database behind an `http(s)://` tracking server (bulk path, SQL reads)."""
    read: str = "sql"
    """MLflow `--read`: float series read back by SQL where the database is known (`sql`) or the API."""
    write_workers: int = 1
    """Requests of one run in flight at once (MLflow's API path: parallel `log_batch`)."""


@dataclass(frozen=True, slots=True)
class Capabilities:
    """What a destination can hold; the pipeline adapts to it instead of special-casing names."""

    integer_steps_only: bool
    """Steps must be int64: fractional steps go through the step policy."""
    single_step_axis: bool
    """One monotonic step axis per run (W&B): all series are merged before writing."""
    can_delete_runs: bool
    """A half-written run can be deleted and recreated; otherwise it is resumed."""
    file_hashes: bool
    """Read-back gives file content (sha256 comparable); otherwise sizes only."""
    duplicate_steps: Literal["kept", "overwritten", "dropped"]
    """What the destination does with two points of one series at the same step."""
    points_per_request: int = 1000
    """Points per `write_series` call (one request's worth, so a retry repeats one request);
    also the dry run's request estimate."""
    points_per_second: float = 5000.0
    """For the dry run's time estimate (measured single-process on 2 cores; see benchmarks/)."""
    parallel_runs: bool = True
    """Several runs may be written at once from threads of one process."""
    sanitize_key: Callable[[str], str] = field(default=lambda k: k)
    """Maps a Neptune attribute path to a key the destination accepts (may merge keys: the
    pipeline detects and resolves collisions)."""
    request_retry: bool = False
    """The destination retries each request itself through the `RequestRetry` it is given with
    `use_request_retry` (see `RetriesRequests`); its methods are then not retried as a whole."""
    registry: Literal["none", "native", "run_params"] = "none"
    """Model registry (see `RegistryWriter`): `native` builds registered models and versions,
    `run_params` records the registry facts on each version's run (Aim), `none`: no registry step."""


@dataclass(frozen=True, slots=True)
class DestinationRun:
    """A run found in the destination by its source key."""

    run_id: DestinationRunId
    complete: bool
    """The completion marker (written last) is present."""
    digest: str | None
    """The dump digest recorded at import; a different one means the dump changed since."""
    import_digest: str | None = None
    """The import digest recorded at import (dump digest + every write-affecting option, see
    `pipeline/import_.py`); None for runs imported before it existed."""
    origin: str | None = None
    """The `dump_id` of the dump the run was imported from; None for runs imported before it existed."""
    duplicates: tuple[DestinationRunId, ...] = ()
    """Other live runs of the same source key (left by two imports racing); verify reports
    each as `extra`."""
    busy: str | None = None
    """Set when the run is incomplete but another import is still writing it (who, since when):
    it must be left alone, not repaired."""


@dataclass(frozen=True, slots=True)
class StepPlan:
    """How one series' Neptune steps become destination steps."""

    policy: Literal["int", "scale", "rank", "floor"]
    """`int`: integral steps kept; `scale`: multiplied by `scale`; `rank`: i-th distinct step -> i;
    `floor`: truncated."""
    scale: int = 1
    """Multiplier for `scale` (a power of ten)."""
    duplicates: int = 0
    """Points whose (converted) step repeats an earlier point of the same series."""


@dataclass(frozen=True, slots=True)
class PreparedRun:
    """A dump run plus everything the pipeline decided for this destination."""

    record: RunRecord
    digest: str
    key_map: Mapping[str, str]
    """Neptune attribute path -> destination key, for fields and series alike."""
    steps: Mapping[tuple[SeriesKind, str], StepPlan]
    parent_run_id: DestinationRunId | None = None
    """The destination id of the fork parent when it was imported already."""
    import_digest: str = ""
    """sha256 of the dump digest and every option that changes what is written (attribute filter,
    step plans, key map, destination settings, mapping versions); stored with the completion marker."""
    origin: str = ""
    """The dump's id (`Manifest.origin`); stored at creation, compared to detect another dump's run."""
    end_time: datetime | None = None
    """When the run ends in the destination: `sys/modification_time`, else the latest point
    timestamp in the dump, else None (never the import time)."""

    def dest_fields(self) -> dict[str, Field]:
        return {self.key_map.get(p, p): f for p, f in self.record.fields.items()}


@dataclass(frozen=True, slots=True)
class FileDigest:
    size: int | None
    sha256: str | None


@dataclass
class RunSnapshot:
    """A destination run read back, in destination terms (keys already mapped)."""

    run_id: DestinationRunId
    name: str | None = None
    description: str | None = None
    owner: str | None = None
    status: str | None = None
    start_time: datetime | None = None
    end_time: datetime | None = None
    tags: frozenset[str] = frozenset()
    params: dict[str, str] = field(default_factory=dict)
    series: dict[tuple[SeriesKind, str], int] = field(default_factory=dict)
    """(kind, key) -> point count, for every series found."""
    files: dict[str, FileDigest] = field(default_factory=dict)
    """Destination file path -> size and hash."""
    extra: dict[str, str] = field(default_factory=dict)
    """Anything else a destination reads back (e.g. provenance tags)."""


@dataclass(frozen=True, slots=True)
class RegistryVersion:
    """One Neptune model version as the registry step hands it to a destination (neutral terms)."""

    version_id: str
    """Neptune id (`PROJ-MOD-3`): the version's identity in the destination (a tag or property)."""
    number: int | None
    """Neptune's version number, `None` when the source does not hold it."""
    position: int
    """1-based place in Neptune's order among the model's versions."""
    stage: str | None
    stage_history: tuple[StageChange, ...]
    description: str | None
    tags: frozenset[str]
    record_key: RunKey
    """The dump record of the version (imported as a run: its carrier run)."""
    carrier_run_id: DestinationRunId | None
    """The destination run holding the version record's own data, when it was imported."""
    source_run: RunKey | None
    """The run the version was made from, where the source knows it."""
    source_run_id: DestinationRunId | None
    """That run's destination id, when it was imported."""
    files: tuple[tuple[FileEntry, Path], ...] = ()
    """The version's files with their blob in the dump (hashed by the registry step right before
    `ensure_version`; a corrupt blob fails the model)."""
    aliases: tuple[str, ...] = ()
    """Stage aliases this version holds (it is the newest version of those stages)."""

    def files_digest(self) -> str:
        """sha256 over the sorted (`<attribute path>/<name>`, sha256) list of the version's files:
        what a destination records in the tag `FILES_DIGEST_TAG` so a re-run sees changed files."""
        import hashlib
        import json

        pairs = sorted([f"{fe.attribute_path}/{fe.name}", fe.sha256 or ""] for fe, _ in self.files)
        return hashlib.sha256(json.dumps(pairs).encode()).hexdigest()


FILES_DIGEST_TAG = "neptune.files_sha256"
"""The version tag (in `VersionSnapshot.tags`) holding `RegistryVersion.files_digest()`, for a
destination that cannot rewrite a version's files (MLflow): the registry step compares it."""


@dataclass(frozen=True, slots=True)
class RegistryModel:
    """One Neptune model with its versions in Neptune's order, ready for a destination."""

    project: str
    model_id: str
    name: str
    """Destination name chosen by the registry step (collisions in the dump already resolved)."""
    description: str | None
    tags: frozenset[str]
    record_key: RunKey | None
    """The model's own dump record (`None` when the dump holds only its versions)."""
    carrier_run_id: DestinationRunId | None
    versions: tuple[RegistryVersion, ...] = ()


@dataclass
class VersionSnapshot:
    """A model version read back from the destination."""

    version_id: str
    """The Neptune version id recorded on it."""
    number: str
    """The destination's own version number or name (`3` in MLflow, `v2` in W&B)."""
    description: str | None = None
    tags: dict[str, str] = field(default_factory=dict)
    files: dict[str, FileDigest] = field(default_factory=dict)
    """Relative file path -> size and sha256 (sha256 only when read with hashes)."""
    run_id: str | None = None
    """The destination run the version is linked to (MLflow's `run_id`); None where there is no link."""


@dataclass
class ModelSnapshot:
    """A registered model read back from the destination (or, from `expected_model`, as it should be)."""

    name: str
    description: str | None = None
    tags: dict[str, str] = field(default_factory=dict)
    versions: list[VersionSnapshot] = field(default_factory=list)
    """In the destination's order (oldest first)."""
    aliases: dict[str, str] = field(default_factory=dict)
    """Alias -> Neptune version id it names."""


class RegistryWriter(Protocol):
    """Optional seam of a destination declaring `Capabilities.registry` (`native` or `run_params`).

    The registry step (`pipeline/registry.py`) runs after the runs, so carrier and source runs
    exist; it calls these in order, one model at a time and one version at a time, in Neptune's
    order. Every method may be called again after it raised (retried, or a whole import re-run
    after a crash): a model or version already there is found by its Neptune id, completed where
    half-made, never created twice.
    """

    def registry_name(self, name: str) -> str:
        """The name the destination stores for a model named `name` (its own character rules), so
        the registry step finds two models that would end up with one name."""
        ...

    def plan_model(self, model: RegistryModel) -> list[Loss]:
        """Pure: what this destination cannot carry of the model (reported, never silent)."""
        ...

    def read_model(self, model: RegistryModel, *, hashes: bool) -> ModelSnapshot | None:
        """Read only: the model found by its Neptune id, with its versions, tags and aliases
        (`hashes`: download the versions' files for sha256). None when it is not there."""
        ...

    def expected_model(self, model: RegistryModel) -> ModelSnapshot:
        """Pure: what `read_model` returns after a faithful import (destination terms)."""
        ...

    def ensure_model(self, model: RegistryModel) -> str:
        """Create the model or bring its description and tags up to date; its destination name."""
        ...

    def ensure_version(self, model: RegistryModel, name: str, version: RegistryVersion,
                       found: VersionSnapshot | None) -> VersionSnapshot:
        """Create `version` (files, tags, source run link) under model `name`, or complete the
        half-made `found`; sequential: never called for a later version before this one returned."""
        ...

    def set_aliases(self, model: RegistryModel, name: str, holders: Mapping[str, str]) -> None:
        """Point each alias (`production`, ...) at the version with the given Neptune id. Called
        once per model after its versions, also with no alias: the model's last write (a
        destination that writes a model as one unit finishes it here)."""
        ...


class RequestRetry(Protocol):
    """Retries one request (`fn`, which must be idempotent on its own) while it fails transiently.

    `retry_after`, when given, returns the `Retry-After` of the attempt that just failed."""

    def __call__(
        self, what: str, fn: Callable[[], T], *, retry_after: Callable[[], float | None] | None = None
    ) -> T: ...


class RetriesRequests(Protocol):
    """A destination declaring `Capabilities.request_retry`."""

    def use_request_retry(self, retry: RequestRetry) -> None:
        """Route every request through `retry` from now on."""
        ...


class Destination(Protocol):
    """Writes runs into one system and reads them back for verification."""

    name: ClassVar[str]
    capabilities: Capabilities

    def describe(self) -> str:
        """Where it writes, without secrets (e.g. `mlflow http://127.0.0.1:5000`)."""
        ...

    def store_exists(self) -> bool:
        """Read only: whether the store written to exists (a SQLite file, an Aim repository, a W&B
        offline folder; a server counts as existing). Never creates anything, so a dry run or a
        verify of a mistyped path leaves no trace. Raises `UsageError` when the store is there but
        unusable (e.g. an Aim repository whose creation was interrupted).
        """
        ...

    def prepare_store(self) -> str | None:
        """Create the store if it is missing (SQLite schema, Aim repository), or repair one whose
        creation was interrupted, under a cross-process lock keyed on the store, so that two
        imports started together never both initialise it. Called once by the import before any
        run is touched; never by a dry run or verify. Returns a line for the user when it created
        or repaired something, else None.
        """
        ...

    def import_settings(self) -> Mapping[str, str]:
        """Pure: this destination's mapping version and the options that change what is written
        into a run; part of the import digest, so changing one redoes the run."""
        ...

    def check(self) -> None:
        """Raise `UnreachableError` within seconds when the destination cannot be reached at all.

        Called once by the pipeline before any run (import, dry run, verify): one cheap request
        with a short timeout for a server, nothing for a local store. Never writes.
        """
        ...

    def plan_run(self, run: PreparedRun) -> list[Loss]:
        """Pure: every loss this run would suffer (truncations, clamps, unsupported items).

        Used by `--dry-run` and by the real import, so both report the same losses.
        """
        ...

    def chunk_losses(self, kind: SeriesKind, chunk: pa.Table) -> list[Loss]:
        """Pure: per-point losses of one converted chunk (e.g. clamped inf), counted by path.

        Called for every chunk by the import and by the dry run, so both report the same."""
        ...

    def expected_snapshot(self, run: PreparedRun) -> RunSnapshot:
        """Pure: what `read_snapshot` must return after a faithful import of `run`.

        Encodes the destination's mapping once (names, status, param strings, file paths), so
        verify compares like with like.
        """
        ...

    def expected_series(self, kind: SeriesKind, points: pa.Table) -> pa.Table:
        """Pure: the dump points of one series (with `dest_step`) as `read_series` must return
        them: the destination's documented rounding applied (ms timestamps, clamped inf...)."""
        ...

    def find_run(self, key: RunKey) -> DestinationRun | None:
        """Look the run up by its source key (read only)."""
        ...

    def create_run(self, run: PreparedRun) -> DestinationRunId:
        """Create the run with identity, system fields, params and the source key, marked incomplete.

        Idempotent: called again after it raised (the response may have been lost after the run
        was created), it completes and returns the same half-created run instead of a second one.
        """
        ...

    def write_series(self, run_id: DestinationRunId, kind: SeriesKind, chunk: pa.Table) -> None:
        """Write a batch of points; `chunk` has the dump columns plus `key` (destination key) and
        `dest_step` (int64 when `integer_steps_only`)."""
        ...

    def finish_series(self, run_id: DestinationRunId, run: PreparedRun) -> None:
        """Called once after every chunk of the run was written (flush buffered series)."""
        ...

    def upload_file(self, run_id: DestinationRunId, entry: FileEntry, local_path: Path) -> None:
        """Upload one file of the run (content from the dump's blob store)."""
        ...

    def mark_complete(self, run_id: DestinationRunId, run: PreparedRun) -> None:
        """Write the completion marker and digest; always the run's last write."""
        ...

    def discard_run(self, run_id: DestinationRunId) -> None:
        """Delete (or archive) a half-written run so it can be recreated."""
        ...

    def read_snapshot(self, run_id: DestinationRunId) -> RunSnapshot:
        """Read back everything but series points."""
        ...

    def read_series(self, run_id: DestinationRunId, kind: SeriesKind, key: str) -> pa.Table:
        """Read back one whole series: columns `step`, `timestamp`, `value` (kind-specific)."""
        ...

    def read_series_page(
        self, run_id: DestinationRunId, kind: SeriesKind, key: str, token: str | None
    ) -> tuple[pa.Table, str | None]:
        """One page of a series (columns as `read_series`) and the token of the next (None: last).

        `token` None asks for the first page. Verify reads a series page by page and compares it
        in step windows, so pages should come in step order (each page's steps >= the previous
        page's): then memory stays flat. A page may be a whole series (a destination that cannot
        page); pages out of step order make verify read the series whole with `read_series`.
        Safe to call again after it raised (the retrier repeats one page).
        """
        ...

    def read_file(self, run_id: DestinationRunId, path: str, into: Path) -> Path | None:
        """Download one file for hashing; None when the destination cannot."""
        ...

    def classify_error(self, error: Exception) -> ErrorKind:
        """Transient errors are retried; permanent ones fail the run."""
        ...

    def close(self) -> None:
        """Flush and release connections."""
        ...
