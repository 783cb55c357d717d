"""Fill the 3.x fake from a neutral dump, so the same content can be served live and read offline."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

from neptune_migrate.dump.reader import DumpReader
from tests.support.fake_neptune.v3 import FakeNeptune3, FakeRun, Point

_FIELD_TYPES = {"float": "float", "int": "int", "string": "string", "bool": "bool", "datetime": "datetime",
                "string_set": "stringSet"}
_SERIES_TYPES = {"float": "floatSeries", "string": "stringSeries", "histogram": "histogramSeries",
                 "file": "fileRefSeries"}


_EPOCH = datetime(1970, 1, 1, tzinfo=timezone.utc)


def _ms(ts: datetime | None) -> int:
    """Milliseconds since the epoch, truncated (the 3.x server keeps point times in ms)."""
    return 0 if ts is None else ((ts - _EPOCH) // timedelta(microseconds=1)) // 1000


def serve_dump(fake: FakeNeptune3, dump: Path) -> list[FakeRun]:
    """Add every run of `dump` to `fake` (files into its blob store, under keys whose leaf is the name)."""
    reader = DumpReader(dump)
    added = []
    for run in reader.runs():
        rec = run.record
        rid = str(rec.key.run_id)
        fields: dict[str, tuple[str, Any]] = {p: (_FIELD_TYPES[f.type], f.value) for p, f in rec.fields.items()}
        for fe in rec.files:
            if fe.sha256 is None:
                continue
            data = reader.verified_blob(fe.sha256).read_bytes()
            key = f"{rid}/{fe.attribute_path}/{fe.name}"
            fake.blobs[key] = data
            fields[fe.attribute_path] = ("fileRef", {"path": key, "size": len(data), "mime": fe.mime_type or ""})
        series: dict[str, tuple[str, list[Point]]] = {}
        for si in rec.series:
            rows = reader.read_series(run, si.kind, si.path).to_pylist()
            points = []
            for row in rows:
                value: Any
                if si.kind in ("float", "string"):
                    value = row["value"]
                elif si.kind == "histogram":
                    value = {"type": row["type"] or "", "edges": row["edges"], "values": row["values"]}
                else:
                    data = reader.verified_blob(row["sha256"]).read_bytes()
                    key = f"{rid}/{si.path}/{row['step']}/{row['name']}"
                    fake.blobs[key] = data
                    value = {"path": key, "size": len(data), "mime": row["mime_type"] or ""}
                preview = row.get("preview_completion")
                points.append(Point(float(row["step"]), _ms(row["timestamp"]), value,
                                    preview=preview is not None, completion=preview or 0.0))
            series[si.path] = (_SERIES_TYPES[si.kind], points)
        fake.projects.add(rec.key.project)
        added.append(fake.add_run(
            rid, project=rec.key.project, created=rec.system.created_at, modified=rec.system.modified_at,
            name=rec.system.experiment_name or "", description=rec.system.description or "",
            tags=set(rec.system.tags), group_tags=set(rec.system.group_tags), fields=fields, series=series,
            fork_parent=None if rec.fork is None else str(rec.fork.parent.run_id),
            fork_step=None if rec.fork is None else rec.fork.step))
    return added
