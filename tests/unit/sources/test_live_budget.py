"""`RequestBudget.cancel()`: what stops every thread of a live export after the request it is in."""

from __future__ import annotations

import threading

import pytest

from neptune_migrate.sources.live_budget import ExportCancelled, RequestBudget


def test_cancel_refuses_new_requests_and_a_thread_waiting_for_a_slot_once_it_gets_one() -> None:
    budget = RequestBudget(workers=1)
    outcome: list[str] = []
    holding = threading.Event()
    release = threading.Event()

    def in_flight() -> None:
        with budget.request():
            holding.set()
            release.wait(5)
        outcome.append("first finished its request")

    def waiting() -> None:
        try:
            with budget.request():
                outcome.append("second sent a request")
        except ExportCancelled:
            outcome.append("second cancelled")

    first = threading.Thread(target=in_flight)
    first.start()
    assert holding.wait(5)
    second = threading.Thread(target=waiting)
    second.start()  # blocks on the only slot
    budget.cancel()
    release.set()
    first.join(5)
    second.join(5)
    # (whether the second thread met the cancel before or while waiting for the slot, it sent nothing)
    assert sorted(outcome) == ["first finished its request", "second cancelled"]
    assert budget.requests == 1
    with pytest.raises(ExportCancelled), budget.request():
        pass
    assert not isinstance(ExportCancelled("x"), Exception)  # no `except Exception` (retry, per-run) takes it


def test_cancel_ends_a_wait_for_the_rate() -> None:
    slept: list[float] = []
    budget = RequestBudget(workers=2, rate=1.0, clock=lambda: 0.0, sleep=lambda s: (slept.append(s), budget.cancel()))
    with budget.request():
        pass
    with pytest.raises(ExportCancelled), budget.request():  # the bucket is empty: it waits, is cancelled meanwhile
        pass
    assert slept == [1.0]
    assert budget.requests == 1
