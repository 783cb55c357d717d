"""The pure Aim mapping: run hashes, param nesting, value texts, expected series, losses."""

from __future__ import annotations

import math
from datetime import datetime, timezone

import pyarrow as pa

from neptune_migrate.destinations.aim import mapping as m
from neptune_migrate.model import Field
from tests.factories import key


def test_run_hash_is_deterministic_hex_of_aim_length() -> None:
    h = m.run_hash(key("PROJ-1"))
    assert h == m.run_hash(key("PROJ-1")) != m.run_hash(key("PROJ-2"))
    assert len(h) == 24
    assert int(h, 16) >= 0


def test_fields_nest_by_path_and_clashes_stay_flat() -> None:
    fields = {
        "parameters/lr": Field("float", 0.1),
        "parameters/opt/name": Field("string", "adam"),
        "a": Field("int", 1),
        "a/b": Field("int", 2),
        "x//y": Field("bool", True),
        "neptune/own": Field("string", "clash"),
    }
    tree, flat = m.field_params(fields)
    assert tree == {"parameters": {"lr": 0.1, "opt": {"name": "adam"}}, "a": {"b": 2}}
    assert flat == {"a": 1, "x//y": True, "neptune/own": "clash"}
    attrs = {**tree, m.NEPTUNE: {"fields": flat, "project": "p"}, m.TOOL: {"status": "complete"}}
    assert m.flatten_params(attrs) == {k: m.param_text(m.param_value(f)) for k, f in fields.items()}


def test_param_values_keep_types_aim_supports() -> None:
    assert m.param_value(Field("int", 2**70)) == str(2**70)
    assert m.param_value(Field("int", -(2**63))) == -(2**63)
    assert m.param_value(Field("datetime", datetime(2025, 1, 2, tzinfo=timezone.utc))) == "2025-01-02T00:00:00+00:00"
    assert m.param_value(Field("string_set", frozenset({"b", "a"}))) == ["a", "b"]
    assert m.param_text(1) != m.param_text(1.0) != m.param_text(True)
    assert m.param_text(math.nan) == m.param_text(float("nan"))


def test_timestamps_round_trip_exactly_through_float_seconds() -> None:
    ts = pa.array([1740830400123457, 1740830401999999, 0, None], pa.int64()).cast(pa.timestamp("us", tz="UTC"))
    back = m.timestamps_from_seconds(m.seconds(ts))
    assert back.cast(pa.int64()).to_pylist() == [1740830400123457, 1740830401999999, 0, 0]


def test_histogram_edges_are_rebuilt_evenly_and_uneven_ones_reported() -> None:
    chunk = pa.table({
        "path": ["h", "h"], "step": [0.0, 1.0], "dest_step": pa.array([0, 1], pa.int64()),
        "timestamp": pa.array([0, 0], pa.int64()).cast(pa.timestamp("us", tz="UTC")),
        "type": ["COUNTING", "COUNTING"], "edges": [[0.0, 1.0, 2.0], [0.0, 1.0, 2.5]],
        "values": [[1.0, 2.0], [3.0, 4.0]],
    })
    [loss] = m.chunk_losses("histogram", chunk)
    assert (loss.kind, loss.path, loss.count, loss.error) == ("histogram_edges_lost", "h", 1, False)
    expected = m.expected_series("histogram", chunk)
    assert expected.column("edges").to_pylist() == [[0.0, 1.0, 2.0], [0.0, 1.25, 2.5]]
    assert expected.column("original_edges").to_pylist() == [[0.0, 1.0, 2.0], [0.0, 1.0, 2.5]]


def test_artifact_names_are_safe_path_segments() -> None:
    assert "/" not in m.series_dir("a/b/../c")
    assert m.series_dir("a/b") != m.series_dir("a_b")
    assert m.safe_name("../x/y") == ".._x_y"
    assert m.safe_name("..") == "__"
