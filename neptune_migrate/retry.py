"""The only place that configures tenacity.

Backends never retry by themselves: they classify an error as transient or permanent, and a
`Retrier` retries the transient ones with exponential backoff and jitter, honouring a
`Retry-After` (seconds or HTTP-date) the error carries, within a bounded time per call.

An `OutageBudget` is shared by every call of one import: while *nothing* succeeds (the
destination is down), calls keep waiting past their own limits until the outage has lasted
`max_outage` seconds; one line says that the import is waiting and until when. Once an outage
has used up its budget, the calls caught in it fail at once instead of each waiting again.
"""

from __future__ import annotations

import email.utils
import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from typing import TypeVar

from tenacity import (
    RetryCallState,
    Retrying,
    retry_if_exception,
    stop_after_attempt,
    stop_after_delay,
    wait_exponential_jitter,
)

from neptune_migrate.model import ErrorKind

T = TypeVar("T")
log = logging.getLogger(__name__)

RETRY_AFTER_STATUSES = frozenset({429, 503})
"""HTTP statuses whose `Retry-After` header is honoured."""


@dataclass(frozen=True, slots=True)
class RetryPolicy:
    """How hard to try before an error counts as permanent."""

    max_attempts: int = 8
    """Attempts in all, the first included."""
    initial_wait: float = 0.5
    """Seconds before the first retry; doubles each time, with jitter."""
    max_wait: float = 30.0
    """Longest single wait (a longer `Retry-After` is capped to this)."""
    max_total: float = 300.0
    """Give up when this many seconds have passed since the first attempt."""
    max_outage: float = 300.0
    """Seconds an import keeps waiting while no request at all succeeds (`--max-outage`);
    the budget is shared by every call and worker of the import. 0 turns it off."""
    outage_notice: float = 5.0
    """Print the "waiting" line once no request has succeeded for this many seconds."""
    outage_poll: float = 5.0
    """Longest wait between two tries while waiting out an outage (so the import resumes soon
    after the destination is back)."""


FAST = RetryPolicy(max_attempts=6, initial_wait=0.01, max_wait=0.2, max_total=10.0, max_outage=0.0)
"""A policy for tests: same logic, tiny waits, no outage budget."""


def parse_retry_after(value: object, now: datetime | None = None) -> float | None:
    """Seconds to wait from a `Retry-After` value: delay-seconds (`"120"`) or an HTTP-date
    (`"Wed, 21 Oct 2026 07:28:00 GMT"`, measured from `now`). None when absent or unreadable;
    never negative."""
    if value is None or isinstance(value, bool):
        return None
    if isinstance(value, int | float):
        return max(0.0, float(value))
    text = str(value).strip()
    try:
        return max(0.0, float(text))
    except ValueError:
        pass
    try:
        when = email.utils.parsedate_to_datetime(text)
    except (TypeError, ValueError, IndexError):
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=timezone.utc)
    return max(0.0, (when - (now or datetime.now(timezone.utc))).total_seconds())


def retry_after_seconds(error: BaseException) -> float | None:
    """The `Retry-After` an error carries, if any: an attribute `retry_after`, or the header of
    the HTTP response it holds when that response is a 429 or 503."""
    value = getattr(error, "retry_after", None)
    if value is None:
        response = getattr(error, "response", None)
        status = getattr(response, "status_code", None)
        headers = getattr(response, "headers", None)
        if headers is not None and (status is None or status in RETRY_AFTER_STATUSES):
            value = headers.get("Retry-After")
    return parse_retry_after(value)


def _utc(seconds_from_now: float) -> str:
    return (datetime.now(timezone.utc) + timedelta(seconds=seconds_from_now)).strftime("%H:%M:%S UTC")


class OutageBudget:
    """One import's allowance for waiting out a destination that answers nothing.

    An outage starts at the first failed request after a success and ends at the next success
    (from any thread). Thread-safe; one instance per import.
    """

    def __init__(self, policy: RetryPolicy, what: str = "the destination") -> None:
        self.max_outage = policy.max_outage
        self.notice_after = policy.outage_notice
        self.what = what
        self._lock = threading.Lock()
        self._last_ok = time.monotonic()
        self._down_since: float | None = None
        self._noticed = False
        self._given_up: float | None = None
        self.outages: list[float] = []
        """Durations (s) of the outages that lasted long enough to be announced."""

    @property
    def active(self) -> bool:
        return self.max_outage > 0

    def succeeded(self) -> None:
        """A request got an answer: any outage is over."""
        now = time.monotonic()
        with self._lock:
            if self._down_since is not None and self._noticed:
                took = now - self._down_since
                self.outages.append(round(took, 1))
                log.warning("%s answers again after %.0f s; continuing", self.what, took)
            self._down_since = None
            self._noticed = False
            self._last_ok = now

    def failed(self, error: BaseException) -> None:
        """A request failed with a transient error."""
        now = time.monotonic()
        with self._lock:
            if self._down_since is None:
                self._down_since = now
                return
            down = now - self._down_since
            if self.active and not self._noticed and down >= self.notice_after:
                self._noticed = True
                left = max(0.0, self.max_outage - down)
                log.warning(
                    "%s: no request has succeeded for %.0f s (%s); waiting until %s for it to come "
                    "back (--max-outage %g s)",
                    self.what, down, type(error).__name__, _utc(left), self.max_outage,
                )

    def covers(self, first_failure: float) -> bool:
        """True while a call that began failing at `first_failure` (monotonic) is inside an outage
        (nothing succeeded since) that has budget left."""
        with self._lock:
            return (self.active and self._down_since is not None and self._last_ok <= first_failure
                    and time.monotonic() - self._down_since < self.max_outage)

    def remaining(self) -> float:
        with self._lock:
            if self._down_since is None:
                return self.max_outage
            return max(0.0, self.max_outage - (time.monotonic() - self._down_since))

    def give_up(self) -> None:
        """A call gave up: if the outage used up its budget, later calls in it fail at once."""
        with self._lock:
            if (self.active and self._down_since is not None
                    and time.monotonic() - self._down_since >= self.max_outage):
                self._given_up = self._down_since

    def gave_up(self) -> bool:
        """The current outage already exceeded its budget and failed a call."""
        with self._lock:
            return self._down_since is not None and self._given_up == self._down_since


class Retrier:
    """Calls a function, retrying what `classify` calls transient (see the module docstring).

    One instance may be shared by threads; `retries` counts every retry made through it.
    """

    def __init__(
        self,
        classify: Callable[[Exception], ErrorKind],
        policy: RetryPolicy,
        *,
        budget: OutageBudget | None = None,
        on_retry: Callable[[Exception, int], None] | None = None,
        sleep: Callable[[float], None] | None = None,
    ) -> None:
        self.classify = classify
        self.sleep = sleep
        """How waits are slept (None: `time.sleep`); tests scale waits down and record them."""
        self.policy = policy
        self.budget = budget
        self.on_retry = on_retry
        self._lock = threading.Lock()
        self.retries = 0
        self.waits: list[tuple[str, float]] = []
        """(what, seconds) of every wait that a `Retry-After` decided."""

    def __call__(
        self, what: str, fn: Callable[[], T], *, retry_after: Callable[[], float | None] | None = None
    ) -> T:
        """Call `fn` until it succeeds or its error is permanent or the limits are reached; the
        last error is re-raised. `retry_after`, when given, tells the `Retry-After` of the
        attempt that just failed when the error itself does not carry it."""
        policy, budget = self.policy, self.budget
        first_failure: list[float] = []

        def is_transient(error: BaseException) -> bool:
            return isinstance(error, Exception) and self.classify(error) == "transient"

        def attempt() -> T:
            try:
                result = fn()
            except Exception as exc:
                if budget is not None:
                    if is_transient(exc):
                        budget.failed(exc)
                        if not first_failure:
                            first_failure.append(time.monotonic())
                    else:
                        budget.succeeded()  # a permanent error is an answer: the destination is up
                raise
            if budget is not None:
                budget.succeeded()
            return result

        limits = stop_after_attempt(policy.max_attempts) | stop_after_delay(policy.max_total)

        def stop(state: RetryCallState) -> bool:
            normal = bool(limits(state))
            if budget is None or not budget.active or not first_failure:
                return normal
            if budget.gave_up():
                return True
            if budget.covers(first_failure[0]):
                return False
            if normal:
                budget.give_up()
            return normal

        backoff = wait_exponential_jitter(
            initial=policy.initial_wait, max=policy.max_wait, jitter=policy.initial_wait
        )

        def wait(state: RetryCallState) -> float:
            outcome = state.outcome
            error = outcome.exception() if outcome is not None else None
            hinted = retry_after_seconds(error) if error is not None else None
            if hinted is None and retry_after is not None:
                hinted = retry_after()
            if hinted is not None:
                seconds = min(hinted, policy.max_wait)
                with self._lock:
                    self.waits.append((what, seconds))
                return seconds
            seconds = float(backoff(state))
            if budget is not None and first_failure and budget.covers(first_failure[0]):
                seconds = min(seconds, policy.outage_poll, max(0.05, budget.remaining()))
            return seconds

        def before_sleep(state: RetryCallState) -> None:
            outcome = state.outcome
            error = outcome.exception() if outcome is not None else None
            log.info("retrying %s after %s (attempt %d)", what, type(error).__name__, state.attempt_number)
            with self._lock:
                self.retries += 1
            if self.on_retry is not None and isinstance(error, Exception):
                self.on_retry(error, state.attempt_number)

        retrying = Retrying(
            retry=retry_if_exception(is_transient),
            stop=stop,
            wait=wait,
            before_sleep=before_sleep,
            reraise=True,
        )
        if self.sleep is not None:
            retrying.sleep = self.sleep
        return retrying(attempt)
