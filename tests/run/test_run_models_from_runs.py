"""`run --models-from-runs`: the flag reaches the export phase of `run` as it does `export`."""

from __future__ import annotations

from pathlib import Path

import pytest

from neptune_migrate.dump.reader import DumpReader
from neptune_migrate.sources.base import RunSelection
from tests.conftest import FIXTURES
from tests.run.conftest import Runner

SOURCE = FIXTURES / "neptune-exporter" / "generated" / "model_to_run" / "data"
STAGES = {"PROJ-CLF-1": "archived", "PROJ-CLF-2": "production", "PROJ-CLF-3": "staging"}


def registry_of(dump: Path) -> tuple[list[str], dict[str, str | None]]:
    records = [r.record for r in DumpReader(dump).runs()]
    stages = {r.registry.version_id: r.registry.stage for r in records
              if r.registry is not None and r.registry.version_id}
    return sorted(r.kind for r in records), stages


def test_run_export_phase_takes_the_flag(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """`run`'s export phase in this process (the whole command, with MLflow, is the slow test below)."""
    from neptune_migrate.cli import _run_export
    from neptune_migrate.pipeline.run import RunSummary, VerifyMode
    from neptune_migrate.sources.base import SourceOptions

    summary = RunSummary(source=str(SOURCE), dump=str(tmp_path / "d"), destination="-", verify=VerifyMode.parse("none"))
    _run_export("neptune-exporter", SourceOptions(path=SOURCE), RunSelection(), tmp_path / "d", summary,
                models_from_runs=True)
    assert registry_of(tmp_path / "d") == (["model", "model_version", "model_version", "model_version", "run"], STAGES)
    _run_export("neptune-exporter", SourceOptions(path=SOURCE), RunSelection(), tmp_path / "e", summary)
    assert "4 run(s) look like models / model versions" in " ".join(capsys.readouterr().err.split())
    assert registry_of(tmp_path / "e") == (["run"] * 5, {})


@pytest.mark.slow  # ~15 s (mlflow in a subprocess); the export phase is tested in process above
def test_run_exports_model_to_run_runs_as_registry_records(nm: Runner, store: str, tmp_path: Path) -> None:
    dump = tmp_path / "dump"
    proc = nm("run", str(SOURCE), "--from", "neptune-exporter", "--to", "mlflow", "--tracking-uri", store,
              "--dump", str(dump), "--verify", "none", "--models-from-runs")
    assert "model_to_run.py" not in proc.stderr, proc.stderr  # no hint: the flag was given
    assert registry_of(dump) == (["model", "model_version", "model_version", "model_version", "run"], STAGES)
