"""The one place test data is assembled: runs with every attribute type, written with DumpWriter."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone
from pathlib import Path

import pyarrow as pa

from neptune_migrate.dump.reader import DumpReader
from neptune_migrate.dump.writer import DumpWriter, RunWriter
from neptune_migrate.model import (
    Field,
    FileEntry,
    ForkPoint,
    Loss,
    LossCategory,
    Provenance,
    RunKey,
    RunRecord,
    SourceRunId,
    SystemInfo,
)

T0 = datetime(2025, 3, 1, 12, 0, 0, tzinfo=timezone.utc)


def key(run_id: str = "PROJ-1", project: str = "my-ws/my-proj") -> RunKey:
    return RunKey(project, SourceRunId(run_id))


def float_points(path: str, steps: list[float], values: list[float], t0: datetime = T0) -> pa.Table:
    return pa.table({
        "path": [path] * len(steps),
        "step": pa.array(steps, pa.float64()),
        "timestamp": pa.array([t0 + timedelta(seconds=i) for i in range(len(steps))],
                              pa.timestamp("us", tz="UTC")),
        "value": pa.array(values, pa.float64()),
    })


def every_field() -> dict[str, Field]:
    return {
        "parameters/lr": Field("float", 1e-3),
        "parameters/nan": Field("float", float("nan")),
        "parameters/inf": Field("float", float("inf")),
        "parameters/-inf": Field("float", float("-inf")),
        "parameters/batch_size": Field("int", 64),
        "parameters/big": Field("int", 2**62),
        "parameters/use_bn": Field("bool", True),
        "parameters/optimizer": Field("string", "adam"),
        "parameters/ünïcødé/ключ": Field("string", "значение ✓"),
        "info/started_at": Field("datetime", T0),
        "info/labels": Field("string_set", frozenset({"a", "b"})),
        "info/empty_set": Field("string_set", frozenset()),
    }


def make_record(k: RunKey, files: tuple[FileEntry, ...] = (), **kw: object) -> RunRecord:
    defaults: dict[str, object] = {
        "system": SystemInfo(
            name="resnet-baseline",
            description="a run",
            owner="alice",
            state="inactive",
            failed=False,
            trashed=False,
            created_at=T0,
            modified_at=T0 + timedelta(hours=1),
            tags=frozenset({"baseline", "ünï"}),
            group_tags=frozenset({"group-a"}),
        ),
        "fields": every_field(),
        "provenance": Provenance("test", "/nowhere", ("a.log",), {"note": "factory"}),
        "files": files,
    }
    defaults.update(kw)
    return RunRecord(key=k, **defaults)  # type: ignore[arg-type]


def write_full_run(
    run: RunWriter, k: RunKey, tmp: Path, *, points: int = 100, lost_file: bool = True, salt: bytes = b""
) -> RunRecord:
    """Stream a run with every series kind and a file into `run`; return the uncommitted record.

    With `lost_file` (the default) the run also lists a file the source had lost (an error loss).
    `salt` is appended to the file contents (runs with their own blobs instead of shared ones).
    """
    run.add_points("float", float_points("train/loss", list(range(points)), [1.0 / (i + 1) for i in range(points)]))
    run.add_points("float", float_points("train/special", [0.5, 1.5, 2.5], [float("nan"), float("inf"), float("-inf")]))
    run.declare_series("float", "train/empty")
    run.add_points("string", pa.table({
        "path": ["train/log"] * 2, "step": [0.0, 1.0],
        "timestamp": pa.array([T0, T0], pa.timestamp("us", tz="UTC")), "value": ["épоch 0", ""],
    }))
    run.add_points("histogram", pa.table({
        "path": ["hist/w"], "step": [0.0], "timestamp": pa.array([T0], pa.timestamp("us", tz="UTC")),
        "type": ["COUNTING"], "edges": [[0.0, 1.0, 2.5]], "values": [[3.0, 4.0]],
    }))
    src = tmp / "weights.bin"
    src.write_bytes(b"\x00\x01weights" * 100 + salt)
    sha, size = run.store_file(src)
    img_sha, img_size = run.store_bytes(b"\x89PNG fake image" + salt)
    run.add_points("file", pa.table({
        "path": ["images/preds"], "step": [0.0], "timestamp": pa.array([T0], pa.timestamp("us", tz="UTC")),
        "sha256": [img_sha], "size": [img_size], "name": ["red.png"], "mime_type": ["image/png"],
        "title": ["red"], "description": ["a red square"],
    }))
    files = (
        FileEntry("model/weights", "file", "weights.bin", sha, size, "application/octet-stream", None, str(src)),
        FileEntry("model/lost", "file", "lost.txt", None, None, None, "not found: /old/lost.txt", "/old/lost.txt"),
    )
    losses = (Loss("missing_file", "model/lost", 1, "not found: /old/lost.txt", category=LossCategory.LOST),)
    return make_record(
        k,
        files=files if lost_file else files[:1],
        fork=ForkPoint(key("PROJ-0"), 3.0),
        losses=losses if lost_file else (),
        absent=("experiment_name",),
    )


def build_dump(
    root: Path, tmp: Path, run_ids: tuple[str, ...] = ("PROJ-1",), points: int = 100, *, lost_file: bool = True,
    own_blobs: bool = False,
) -> list[RunRecord]:
    """A dump of full runs; with `own_blobs`, each run's files have their own content (no shared blob)."""
    records = []
    with DumpWriter(root) as dump:
        for rid in run_ids:
            k = key(rid)
            salt = rid.encode() if own_blobs else b""
            with dump.begin_run(k) as run:
                records.append(run.commit(write_full_run(run, k, tmp, points=points, lost_file=lost_file,
                                                         salt=salt)))
    return records


def build_clean_dump(root: Path, run_ids: tuple[str, ...], points: int = 1500) -> DumpReader:
    """Runs without any loss (so the CLI exits 0): params, two float series, a string series,
    a file series and a file."""
    with DumpWriter(root) as dump:
        for rid in run_ids:
            k = key(rid)
            with dump.begin_run(k) as run:
                steps = list(range(points))
                run.add_points("float", float_points("train/loss", steps, [1.0 / (s + 1) for s in steps]))
                run.add_points("float", float_points("val/acc", steps[:50], [s / 50 for s in steps[:50]]))
                run.add_points("string", pa.table({
                    "path": ["train/log"] * 2, "step": [0.0, 1.0],
                    "timestamp": pa.array([T0, T0], pa.timestamp("us", tz="UTC")), "value": [rid, "done"],
                }))
                img_sha, img_size = run.store_bytes(f"\x89PNG {rid}".encode())
                run.add_points("file", pa.table({
                    "path": ["images/preds"], "step": [0.0],
                    "timestamp": pa.array([T0], pa.timestamp("us", tz="UTC")),
                    "sha256": [img_sha], "size": [img_size], "name": ["p.png"], "mime_type": ["image/png"],
                    "title": ["p"], "description": [""],
                }))
                src = root.parent / f"{rid}-weights.bin"
                src.write_bytes(rid.encode() * 500)
                sha, size = run.store_file(src)
                files = (FileEntry("model/weights", "file", "weights.bin", sha, size,
                                   "application/octet-stream", None, str(src)),)
                run.commit(make_record(k, files=files, fields={
                    "parameters/lr": Field("float", 0.001), "parameters/run": Field("string", rid),
                    "parameters/batch": Field("int", 32),
                }))
    return DumpReader(root)

def build_two_run_dump(root: Path, points: int = 20) -> None:
    """Two runs with integer steps: PROJ-1 whole (modification time 1 h after creation, three
    metrics), PROJ-2 cut short in the source (`complete=False`) with no modification time and one
    metric whose last point is 5 min + (points - 1) s after creation."""
    from neptune_migrate.dump.writer import DumpWriter

    with DumpWriter(root) as dump:
        with dump.begin_run(key("PROJ-1")) as run:
            run.add_points("float", float_points("train/loss", list(range(points)),
                                                 [1.0 / (i + 1) for i in range(points)]))
            run.add_points("float", float_points("train/acc", list(range(points)), [i / points for i in range(points)]))
            run.add_points("float", float_points("eval/loss", [0, 10], [0.5, 0.25]))
            run.commit(make_record(key("PROJ-1")))
        with dump.begin_run(key("PROJ-2")) as run:
            run.add_points("float", float_points("train/loss", list(range(points)), [2.0] * points,
                                                 t0=T0 + timedelta(minutes=5)))
            run.commit(make_record(key("PROJ-2"), fields={}, complete=False,
                                   system=SystemInfo(name="cut short", created_at=T0)))
