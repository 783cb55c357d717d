"""The request budget shared by every worker of a live export (`--workers`, `--rate`).

One `RequestBudget` per export: `acquire()` blocks until a request may start, so at most `workers`
requests are in flight and, with a rate, at most `rate` requests start per second on average (a
token bucket holding up to one second of requests, so short bursts stay polite). Both live sources
call it before every HTTP request, retries included.

The export reads up to `workers` runs at once (`sources.base.ConcurrentRuns`); the budget is what
keeps all of their requests together within `workers` and `rate`. `cancel()` (Ctrl-C, or a run whose
error stops the whole export) makes every later `request()` raise `ExportCancelled`, so each thread
stops after the request it is in and its run is left uncommitted (staged, then removed).
"""

from __future__ import annotations

import contextlib
import threading
import time
from collections.abc import Callable, Iterator


class ExportCancelled(BaseException):
    """Raised by `RequestBudget.request()` once the export was cancelled (not an `Exception`: no retry
    and no per-run `except Exception` swallows it)."""


class RequestBudget:
    """Bounded concurrency plus a requests-per-second token bucket, shared by threads."""

    def __init__(self, workers: int = 4, rate: float | None = None, *,
                 clock: Callable[[], float] = time.monotonic,
                 sleep: Callable[[float], None] = time.sleep) -> None:
        if workers < 1:
            msg = f"workers must be at least 1, got {workers}"
            raise ValueError(msg)
        if rate is not None and rate <= 0:
            msg = f"rate must be positive, got {rate}"
            raise ValueError(msg)
        self.workers = workers
        self.rate = rate
        self._slots = threading.BoundedSemaphore(workers)
        self._lock = threading.Lock()
        self._clock = clock
        self._sleep = sleep
        self._capacity = max(1.0, rate) if rate is not None else 0.0
        self._tokens = self._capacity
        self._stamp = clock()
        self.requests = 0
        """Requests started through this budget (retries included)."""
        self.waited = 0.0
        """Seconds spent waiting for the rate (not for a free worker slot)."""
        self._cancelled = threading.Event()

    def cancel(self) -> None:
        """Refuse every request from now on (the ones in flight finish)."""
        self._cancelled.set()

    def wait(self, seconds: float) -> None:
        """Sleep between retries, cut short by `cancel()` (a `Retry-After: 300` must not hold Ctrl-C)."""
        if self._cancelled.wait(max(0.0, seconds)):
            self._check()

    @property
    def cancelled(self) -> bool:
        return self._cancelled.is_set()

    def _check(self) -> None:
        if self._cancelled.is_set():
            msg = "the export was cancelled"
            raise ExportCancelled(msg)

    def _take_token(self) -> None:
        if self.rate is None:
            with self._lock:
                self.requests += 1
            return
        while True:
            with self._lock:
                now = self._clock()
                self._tokens = min(self._capacity, self._tokens + (now - self._stamp) * self.rate)
                self._stamp = now
                if self._tokens >= 1.0:
                    self._tokens -= 1.0
                    self.requests += 1
                    return
                delay = (1.0 - self._tokens) / self.rate
                self.waited += delay
            self._sleep(delay)
            self._check()

    @contextlib.contextmanager
    def request(self) -> Iterator[None]:
        """Hold one worker slot and one rate token for the duration of a request."""
        self._check()
        with self._slots:
            self._check()
            self._take_token()
            yield


class BudgetedRuns:
    """`sources.base.ConcurrentRuns` for a live source whose requests all go through `self.budget`."""

    budget: RequestBudget

    @property
    def run_workers(self) -> int:
        """Runs the export reads at once: `--workers` (their requests share the one budget)."""
        return self.budget.workers

    def cancel(self) -> None:
        """Every later request raises `ExportCancelled` (the export stops early)."""
        self.budget.cancel()
