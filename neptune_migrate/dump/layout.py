"""DumpLayout: the only code that knows file and folder names inside a dump."""

from __future__ import annotations

import hashlib
import os
import re
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path, PurePosixPath

from neptune_migrate.errors import DumpFormatError
from neptune_migrate.model import RunKey, SeriesKind

_UNSAFE = re.compile(r"[^A-Za-z0-9_.-]+")
SHA256_HEX = re.compile(r"[0-9a-f]{64}")
"""A blob name: the lower-case hex sha256 of its content."""


class UnsafePathError(DumpFormatError):
    """A path read from a dump (or a source) that would leave the folder it must stay in."""


def confine(root: Path, relative: object, *, within: str = "", what: str = "path") -> Path:
    """The one resolver for paths read from a dump or a source: `root/within/relative`, resolved.

    `relative` comes from untrusted data (a `run.json`, a Parquet column, a queue file). It is
    refused (UnsafePathError, one line naming it) unless it is a non-empty relative path without
    `..` whose resolved location, symlinks followed, stays under `root/within`. `root` itself is
    trusted (it is what the user named); everything below it is not.
    """
    shown = repr(relative)[:200]
    if not isinstance(relative, str | PurePosixPath) or not str(relative) or "\x00" in str(relative):
        msg = f"{what} {shown} is not a relative path"
        raise UnsafePathError(msg)
    rel = PurePosixPath(relative)
    if rel.is_absolute() or Path(relative).is_absolute():
        msg = f"{what} {shown} is an absolute path; only paths inside the dump are read"
        raise UnsafePathError(msg)
    if ".." in rel.parts:
        msg = f"{what} {shown} contains '..'; only paths inside the dump are read"
        raise UnsafePathError(msg)
    base = root.resolve() / within if within else root.resolve()
    try:
        target = (base / rel).resolve()
    except (OSError, RuntimeError) as exc:  # a symlink loop
        msg = f"{what} {shown} cannot be resolved ({type(exc).__name__}); refused"
        raise UnsafePathError(msg) from exc
    if not target.is_relative_to(base):
        msg = f"{what} {shown} resolves outside {within or root.name}/ (a symlink?); refused"
        raise UnsafePathError(msg)
    return target


def check_sha256(value: object, *, what: str = "sha256") -> str:
    """`value` if it is a blob name (64 lower-case hex digits), else UnsafePathError."""
    if not isinstance(value, str) or not SHA256_HEX.fullmatch(value):
        msg = f"{what} {repr(value)[:200]} is not 64 lower-case hex digits"
        raise UnsafePathError(msg)
    return value


def run_dir_name(key: RunKey) -> str:
    """A folder name that is readable, filesystem-safe and unique per run key."""
    digest = hashlib.blake2b(str(key).encode(), digest_size=6).hexdigest()
    readable = _UNSAFE.sub("_", f"{key.project}__{key.run_id}").strip("._")[:80]
    return f"{readable}-{digest}"


@dataclass(frozen=True)
class DumpLayout:
    """Paths inside one dump folder."""

    root: Path

    @cached_property
    def real_root(self) -> Path:
        """The dump folder, resolved once (the one trusted path)."""
        return self.root.resolve()

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

    @property
    def state_dir(self) -> Path:
        """`_state/`: a live source's resume state (series pages of runs not yet committed)."""
        return self.root / "_state"

    @staticmethod
    def target_name(destination: str, target: str) -> str:
        """`<destination>-<hash of target>`: the name of one destination target's ledger and import lock."""
        return f"{destination}-{hashlib.blake2b(target.encode(), digest_size=4).hexdigest()}"

    def import_lock(self, destination: str, target: str, shard: str | None = None) -> Path:
        """`_locks/<destination>-<hash of target>.lock`: one import per dump and destination target;
        with `shard` (a label such as `shard-2-of-3`), `....<shard>.lock`: one import per shard."""
        suffix = f".{shard}" if shard else ""
        return self.locks_dir / f"{self.target_name(destination, target)}{suffix}.lock"

    def export_lock(self, shard: str) -> Path:
        """`_locks/export.<shard>.lock`: one export per shard of a dump written by several shards."""
        return self.locks_dir / f"export.{shard}.lock"

    @property
    def manifest_lock(self) -> Path:
        """`_locks/manifest.lock`: held while a writer reads, changes and replaces `manifest.json`."""
        return self.locks_dir / "manifest.lock"

    def shard_staging_dir(self, shard: str | None) -> Path:
        """Where a writer stages runs: `.staging/`, or `.staging/<shard>/` for one shard's writer."""
        return self.staging_dir / shard if shard else self.staging_dir

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
        """Where the blob named `sha256` is; refused unless it is a hex sha256 inside `files/`."""
        check_sha256(sha256, what="file sha256")
        return confine(self.real_root, f"sha256/{sha256[:2]}/{sha256}", within="files", what="blob")

    def part(self, run_dir: Path, file: object) -> Path:
        """A series part listed in a run's `run.json`; refused unless inside that run's folder."""
        return confine(self.real_root, file, within=f"runs/{run_dir.name}", what="part file")

    def committed(self, run_dir: Path) -> Path:
        """A run folder under `runs/` and its `run.json`, refused if either leads outside."""
        confine(self.real_root, run_dir.name, within="runs", what="run folder")
        return confine(self.real_root, "run.json", within=f"runs/{run_dir.name}", what="run record")

    def ledger(self, destination: str, shard: str | None = None) -> Path:
        """`_ledger/<destination>.jsonl`, or `_ledger/<destination>.<shard>.jsonl` for one shard."""
        suffix = f".{shard}" if shard else ""
        return self.ledger_dir / f"{destination}{suffix}.jsonl"


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
