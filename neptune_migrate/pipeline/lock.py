"""The import lock: one import per dump and destination target at a time, across processes.

Without it, a second import of the same dump into the same destination finds the first one's
runs in progress, takes them for the leftovers of a crash and discards them. The lock is a
`dump.lock.FileLock` at `<dump>/_locks/<destination>-<hash of target>.lock` (and, for one shard of a
sharded import, `....shard-K-of-N.lock`); the kernel releases
it when its holder exits, even after SIGKILL. Dry runs and verify do not take it.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable, Iterator

from neptune_migrate.destinations.base import Destination
from neptune_migrate.dump.layout import DumpLayout
from neptune_migrate.dump.lock import FileLock, LockHolder, current_holder, read_holder
from neptune_migrate.errors import LockTimeoutError
from neptune_migrate.pipeline.shard import Shard


@contextlib.contextmanager
def import_lock(
    layout: DumpLayout,
    destination: Destination,
    *,
    timeout: float | None = None,
    on_wait: Callable[[LockHolder], None] | None = None,
    shard: Shard | None = None,
) -> Iterator[None]:
    """Hold the import lock of (dump, destination target) for the duration of the block.

    With `shard`, the target's lock is taken shared (the N shards import at once, an unsharded import
    waits for them all and they for it) and the shard's own lock exclusively (two processes of the
    same shard exclude each other). Waits while another process holds a lock (forever when `timeout`
    is None; `on_wait` is called once with the holder); raises `LockTimeoutError` (exit 3) when
    `timeout` seconds run out.
    """
    target = destination.describe()
    what = f"import into {target}" + (f" ({shard.label})" if shard else "")
    locks = [FileLock(layout.import_lock(destination.name, target), what, shared=shard is not None)]
    if shard is not None:
        locks.append(FileLock(layout.import_lock(destination.name, target, shard.label), what))
    deadline = None if timeout is None else time.monotonic() + timeout
    held: list[FileLock] = []
    try:
        for lock in locks:
            lock.path.parent.mkdir(parents=True, exist_ok=True)
            left = None if deadline is None else max(0.0, deadline - time.monotonic())
            if not lock.acquire(left, on_wait):
                holder = read_holder(lock.path).describe()
                msg = f"gave up after {timeout:g} s waiting for the import lock held by {holder} ({lock.path})"
                raise LockTimeoutError(msg)
            held.append(lock)
        yield
    finally:
        for lock in reversed(held):
            lock.release()


def running_import(layout: DumpLayout, destination: Destination, shard: Shard | None = None) -> LockHolder | None:
    """The process importing this dump into this destination target right now (with `shard`: that
    shard's import), if any (read only)."""
    label = shard.label if shard else None
    return current_holder(layout.import_lock(destination.name, destination.describe(), label))
