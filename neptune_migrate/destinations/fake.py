"""An in-memory destination with fault injection, for the pipeline's tests and contract suite.

`FakeDestination(fail_on={"write_series": 2}, transient=True)` makes the 2nd `write_series`
call raise a transient error once; `crash_on={"write_series": 3}` raises `SimulatedCrash`
(a BaseException, like a process kill) so a run is left half-written in the store.
"""

from __future__ import annotations

import itertools
import json
import threading
from collections import defaultdict
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, ClassVar

import pyarrow as pa

from neptune_migrate.destinations.base import (
    Capabilities,
    Destination,
    DestinationRun,
    FileDigest,
    PreparedRun,
    RunSnapshot,
)
from neptune_migrate.dump.schema import encode_field
from neptune_migrate.model import DestinationRunId, ErrorKind, FileEntry, Loss, LossCategory, RunKey, SeriesKind


class FakeTransientError(Exception):
    """What a flaky network would raise."""


class FakePermanentError(Exception):
    """What a destination that refuses a value would raise."""


class SimulatedCrash(BaseException):
    """Stands for a SIGKILL: not an Exception, so nothing on the way catches it."""


def fake_sanitize(key: str) -> str:
    """A strict key rule so tests see renames and collisions: only [A-Za-z0-9_/.-]."""
    return "".join(c if c.isascii() and (c.isalnum() or c in "_/.-") else "_" for c in key)


@dataclass
class _FakeRun:
    key: RunKey
    digest: str
    name: str | None
    complete: bool = False
    params: dict[str, str] = field(default_factory=dict)
    series: dict[tuple[SeriesKind, str], list[pa.Table]] = field(default_factory=lambda: defaultdict(list))
    files: dict[str, bytes] = field(default_factory=dict)
    deleted: bool = False
    import_digest: str | None = None
    origin: str | None = None
    source_complete: bool = True
    end_time: datetime | None = None


class FakeDestination:
    """Keeps runs in memory; shared across imports when the same instance is reused."""

    name: ClassVar[str] = "fake"

    def __init__(
        self,
        *,
        fail_on: dict[str, int] | None = None,
        transient: bool = True,
        fail_times: int = 1,
        crash_on: dict[str, int] | None = None,
        capabilities: Capabilities | None = None,
    ) -> None:
        self.capabilities = capabilities or Capabilities(
            integer_steps_only=True,
            single_step_axis=False,
            can_delete_runs=True,
            file_hashes=True,
            duplicate_steps="kept",
            sanitize_key=fake_sanitize,
        )
        self.runs: dict[DestinationRunId, _FakeRun] = {}
        self.calls: dict[str, int] = defaultdict(int)
        self.writes = 0
        self.fail_on = dict(fail_on or {})
        self.transient = transient
        self.fail_times = fail_times
        self.crash_on = dict(crash_on or {})
        self._ids = itertools.count(1)
        self._lock = threading.RLock()

    # -- fault injection --------------------------------------------------------------------------
    def _enter(self, method: str, *, mutating: bool) -> None:
        with self._lock:
            self.calls[method] += 1
            n = self.calls[method]
            if mutating:
                self.writes += 1
            if self.crash_on.get(method) == n:
                raise SimulatedCrash(f"crash in {method} call {n}")
            first = self.fail_on.get(method)
            if first is not None and first <= n < first + self.fail_times:
                cls = FakeTransientError if self.transient else FakePermanentError
                raise cls(f"injected failure in {method} call {n}")

    # -- protocol ---------------------------------------------------------------------------------
    def describe(self) -> str:
        return "fake (in memory)"

    def store_exists(self) -> bool:
        return True  # memory is always there

    def prepare_store(self) -> str | None:
        return None

    def import_settings(self) -> Mapping[str, str]:
        return {"mapping": "1"}

    def check(self) -> None:
        """In memory: always reachable."""

    def plan_run(self, run: PreparedRun) -> list[Loss]:
        return [
            Loss("string_too_long", key, 1, "fake keeps at most 1000 characters", category=LossCategory.CHANGED_FORM)
            for key, f in run.dest_fields().items()
            if f.type == "string" and len(str(f.value)) > 1000
        ]

    def chunk_losses(self, kind: SeriesKind, chunk: pa.Table) -> list[Loss]:
        if kind != "float":
            return []
        count = pa.compute.sum(pa.compute.is_null(chunk.column("value"))).as_py() or 0
        return [Loss("null_value", None, count, "fake counts null values")] if count else []

    def expected_snapshot(self, run: PreparedRun) -> RunSnapshot:
        return RunSnapshot(
            run_id=DestinationRunId(""),
            name=run.record.system.name,
            status="finished" if run.record.complete else "incomplete",
            end_time=run.end_time,
            params={k: json.dumps(encode_field(f), sort_keys=True) for k, f in run.dest_fields().items()},
            files={f"{fe.attribute_path}/{fe.name}": FileDigest(fe.size, fe.sha256)
                   for fe in run.record.files if fe.sha256},
        )

    def expected_series(self, kind: SeriesKind, points: pa.Table) -> pa.Table:
        return points

    def find_run(self, key: RunKey) -> DestinationRun | None:
        self._enter("find_run", mutating=False)
        with self._lock:
            for rid, r in self.runs.items():
                if r.key == key and not r.deleted:
                    return DestinationRun(rid, r.complete, r.digest, r.import_digest, r.origin)
        return None

    def create_run(self, run: PreparedRun) -> DestinationRunId:
        self._enter("create_run", mutating=True)
        with self._lock:
            for rid, existing in self.runs.items():  # idempotent: reuse a half-created run
                if existing.key == run.record.key and not existing.deleted and not existing.complete \
                        and existing.digest == run.digest and existing.import_digest == run.import_digest \
                        and not existing.series:
                    return rid
            rid = DestinationRunId(f"fake-{next(self._ids)}")
            self.runs[rid] = _FakeRun(run.record.key, run.digest, run.record.system.name,
                                      import_digest=run.import_digest, origin=run.origin or None)
            self.runs[rid].params = {
                k: json.dumps(encode_field(f), sort_keys=True) for k, f in run.dest_fields().items()
            }
            return rid

    def write_series(self, run_id: DestinationRunId, kind: SeriesKind, chunk: pa.Table) -> None:
        self._enter("write_series", mutating=True)
        with self._lock:
            fake = self.runs[run_id]
            for key in chunk.column("key").unique().to_pylist():
                rows = chunk.filter(pa.compute.equal(chunk.column("key"), key))
                fake.series[kind, key].append(rows)

    def finish_series(self, run_id: DestinationRunId, run: PreparedRun) -> None:
        self._enter("finish_series", mutating=True)

    def upload_file(self, run_id: DestinationRunId, entry: FileEntry, local_path: Path) -> None:
        self._enter("upload_file", mutating=True)
        with self._lock:
            self.runs[run_id].files[f"{entry.attribute_path}/{entry.name}"] = local_path.read_bytes()

    def mark_complete(self, run_id: DestinationRunId, run: PreparedRun) -> None:
        self._enter("mark_complete", mutating=True)
        with self._lock:
            fake = self.runs[run_id]
            fake.digest = run.digest
            fake.import_digest = run.import_digest
            fake.source_complete = run.record.complete
            fake.end_time = run.end_time
            fake.complete = True

    def discard_run(self, run_id: DestinationRunId) -> None:
        self._enter("discard_run", mutating=True)
        with self._lock:
            self.runs[run_id].deleted = True

    def read_snapshot(self, run_id: DestinationRunId) -> RunSnapshot:
        self._enter("read_snapshot", mutating=False)
        import hashlib

        r = self.runs[run_id]
        return RunSnapshot(
            run_id=run_id,
            name=r.name,
            status="finished" if r.source_complete else "incomplete",
            end_time=r.end_time,
            params=dict(r.params),
            series={k: sum(t.num_rows for t in v) for k, v in r.series.items()},
            files={p: FileDigest(len(b), hashlib.sha256(b).hexdigest()) for p, b in r.files.items()},
        )

    def read_series(self, run_id: DestinationRunId, kind: SeriesKind, key: str) -> pa.Table:
        self._enter("read_series", mutating=False)
        tables = self.runs[run_id].series.get((kind, key), [])
        if not tables:
            return pa.table({})
        return pa.concat_tables(tables)

    def read_series_page(
        self, run_id: DestinationRunId, kind: SeriesKind, key: str, token: str | None
    ) -> tuple[pa.Table, str | None]:
        """The whole series as one page (this destination does not page)."""
        return self.read_series(run_id, kind, key), None

    def read_file(self, run_id: DestinationRunId, path: str, into: Path) -> Path | None:
        data = self.runs[run_id].files.get(path)
        if data is None:
            return None
        out = into / "file"
        out.write_bytes(data)
        return out

    def classify_error(self, error: Exception) -> ErrorKind:
        return "transient" if isinstance(error, FakeTransientError) else "permanent"

    def close(self) -> None:
        pass

    # -- test helpers -----------------------------------------------------------------------------
    def live_runs(self) -> list[_FakeRun]:
        return [r for r in self.runs.values() if not r.deleted]


if TYPE_CHECKING:
    _: type[Destination] = FakeDestination
