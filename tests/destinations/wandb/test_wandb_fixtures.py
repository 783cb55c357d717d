"""Every real fixture the sources read, exported to a dump, imported into offline W&B runs,
read back from the `.wandb` files and verified with zero findings."""

from __future__ import annotations

from pathlib import Path

import pytest

from neptune_migrate.destinations import DestinationOptions, load_destination
from neptune_migrate.dump.reader import DumpReader
from neptune_migrate.pipeline.import_ import ImportOptions, import_runs
from neptune_migrate.retry import FAST
from neptune_migrate.verify.verifier import VerifyOptions, verify_runs
from tests.conftest import FIXTURE_SOURCES

OPTS = ImportOptions(retry=FAST)


@pytest.mark.parametrize("name", [n for n, *_ in FIXTURE_SOURCES])
def test_fixture_imports_and_verifies(name: str, fixture_dumps: dict[str, Path], tmp_path: Path) -> None:
    if name not in fixture_dumps:
        pytest.skip(f"source of {name} not available yet")
    reader = DumpReader(fixture_dumps[name])
    dest = load_destination("wandb", DestinationOptions(wandb_mode="offline", wandb_dir=tmp_path / "out"))
    report = import_runs(reader, dest, OPTS)
    assert report.runs
    assert all(r.status == "created" for r in report.runs), [(r.key, r.message) for r in report.runs]
    findings = verify_runs(reader, dest, VerifyOptions(import_options=OPTS)).findings
    assert findings == []
    again = import_runs(reader, dest, OPTS)
    assert {r.status for r in again.runs} == {"skipped"}
    assert sorted(r.destination_run_id or "" for r in again.runs) == sorted(
        r.destination_run_id or "" for r in report.runs)
    dest.close()
