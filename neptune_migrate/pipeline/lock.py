"""The import lock: one import per dump and destination target at a time, across processes.

Without it, a second import of the same dump into the same destination finds the first one's
runs in progress, takes them for the leftovers of a crash and discards them. The lock is a
`dump.lock.FileLock` at `<dump>/_locks/<destination>-<hash of target>.lock`; the kernel releases
it when its holder exits, even after SIGKILL. Dry runs and verify do not take it.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator

from neptune_migrate.destinations.base import Destination
from neptune_migrate.dump.layout import DumpLayout
from neptune_migrate.dump.lock import FileLock, LockHolder, current_holder, read_holder
from neptune_migrate.errors import LockTimeoutError


@contextlib.contextmanager
def import_lock(
    layout: DumpLayout,
    destination: Destination,
    *,
    timeout: float | None = None,
    on_wait: Callable[[LockHolder], None] | None = None,
) -> Iterator[None]:
    """Hold the import lock of (dump, destination target) for the duration of the block.

    Waits while another process holds it (forever when `timeout` is None; `on_wait` is called once
    with the holder); raises `LockTimeoutError` (exit 3) when `timeout` seconds run out.
    """
    target = destination.describe()
    path = layout.import_lock(destination.name, target)
    path.parent.mkdir(parents=True, exist_ok=True)
    lock = FileLock(path, f"import into {target}")
    if not lock.acquire(timeout, on_wait):
        holder = read_holder(path).describe()
        msg = f"gave up after {timeout:g} s waiting for the import lock held by {holder} ({path})"
        raise LockTimeoutError(msg)
    try:
        yield
    finally:
        lock.release()


def running_import(layout: DumpLayout, destination: Destination) -> LockHolder | None:
    """The process importing this dump into this destination target right now, if any (read only)."""
    return current_holder(layout.import_lock(destination.name, destination.describe()))
