"""One shard of an import into the fake destination, as its own process (issue 15 tests).

`python -m tests.support.shard_worker DUMP SPEC OUT` imports the runs of shard SPEC (`K/N`, or `all`
for an unsharded import) into a fresh in-memory FakeDestination, under the shard's import lock and
ledger, writes the report into the dump's `_reports/` as the CLI does (with the shard's facts), and
writes what the destination holds into OUT (JSON): per source key, completeness, each series'
point count and sha256 of its points, each file's sha256.
"""

from __future__ import annotations

import hashlib
import json
import sys
from pathlib import Path
from typing import Any

import pyarrow as pa

from neptune_migrate.destinations.fake import FakeDestination
from neptune_migrate.dump.reader import DumpReader
from neptune_migrate.pipeline.import_ import ImportOptions, import_runs
from neptune_migrate.pipeline.ledger import Ledger
from neptune_migrate.pipeline.lock import import_lock
from neptune_migrate.pipeline.shard import parse, report_facts
from neptune_migrate.retry import FAST


def held(dest: FakeDestination) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for run in dest.runs.values():
        if run.deleted:
            continue
        series = {}
        for (kind, path), tables in sorted(run.series.items()):
            table = pa.concat_tables(tables).sort_by([("step", "ascending")])
            rows = json.dumps(table.to_pylist(), sort_keys=True, default=str)
            series[f"{kind}:{path}"] = [table.num_rows, hashlib.sha256(rows.encode()).hexdigest()]
        files = {p: hashlib.sha256(b).hexdigest() for p, b in sorted(run.files.items())}
        assert str(run.key) not in out, f"{run.key} imported twice"
        out[str(run.key)] = {"complete": run.complete, "params": run.params, "series": series, "files": files}
    return out


def main(dump: str, spec: str, out: str) -> None:
    reader = DumpReader(Path(dump))
    shard = None if spec == "all" else parse(spec, {})
    dest = FakeDestination()
    ledger = Ledger(reader.layout, dest.name, dest.describe(), shard)
    with import_lock(reader.layout, dest, shard=shard):
        report = import_runs(reader, dest, ImportOptions(retry=FAST, shard=shard), ledger=ledger)
    doc = report.to_json()
    if shard is not None:
        doc["shard"] = report_facts(shard, reader)
    reader.layout.reports_dir.mkdir(exist_ok=True)
    name = f"import-fake-{shard.label if shard else 'all'}.json"
    (reader.layout.reports_dir / name).write_text(json.dumps(doc, indent=2, default=str), encoding="utf-8")
    Path(out).write_text(json.dumps(held(dest), sort_keys=True), encoding="utf-8")


if __name__ == "__main__":
    main(*sys.argv[1:4])
