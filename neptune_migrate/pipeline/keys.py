"""One reversible key sanitiser per destination, with deterministic collision handling."""

from __future__ import annotations

import hashlib
from collections import defaultdict
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field


@dataclass(frozen=True)
class KeyMap:
    """Neptune attribute path -> destination key for one run."""

    mapping: dict[str, str]
    renamed: dict[str, str] = field(default_factory=dict)
    """Only the paths whose key differs from the path."""
    collisions: dict[str, list[str]] = field(default_factory=dict)
    """Sanitised key -> the source paths that would all have mapped to it."""


def _suffix(path: str) -> str:
    return hashlib.blake2b(path.encode(), digest_size=3).hexdigest()


def build_key_map(paths: Iterable[str], sanitize: Callable[[str], str]) -> KeyMap:
    """Sanitise every path; when several paths land on one key, resolve it deterministically.

    A path that sanitising leaves unchanged keeps its key, and so does a changed path that no
    other path collides with. In a collision every changed path of the group gets `~<6 hex of a
    hash of the original path>` appended (sanitised again), which depends on nothing but that
    path, so re-imports map it the same way.
    """
    unique = sorted(set(paths))
    first = {p: sanitize(p) for p in unique}
    groups: dict[str, list[str]] = defaultdict(list)
    for p, k in first.items():
        groups[k].append(p)
    mapping = dict(first)
    collisions: dict[str, list[str]] = {}
    taken = set(first.values())
    for k, members in groups.items():
        if len(members) < 2:
            continue
        collisions[k] = members
        for p in (m for m in members if m != k):
            candidate = sanitize(f"{k}~{_suffix(p)}")
            n = 1
            while candidate in taken:
                candidate = sanitize(f"{k}~{_suffix(p)}{n}")
                n += 1
            mapping[p] = candidate
            taken.add(candidate)
    renamed = {p: k for p, k in mapping.items() if p != k}
    return KeyMap(mapping=mapping, renamed=renamed, collisions=collisions)
