"""Pure comparisons: expected (from the dump) vs actual (read back). Most unit tests live here."""

from __future__ import annotations

import math
from collections.abc import Iterable, Iterator, Mapping
from datetime import datetime
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from neptune_migrate.destinations.base import FileDigest, RunSnapshot
from neptune_migrate.verify.findings import Finding

MAX_POINT_FINDINGS = 50
"""Point-level findings listed per series; the rest are counted in one summary finding."""


def _fmt(value: object) -> str | None:
    if value is None:
        return None
    if isinstance(value, datetime):
        return value.isoformat()
    if isinstance(value, float):
        return repr(value)
    return str(value)


def same_value(a: object, b: object) -> bool:
    """Exact equality, NaN equal to NaN, lists element-wise."""
    if isinstance(a, float) and isinstance(b, float):
        return (math.isnan(a) and math.isnan(b)) or a == b
    if isinstance(a, list) and isinstance(b, list):
        return len(a) == len(b) and all(same_value(x, y) for x, y in zip(a, b, strict=True))
    return a == b


def compare_snapshots(run: str, expected: RunSnapshot, actual: RunSnapshot) -> list[Finding]:
    """Identity, system fields, tags, params, files and the list of series."""
    out: list[Finding] = []
    for name in ("name", "description", "owner", "status", "start_time", "end_time"):
        e, a = getattr(expected, name), getattr(actual, name)
        if e is not None and not same_value(e, a):
            out.append(Finding(run, "differs", f"system:{name}", expected=_fmt(e), actual=_fmt(a)))
    out.extend(Finding(run, "missing", f"tag:{tag}") for tag in sorted(expected.tags - actual.tags))
    out.extend(Finding(run, "extra", f"tag:{tag}") for tag in sorted(actual.tags - expected.tags))
    out.extend(_compare_maps(run, "param", expected.params, actual.params))
    out.extend(_compare_maps(run, "meta", expected.extra, actual.extra))
    out.extend(_compare_files(run, expected.files, actual.files))
    for kind, key in sorted(set(expected.series) - set(actual.series)):
        out.append(Finding(run, "missing", f"series:{kind}:{key}",
                           expected=str(expected.series[kind, key]), detail="no such series"))
    for kind, key in sorted(set(actual.series) - set(expected.series)):
        out.append(Finding(run, "extra", f"series:{kind}:{key}", actual=str(actual.series[kind, key])))
    return out


def _compare_maps(run: str, area: str, expected: Mapping[str, str], actual: Mapping[str, str]) -> list[Finding]:
    out = []
    for k in sorted(expected):
        if k not in actual:
            out.append(Finding(run, "missing", f"{area}:{k}", expected=expected[k]))
        elif expected[k] != actual[k]:
            out.append(Finding(run, "differs", f"{area}:{k}", expected=expected[k], actual=actual[k]))
    out.extend(Finding(run, "extra", f"{area}:{k}", actual=actual[k]) for k in sorted(set(actual) - set(expected)))
    return out


def _compare_files(run: str, expected: Mapping[str, FileDigest], actual: Mapping[str, FileDigest]) -> list[Finding]:
    out = []
    for path in sorted(expected):
        e = expected[path]
        a = actual.get(path)
        if a is None:
            out.append(Finding(run, "missing", f"file:{path}", expected=f"{e.size} bytes"))
            continue
        if e.size is not None and a.size is not None and e.size != a.size:
            out.append(Finding(run, "differs", f"file:{path}", expected=f"{e.size} bytes",
                               actual=f"{a.size} bytes", detail="size"))
        elif e.sha256 and a.sha256 and e.sha256 != a.sha256:
            out.append(Finding(run, "differs", f"file:{path}", expected=e.sha256, actual=a.sha256,
                               detail="sha256"))
    out.extend(Finding(run, "extra", f"file:{path}", actual=f"{actual[path].size} bytes")
               for path in sorted(set(actual) - set(expected)))
    return out


def _sorted(table: pa.Table, columns: list[str]) -> pa.Table:
    keys = [(c, "ascending") for c in ["step", *columns] if c in table.column_names
            and not pa.types.is_list(table.schema.field(c).type)]
    return table.take(pc.sort_indices(table, keys)) if table.num_rows else table


def compare_series(run: str, item: str, expected: pa.Table, actual: pa.Table) -> tuple[list[Finding], int]:
    """Point by point, aligned on step order. Returns (findings, points compared).

    Both tables have a `step` column plus value columns; columns only one side has are ignored.
    """
    columns = [c for c in expected.column_names if c != "step" and c in actual.column_names]
    exp = _sorted(expected, columns).to_pylist() if expected.num_rows else []
    act = _sorted(actual, columns).to_pylist() if actual.num_rows else []
    out: list[Finding] = []
    hidden = 0

    def add(f: Finding) -> None:
        nonlocal hidden
        if len(out) < MAX_POINT_FINDINGS:
            out.append(f)
        else:
            hidden += 1

    # Align by step: walk both sorted lists, pairing equal steps in order.
    i = j = 0
    while i < len(exp) or j < len(act):
        e = exp[i] if i < len(exp) else None
        a = act[j] if j < len(act) else None
        if e is not None and (a is None or e["step"] < a["step"]):
            add(Finding(run, "missing", item, step=float(e["step"]), expected=_row(e, columns)))
            i += 1
            continue
        if a is not None and (e is None or a["step"] < e["step"]):
            add(Finding(run, "extra", item, step=float(a["step"]), actual=_row(a, columns)))
            j += 1
            continue
        assert e is not None
        assert a is not None
        bad = [c for c in columns if not same_value(e[c], a[c])]
        if bad:
            add(Finding(run, "differs", item, step=float(e["step"]), expected=_row(e, bad),
                        actual=_row(a, bad), detail=", ".join(bad)))
        i += 1
        j += 1
    if hidden:
        out.append(Finding(run, "differs", item, detail=f"{hidden} more point findings not listed"))
    if len(exp) != len(act):
        out.append(Finding(run, "differs", item, expected=f"{len(exp)} points", actual=f"{len(act)} points",
                           detail="point count"))
    return out, len(exp)


def _row(row: Mapping[str, Any], columns: list[str]) -> str:
    return ", ".join(f"{c}={_fmt(row[c])}" for c in columns)


class NotStepOrderedError(Exception):
    """A chunk stream went back in step order; the series must be compared whole."""


class _Side:
    """One side of a chunked comparison: a buffer over a step-ordered stream of tables."""

    def __init__(self, chunks: Iterable[pa.Table]) -> None:
        self.chunks = iter(chunks)
        self.buffer: list[pa.Table] = []
        self.rows = 0
        self.schema: pa.Schema | None = None
        self.done = False
        self.last: float = -math.inf
        self.total = 0

    def pull(self) -> None:
        """Read the next non-empty chunk into the buffer (or mark the stream done)."""
        for table in self.chunks:
            if "step" not in table.column_names:
                if table.num_rows:
                    msg = "a series chunk without a step column"
                    raise ValueError(msg)
                continue
            if self.schema is None:
                self.schema = table.schema
            if not table.num_rows:
                continue
            steps = table.column("step").combine_chunks()
            if steps.null_count or (pa.types.is_floating(steps.type) and pc.any(pc.is_nan(steps)).as_py()):
                raise NotStepOrderedError
            first = steps[0].as_py()
            if first < self.last or (len(steps) > 1 and not _non_decreasing(steps)):
                raise NotStepOrderedError
            self.last = steps[-1].as_py()
            self.buffer.append(table)
            self.rows += table.num_rows
            self.total += table.num_rows
            return
        self.done = True

    def take_below(self, bound: float) -> pa.Table | None:
        """The buffered rows with step < bound (a prefix, the buffer being step-ordered)."""
        if not self.buffer:
            return None
        table = pa.concat_tables(self.buffer) if len(self.buffer) > 1 else self.buffer[0]
        if bound == math.inf:
            cut = table.num_rows
        else:
            steps = table.column("step").to_numpy()
            cut = int(np.searchsorted(steps, bound, side="left"))
        head, tail = table.slice(0, cut), table.slice(cut)
        self.buffer = [tail] if tail.num_rows else []
        self.rows = tail.num_rows
        return head


def _non_decreasing(steps: pa.Array) -> bool:
    values = steps.to_numpy(zero_copy_only=False)
    return bool(np.all(values[1:] >= values[:-1]))


class SeriesComparison:
    """Point-by-point comparison of one series fed in step windows (flat memory).

    Findings are the same as `compare_series` on the whole series: each window holds every point
    of its steps on both sides, and the walk inside a window is the same.
    """

    def __init__(self, run: str, item: str) -> None:
        self.run = run
        self.item = item
        self.findings: list[Finding] = []
        self.hidden = 0
        self.expected_points = 0
        self.actual_points = 0
        self.columns: list[str] | None = None

    def _add(self, finding: Finding) -> None:
        if len(self.findings) < MAX_POINT_FINDINGS:
            self.findings.append(finding)
        else:
            self.hidden += 1

    def window(self, expected: pa.Table, actual: pa.Table, columns: list[str]) -> None:
        """Compare every point of one step range (both tables hold all points of their steps)."""
        self.expected_points += expected.num_rows
        self.actual_points += actual.num_rows
        exp = _sorted(expected, columns)
        act = _sorted(actual, columns)
        if exp.num_rows == act.num_rows and exp.num_rows and _same_steps(exp, act):
            self._same_steps_window(exp, act, columns)
            return
        self._walk(exp.to_pylist() if exp.num_rows else [], act.to_pylist() if act.num_rows else [], columns)

    def _same_steps_window(self, exp: pa.Table, act: pa.Table, columns: list[str]) -> None:
        """Vectorised: equal steps row by row; Python only for rows that differ."""
        equal: dict[str, np.ndarray] = {}
        for c in columns:
            equal[c] = _equal_columns(exp.column(c), act.column(c))
        if not columns:
            return
        bad_rows = np.flatnonzero(~np.logical_and.reduce([equal[c] for c in columns]))
        if not len(bad_rows):
            return
        for i in bad_rows.tolist():
            e = {c: exp.column(c)[i].as_py() for c in ["step", *columns]}
            a = {c: act.column(c)[i].as_py() for c in ["step", *columns]}
            bad = [c for c in columns if not same_value(e[c], a[c])]
            if bad:
                self._add(Finding(self.run, "differs", self.item, step=float(e["step"]), expected=_row(e, bad),
                                  actual=_row(a, bad), detail=", ".join(bad)))

    def _walk(self, exp: list[dict[str, Any]], act: list[dict[str, Any]], columns: list[str]) -> None:
        # Align by step: walk both sorted lists, pairing equal steps in order.
        i = j = 0
        while i < len(exp) or j < len(act):
            e = exp[i] if i < len(exp) else None
            a = act[j] if j < len(act) else None
            if e is not None and (a is None or e["step"] < a["step"]):
                self._add(Finding(self.run, "missing", self.item, step=float(e["step"]),
                                  expected=_row(e, columns)))
                i += 1
                continue
            if a is not None and (e is None or a["step"] < e["step"]):
                self._add(Finding(self.run, "extra", self.item, step=float(a["step"]), actual=_row(a, columns)))
                j += 1
                continue
            assert e is not None
            assert a is not None
            bad = [c for c in columns if not same_value(e[c], a[c])]
            if bad:
                self._add(Finding(self.run, "differs", self.item, step=float(e["step"]), expected=_row(e, bad),
                                  actual=_row(a, bad), detail=", ".join(bad)))
            i += 1
            j += 1

    def result(self) -> tuple[list[Finding], int]:
        out = list(self.findings)
        if self.hidden:
            out.append(Finding(self.run, "differs", self.item, detail=f"{self.hidden} more point findings not listed"))
        if self.expected_points != self.actual_points:
            out.append(Finding(self.run, "differs", self.item, expected=f"{self.expected_points} points",
                               actual=f"{self.actual_points} points", detail="point count"))
        return out, self.expected_points


def _same_steps(exp: pa.Table, act: pa.Table) -> bool:
    a = exp.column("step").to_numpy()
    b = act.column("step").to_numpy()
    return bool(np.array_equal(a, b))


def _equal_columns(a: pa.ChunkedArray, b: pa.ChunkedArray) -> np.ndarray:
    """Row-wise `same_value` of two columns as a bool array (exact; NaN equals NaN; null equals null)."""
    if a.type != b.type or not (pa.types.is_floating(a.type) or pa.types.is_integer(a.type)
                                or pa.types.is_timestamp(a.type) or pa.types.is_string(a.type)
                                or pa.types.is_boolean(a.type)):
        return np.array([same_value(x, y) for x, y in zip(a.to_pylist(), b.to_pylist(), strict=True)], dtype=bool)
    eq = pc.fill_null(pc.equal(a, b), False)
    both_null = pc.and_(pc.is_null(a), pc.is_null(b))
    eq = pc.or_(eq, both_null)
    if pa.types.is_floating(a.type):
        eq = pc.or_(eq, pc.fill_null(pc.and_(pc.is_nan(a), pc.is_nan(b)), False))
    return np.asarray(eq.to_numpy(zero_copy_only=False), dtype=bool)


def compare_series_chunks(
    run: str, item: str, expected: Iterable[pa.Table], actual: Iterable[pa.Table]
) -> tuple[list[Finding], int]:
    """`compare_series` over two step-ordered streams of tables, one bounded window at a time.

    Each side is an iterator of tables with a `step` column, in non-decreasing step order across
    tables (a destination page, a dump batch); a step's points may span tables. Memory holds about
    one chunk per side (plus all points of a single step). Raises `NotStepOrderedError` when a
    stream goes back in step order: the caller then compares the series whole (`compare_series`).
    Returns (findings, points compared), equal to `compare_series` on the concatenated tables.
    """
    exp, act = _Side(expected), _Side(actual)
    comparison = SeriesComparison(run, item)
    exp.pull()
    act.pull()
    columns = _columns(exp.schema, act.schema)
    while True:
        open_sides = [s for s in (exp, act) if not s.done]
        if not exp.buffer and not act.buffer and not open_sides:
            break
        for side in open_sides:
            if not side.buffer:
                side.pull()
        open_sides = [s for s in (exp, act) if not s.done]
        bound = min((s.last for s in open_sides), default=math.inf)
        e = exp.take_below(bound)
        a = act.take_below(bound)
        if (e is None or not e.num_rows) and (a is None or not a.num_rows):
            for side in open_sides:
                if side.last == bound:
                    side.pull()
            continue
        comparison.window(_or_empty(e, exp.schema, act.schema), _or_empty(a, act.schema, exp.schema), columns)
    return comparison.result()


def _columns(expected: pa.Schema | None, actual: pa.Schema | None) -> list[str]:
    """Value columns both sides have (an empty side with no schema takes the other's)."""
    if expected is None:
        return [] if actual is None else [c for c in actual.names if c != "step"]
    names = expected.names if actual is None else [c for c in expected.names if c in actual.names]
    return [c for c in names if c != "step"]


def _or_empty(table: pa.Table | None, schema: pa.Schema | None, other: pa.Schema | None) -> pa.Table:
    if table is not None:
        return table
    chosen = schema if schema is not None else other
    return pa.table({}) if chosen is None else chosen.empty_table()


def step_groups(chunks: Iterable[pa.Table], column: str = "step") -> Iterator[pa.Table]:
    """Re-cut a step-ordered stream so that every point of a step is in the same table.

    Lets a per-table transformation that looks at all points of a step (e.g. a destination's
    de-duplication of identical points) run chunk by chunk. Raises `NotStepOrderedError` when
    the stream goes back in step order.
    """
    pending: pa.Table | None = None
    last = -math.inf
    for table in chunks:
        if not table.num_rows:
            continue
        steps = table.column(column).combine_chunks()
        if steps.null_count or (pa.types.is_floating(steps.type) and pc.any(pc.is_nan(steps)).as_py()):
            raise NotStepOrderedError
        if steps[0].as_py() < last or not _non_decreasing(steps):
            raise NotStepOrderedError
        last = steps[-1].as_py()
        table = table if pending is None else pa.concat_tables([pending, table])
        values = table.column(column).to_numpy()
        cut = int(np.searchsorted(values, last, side="left"))
        if cut:
            yield table.slice(0, cut)
        pending = table.slice(cut)
    if pending is not None and pending.num_rows:
        yield pending
