"""`run --models-from-runs`: the flag reaches the export phase of `run` as it does `export`."""

from __future__ import annotations

from pathlib import Path

from neptune_migrate.dump.reader import DumpReader
from tests.conftest import FIXTURES
from tests.run.conftest import Runner

SOURCE = FIXTURES / "neptune-exporter" / "generated" / "model_to_run" / "data"


def test_run_exports_model_to_run_runs_as_registry_records(nm: Runner, store: str, tmp_path: Path) -> None:
    dump = tmp_path / "dump"
    proc = nm("run", str(SOURCE), "--from", "neptune-exporter", "--to", "mlflow", "--tracking-uri", store,
              "--dump", str(dump), "--verify", "none", "--models-from-runs")
    assert "model_to_run.py" not in proc.stderr, proc.stderr  # no hint: the flag was given
    kinds = sorted(r.record.kind for r in DumpReader(dump).runs())
    assert kinds == ["model", "model_version", "model_version", "model_version", "run"], proc.stderr
    infos = {r.record.registry.version_id: r.record.registry.stage for r in DumpReader(dump).runs()
             if r.record.registry is not None and r.record.registry.version_id}
    assert infos == {"PROJ-CLF-1": "archived", "PROJ-CLF-2": "production", "PROJ-CLF-3": "staging"}
