"""RetryingDestination: wraps any Destination; retries what the destination classifies transient.

A destination that declares `Capabilities.request_retry` gets a `Retrier` and wraps each of its
requests in it (the unit of retry is one request, so a call of many requests does not meet a
fresh fault on every attempt); its methods are then called once. Other destinations have each
method retried as a whole. Both share one `OutageBudget` per import.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, ClassVar, TypeVar, cast

import pyarrow as pa

from neptune_migrate.destinations.base import (
    Capabilities,
    Destination,
    DestinationRun,
    ModelSnapshot,
    PreparedRun,
    RegistryModel,
    RegistryVersion,
    RegistryWriter,
    RetriesRequests,
    RunSnapshot,
    VersionSnapshot,
)
from neptune_migrate.model import DestinationRunId, ErrorKind, FileEntry, Loss, RunKey, SeriesKind
from neptune_migrate.retry import OutageBudget, Retrier, RetryPolicy

T = TypeVar("T")


class RetryingDestination:
    """Same protocol; every call (or, where the destination declares `request_retry`, every request)
    goes through one `retry.Retrier`."""

    name: ClassVar[str] = "retrying"

    def __init__(self, inner: Destination, policy: RetryPolicy) -> None:
        self.inner = inner
        self.policy = policy
        self.budget = OutageBudget(policy, inner.describe())
        self.retrier = Retrier(inner.classify_error, policy, budget=self.budget)
        self.per_request = inner.capabilities.request_retry
        if self.per_request:
            cast("RetriesRequests", inner).use_request_retry(self.retrier)

    @property
    def capabilities(self) -> Capabilities:
        """The inner destination's, read on each use (a destination may settle some, such as
        `points_per_request`, in `prepare_store`)."""
        return self.inner.capabilities

    @capabilities.setter
    def capabilities(self, value: Capabilities) -> None:
        self.inner.capabilities = value

    @property
    def retries(self) -> int:
        """Retries made so far (requests or whole calls)."""
        return self.retrier.retries

    def _call(self, what: str, fn: Callable[[], T]) -> T:
        if self.per_request:
            return fn()
        return self.retrier(what, fn)

    def describe(self) -> str:
        return self.inner.describe()

    def store_exists(self) -> bool:
        return self._call("store_exists", self.inner.store_exists)

    def prepare_store(self) -> str | None:
        return self._call("prepare_store", self.inner.prepare_store)

    def import_settings(self) -> Mapping[str, str]:
        return self.inner.import_settings()

    def check(self) -> None:
        self.inner.check()  # a probe has its own short budget: not retried

    def plan_run(self, run: PreparedRun) -> list[Loss]:
        return self.inner.plan_run(run)

    def chunk_losses(self, kind: SeriesKind, chunk: pa.Table) -> list[Loss]:
        return self.inner.chunk_losses(kind, chunk)

    def expected_snapshot(self, run: PreparedRun) -> RunSnapshot:
        return self.inner.expected_snapshot(run)

    def expected_series(self, kind: SeriesKind, points: pa.Table) -> pa.Table:
        return self.inner.expected_series(kind, points)

    def find_run(self, key: RunKey) -> DestinationRun | None:
        return self._call("find_run", lambda: self.inner.find_run(key))

    def create_run(self, run: PreparedRun) -> DestinationRunId:
        # Destinations make create_run idempotent (a retried call after a lost response reuses
        # the half-created run and completes it), so a plain retry cannot duplicate a run.
        return self._call("create_run", lambda: self.inner.create_run(run))

    def write_series(self, run_id: DestinationRunId, kind: SeriesKind, chunk: pa.Table) -> None:
        self._call("write_series", lambda: self.inner.write_series(run_id, kind, chunk))

    def finish_series(self, run_id: DestinationRunId, run: PreparedRun) -> None:
        self._call("finish_series", lambda: self.inner.finish_series(run_id, run))

    def upload_file(self, run_id: DestinationRunId, entry: FileEntry, local_path: Path) -> None:
        self._call("upload_file", lambda: self.inner.upload_file(run_id, entry, local_path))

    def mark_complete(self, run_id: DestinationRunId, run: PreparedRun) -> None:
        self._call("mark_complete", lambda: self.inner.mark_complete(run_id, run))

    def discard_run(self, run_id: DestinationRunId) -> None:
        self._call("discard_run", lambda: self.inner.discard_run(run_id))

    def read_snapshot(self, run_id: DestinationRunId) -> RunSnapshot:
        return self._call("read_snapshot", lambda: self.inner.read_snapshot(run_id))

    def read_series(self, run_id: DestinationRunId, kind: SeriesKind, key: str) -> pa.Table:
        return self._call("read_series", lambda: self.inner.read_series(run_id, kind, key))

    def read_series_page(
        self, run_id: DestinationRunId, kind: SeriesKind, key: str, token: str | None
    ) -> tuple[pa.Table, str | None]:
        return self._call("read_series_page", lambda: self.inner.read_series_page(run_id, kind, key, token))

    def read_file(self, run_id: DestinationRunId, path: str, into: Path) -> Path | None:
        return self._call("read_file", lambda: self.inner.read_file(run_id, path, into))

    def classify_error(self, error: Exception) -> ErrorKind:
        return self.inner.classify_error(error)

    def close(self) -> None:
        self.inner.close()

    # -- the optional registry seam (`Capabilities.registry`), retried the same way ---------------

    @property
    def registry(self) -> RegistryWriter:
        """The inner destination as a `RegistryWriter` (only when its capabilities declare one)."""
        return cast("RegistryWriter", self.inner)

    def registry_name(self, name: str) -> str:
        return self.registry.registry_name(name)

    def plan_model(self, model: RegistryModel) -> list[Loss]:
        return self.registry.plan_model(model)

    def expected_model(self, model: RegistryModel) -> ModelSnapshot:
        return self.registry.expected_model(model)

    def read_model(self, model: RegistryModel, *, hashes: bool) -> ModelSnapshot | None:
        return self._call("read_model", lambda: self.registry.read_model(model, hashes=hashes))

    def ensure_model(self, model: RegistryModel) -> str:
        return self._call("ensure_model", lambda: self.registry.ensure_model(model))

    def ensure_version(self, model: RegistryModel, name: str, version: RegistryVersion,
                       found: VersionSnapshot | None) -> VersionSnapshot:
        return self._call("ensure_version", lambda: self.registry.ensure_version(model, name, version, found))

    def set_aliases(self, model: RegistryModel, name: str, holders: Mapping[str, str]) -> None:
        self._call("set_aliases", lambda: self.registry.set_aliases(model, name, holders))


if TYPE_CHECKING:
    _: type[Destination] = RetryingDestination
