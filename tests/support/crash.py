"""A wrapper in front of any real destination that 'crashes' (BaseException) on the n-th call."""

from __future__ import annotations

from typing import Any

from neptune_migrate.destinations.fake import SimulatedCrash


class CrashingDestination:
    """Delegates everything to `inner`; raises SimulatedCrash on call number `n` of `method`.

    Like a SIGKILL, the crash is not an Exception: the pipeline's per-run error handling does
    not catch it, so the destination is left exactly as a killed process would leave it.
    """

    def __init__(self, inner: Any, method: str, n: int) -> None:
        self._inner = inner
        self._method = method
        self._n = n
        self._calls = 0

    def __getattr__(self, name: str) -> Any:
        attr = getattr(self._inner, name)
        if name != self._method:
            return attr

        def wrapped(*args: Any, **kwargs: Any) -> Any:
            self._calls += 1
            if self._calls == self._n:
                raise SimulatedCrash(f"crash in {name} call {self._n}")
            return attr(*args, **kwargs)

        return wrapped
