"""retry.py: Retry-After parsing, per-call limits, and the per-import outage budget."""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from dataclasses import replace
from datetime import datetime, timedelta, timezone
from email.utils import format_datetime

import pytest

from neptune_migrate.model import ErrorKind
from neptune_migrate.retry import OutageBudget, Retrier, RetryPolicy, parse_retry_after, retry_after_seconds


class FlakyError(Exception):
    """A transient error for these tests."""


def _classify(error: Exception) -> ErrorKind:
    return "transient" if isinstance(error, FlakyError) else "permanent"


def test_retry_after_seconds_and_http_dates() -> None:
    now = datetime(2026, 12, 3, 10, 0, 0, tzinfo=timezone.utc)
    assert parse_retry_after("7") == 7.0
    assert parse_retry_after("120") == 120.0  # every digit counts, not only the first
    assert parse_retry_after(" 30 ") == 30.0
    assert parse_retry_after("0.05") == 0.05
    assert parse_retry_after("-4") == 0.0
    assert parse_retry_after(12) == 12.0
    assert parse_retry_after("Thu, 03 Dec 2026 10:00:42 GMT", now) == 42.0
    assert parse_retry_after("Thu, 03 Dec 2026 09:59:00 GMT", now) == 0.0  # in the past: now
    assert parse_retry_after(format_datetime(now + timedelta(seconds=90), usegmt=True), now) == 90.0
    assert parse_retry_after("soon") is None
    assert parse_retry_after(None) is None


class _Response:
    def __init__(self, status: int, headers: dict[str, str]) -> None:
        self.status_code = status
        self.headers = headers


class _HttpError(Exception):
    def __init__(self, status: int, headers: dict[str, str]) -> None:
        super().__init__(status)
        self.response = _Response(status, headers)


def test_retry_after_only_from_429_and_503_responses() -> None:
    assert retry_after_seconds(_HttpError(429, {"Retry-After": "11"})) == 11.0
    assert retry_after_seconds(_HttpError(503, {"Retry-After": "3"})) == 3.0
    assert retry_after_seconds(_HttpError(500, {"Retry-After": "3"})) is None
    assert retry_after_seconds(FlakyError()) is None


def test_a_retry_after_is_waited_and_capped_by_max_wait() -> None:
    hints = iter(["1", "45"])
    calls: list[float] = []

    def fn() -> str:
        calls.append(time.monotonic())
        if len(calls) < 3:
            raise _HttpError(429, {"Retry-After": next(hints)})
        return "ok"

    retrier = Retrier(lambda e: "transient", RetryPolicy(max_attempts=5, initial_wait=0.01, max_wait=1.5,
                                                         max_total=30, max_outage=0))
    assert retrier("req", fn) == "ok"
    assert retrier.waits == [("req", 1.0), ("req", 1.5)]  # 45 s capped at max_wait
    assert 0.95 <= calls[1] - calls[0] < 1.4
    assert 1.45 <= calls[2] - calls[1] < 1.9
    assert retrier.retries == 2


def _down_for(seconds: float) -> Callable[[], str]:
    until = time.monotonic() + seconds

    def fn() -> str:
        if time.monotonic() < until:
            raise FlakyError("connection refused")
        return "ok"

    return fn


TIGHT = RetryPolicy(max_attempts=3, initial_wait=0.05, max_wait=0.2, max_total=0.5, max_outage=0.0,
                    outage_notice=0.5, outage_poll=0.2)


def test_without_a_budget_an_outage_longer_than_the_call_limits_fails_the_call() -> None:
    with pytest.raises(FlakyError):
        Retrier(_classify, TIGHT, budget=OutageBudget(TIGHT))("req", _down_for(2.0))


def test_the_outage_budget_waits_past_the_call_limits_and_says_until_when(
    caplog: pytest.LogCaptureFixture,
) -> None:
    policy = replace(TIGHT, max_outage=10.0)
    budget = OutageBudget(policy, "mlflow http://127.0.0.1:1")
    started = time.monotonic()
    with caplog.at_level(logging.WARNING, logger="neptune_migrate.retry"):
        assert Retrier(_classify, policy, budget=budget)("req", _down_for(2.0)) == "ok"
    took = time.monotonic() - started
    assert 2.0 <= took < 2.6  # polled every <= 0.2 s, so back soon after the outage
    lines = [r.getMessage() for r in caplog.records]
    waiting = [ln for ln in lines if "waiting until" in ln]
    assert len(waiting) == 1, lines
    assert "mlflow http://127.0.0.1:1: no request has succeeded" in waiting[0]
    assert "--max-outage 10 s" in waiting[0]
    assert any("answers again after 2 s" in ln for ln in lines), lines
    assert budget.outages and 1.9 <= budget.outages[0] <= 2.6


def test_an_outage_past_its_budget_fails_the_call_and_later_calls_fail_at_once() -> None:
    policy = RetryPolicy(max_attempts=3, initial_wait=0.05, max_wait=0.2, max_total=0.3, max_outage=1.0,
                         outage_notice=0.2, outage_poll=0.2)
    budget = OutageBudget(policy)
    retrier = Retrier(_classify, policy, budget=budget)
    down = _down_for(30.0)
    started = time.monotonic()
    with pytest.raises(FlakyError):
        retrier("first", down)
    assert 1.0 <= time.monotonic() - started < 1.6
    started = time.monotonic()
    with pytest.raises(FlakyError):
        retrier("second", down)
    assert time.monotonic() - started < 0.1  # the outage already used its budget: no new wait
    assert retrier("third", lambda: "ok") == "ok"  # an answer ends the outage
    assert not budget.gave_up()


def test_other_threads_succeeding_is_no_outage_so_the_call_limits_apply() -> None:
    policy = RetryPolicy(max_attempts=3, initial_wait=0.05, max_wait=0.1, max_total=5, max_outage=60.0)
    budget = OutageBudget(policy)
    retrier = Retrier(_classify, policy, budget=budget)
    stop = threading.Event()

    def healthy() -> None:
        while not stop.is_set():
            retrier("ok", lambda: None)
            time.sleep(0.01)

    worker = threading.Thread(target=healthy)
    worker.start()
    try:
        started = time.monotonic()
        with pytest.raises(FlakyError):
            retrier("always-fails", _down_for(60.0))
        assert time.monotonic() - started < 1.0
    finally:
        stop.set()
        worker.join()
