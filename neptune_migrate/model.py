"""The neutral data model: what every source produces and every destination consumes.

No vendor imports here. Series points never live in these objects: they stream as Arrow tables
(columns fixed by `neptune_migrate.dump.schema`), so a run's size does not bound memory.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from enum import Enum
from typing import Literal, NewType

SourceRunId = NewType("SourceRunId", str)
DestinationRunId = NewType("DestinationRunId", str)
ErrorKind = Literal["transient", "permanent"]

FieldType = Literal["float", "int", "bool", "string", "datetime", "string_set"]
FIELD_TYPES: tuple[FieldType, ...] = ("float", "int", "bool", "string", "datetime", "string_set")
FieldValue = float | int | bool | str | datetime | frozenset[str]

SeriesKind = Literal["float", "string", "histogram", "file"]
SERIES_KINDS: tuple[SeriesKind, ...] = ("float", "string", "histogram", "file")

ContainerKind = Literal["run", "model", "model_version", "project"]
FileKind = Literal["file", "file_set", "artifact"]


@dataclass(frozen=True, slots=True, order=True)
class RunKey:
    """A run's identity in Neptune: its project (`workspace/project`) and its id there.

    The id is the Neptune `sys/id` (e.g. `PROJ-12`), a neptune-scale run id, or, for offline
    runs that never reached a server, the client's run uuid.
    """

    project: str
    run_id: SourceRunId

    def __str__(self) -> str:
        """`workspace/project/RUN-ID`, the form used in reports and destination tags."""
        return f"{self.project}/{self.run_id}"


@dataclass(frozen=True, slots=True)
class Field:
    """One typed scalar attribute value."""

    type: FieldType
    value: FieldValue

    def same_as(self, other: Field) -> bool:
        """Equality that treats NaN as equal to NaN (values are compared bit for bit)."""
        if self.type != other.type:
            return False
        a, b = self.value, other.value
        if isinstance(a, float) and isinstance(b, float) and math.isnan(a) and math.isnan(b):
            return True
        return a == b


@dataclass(frozen=True, slots=True)
class ForkPoint:
    """Where a run was forked from: the parent run and the step it branched at."""

    parent: RunKey
    step: float | None


@dataclass(frozen=True, slots=True)
class SystemInfo:
    """The `sys/*` attributes that make up a run's identity. `None` means the source lacks it."""

    name: str | None = None
    description: str | None = None
    owner: str | None = None
    state: str | None = None
    failed: bool | None = None
    trashed: bool | None = None
    created_at: datetime | None = None
    modified_at: datetime | None = None
    custom_run_id: str | None = None
    experiment_name: str | None = None
    tags: frozenset[str] = frozenset()
    group_tags: frozenset[str] = frozenset()


@dataclass(frozen=True, slots=True)
class FileEntry:
    """One file of a run: a `file` attribute, a member of a file set, or an artifact entry.

    `sha256` names the blob in the dump's content-addressed store; it is `None` when the content
    could not be saved, and then `missing` says why.
    """

    attribute_path: str
    kind: FileKind
    name: str
    sha256: str | None
    size: int | None
    mime_type: str | None = None
    missing: str | None = None
    origin: str | None = None


@dataclass(frozen=True, slots=True)
class SeriesInfo:
    """Summary of one series in the dump; its points are in the run's Parquet parts."""

    path: str
    kind: SeriesKind
    count: int
    first_step: float | None
    last_step: float | None
    meta: Mapping[str, str | float | None] = field(default_factory=dict)


class LossCategory(str, Enum):
    """What a reported item means for the user. The one map from categories to exit codes is in `cli.py`."""

    LOST = "lost"
    """Lost by us: data the user holds that this tool could not carry (an error; exit 1)."""
    NOT_IN_SOURCE = "not_in_source"
    """Not in the source any more: the Neptune client had already uploaded and deleted it, or a
    crash cut the tail of a queue (a warning with the count; exit 0 unless `--strict`)."""
    CHANGED_FORM = "changed_form"
    """Carried in another form: a renamed key, a scaled step, a value kept as an artifact
    (information, never called a loss in a summary)."""


@dataclass(frozen=True, slots=True)
class Loss:
    """One reported item: something a source or destination could not carry unchanged, with a count."""

    kind: str
    path: str | None
    count: int
    detail: str
    category: LossCategory = LossCategory.CHANGED_FORM

    @property
    def error(self) -> bool:
        """True when the item is lost by us (the import or export exits non-zero)."""
        return self.category is LossCategory.LOST

    def to_json(self) -> dict[str, object]:
        """The item as it appears in dumps and reports (`error` kept for readers of format 1.0)."""
        return {"kind": self.kind, "path": self.path, "count": self.count, "detail": self.detail,
                "category": self.category.value, "error": self.error}

    @classmethod
    def from_json(cls, data: Mapping[str, object]) -> Loss:
        """Read an item written by `to_json`, or by format 1.0 (no `category`: `error` decides)."""
        raw = data.get("category")
        if isinstance(raw, str):
            category = LossCategory(raw)
        else:
            category = LossCategory.LOST if data.get("error") else LossCategory.CHANGED_FORM
        path = data.get("path")
        count = data.get("count", 0)
        return cls(str(data["kind"]), None if path is None else str(path),
                   int(count) if isinstance(count, (int, float, str)) else 0,
                   str(data.get("detail", "")), category)


def count_categories(items: Iterable[Mapping[str, object]]) -> dict[str, int]:
    """Sum the counts of reported items (`Loss.to_json()` dicts) per category; every category present."""
    out = {c.value: 0 for c in LossCategory}
    for item in items:
        lo = Loss.from_json(item)
        out[lo.category.value] += lo.count
    return out


@dataclass(frozen=True, slots=True)
class Provenance:
    """Where a run came from."""

    source: str
    location: str
    files: tuple[str, ...] = ()
    details: Mapping[str, str] = field(default_factory=dict)


STAGES: tuple[str, ...] = ("none", "staging", "production", "archived")
"""Neptune 2.x model version stages (`sys/stage`), in Neptune's own order."""


@dataclass(frozen=True, slots=True)
class StageChange:
    """One stage a model version entered, and when (`None` when the source does not say)."""

    stage: str
    at: datetime | None = None


@dataclass(frozen=True, slots=True)
class RegistryInfo:
    """Model registry facts of a `model` or `model_version` record (dump format 1.3).

    A model and its versions are linked by `model_id`, the Neptune id of the model (`PROJ-MOD`),
    within the record's project; the record key may differ from it (a run made by Neptune's
    `model_to_run.py` keeps its own run id as key, and says so in `origin`).
    """

    model_id: str
    """Neptune id of the model (`PROJ-MOD`); on a model record, the model's own id."""
    version_id: str | None = None
    """A version's Neptune id (`PROJ-MOD-3`); `None` on a model record."""
    version: int | None = None
    """A version's number within its model (3 for `PROJ-MOD-3`): Neptune's order of versions."""
    stage: str | None = None
    """A version's stage, one of `STAGES`, or `None` when the source does not hold it."""
    stage_history: tuple[StageChange, ...] = ()
    """Stages the version went through, oldest first, where the source holds them."""
    source_run: RunKey | None = None
    """The run the version was made from, where known."""
    origin: Literal["registry", "model_to_run"] = "registry"
    """`registry`: read as a Neptune model container; `model_to_run`: turned back from a run that
    Neptune's `model_to_run.py` migration script made (`--models-from-runs`)."""


@dataclass(frozen=True, slots=True)
class RunRecord:
    """One run's metadata as committed to the dump. Series points and file bytes live beside it."""

    key: RunKey
    system: SystemInfo
    fields: Mapping[str, Field]
    provenance: Provenance
    kind: ContainerKind = "run"
    fork: ForkPoint | None = None
    series: tuple[SeriesInfo, ...] = ()
    files: tuple[FileEntry, ...] = ()
    complete: bool = True
    """False when the source itself lost part of the run (truncated log, interrupted export)."""
    partial_copy: bool = False
    """True when the source is a leftover that holds only what was not yet synced."""
    losses: tuple[Loss, ...] = ()
    absent: tuple[str, ...] = ()
    """System fields the source does not hold (marked absent, not invented)."""
    registry: RegistryInfo | None = None
    """Model registry facts of a `model` / `model_version` record (format 1.3); `None` on runs."""
