"""The ledger: an append-only JSONL record of import outcomes, inside the dump.

It is a record and a fast path, never the truth: the destination is always asked whether a run
exists and is complete, so deleting the ledger cannot cause duplicates.
"""

from __future__ import annotations

import json
import os
import threading
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from neptune_migrate.dump.layout import DumpLayout
from neptune_migrate.errors import redact_obj
from neptune_migrate.pipeline.shard import Shard


class Ledger:
    """`<dump>/_ledger/<destination>-<hash of target>.jsonl` (`....<shard>.jsonl` for one shard: shards
    never write the same file); one line per finished run."""

    def __init__(self, layout: DumpLayout, destination: str, target: str, shard: Shard | None = None) -> None:
        self.path: Path = layout.ledger(layout.target_name(destination, target), shard.label if shard else None)
        self._lock = threading.Lock()

    def append(self, entry: dict[str, Any]) -> None:
        doc = redact_obj({"at": datetime.now(timezone.utc).isoformat(), **entry})
        line = json.dumps(doc, ensure_ascii=False)
        with self._lock:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            with self.path.open("a", encoding="utf-8") as fh:
                fh.write(line + "\n")
                fh.flush()
                os.fsync(fh.fileno())

    def entries(self) -> list[dict[str, Any]]:
        if not self.path.is_file():
            return []
        out = []
        for line in self.path.read_text(encoding="utf-8").splitlines():
            try:
                out.append(json.loads(line))
            except ValueError:
                continue  # a line cut by a crash: the destination is the truth anyway
        return out
