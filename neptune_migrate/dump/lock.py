"""FileLock: one cross-process lock mechanism for the whole tool (`fcntl.flock` on a lock file).

The kernel releases a flock when its holder exits, however it exits (SIGKILL included), so a
crashed process never leaves a lock behind. The holder writes its pid and start time into the
file, so that a process waiting for it can say whom it waits for. Used by the dump writer (one
export per dump), the import lock (one import per dump and destination target) and store
initialisation (one process creates a SQLite store or an Aim repository).
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path

POLL_SECONDS = 0.2
"""How often a waiting process tries the lock again."""


@dataclass(frozen=True)
class LockHolder:
    """Who holds a lock, as written into the lock file by its holder (fields may be unknown)."""

    pid: int | None
    since: str | None
    what: str | None

    def describe(self) -> str:
        """`pid 1234 since 2026-01-02T03:04:05+00:00 (import into mlflow ...)`."""
        who = f"pid {self.pid}" if self.pid is not None else "another process"
        since = f" since {self.since}" if self.since else ""
        what = f" ({self.what})" if self.what else ""
        return f"{who}{since}{what}"


class FileLock:
    """An exclusive lock on `path` (created if missing, never deleted: deleting a lock file while
    another process waits on it would let two processes in)."""

    def __init__(self, path: Path, what: str, *, shared: bool = False) -> None:
        self.path = path
        self.what = what
        self.shared = shared
        """A shared lock: any number of shared holders at once, none while an exclusive one holds it
        (shared holders do not write themselves into the file)."""
        self._fd: int | None = None

    def try_acquire(self) -> bool:
        """Take the lock if it is free; False at once if another process holds it."""
        if self._fd is not None:
            return True
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
        try:
            fcntl.flock(fd, (fcntl.LOCK_SH if self.shared else fcntl.LOCK_EX) | fcntl.LOCK_NB)
        except OSError:
            os.close(fd)
            return False
        if self.shared:
            self._fd = fd
            return True
        info = {"pid": os.getpid(), "since": datetime.now(timezone.utc).isoformat(timespec="seconds"),
                "what": self.what}
        os.ftruncate(fd, 0)
        os.pwrite(fd, (json.dumps(info) + "\n").encode("utf-8"), 0)
        self._fd = fd
        return True

    def acquire(
        self, timeout: float | None = None, on_wait: Callable[[LockHolder], None] | None = None
    ) -> bool:
        """Wait for the lock (forever when `timeout` is None); False when `timeout` ran out.

        `on_wait` is called once, with the current holder, when the lock is not free at once.
        """
        if self.try_acquire():
            return True
        if on_wait is not None:
            on_wait(read_holder(self.path))
        deadline = None if timeout is None else time.monotonic() + timeout
        while True:
            left = None if deadline is None else deadline - time.monotonic()
            if left is not None and left <= 0:
                return False
            time.sleep(POLL_SECONDS if left is None else min(POLL_SECONDS, left))
            if self.try_acquire():
                return True

    def release(self) -> None:
        """Release the lock (the file stays)."""
        if self._fd is not None:
            fd, self._fd = self._fd, None
            if not self.shared:
                with contextlib.suppress(OSError):
                    os.ftruncate(fd, 0)
            os.close(fd)

    @contextlib.contextmanager
    def holding(self) -> Iterator[FileLock]:
        """`with lock.holding():` wait without limit, release at the end."""
        self.acquire()
        try:
            yield self
        finally:
            self.release()


def read_holder(path: Path) -> LockHolder:
    """What the current holder wrote into the lock file (unknown fields are None)."""
    try:
        doc = json.loads(path.read_text(encoding="utf-8") or "{}")
    except (OSError, ValueError):
        doc = {}
    if not isinstance(doc, dict):
        doc = {}
    pid = doc.get("pid")
    return LockHolder(pid if isinstance(pid, int) else None, doc.get("since"), doc.get("what"))


def current_holder(path: Path) -> LockHolder | None:
    """The holder of the lock at `path`, or None when nobody holds it. Read only: a missing lock
    file is not created (a shared lock is taken and dropped at once to test it)."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    except OSError:
        return None
    try:
        fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
    except OSError:
        return read_holder(path)
    finally:
        os.close(fd)  # closing drops the shared lock, if it was taken
    return None
