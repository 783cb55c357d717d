"""`run`: export -> import -> verify as one command; the pieces that are not a verb's own.

Each phase is the verb's own pipeline function (`export_runs`, `import_runs`, `verify_runs`), so a
re-run after a crash resumes exactly as re-running that verb would: export skips runs committed and
unchanged, import skips runs complete in the destination (and repairs one cut short), verify reads
the destination back again (it writes nothing, and the destination may have changed since).

What lives here: the `--verify` choice, the deterministic run sample, the default dump path, the
reader that shows verify only the sampled runs, and the one summary of the three phases.
A `--shard K/N` option would narrow the same `RunSelection` every phase gets (see `pipeline/shard.py`).
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any, Literal

from neptune_migrate.dump.reader import DumpReader, DumpRun, RefusedRun
from neptune_migrate.errors import UsageError
from neptune_migrate.model import RunKey
from neptune_migrate.pipeline.shard import Shard, owned_scan
from neptune_migrate.sources.base import RunSelection

VerifyKind = Literal["full", "sample", "none"]
PhaseName = Literal["export", "import", "verify"]
DUMP_SUFFIX = ".neptune-migrate-dump"


@dataclass(frozen=True)
class VerifyMode:
    """`--verify full|none|sample:FRACTION`."""

    kind: VerifyKind = "full"
    fraction: float = 1.0

    @classmethod
    def parse(cls, text: str) -> VerifyMode:
        value = text.strip().lower()
        if value in ("full", "none"):
            return cls(kind=value)  # type: ignore[arg-type]
        if value.startswith("sample:"):
            raw = value.removeprefix("sample:")
            try:
                fraction = float(raw)
            except ValueError:
                fraction = -1.0
            if 0 < fraction <= 1:
                return cls(kind="sample", fraction=fraction)
        msg = f"--verify {text!r}: expected full, none or sample:FRACTION with FRACTION in (0, 1], e.g. sample:0.1"
        raise UsageError(msg)

    def __str__(self) -> str:
        return f"sample:{self.fraction:g}" if self.kind == "sample" else self.kind


def sample_point(key: str) -> float:
    """Where the run `key` falls in [0, 1): a stable hash of the key, the same on every machine."""
    digest = hashlib.sha256(key.encode("utf-8")).digest()
    return int.from_bytes(digest[:8], "big") / 2**64


def in_sample(key: str, fraction: float) -> bool:
    """Whether the run `key` is in a `fraction` sample (a larger fraction holds every run of a smaller one)."""
    return fraction >= 1 or sample_point(key) < fraction


class SampledReader(DumpReader):
    """A dump reader whose `scan` yields only the runs in the sample, and at least one run when the
    dump has any (the one nearest to the sample, so a small dump is never "verified" with nothing).
    Refused runs are always yielded: they are problems to report, not data to sample."""

    def __init__(self, root: Path, fraction: float, shard: Shard | None = None) -> None:
        super().__init__(root)
        self.fraction = fraction
        self.shard = shard
        """With `--shard`, the sample is drawn from this shard's runs (never another shard's)."""
        self.left_out = 0

    def scan(self) -> Iterator[DumpRun | RefusedRun]:
        self.left_out = 0
        chosen = 0
        nearest: tuple[float, DumpRun] | None = None
        for run in owned_scan(super().scan(), self.shard):
            if isinstance(run, RefusedRun):
                yield run
                continue
            point = sample_point(str(run.key))
            if self.fraction >= 1 or point < self.fraction:
                chosen += 1
                yield run
            else:
                self.left_out += 1
                if nearest is None or point < nearest[0]:
                    nearest = (point, run)
        if not chosen and nearest is not None:
            self.left_out -= 1
            yield nearest[1]


@dataclass(frozen=True, slots=True)
class KeySelection(RunSelection):
    """A `RunSelection` that also requires the run key to be one of `keys` (the runs `run --dry-run`
    plans from a temporary dump: those not in the real dump yet)."""

    keys: frozenset[str] = frozenset()

    @classmethod
    def narrowing(cls, selection: RunSelection, keys: frozenset[str]) -> KeySelection:
        return cls(**{f.name: getattr(selection, f.name) for f in fields(RunSelection)}, keys=keys)

    def matches_key(self, key: RunKey) -> bool:
        return str(key) in self.keys and RunSelection.matches_key(self, key)


def sample_size(keys: list[str], fraction: float) -> int:
    """How many of `keys` `SampledReader` verifies."""
    chosen = sum(1 for k in keys if in_sample(k, fraction))
    return chosen or min(1, len(keys))


def default_dump(source: Path) -> Path:
    """The dump beside the source: `<source folder or file>.neptune-migrate-dump`."""
    resolved = source.resolve()
    return resolved.with_name(resolved.name + DUMP_SUFFIX)


@dataclass
class Phase:
    """What one phase did (or, in a dry run, would do)."""

    name: PhaseName
    status: str = "not run"
    """`done`, `planned`, `skipped` (`--verify none`), `not run` (an earlier phase stopped the command)."""
    counts: dict[str, int] = field(default_factory=dict)
    categories: dict[str, int] = field(default_factory=dict)
    reports: list[str] = field(default_factory=list)
    note: str = ""

    def to_json(self) -> dict[str, Any]:
        return {"phase": self.name, "status": self.status, "counts": self.counts, "categories": self.categories,
                "reports": self.reports, "note": self.note}


@dataclass
class RunSummary:
    """The one summary `run` prints at the end (and writes into the dump's `_reports/`)."""

    source: str
    dump: str
    destination: str
    verify: VerifyMode
    dry_run: bool = False
    phases: dict[str, Phase] = field(default_factory=lambda: {n: Phase(n) for n in ("export", "import", "verify")})
    dump_kept: bool = True

    def phase(self, name: PhaseName) -> Phase:
        return self.phases[name]

    def categories(self) -> dict[str, int]:
        """Items per loss category, summed over export and import (verify's are the dump's own)."""
        out: dict[str, int] = {}
        for name in ("export", "import"):
            for k, v in self.phases[name].categories.items():
                out[k] = out.get(k, 0) + v
        return out

    def lines(self) -> list[str]:
        e, i, v = (self.phases[n] for n in ("export", "import", "verify"))
        would = "would be " if self.dry_run else ""
        out = [f"run summary{' (dry run: nothing was written)' if self.dry_run else ''}: {self.source} -> "
               f"{self.destination}"]
        out.append(f"  exported: {_counts(e)} [{e.status}]")
        out.append(f"  imported: {_counts(i)} [{i.status}]")
        verified = _counts(v)
        if self.verify.kind == "sample":
            verified += f" (a sample: {self.verify} of the runs, chosen by a stable hash of the run key)"
        out.append(f"  verified: {verified} [{v.status}]")
        out.extend(f"  {p.name}: {p.note}" for p in (e, i, v) if p.note)
        out.append(f"  dump: {self.dump}" + ("" if self.dump_kept else f" ({would}removed: --discard-dump)"))
        reports = [r for p in (e, i, v) for r in p.reports]
        if reports:
            out.append("  reports: " + " ".join(reports))
        return out

    def to_json(self) -> dict[str, Any]:
        return {"report": "neptune-migrate run", "source": self.source, "dump": self.dump,
                "destination": self.destination, "verify": str(self.verify), "dry_run": self.dry_run,
                "dump_kept": self.dump_kept, "categories": self.categories(),
                "phases": [p.to_json() for p in self.phases.values()]}


def _counts(phase: Phase) -> str:
    return ", ".join(f"{k} {n}" for k, n in phase.counts.items()) or "-"


def sum_counts(*parts: Mapping[str, int]) -> dict[str, int]:
    out: dict[str, int] = {}
    for part in parts:
        for k, v in part.items():
            out[k] = out.get(k, 0) + v
    return out
