"""DumpLayout: the only code that knows file and folder names inside a dump."""

from __future__ import annotations

import hashlib
import os
import re
from dataclasses import dataclass
from pathlib import Path

from neptune_migrate.model import RunKey, SeriesKind

_UNSAFE = re.compile(r"[^A-Za-z0-9_.-]+")


def run_dir_name(key: RunKey) -> str:
    """A folder name that is readable, filesystem-safe and unique per run key."""
    digest = hashlib.blake2b(str(key).encode(), digest_size=6).hexdigest()
    readable = _UNSAFE.sub("_", f"{key.project}__{key.run_id}").strip("._")[:80]
    return f"{readable}-{digest}"


@dataclass(frozen=True)
class DumpLayout:
    """Paths inside one dump folder."""

    root: Path

    @property
    def manifest(self) -> Path:
        return self.root / "manifest.json"

    @property
    def runs_dir(self) -> Path:
        return self.root / "runs"

    @property
    def staging_dir(self) -> Path:
        return self.root / ".staging"

    @property
    def blobs_dir(self) -> Path:
        return self.root / "files" / "sha256"

    @property
    def lock_file(self) -> Path:
        return self.root / ".lock"

    @property
    def ledger_dir(self) -> Path:
        return self.root / "_ledger"

    @property
    def reports_dir(self) -> Path:
        return self.root / "_reports"

    @property
    def locks_dir(self) -> Path:
        return self.root / "_locks"

    def import_lock(self, destination: str, target: str) -> Path:
        """`_locks/<destination>-<hash of target>.lock`: one import per dump and destination target."""
        tag = hashlib.blake2b(target.encode(), digest_size=4).hexdigest()
        return self.locks_dir / f"{destination}-{tag}.lock"

    def run_dir(self, key: RunKey) -> Path:
        return self.runs_dir / run_dir_name(key)

    @staticmethod
    def record_file(run_dir: Path) -> Path:
        """`run.json`: written last, its presence is what makes a run committed."""
        return run_dir / "run.json"

    @staticmethod
    def part_name(kind: SeriesKind, index: int) -> str:
        return f"series/{kind}-{index:05d}.parquet"

    def blob(self, sha256: str) -> Path:
        return self.blobs_dir / sha256[:2] / sha256

    def ledger(self, destination: str) -> Path:
        return self.ledger_dir / f"{destination}.jsonl"


def fsync_dir(path: Path) -> None:
    """Make a rename inside `path` durable (no-op where directories cannot be opened)."""
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def write_atomic(path: Path, data: bytes) -> None:
    """Write `data` to `path` through a temporary name and a rename, durably."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    with tmp.open("wb") as fh:
        fh.write(data)
        fh.flush()
        os.fsync(fh.fileno())
    tmp.replace(path)
    fsync_dir(path.parent)
