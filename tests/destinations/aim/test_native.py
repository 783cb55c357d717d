"""Imported runs look native in Aim: checked through `aim.Repo` on a real local repository.

Run names (Neptune name, else custom run id, else Neptune id), the fork link (param with the
parent's key, hash and name), `monitoring/*` as Aim system metrics, one step scale per run,
durations equal the source's; verify passes through every mapping.
"""

from __future__ import annotations

from collections.abc import Iterator
from datetime import timedelta
from typing import Any

import pytest

from neptune_migrate.destinations.aim import mapping as m
from neptune_migrate.destinations.aim.destination import AimDestination
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


@pytest.fixture(scope="module")
def imported(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Any]]:
    root = tmp_path_factory.mktemp("aim-native")
    reader = build_native_dump(root / "dump")
    dest = AimDestination(str(root / "aim"))
    report = import_runs(reader, dest, OPTS)
    assert [r.status for r in report.runs] == ["created"] * 3, [r.message for r in report.runs]
    runs = {rid: dest._reader(m.run_hash(key(rid, PROJECT))) for rid in ("NAT-0", "NAT-1", "NAT-2")}
    yield {"reader": reader, "dest": dest, "report": report, "runs": runs}
    dest.close()


def test_every_run_has_a_name(imported: dict[str, Any]) -> None:
    names = {rid: run.name for rid, run in imported["runs"].items()}
    assert names == {"NAT-0": "cr-parent", "NAT-1": "child-run", "NAT-2": "NAT-2"}


def test_a_fork_names_its_parent(imported: dict[str, Any]) -> None:
    fork = imported["runs"]["NAT-1"][...]["neptune"]["fork"]
    assert fork == {"parent": f"{PROJECT}/NAT-0", "parent_hash": m.run_hash(key("NAT-0", PROJECT)),
                    "parent_name": "cr-parent", "step": 2.0}
    assert "fork" not in imported["runs"]["NAT-2"][...]["neptune"]


def test_monitoring_series_are_aim_system_metrics(imported: dict[str, Any]) -> None:
    from aim.storage.context import Context

    run = imported["runs"]["NAT-1"]
    names = {name for name, _, _ in run.iter_sequence_info_by_type(("float", "int"))}
    assert {"__system__cpu", "__system__memory_gb", "__system__gpu_0"} <= names
    assert not any(n.startswith("monitoring/") for n in names)
    for name, values in (("__system__cpu", CPU_VALUES), ("__system__memory_gb", MEMORY_VALUES),
                         ("__system__gpu_0", GPU_VALUES)):
        steps, (vals,) = run.get_metric(name, Context({})).data.view(["val"]).numpy()
        assert [int(s) for s in steps] == [0, 10, 20]  # the run's one step scale
        assert [float(v) for v in vals] == values
    steps, _ = run.get_metric("train/lr", Context({})).data.view(["val"]).numpy()
    assert [int(s) for s in steps] == [5, 10, 15]
    system = [lo for lo in imported["report"].runs[1].losses if lo["kind"] == "system_metric"]
    assert {lo["path"] for lo in system} == {CPU, CPU.replace("cpu", "memory"), CPU.replace("cpu", "gpu_0")}
    assert {lo["category"] for lo in system} == {"changed_form"}


def test_durations_equal_the_sources(imported: dict[str, Any]) -> None:
    for rid, run in imported["runs"].items():
        assert run.creation_time == pytest.approx(start_of(rid).timestamp(), abs=1e-6)
        assert run.end_time - run.creation_time == pytest.approx(DURATION / timedelta(seconds=1), abs=1e-6)


def test_verify_passes_through_every_mapping(imported: dict[str, Any]) -> None:
    result = verify_runs(imported["reader"], imported["dest"], VerifyOptions(import_options=OPTS))
    assert [str(f) for f in result.findings] == []
