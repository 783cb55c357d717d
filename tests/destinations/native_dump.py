"""A small dump shaped like a real neptune 1.x project, to check that imports look native.

Three runs: `NAT-0` (no name, a custom run id), `NAT-1` (named, forked from NAT-0 at step 2,
Neptune tags, a fractional-step series beside integral ones, hardware monitoring series as the
neptune client logs them) and `NAT-2` (neither name nor custom id). Times are exact so durations
can be asserted.
"""

from __future__ import annotations

from datetime import datetime, timedelta
from pathlib import Path

import pyarrow as pa

from neptune_migrate.dump.reader import DumpReader
from neptune_migrate.dump.writer import DumpWriter
from neptune_migrate.model import Field, ForkPoint, Provenance, RunRecord, SystemInfo
from tests.factories import T0, float_points, key

PROJECT = "my-ws/native"
HASH = "1a2b3c4d"
CPU = f"monitoring/{HASH}/cpu"
MEMORY = f"monitoring/{HASH}/memory"
GPU = f"monitoring/{HASH}/gpu_0"
STDOUT = f"monitoring/{HASH}/stdout"
CPU_VALUES = [12.5, 50.0, 99.5]
MEMORY_VALUES = [1.5, 2.25, 3.0]
GPU_VALUES = [0.0, 80.0, 100.0]
LR_STEPS = [0.5, 1.0, 1.5]
LOSS_STEPS = [0.0, 1.0, 2.0, 3.0, 4.0]
TAGS = frozenset({"baseline", "extra"})
DURATION = timedelta(hours=1, minutes=30, seconds=15, milliseconds=250)
"""Every run ends (`sys/modification_time`) this long after it starts."""


def _start(i: int) -> datetime:
    return T0 + timedelta(days=i, microseconds=123_000)


def _record(run_id: str, i: int, **system: object) -> RunRecord:
    return RunRecord(
        key=key(run_id, PROJECT),
        system=SystemInfo(created_at=_start(i), modified_at=_start(i) + DURATION, state="inactive",
                          failed=False, **system),  # type: ignore[arg-type]
        fields={"parameters/lr": Field("float", 0.01)},
        provenance=Provenance("neptune-offline", "/home/alice/project/.neptune/offline/run__x"),
    )


def build_native_dump(root: Path) -> DumpReader:
    with DumpWriter(root) as dump:
        with dump.begin_run(key("NAT-0", PROJECT)) as run:
            run.add_points("float", float_points("train/loss", LOSS_STEPS, [1.0, 0.8, 0.6, 0.5, 0.4], _start(0)))
            run.commit(_record("NAT-0", 0, custom_run_id="cr-parent"))
        with dump.begin_run(key("NAT-1", PROJECT)) as run:
            t0 = _start(1)
            run.add_points("float", float_points("train/loss", LOSS_STEPS, [2.0, 1.0, 0.5, 0.25, 0.125], t0))
            run.add_points("float", float_points("train/lr", LR_STEPS, [0.1, 0.05, 0.025], t0))
            run.add_points("float", float_points(CPU, [0.0, 1.0, 2.0], CPU_VALUES, t0))
            run.add_points("float", float_points(MEMORY, [0.0, 1.0, 2.0], MEMORY_VALUES, t0))
            run.add_points("float", float_points(GPU, [0.0, 1.0, 2.0], GPU_VALUES, t0))
            run.add_points("string", pa.table({
                "path": [STDOUT] * 2, "step": [0.0, 1.0],
                "timestamp": pa.array([t0, t0], pa.timestamp("us", tz="UTC")), "value": ["hello", "bye"],
            }))
            rec = _record("NAT-1", 1, name="child-run", tags=TAGS)
            from dataclasses import replace

            run.commit(replace(rec, fork=ForkPoint(key("NAT-0", PROJECT), 2.0)))
        with dump.begin_run(key("NAT-2", PROJECT)) as run:
            run.add_points("float", float_points("train/loss", [0.0], [1.0], _start(2)))
            run.commit(_record("NAT-2", 2))
    return DumpReader(root)


def start_of(run_id: str) -> datetime:
    return _start(int(run_id.split("-")[1]))
