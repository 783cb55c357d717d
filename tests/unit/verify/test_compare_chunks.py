"""compare_series_chunks: the windowed comparison gives exactly compare_series' findings."""

from __future__ import annotations

import math
import random
from datetime import datetime, timezone
from typing import Any

import pyarrow as pa
import pytest

from neptune_migrate.verify.compare import (
    MAX_POINT_FINDINGS,
    NotStepOrderedError,
    compare_series,
    compare_series_chunks,
    step_groups,
)

T0 = int(datetime(2025, 1, 2, tzinfo=timezone.utc).timestamp() * 1000)


def table(rows: list[tuple[int, int, float | None]]) -> pa.Table:
    return pa.table({
        "step": pa.array([r[0] for r in rows], pa.int64()),
        "timestamp": pa.array([r[1] for r in rows], pa.int64()).cast(pa.timestamp("ms", tz="UTC")),
        "value": pa.array([r[2] for r in rows], pa.float64()),
    })


def cut(t: pa.Table, rng: random.Random) -> list[pa.Table]:
    """Random chunk boundaries, including empty chunks and a step's points split over chunks."""
    out, i = [], 0
    while i < t.num_rows:
        n = rng.choice([0, 1, 2, 3, 7, 50])
        out.append(t.slice(i, n))
        i += n
    return out


Point = tuple[int, int, float | None]


def scenario(rng: random.Random, n: int) -> tuple[list[Point], list[Point]]:
    expected: list[Point] = []
    actual: list[Point] = []
    step = 0
    for _ in range(n):
        step += rng.choice([0, 1, 1, 2, 5])  # 0: duplicate steps
        value = rng.choice([float(step) / 3, math.nan, math.inf, None, -0.0])
        point = (step, T0 + step, value)
        fate = rng.random()
        if fate < 0.8:
            expected.append(point)
            actual.append(point)
        elif fate < 0.87:
            expected.append(point)  # missing in the destination
        elif fate < 0.93:
            actual.append(point)  # extra
        else:
            expected.append(point)
            actual.append((step, T0 + step + rng.choice([0, 1]), 1.5 if value != 1.5 else 2.5))  # differs
    return expected, actual


@pytest.mark.parametrize("seed", range(12))
def test_windowed_findings_equal_whole_series_findings(seed: int) -> None:
    rng = random.Random(seed)
    exp_rows, act_rows = scenario(rng, rng.choice([5, 60, 400]))
    exp, act = table(exp_rows), table(act_rows)
    whole = compare_series("r", "series:float:x", exp, act)
    chunked = compare_series_chunks("r", "series:float:x", cut(exp, rng), cut(act, rng))
    assert chunked == whole
    assert chunked[1] == len(exp_rows)


def test_many_differences_are_capped_across_windows() -> None:
    exp = table([(s, T0, 1.0) for s in range(300)])
    act = table([(s, T0, 2.0) for s in range(300)])
    findings, points = compare_series_chunks("r", "s", [exp.slice(i, 40) for i in range(0, 300, 40)],
                                             [act.slice(i, 64) for i in range(0, 300, 64)])
    assert points == 300
    assert len(findings) == MAX_POINT_FINDINGS + 1
    assert [f.step for f in findings[:3]] == [0.0, 1.0, 2.0]
    assert findings[0].expected == "value=1.0" and findings[0].actual == "value=2.0"
    assert findings[-1].detail == f"{300 - MAX_POINT_FINDINGS} more point findings not listed"


def test_empty_destination_side_reports_every_point_missing() -> None:
    exp = table([(1, T0, 0.5), (2, T0 + 1, math.nan)])
    findings, points = compare_series_chunks("r", "s", [exp], [pa.table({})])
    assert points == 2
    assert [(f.kind, f.step, f.expected) for f in findings] == [
        ("missing", 1.0, "timestamp=2025-01-02T00:00:00+00:00, value=0.5"),
        ("missing", 2.0, "timestamp=2025-01-02T00:00:00.001000+00:00, value=nan"),
        ("differs", None, "2 points")]


def test_a_stream_going_back_in_steps_is_refused() -> None:
    good = table([(1, T0, 1.0), (2, T0, 1.0)])
    with pytest.raises(NotStepOrderedError):
        compare_series_chunks("r", "s", [good], [table([(2, T0, 1.0)]), table([(1, T0, 1.0)])])
    with pytest.raises(NotStepOrderedError):
        compare_series_chunks("r", "s", [table([(2, T0, 1.0), (1, T0, 1.0)])], [good])


def test_step_groups_keep_a_step_in_one_table() -> None:
    t = table([(0, T0, 1.0), (1, T0, 1.0), (1, T0, 2.0), (1, T0, 3.0), (2, T0, 1.0), (2, T0, 1.0)])
    groups = list(step_groups([t.slice(0, 2), t.slice(2, 1), t.slice(3, 2), t.slice(5, 1)]))
    assert [g.column("step").to_pylist() for g in groups] == [[0], [1, 1, 1], [2, 2]]
    with pytest.raises(NotStepOrderedError):
        list(step_groups([t.slice(2, 1), t.slice(0, 1)]))


def test_memory_stays_at_a_few_chunks_whatever_the_series_length() -> None:
    """400k points per side stream through; Arrow never holds more than a few chunks of them."""
    import numpy as np

    chunk, total = 10_000, 400_000
    base = pa.total_allocated_bytes()
    peak = 0

    def side(shift: int) -> Any:
        nonlocal peak
        for start in range(0, total, chunk):
            steps = np.arange(start, start + chunk, dtype=np.int64)
            values = steps / 3.0
            if shift and start == 200_000:
                values[7] = -1.0  # one differing point in the middle
            yield pa.table({"step": steps, "timestamp": pa.array(T0 + steps).cast(pa.timestamp("ms", tz="UTC")),
                            "value": values})
            peak = max(peak, pa.total_allocated_bytes() - base)

    findings, points = compare_series_chunks("r", "s", side(0), side(1))
    assert points == total
    assert [(f.kind, f.step, f.expected, f.actual) for f in findings] == [
        ("differs", 200_007.0, f"value={200_007 / 3.0!r}", "value=-1.0")]
    one_chunk = 3 * 8 * chunk
    assert peak < 12 * one_chunk, (peak, one_chunk)  # the whole series is 40 chunks per side
