"""Shards: one deterministic partition of runs, the same for export, import and verify.

`--shard K/N` (K counts from 1, as in `node --test-shard=1/3`) makes a process handle only the runs
whose *owner key* hashes to K. The owner key is the run's own key, or for a forked run the key of the
root of its fork chain, so a child is always in its parent's shard and never waits on another
machine. The hash is sha256 of `workspace/project/RUN-ID` (stable across processes, machines and
Python versions; Python's `hash()` is salted per process).

`--shard auto/N` (Kubernetes Indexed Job: `JOB_COMPLETION_INDEX` counts from 0, the count is not in
the environment) and `--shard auto` (Slurm job array: rank and count from `SLURM_ARRAY_TASK_ID`,
`SLURM_ARRAY_TASK_MIN`, `SLURM_ARRAY_TASK_STEP`, `SLURM_ARRAY_TASK_COUNT`) read the scheduler's
variables instead.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Protocol, TypeVar, runtime_checkable

from neptune_migrate.dump.reader import DumpReader, DumpRun, RefusedRun
from neptune_migrate.errors import UsageError
from neptune_migrate.model import RunKey, SourceRunId
from neptune_migrate.registry import REGISTRY_KINDS, annotate

MAX_SHARDS = 100_000
"""More shards than this is a typo, not a plan."""

_SPEC = re.compile(r"\s*(?P<k>auto|\d+)\s*(?:/\s*(?P<n>\d+)\s*)?")


@dataclass(frozen=True, slots=True)
class Shard:
    """Shard `number` of `count` (1 <= number <= count)."""

    number: int
    count: int
    detected_from: str = "--shard"
    """Where the shard came from: `--shard`, `JOB_COMPLETION_INDEX` or `SLURM_ARRAY_TASK_ID`."""

    def __post_init__(self) -> None:
        if not 1 <= self.count <= MAX_SHARDS:
            msg = f"shard count {self.count} must be between 1 and {MAX_SHARDS}"
            raise UsageError(msg)
        if not 1 <= self.number <= self.count:
            msg = f"shard {self.number}/{self.count}: K must be between 1 and {self.count} (shards count from 1)"
            raise UsageError(msg)

    @property
    def label(self) -> str:
        """`shard-2-of-3`: the suffix of this shard's ledger, lock and report names."""
        return f"shard-{self.number}-of-{self.count}"

    def __str__(self) -> str:
        return f"{self.number}/{self.count}"

    def owns(self, run_key: RunKey | str) -> bool:
        """True when the run whose owner key is `run_key` belongs to this shard."""
        return shard_number(run_key, self.count) == self.number

    def to_json(self) -> dict[str, object]:
        return {"number": self.number, "count": self.count, "label": self.label,
                "detected_from": self.detected_from}


def shard_number(run_key: RunKey | str, count: int) -> int:
    """The shard (1..count) of an owner key: sha256 of its text form, first 8 bytes, modulo count."""
    digest = hashlib.sha256(str(run_key).encode("utf-8")).digest()
    return int.from_bytes(digest[:8], "big") % count + 1


def parse(spec: str, env: Mapping[str, str] | None = None) -> Shard:
    """`K/N`, `auto/N` or `auto` -> a Shard; UsageError (exit 2) naming the flag otherwise."""
    m = _SPEC.fullmatch(spec)
    if m is None:
        msg = f"--shard {spec!r}: expected K/N (e.g. 2/8, K from 1), auto/N (Kubernetes) or auto (Slurm)"
        raise UsageError(msg)
    count = int(m["n"]) if m["n"] is not None else None
    if m["k"] != "auto":
        if count is None:
            msg = f"--shard {spec!r}: the shard count is missing (write K/N, e.g. {m['k']}/8)"
            raise UsageError(msg)
        return Shard(int(m["k"]), count)
    found = detect({} if env is None else env, count)
    if found is None:
        msg = (f"--shard {spec!r}: neither JOB_COMPLETION_INDEX (Kubernetes Indexed Job) nor "
               "SLURM_ARRAY_TASK_ID (Slurm job array) is set; pass --shard K/N")
        raise UsageError(msg)
    return found


def _int_var(env: Mapping[str, str], name: str) -> int | None:
    value = env.get(name)
    if value is None or value.strip() == "":
        return None
    try:
        return int(value.strip())
    except ValueError:
        msg = f"{name}={value!r} is not an integer"
        raise UsageError(msg) from None


def detect(env: Mapping[str, str], count: int | None = None) -> Shard | None:
    """The shard the scheduler gave this process, or None outside an indexed job or array.

    Kubernetes: shard `JOB_COMPLETION_INDEX + 1` of `count` (required: the count is not in the
    environment). Slurm: rank `(SLURM_ARRAY_TASK_ID - SLURM_ARRAY_TASK_MIN) / SLURM_ARRAY_TASK_STEP`
    of `SLURM_ARRAY_TASK_COUNT` (an evenly stepped array such as `--array=1-7:2` or `1,3,5,7`; an
    uneven list such as `0,1,5` has no rank in the environment and is refused); a given `count` must
    equal the array's.
    """
    index = _int_var(env, "JOB_COMPLETION_INDEX")
    if index is not None:
        if count is None:
            msg = ("JOB_COMPLETION_INDEX is set (Kubernetes Indexed Job) but the shard count is not in the "
                   "environment: pass --shard auto/N with N = the Job's completions")
            raise UsageError(msg)
        if not 0 <= index < count:
            msg = f"JOB_COMPLETION_INDEX={index} is outside 0..{count - 1} (--shard auto/{count})"
            raise UsageError(msg)
        return Shard(index + 1, count, "JOB_COMPLETION_INDEX")
    task = _int_var(env, "SLURM_ARRAY_TASK_ID")
    if task is None:
        return None
    lowest = _int_var(env, "SLURM_ARRAY_TASK_MIN")
    tasks = _int_var(env, "SLURM_ARRAY_TASK_COUNT")
    if lowest is None or tasks is None:
        msg = "SLURM_ARRAY_TASK_ID is set without SLURM_ARRAY_TASK_MIN and SLURM_ARRAY_TASK_COUNT; pass --shard K/N"
        raise UsageError(msg)
    step = _int_var(env, "SLURM_ARRAY_TASK_STEP") or 1
    highest = _int_var(env, "SLURM_ARRAY_TASK_MAX")
    where = (f"SLURM_ARRAY_TASK_ID={task} MIN={lowest} STEP={step} COUNT={tasks}"
             + ("" if highest is None else f" MAX={highest}"))
    even = step > 0 and (highest is None or lowest + (tasks - 1) * step == highest)
    if not even or (task - lowest) % step or not 0 <= (task - lowest) // step < tasks:
        msg = (f"Slurm array is not evenly stepped ({where}): its rank is not in the environment; "
               "submit --array=A-B or A-B:S, or pass --shard K/N")
        raise UsageError(msg)
    if count is not None and count != tasks:
        msg = f"--shard auto/{count} but the Slurm array has {tasks} task(s) ({where})"
        raise UsageError(msg)
    return Shard((task - lowest) // step + 1, tasks, "SLURM_ARRAY_TASK_ID")


def owner_keys(parents: Mapping[RunKey, RunKey | None]) -> dict[RunKey, RunKey]:
    """Run key -> the root of its fork chain (itself when not forked, or when its parent is not
    known; a cycle is broken at the run that closes it, deterministically by the smallest key)."""
    out: dict[RunKey, RunKey] = {}
    for start in parents:
        chain: list[RunKey] = []
        seen: set[RunKey] = set()
        key = start
        while True:
            if key in out:
                root = out[key]
                break
            parent = parents.get(key)
            if parent is None or parent not in parents:
                root = key
                break
            if key in seen:  # a cycle: every member gets the smallest key of the cycle
                cycle = chain[chain.index(key):]
                root = min(cycle, key=str)
                break
            seen.add(key)
            chain.append(key)
            key = parent
        for k in chain:
            out[k] = root
        out.setdefault(start, root)
    return out


@runtime_checkable
class KnowsForks(Protocol):
    """An optional ability of a source: each run's fork parent, known before any run is read (a live
    source lists it with the runs). Without it an export shards runs by their own keys: a fork may
    then be exported by another shard than its parent, which costs nothing (the dump only names the
    parent); import and verify always shard by the root of the fork chain, read from the dump."""

    def fork_parents(self) -> Mapping[RunKey, RunKey | None]:
        """Run key -> the key of the run it was forked from (None: not a fork)."""
        ...


def source_owner_keys(source: object, keys: Iterable[RunKey]) -> dict[RunKey, RunKey]:
    """Run key -> owner key for an export: the fork root when the source knows forks, else itself."""
    keys = list(keys)
    if isinstance(source, KnowsForks):
        parents = dict(source.fork_parents())
        roots = owner_keys({k: parents.get(k) for k in {*keys, *parents}})
        return {k: roots.get(k, k) for k in keys}
    return {k: k for k in keys}


T = TypeVar("T")


def partition(items: Iterable[T], shard: Shard | None, owner: Callable[[T], RunKey | str]) -> list[T]:
    """The items this shard owns (all of them when `shard` is None)."""
    if shard is None:
        return list(items)
    return [item for item in items if shard.owns(owner(item))]


def owned_scan(scanned: Iterable[DumpRun | RefusedRun], shard: Shard | None) -> list[DumpRun | RefusedRun]:
    """The dump runs (as `DumpReader.scan()` yields them) this shard handles, in their order.

    Forks go with the root of their chain among the dump's runs; a model and its versions go together,
    by `project/<model id>` (the model's own key when it is a native record), so one shard imports a
    model's versions in order. A refused run goes by its key, or when its `run.json` could not be read,
    by its folder's name.
    """
    items = list(scanned)
    if shard is None:
        return items
    parents: dict[RunKey, RunKey | None] = {}
    for run in items:
        if isinstance(run, DumpRun):
            fork = run.record.fork
            parents[run.key] = None if fork is None else fork.parent
        elif run.key is not None:
            parents.setdefault(run.key, None)
    roots = owner_keys(parents)
    models: dict[RunKey, RunKey] = {}
    for run in items:
        if isinstance(run, DumpRun) and run.record.kind in REGISTRY_KINDS:
            info = annotate(run.record).registry
            if info is not None:
                models[run.key] = RunKey(run.key.project, SourceRunId(info.model_id))

    def owner(run: DumpRun | RefusedRun) -> RunKey | str:
        if run.key is None:
            return run.run_dir.name
        return models.get(run.key) or roots.get(run.key, run.key)

    return partition(items, shard, owner)


def report_facts(shard: Shard, reader: DumpReader) -> dict[str, object]:
    """The `shard` object of a shard's import or verify report, read by `report merge`: the shard, the
    dump's id, how many runs the dump holds and how many of them this shard owns."""
    return {**shard.to_json(), "dump_id": reader.manifest.origin, "dump_runs": len(reader.run_dirs()),
            "owned_runs": len(owned_scan(reader.scan(), shard))}


def divide_rate(rate: float | None, shard: Shard | None) -> float | None:
    """This shard's share of a request budget given for the whole job (`--rate R`: R requests per
    second over all N shards, R/N each). None (no limit) stays None."""
    if rate is None or shard is None:
        return rate
    if rate <= 0:
        msg = f"--rate {rate:g} must be more than 0 requests per second"
        raise UsageError(msg)
    return rate / shard.count
