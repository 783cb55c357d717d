"""dump/lock.py: the one flock-based lock (writer, import, store creation)."""

from __future__ import annotations

import os
import time
from pathlib import Path

import pytest

from neptune_migrate.dump.lock import FileLock, LockHolder, current_holder, read_holder
from neptune_migrate.dump.writer import DumpWriter
from neptune_migrate.errors import UsageError


def test_second_holder_is_refused_and_sees_who_holds_it(tmp_path: Path) -> None:
    path = tmp_path / "x.lock"
    first = FileLock(path, "import into somewhere")
    assert first.try_acquire()
    holder = current_holder(path)
    assert holder is not None
    assert holder.pid == os.getpid()
    assert holder.what == "import into somewhere"
    assert holder.describe().startswith(f"pid {os.getpid()} since 20")
    assert holder.describe().endswith(" (import into somewhere)")

    second = FileLock(path, "another")
    seen: list[LockHolder] = []
    started = time.monotonic()
    assert second.acquire(timeout=0.3, on_wait=seen.append) is False
    assert 0.3 <= time.monotonic() - started < 2
    assert [h.pid for h in seen] == [os.getpid()]  # told once, with the holder

    first.release()
    assert current_holder(path) is None
    assert read_holder(path) == LockHolder(None, None, None)  # the file is kept, emptied
    assert second.acquire(timeout=0)
    assert read_holder(path).what == "another"
    second.release()


def test_current_holder_never_creates_the_lock_file(tmp_path: Path) -> None:
    assert current_holder(tmp_path / "missing.lock") is None
    assert list(tmp_path.iterdir()) == []


def test_dump_writer_refusal_names_the_holder(tmp_path: Path) -> None:
    pattern = rf"being written by another neptune-migrate process \(pid {os.getpid()} since .* \(export\)\)"
    with DumpWriter(tmp_path / "dump"), pytest.raises(UsageError, match=pattern):
        DumpWriter(tmp_path / "dump").open()
    with DumpWriter(tmp_path / "dump"):  # released on close
        pass
