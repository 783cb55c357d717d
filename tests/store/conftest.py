"""Helpers for the store-safety tests: small dumps, CLI processes, file-tree snapshots."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

from neptune_migrate.dump.writer import DumpWriter
from neptune_migrate.model import Field, RunKey
from tests.factories import float_points, key, make_record


def small_dump(root: Path, run_ids: tuple[str, ...], points: int = 50, project: str = "my-ws/my-proj") -> list[RunKey]:
    """A dump of runs with one float series each and nothing missing (a clean import exits 0)."""
    keys = []
    with DumpWriter(root) as dump:
        for rid in run_ids:
            k = key(rid, project)
            with dump.begin_run(k) as run:
                for start in range(0, points, 20_000):
                    steps = list(range(start, min(points, start + 20_000)))
                    run.add_points("float", float_points("train/loss", steps, [s / 7 for s in steps]))
                run.commit(make_record(k, fields={"p": Field("int", 1)}))
            keys.append(k)
    return keys


def cli_args(*args: str) -> list[str]:
    return [sys.executable, "-m", "neptune_migrate", *args]


def start(args: list[str], env: dict[str, str], cwd: Path | None = None) -> subprocess.Popen[str]:
    return subprocess.Popen(args, env=env, cwd=cwd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def wait_for(predicate: Callable[[], bool], what: str, timeout: float = 120, proc: subprocess.Popen[str] | None = None,
             interval: float = 0.05) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if proc is not None and proc.poll() is not None:
            out, err = proc.communicate()
            raise AssertionError(f"the process ended before {what}: rc={proc.returncode}\n{out}\n{err}")
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(interval)


def tree(root: Path) -> dict[str, int | None]:
    """Every path under `root` (relative) -> size for files, None for folders."""
    if not root.exists():
        return {}
    out: dict[str, int | None] = {}
    for dirpath, dirnames, filenames in os.walk(root):
        for d in dirnames:
            out[os.path.relpath(os.path.join(dirpath, d), root)] = None
        for f in filenames:
            p = os.path.join(dirpath, f)
            out[os.path.relpath(p, root)] = os.path.getsize(p)
    return out
