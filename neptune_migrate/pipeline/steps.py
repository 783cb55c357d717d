"""The step policy: Neptune steps (float64) -> destination steps, exactly or reported.

`auto-series`: integral steps pass as they are; fractional ones are scaled per series by the
smallest power of ten (up to 10^6) that makes every step of the series an integer exactly (for a
double `s`, `round(s * 10^k) / 10^k == s` holds exactly when the shortest decimal form of `s` has
at most k decimals, so this is decimal arithmetic on the step as Neptune showed it); anything else
is ranked (the i-th distinct step becomes i). `auto` (the default) does the same, then gives every
series of the run the largest of those scales, so all series of a run share one x-axis (`train/lr`
at 0.5 and `train/loss` at 1 become 5 and 10); a series that would leave the exact int64 range at
that scale keeps its own plan. `scale` and `rank` force one of those per series; `floor` truncates
(and so may merge steps: the collisions are counted).
"""

from __future__ import annotations

from collections.abc import Hashable, Mapping
from dataclasses import dataclass, field
from typing import Literal, TypeVar

import numpy as np
import pyarrow as pa

from neptune_migrate.destinations.base import StepPlan

StepPolicyName = Literal["auto", "auto-series", "scale", "rank", "floor"]
STEP_POLICIES: tuple[StepPolicyName, ...] = ("auto", "auto-series", "scale", "rank", "floor")
MAX_SCALE_DIGITS = 6
_INT64_SAFE = float(2**53)
K = TypeVar("K", bound=Hashable)


@dataclass(frozen=True)
class SeriesSteps:
    """The converted-step plan for one series, and what it changed."""

    policy: Literal["int", "scale", "rank", "floor"]
    scale: int = 1
    points: int = 0
    duplicates: int = 0
    """Points whose destination step repeats another point's step in the same series."""
    ranks: np.ndarray | None = field(default=None, compare=False, repr=False)

    def as_plan(self) -> StepPlan:
        return StepPlan(self.policy, self.scale, self.duplicates)

    @property
    def changed(self) -> bool:
        return self.policy != "int"

    def describe(self) -> str:
        if self.policy == "scale":
            return f"steps multiplied by {self.scale}"
        if self.policy == "rank":
            return "steps replaced by their rank (0, 1, 2, ...)"
        if self.policy == "floor":
            return "fractional steps truncated"
        return "integer steps kept"

    def convert(self, steps: pa.Array | pa.ChunkedArray) -> pa.Array:
        """Destination steps (int64) for a batch of this series' steps."""
        arr = np.asarray(steps.to_numpy(zero_copy_only=False), dtype=np.float64)
        if self.policy == "scale":
            out = np.round(arr * self.scale)
        elif self.policy == "rank":
            assert self.ranks is not None
            out = np.searchsorted(self.ranks, arr).astype(np.float64)
        elif self.policy == "floor":
            out = np.floor(arr)
        else:
            out = arr
        return pa.array(out.astype(np.int64), pa.int64())


class StepCollector:
    """Accumulates one series' steps over bounded batches, then decides its plan.

    Steps that arrive finite, integral, within the exact int64 range and in non-decreasing order
    (how a training log is written, and how the dump hands a series back) need no step list for
    their plan, so memory can stay flat whatever the series' length.
    With `keep=False` such steps are only counted; the first batch that breaks that streak switches
    to keeping the distinct steps, and if steps were only counted before it the collector is `lost`:
    the caller collects the series again with `keep=True` (every distinct step from the start, as
    the `rank` policy needs)."""

    def __init__(self, *, keep: bool = True) -> None:
        self._chunks: list[np.ndarray] = []
        self.points = 0
        self._counting = not keep
        self._last: float | None = None
        self._distinct_count = 0
        self._max_abs = 0.0
        self.lost = False
        """Steps were only counted, then a batch needed the step list: collect again with keep=True."""

    def _count(self, arr: np.ndarray) -> bool:
        """Count a batch that keeps the integral, in-range, non-decreasing streak; False if it breaks it."""
        if not (np.all(np.isfinite(arr)) and np.all(arr == np.floor(arr))):
            return False
        diffs = np.diff(arr)
        if np.any(diffs < 0) or (self._last is not None and arr[0] < self._last):
            return False
        top = float(np.max(np.abs(arr)))
        if top >= _INT64_SAFE:
            return False
        self._distinct_count += 1 + int(np.count_nonzero(diffs)) - int(arr[0] == self._last)
        self._last = float(arr[-1])
        self._max_abs = max(self._max_abs, top)
        return True

    def add(self, steps: pa.Array | pa.ChunkedArray) -> None:
        arr = np.asarray(steps.to_numpy(zero_copy_only=False), dtype=np.float64)
        self.points += len(arr)
        if len(arr) == 0 or self.lost:
            return
        if self._counting:
            if self._count(arr):
                return
            self._counting = False
            if self._distinct_count:
                self.lost = True
                return
        # Only distinct steps are kept: memory is bounded by the series' distinct steps.
        self._chunks.append(np.unique(arr))
        if len(self._chunks) > 16:
            self._chunks = [np.unique(np.concatenate(self._chunks))]

    def _distinct(self) -> np.ndarray:
        return np.unique(np.concatenate(self._chunks)) if self._chunks else np.array([], np.float64)

    def fits(self, factor: int) -> bool:
        """Every step times `factor` is still an exact integer in the int64-safe range."""
        if self._counting:
            return self._max_abs * factor < _INT64_SAFE
        distinct = self._distinct()
        return len(distinct) == 0 or float(np.max(np.abs(distinct))) * factor < _INT64_SAFE

    def plan(self, policy: StepPolicyName) -> SeriesSteps:
        if self.lost:
            msg = "the steps of this series must be collected again with keep=True"
            raise RuntimeError(msg)
        if self._counting and policy != "rank":  # integral, in range: no step list needed
            return SeriesSteps("int", points=self.points, duplicates=self.points - self._distinct_count)
        distinct = self._distinct()
        dupes = self.points - len(distinct)
        finite = bool(np.all(np.isfinite(distinct)))
        in_range = finite and (len(distinct) == 0 or float(np.max(np.abs(distinct))) < _INT64_SAFE)
        integral = in_range and bool(np.all(distinct == np.floor(distinct)))
        if policy == "rank" or not in_range:
            return SeriesSteps("rank", points=self.points, duplicates=dupes, ranks=distinct)
        if policy == "floor":
            floored = len(np.unique(np.floor(distinct)))
            policy_name: Literal["int", "floor"] = "int" if integral else "floor"
            return SeriesSteps(policy_name, points=self.points,
                               duplicates=dupes + (len(distinct) - floored))
        if integral:
            return SeriesSteps("int", points=self.points, duplicates=dupes)
        for k in range(1, MAX_SCALE_DIGITS + 1):
            factor = 10**k
            scaled = np.round(distinct * factor)
            if np.max(np.abs(scaled)) >= _INT64_SAFE:
                break
            if bool(np.all(scaled / factor == distinct)):
                return SeriesSteps("scale", scale=factor, points=self.points, duplicates=dupes)
        return SeriesSteps("rank", points=self.points, duplicates=dupes, ranks=distinct)


def plan_run(collectors: Mapping[K, StepCollector], policy: StepPolicyName) -> dict[K, SeriesSteps]:
    """The step plan of every series of one run (`collectors` keyed by e.g. (kind, path)).

    `auto`: the per-series plans of `auto-series`, then one scale for the whole run: the largest
    scale any series needs, applied to every integral or scaled series that stays exact under it.
    """
    per_series: StepPolicyName = "auto-series" if policy == "auto" else policy
    plans = {k: col.plan(per_series) for k, col in collectors.items()}
    if policy != "auto":
        return plans
    factor = max((p.scale for p in plans.values() if p.policy == "scale"), default=1)
    if factor == 1:
        return plans
    for k, p in plans.items():
        if p.policy in ("int", "scale") and p.scale != factor and collectors[k].fits(factor):
            plans[k] = SeriesSteps("scale", scale=factor, points=p.points, duplicates=p.duplicates)
    return plans
