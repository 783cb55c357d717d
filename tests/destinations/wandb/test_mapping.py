"""The pure W&B mapping rules (no SDK)."""

from __future__ import annotations

from neptune_migrate.destinations.wandb import mapping as m
from neptune_migrate.destinations.wandb.errors import classify_error
from neptune_migrate.errors import PermanentError


def test_sanitize_key_keeps_slashes_and_reserves_underscores_and_own_namespace() -> None:
    assert m.sanitize_key("train/loss") == "train/loss"
    assert m.sanitize_key("metrics/top-1 acc@0.5") == "metrics/top_1_acc_0_5"
    assert m.sanitize_key("_step") == "neptune__step"
    assert m.sanitize_key("0/x") == "neptune_0/x"
    assert m.sanitize_key("neptune_migrate/status") == "neptune_migrate_/status"
    assert m.sanitize_key("neptune_migrated/x") == "neptune_migrated/x"
    for key in ("a b", "ünï", "x.y", "_neptune/step/a"):
        assert m.sanitize_key(m.sanitize_key(key)) == m.sanitize_key(key)


def test_run_id_is_deterministic_and_wandb_safe() -> None:
    a = m.run_id_for("proj", "ws/proj/PROJ-1")
    assert a == m.run_id_for("proj", "ws/proj/PROJ-1")
    assert a != m.run_id_for("other", "ws/proj/PROJ-1")
    assert len(a) == 16
    assert set(a) <= set("0123456789abcdef")


def test_nest_and_flatten_round_trip_with_conflicts() -> None:
    flat = {"a/b": 1, "a/c/d": "x", "a": 2, "e//f": 3, "g": [1, 2]}
    nested = m.nest(flat)
    assert nested["a/b"] == 1 or nested["a"] == 2
    assert m.flatten(nested) == flat


def test_tags_projects_and_rebinning() -> None:
    assert m.map_tag("x" * 64) == "x" * 64
    long = m.map_tag("x" * 65)
    assert long is not None
    assert len(long) == 64
    assert m.map_tag("  ") is None
    assert m.project_name("{workspace}:{project_name}", "ws/p#1") == "ws-p-1"
    edges = [float(i) for i in range(1025)]
    e2, v2 = m.rebin(edges, [1.0] * 1024)
    assert len(v2) <= m.MAX_HISTOGRAM_BINS
    assert sum(v2) == 1024
    assert e2[0] == 0.0
    assert e2[-1] == 1024.0
    assert len(e2) == len(v2) + 1


def test_timestamps_round_trip_to_the_microsecond() -> None:
    for us in (1_740_830_400_000_001, 1_740_830_400_123_456, 0, 4_102_444_800_999_999):
        assert m.from_seconds(float(repr(m.seconds(us)))) == us


def test_errors_are_classified() -> None:
    class Response:
        def __init__(self, status: int) -> None:
            self.status_code = status

    class HTTPError(Exception):
        def __init__(self, status: int) -> None:
            super().__init__(str(status))
            self.response = Response(status)

    assert classify_error(HTTPError(429)) == "transient"
    assert classify_error(HTTPError(503)) == "transient"
    assert classify_error(HTTPError(413)) == "permanent"
    assert classify_error(ConnectionResetError()) == "transient"
    assert classify_error(FileNotFoundError()) == "permanent"
    assert classify_error(PermanentError("no")) == "permanent"
