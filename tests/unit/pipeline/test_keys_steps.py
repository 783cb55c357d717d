"""Key sanitising with collisions, and the step policy, on exact values."""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pytest

from neptune_migrate.destinations.fake import fake_sanitize
from neptune_migrate.pipeline.keys import build_key_map
from neptune_migrate.pipeline.steps import StepCollector, plan_run


def test_unchanged_keys_pass_and_renames_are_listed() -> None:
    km = build_key_map(["train/loss", "a b", "ключ"], fake_sanitize)
    assert km.mapping["train/loss"] == "train/loss"
    assert km.mapping["a b"] == "a_b"
    assert km.mapping["ключ"] == "____"
    assert km.renamed == {"a b": "a_b", "ключ": "____"}
    assert km.collisions == {}


def test_collision_is_resolved_deterministically_and_reported() -> None:
    km = build_key_map(["a_b", "a b", "a@b"], fake_sanitize)
    assert km.mapping["a_b"] == "a_b"  # the path that needs no change keeps its key
    assert km.mapping["a b"] != km.mapping["a@b"]
    assert km.mapping["a b"].startswith("a_b_") and km.mapping["a@b"].startswith("a_b_")  # "~" sanitised too
    assert km.collisions == {"a_b": ["a b", "a@b", "a_b"]}
    assert len(set(km.mapping.values())) == 3
    # the same path gets the same key whatever else is in the run and in whatever order
    again = build_key_map(["a@b", "a b", "zzz", "a_b"], fake_sanitize)
    assert again.mapping["a b"] == km.mapping["a b"]


def _plan(steps: list[float], policy: str = "auto"):  # type: ignore[no-untyped-def]
    col = StepCollector()
    for i in range(0, len(steps), 3):  # several batches, as the pipeline feeds them
        col.add(pa.array(steps[i:i + 3], pa.float64()))
    plan = col.plan(policy)  # type: ignore[arg-type]
    return plan, plan.convert(pa.array(steps, pa.float64())).to_pylist()


def test_integer_steps_pass_unchanged() -> None:
    plan, out = _plan([0.0, 1.0, 5.0, -3.0, 2.0**52])
    assert plan.policy == "int"
    assert out == [0, 1, 5, -3, 2**52]


def test_fractional_steps_are_scaled_exactly_by_the_smallest_power_of_ten() -> None:
    plan, out = _plan([0.29, 0.5, 1.25, 2.0])
    assert (plan.policy, plan.scale) == ("scale", 100)
    assert out == [29, 50, 125, 200]  # 0.29 * 100 is 28.999999999999996 in floats: not truncated
    plan, out = _plan([0.001, 0.0012])
    assert (plan.policy, plan.scale) == ("scale", 10_000)
    assert out == [10, 12]
    plan, out = _plan([3.000001, 1.0])
    assert (plan.policy, plan.scale) == ("scale", 1_000_000)
    assert out == [3_000_001, 1_000_000]


def test_steps_beyond_six_decimals_are_ranked() -> None:
    plan, out = _plan([0.1234567, 0.5, 0.25])
    assert plan.policy == "rank"
    assert out == [0, 2, 1]


def test_duplicates_and_floor_collisions_are_counted() -> None:
    plan, _ = _plan([1.0, 1.0, 2.0])
    assert plan.duplicates == 1
    plan, out = _plan([1.2, 1.7, 2.0], "floor")
    assert plan.policy == "floor"
    assert out == [1, 1, 2]
    assert plan.duplicates == 1


@pytest.mark.parametrize("policy", ["rank", "scale", "auto"])
def test_nonfinite_or_huge_steps_fall_back_to_rank(policy: str) -> None:
    plan, out = _plan([1e300, 1.0], policy)
    assert plan.policy == "rank"
    assert out == [1, 0]
    assert np.int64(out[0]) == 1


def _collectors(series: dict[str, list[float]]) -> dict[str, StepCollector]:
    out = {}
    for path, steps in series.items():
        out[path] = StepCollector()
        out[path].add(pa.array(steps, pa.float64()))
    return out


def test_auto_gives_every_series_of_a_run_one_scale() -> None:
    series = {"train/lr": [0.5, 1.0, 1.5], "train/loss": [0.0, 1.0, 2.0, 3.0, 4.0],
              "val/acc": [0.25, 2.0], "weird": [0.1234567, 1.0]}
    plans = plan_run(_collectors(series), "auto")
    assert {p: (pl.policy, pl.scale) for p, pl in plans.items()} == {
        "train/lr": ("scale", 100), "train/loss": ("scale", 100), "val/acc": ("scale", 100),
        "weird": ("rank", 1),
    }
    assert plans["train/lr"].convert(pa.array([0.5, 1.0, 1.5])).to_pylist() == [50, 100, 150]
    assert plans["train/loss"].convert(pa.array([0.0, 4.0])).to_pylist() == [0, 400]
    assert plans["val/acc"].convert(pa.array([0.25, 2.0])).to_pylist() == [25, 200]
    assert plans["weird"].convert(pa.array([0.1234567, 1.0])).to_pylist() == [0, 1]
    # per series (the option): each keeps its own scale, integral series pass unchanged
    per = plan_run(_collectors(series), "auto-series")
    assert {p: (pl.policy, pl.scale) for p, pl in per.items()} == {
        "train/lr": ("scale", 10), "train/loss": ("int", 1), "val/acc": ("scale", 100),
        "weird": ("rank", 1),
    }


def test_auto_leaves_integral_runs_alone_and_keeps_huge_series_exact() -> None:
    plans = plan_run(_collectors({"a": [0.0, 1.0], "b": [5.0]}), "auto")
    assert {p: pl.policy for p, pl in plans.items()} == {"a": "int", "b": "int"}
    plans = plan_run(_collectors({"lr": [0.5], "big": [2.0**52]}), "auto")
    assert (plans["lr"].policy, plans["lr"].scale) == ("scale", 10)
    assert plans["big"].policy == "int"  # 2^52 * 10 leaves the exact range: its own plan


def _collected(steps: list[float], batch: int, *, keep: bool) -> StepCollector:
    col = StepCollector(keep=keep)
    for i in range(0, len(steps), batch):
        col.add(pa.array(steps[i:i + batch], pa.float64()))
    return col


@pytest.mark.parametrize("steps", [
    [0.0, 1.0, 1.0, 2.0, 5.0, 5.0, 5.0, 9.0],  # integral, in order, duplicates: only counted
    [0.0, 1.0, 2.0, 3.0, 2.5, 4.0],  # in order, then fractional: lost, collected again
    [0.0, 1.0, 2.0, 3.0, 1.0, 4.0],  # integral, then back in time: lost
    [0.5, 1.0, 1.5, 2.0],  # fractional from the first batch: kept from the start
    [0.0, 1.0, 2.0, 2.0**53, 3.0],  # leaves the exact range
    [0.0, 1.0, 2.0, float("nan")],
    [-3.0, -3.0, 0.0, 7.0, 7.0, 7.0, 8.0, 100.0],
])
@pytest.mark.parametrize("policy", ["auto", "auto-series", "scale", "floor"])
def test_a_counting_collector_plans_like_one_that_keeps_every_step(steps: list[float], policy: str) -> None:
    """Counted (with the pipeline's second pass when lost) and kept give the same plan and steps."""
    kept = _collected(steps, 2, keep=True)
    counted = _collected(steps, 2, keep=False)
    if counted.lost:
        with pytest.raises(RuntimeError, match="collected again"):
            counted.plan(policy)  # type: ignore[arg-type]
        counted = _collected(steps, 2, keep=True)
    a, b = counted.plan(policy), kept.plan(policy)  # type: ignore[arg-type]
    assert (a.policy, a.scale, a.points, a.duplicates) == (b.policy, b.scale, b.points, b.duplicates)
    arr = pa.array(steps, pa.float64())
    assert a.convert(arr).to_pylist() == b.convert(arr).to_pylist()
    assert counted.fits(10) == kept.fits(10)


def test_a_long_integral_series_in_order_keeps_no_step_list() -> None:
    col = StepCollector(keep=False)
    for start in range(0, 1_000_000, 100_000):
        col.add(pa.array(np.arange(start, start + 100_000, dtype=np.float64)))
        col.add(pa.array([float(start + 99_999)]))  # a duplicate step across batches
    assert col._chunks == []  # flat: nothing but counters
    plan = col.plan("auto")
    assert (plan.policy, plan.points, plan.duplicates) == ("int", 1_000_010, 10)
