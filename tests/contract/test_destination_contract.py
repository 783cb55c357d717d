"""The conformance suite every destination must pass (parametrised over the registry).

Each destination is built by a factory that can be called again on the same store, as a new
process would: `make(tmp_path)` twice returns two destination objects over one backing store.
"""

from __future__ import annotations

import importlib.util
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from neptune_migrate.destinations import DESTINATIONS, DestinationOptions, load_destination
from neptune_migrate.destinations.fake import FakeDestination, SimulatedCrash
from neptune_migrate.dump.reader import DumpReader
from neptune_migrate.dump.writer import DumpWriter
from neptune_migrate.model import Field
from neptune_migrate.pipeline.import_ import ImportOptions, import_runs
from neptune_migrate.retry import FAST
from neptune_migrate.verify.verifier import VerifyOptions, verify_runs
from tests.factories import build_dump, float_points, key, make_record
from tests.support.crash import CrashingDestination

OPTS = ImportOptions(retry=FAST)
Factory = Callable[[Path], Any]


def _fake_factory() -> Factory:
    shared: dict[Path, FakeDestination] = {}
    return lambda root: shared.setdefault(root, FakeDestination())


def _registered(name: str, module: str, options: Callable[[Path], DestinationOptions]) -> Any:
    available = name in DESTINATIONS and importlib.util.find_spec(module) is not None
    factory: Factory = lambda root: load_destination(name, options(root))  # noqa: E731
    return pytest.param(factory, id=name, marks=pytest.mark.skipif(not available, reason=f"{name} not available"))


FACTORIES = [
    pytest.param(_fake_factory(), id="fake"),
    # The log_batch path: the bulk path writes 50,000 points per call (its crash inside a transaction
    # is tests/destinations/mlflow/test_bulk.py's SIGKILL test); the round trip with bulk is in test_e2e.
    _registered("mlflow", "mlflow", lambda root: DestinationOptions(tracking_uri=f"sqlite:///{root}/mlflow.db",
                                                                    bulk="never")),
    _registered("aim", "aim", lambda root: DestinationOptions(aim_repo=str(root / "aim"))),
    _registered("wandb", "wandb", lambda root: DestinationOptions(wandb_mode="offline", wandb_dir=root / "wandb")),
]


@pytest.fixture(params=FACTORIES)
def make(request: pytest.FixtureRequest, tmp_path: Path) -> Callable[[], Any]:
    factory: Factory = request.param
    store = tmp_path / "store"
    store.mkdir()
    return lambda: factory(store)


def _verify(reader: DumpReader, dest: Any) -> list[Any]:
    return verify_runs(reader, dest, VerifyOptions(import_options=OPTS)).findings


@pytest.mark.contract
def test_round_trip_verifies_and_reimport_is_a_no_op(make: Callable[[], Any], tmp_path: Path) -> None:
    build_dump(tmp_path / "dump", tmp_path, run_ids=("PROJ-1", "PROJ-2"))
    reader = DumpReader(tmp_path / "dump")
    dest = make()
    report = import_runs(reader, dest, OPTS)
    assert [r.status for r in report.runs] == ["created", "created"]
    assert _verify(reader, dest) == []
    dest.close()
    again = make()
    report = import_runs(reader, again, OPTS)
    assert [r.status for r in report.runs] == ["skipped", "skipped"]
    assert _verify(reader, again) == []
    again.close()


@pytest.mark.contract
def test_crash_mid_run_then_resume_gives_one_complete_equal_run(make: Callable[[], Any], tmp_path: Path) -> None:
    with DumpWriter(tmp_path / "dump") as dump, dump.begin_run(key()) as run:
        for start in range(0, 40_000, 10_000):
            steps = list(range(start, start + 10_000))
            run.add_points("float", float_points("train/loss", steps, [s / 7 for s in steps]))
        run.commit(make_record(key(), fields={"p": Field("int", 1)}))
    reader = DumpReader(tmp_path / "dump")
    dest = make()
    with pytest.raises(SimulatedCrash):
        import_runs(reader, CrashingDestination(dest, "write_series", 2), OPTS)
    dest.close()
    resumed = make()
    report = import_runs(reader, resumed, OPTS)
    assert [r.status for r in report.runs] == ["repaired"]
    assert _verify(reader, resumed) == []
    resumed.close()


@pytest.mark.contract
def test_nan_inf_unicode_long_keys_and_fractional_steps(make: Callable[[], Any], tmp_path: Path) -> None:
    long_key = "deep/" + "x" * 300
    with DumpWriter(tmp_path / "dump") as dump, dump.begin_run(key()) as run:
        run.add_points("float", float_points("metrics/ünï ключ", [0.5, 1.25, 2.0], [float("nan"), 1.0, 2.0]))
        run.add_points("float", float_points(long_key, [0, 1], [float("inf"), float("-inf")]))
        run.commit(make_record(key(), fields={"params/ünï": Field("string", "✓"), long_key: Field("float", 1.5)}))
    reader = DumpReader(tmp_path / "dump")
    dest = make()
    report = import_runs(reader, dest, OPTS)
    [res] = report.runs
    assert res.status == "created", res.message
    assert any(c["path"] == "metrics/ünï ключ" and c["scale"] == 100 for c in res.step_changes)
    assert _verify(reader, dest) == []
    dest.close()
