"""Imported runs look native in W&B: the real SDK offline, its `.wandb` files read back.

The run record carries the Neptune start time (what `wandb sync` and `wandb leet` read), the
completion marker sits under `_neptune_migrate/` (not among the user's summary metrics),
`monitoring/*` goes to the `system/` section, all series of a run share one step scale, and
verify passes through every mapping.
"""

from __future__ import annotations

from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest

from neptune_migrate.destinations import DestinationOptions, load_destination
from neptune_migrate.destinations.wandb import mapping as m
from neptune_migrate.destinations.wandb.destination import WandbDestination
from neptune_migrate.destinations.wandb.records import iter_records, read_run
from neptune_migrate.pipeline.import_ import ImportOptions, import_runs
from neptune_migrate.retry import FAST
from neptune_migrate.verify.verifier import VerifyOptions, verify_runs
from tests.destinations.native_dump import (
    CPU,
    CPU_VALUES,
    DURATION,
    GPU_VALUES,
    MEMORY_VALUES,
    PROJECT,
    build_native_dump,
    start_of,
)
from tests.factories import key

OPTS = ImportOptions(retry=FAST)


def _dest(root: Path) -> WandbDestination:
    dest = load_destination("wandb", DestinationOptions(wandb_mode="offline", wandb_dir=root))
    assert isinstance(dest, WandbDestination)
    return dest


@pytest.fixture(scope="module")
def imported(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Any]]:
    tmp = tmp_path_factory.mktemp("wandb-native")
    with pytest.MonkeyPatch.context() as mp:
        for var, value in (("WANDB_MODE", "offline"), ("WANDB_SILENT", "true"),
                           ("WANDB_CONFIG_DIR", str(tmp / "_config")), ("WANDB_DATA_DIR", str(tmp / "_data")),
                           ("WANDB_CACHE_DIR", str(tmp / "_cache"))):
            mp.setenv(var, value)
        reader = build_native_dump(tmp / "dump")
        dest = _dest(tmp / "out")
        report = import_runs(reader, dest, OPTS)
        assert [r.status for r in report.runs] == ["created"] * 3, [r.message for r in report.runs]
        files = {}
        for rid in ("NAT-0", "NAT-1", "NAT-2"):
            wid = dest.run_id_for(key(rid, PROJECT))
            [folder] = dest.run_dirs(wid)
            files[rid] = folder / f"run-{wid}.wandb"
        yield {"reader": reader, "dest": dest, "report": report, "files": files}
        dest.close()


def _run_record(path: Path) -> Any:
    return next(r.run for r in iter_records(path) if r.WhichOneof("record_type") == "run")


def test_the_run_record_starts_when_the_neptune_run_started(imported: dict[str, Any]) -> None:
    records = {r.key.run_id: r.record for r in imported["reader"].runs()}
    for rid, path in imported["files"].items():
        micros = _run_record(path).start_time.ToMicroseconds()
        assert micros == start_of(rid).timestamp() * 1_000_000 == m.start_micros(records[rid])
        logged = read_run(path)
        # the source's end is kept beside it: the duration W&B shows from these is the source's
        start = m.summary_time(logged.summary, m.START_KEY)
        end = m.summary_time(logged.summary, m.END_KEY)
        assert start == start_of(rid) and end is not None and end - start == DURATION


def test_the_completion_marker_is_not_among_the_users_summary_metrics(imported: dict[str, Any]) -> None:
    logged = read_run(imported["files"]["NAT-1"])
    user = sorted(k for k in logged.summary if not k.startswith("_"))
    assert user == sorted(["train/loss", "train/lr", "system/cpu", "system/memory_gb", "system/gpu_0_gpu",
                           "monitoring/1a2b3c4d/stdout"] + [k for k in user if k.startswith("_neptune/")])
    assert logged.summary["_neptune_migrate/status"] == "complete"
    assert not any(k.startswith("neptune_migrate/") for k in logged.summary)


def test_monitoring_series_go_to_the_system_section(imported: dict[str, Any]) -> None:
    logged = read_run(imported["files"]["NAT-1"])
    for name, values in (("system/cpu", CPU_VALUES), ("system/memory_gb", MEMORY_VALUES),
                         ("system/gpu_0_gpu", GPU_VALUES)):
        points = logged.history[name]
        assert [step for step, _, _ in points] == [0, 10, 20]  # the run's one step scale
        assert [value for _, _, value in points] == values
    assert [step for step, _, _ in logged.history["train/lr"]] == [5, 10, 15]
    assert not any(k.startswith("monitoring/") and k != "monitoring/1a2b3c4d/stdout" for k in logged.history)
    system = [lo for lo in imported["report"].runs[1].losses if lo["kind"] == "system_metric"]
    assert {lo["path"] for lo in system} == {CPU, CPU.replace("cpu", "memory"), CPU.replace("cpu", "gpu_0")}


def test_verify_passes_through_every_mapping(imported: dict[str, Any]) -> None:
    result = verify_runs(imported["reader"], imported["dest"], VerifyOptions(import_options=OPTS))
    assert [str(f) for f in result.findings] == []
    assert timedelta(0) < DURATION
