"""The only place that configures tenacity.

Backends never retry by themselves: they classify an error as transient or permanent, and
`call_with_retry` retries the transient ones with exponential backoff and jitter, honouring a
`Retry-After` the error carries, within a bounded total time.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
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


FAST = RetryPolicy(max_attempts=6, initial_wait=0.01, max_wait=0.2, max_total=10.0)
"""A policy for tests: same logic, tiny waits."""


def retry_after_seconds(error: BaseException) -> float | None:
    """The `Retry-After` an error carries, if any (attribute `retry_after` or an HTTP response)."""
    value = getattr(error, "retry_after", None)
    if value is None:
        response = getattr(error, "response", None)
        headers = getattr(response, "headers", None)
        if headers is not None:
            value = headers.get("Retry-After")
    if value is None:
        return None
    try:
        return max(0.0, float(value))
    except (TypeError, ValueError):
        return None


class _Wait:
    def __init__(self, policy: RetryPolicy) -> None:
        self.policy = policy
        self.backoff = wait_exponential_jitter(
            initial=policy.initial_wait, max=policy.max_wait, jitter=policy.initial_wait
        )

    def __call__(self, state: RetryCallState) -> float:
        outcome = state.outcome
        error = outcome.exception() if outcome is not None else None
        hinted = retry_after_seconds(error) if error is not None else None
        if hinted is not None:
            return min(hinted, self.policy.max_wait)
        return float(self.backoff(state))


def call_with_retry(
    fn: Callable[[], T],
    classify: Callable[[Exception], ErrorKind],
    policy: RetryPolicy,
    *,
    what: str = "call",
    on_retry: Callable[[Exception, int], None] | None = None,
) -> T:
    """Call `fn`, retrying errors that `classify` calls transient; re-raise the last error."""

    def is_transient(error: BaseException) -> bool:
        return isinstance(error, Exception) and classify(error) == "transient"

    def before_sleep(state: RetryCallState) -> None:
        outcome = state.outcome
        error = outcome.exception() if outcome is not None else None
        log.info("retrying %s after %s (attempt %d)", what, type(error).__name__, state.attempt_number)
        if on_retry is not None and isinstance(error, Exception):
            on_retry(error, state.attempt_number)

    retrying = Retrying(
        retry=retry_if_exception(is_transient),
        stop=stop_after_attempt(policy.max_attempts) | stop_after_delay(policy.max_total),
        wait=_Wait(policy),
        before_sleep=before_sleep,
        reraise=True,
    )
    return retrying(fn)
