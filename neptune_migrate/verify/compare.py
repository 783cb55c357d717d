"""Pure comparisons: expected (from the dump) vs actual (read back). Most unit tests live here."""

from __future__ import annotations

import math
from collections.abc import Mapping
from datetime import datetime
from typing import Any

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
