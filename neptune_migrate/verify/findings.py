"""Finding: one verify result of a fixed kind, naming the run, the item and the step."""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any, Literal

FindingKind = Literal["missing", "extra", "differs", "error"]
FINDING_KINDS: tuple[FindingKind, ...] = ("missing", "extra", "differs", "error")


@dataclass(frozen=True, slots=True)
class Finding:
    """A difference between the dump (expected) and the destination (actual).

    `item` is `<area>:<name>`: `run`, `system:<field>`, `tag:<tag>`, `param:<key>`,
    `series:<kind>:<key>`, `file:<path>`.
    """

    run: str
    kind: FindingKind
    item: str
    step: float | None = None
    expected: str | None = None
    actual: str | None = None
    detail: str = ""

    def to_json(self) -> dict[str, Any]:
        return asdict(self)

    def __str__(self) -> str:
        at = f" at step {self.step:g}" if self.step is not None else ""
        values = ""
        if self.expected is not None or self.actual is not None:
            values = f": expected {self.expected!s}, got {self.actual!s}"
        detail = f" ({self.detail})" if self.detail else ""
        return f"{self.run}: {self.kind} {self.item}{at}{values}{detail}"
