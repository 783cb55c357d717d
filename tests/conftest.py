"""Shared fixtures."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
FIXTURES = REPO / "fixtures"


@pytest.fixture
def cli_env() -> dict[str, str]:
    """Environment for CLI subprocesses: the package importable, no colours."""
    env = dict(os.environ)
    env["PYTHONPATH"] = str(REPO) + os.pathsep + env.get("PYTHONPATH", "")
    env["NO_COLOR"] = "1"
    env["COLUMNS"] = "200"
    return env


@pytest.fixture
def cli(cli_env: dict[str, str]):  # type: ignore[no-untyped-def]
    """Run the real console entry point in a subprocess; returns CompletedProcess."""
    import subprocess

    def run(*args: str, check_rc: int | None = None) -> subprocess.CompletedProcess[str]:
        proc = subprocess.run(
            [sys.executable, "-m", "neptune_migrate", *args],
            capture_output=True, text=True, env=cli_env, timeout=600, check=False,
        )
        if check_rc is not None:
            assert proc.returncode == check_rc, (proc.returncode, proc.stdout, proc.stderr)
        return proc

    return run


# Every fixture the sources read, exported once per session into a dump: (name, source, path, options).
FIXTURE_SOURCES: list[tuple[str, str, str, dict[str, object]]] = [
    ("exporter-neptune2", "neptune-exporter", "neptune-exporter/neptune2/data", {}),
    ("exporter-neptune3", "neptune-exporter", "neptune-exporter/neptune3/data", {}),
    ("exporter-multi-run", "neptune-exporter", "neptune-exporter/generated/multi_run/data", {}),
    ("exporter-per-run", "neptune-exporter", "neptune-exporter/generated/per_run_no_digest/data", {}),
    ("exporter-neptune2-current", "neptune-exporter", "neptune-exporter/generated/neptune2_current/data", {}),
    ("exporter-neptune3-current", "neptune-exporter", "neptune-exporter/generated/neptune3_current/data", {}),
    ("exporter-models", "neptune-exporter", "neptune-exporter/generated/model_registry/model_data", {}),
    ("scale-offline", "neptune-scale", "neptune_scale/offline", {"path_map": [
        ("/tmp/neptune-migrate-scale-artifacts", "neptune_scale/artifacts"),
        ("/tmp/neptune-migrate-scale-logs/offline", "neptune_scale/offline"),
    ]}),
    ("scale-crash-wal", "neptune-scale", "neptune_scale/crash_wal", {}),
    ("offline-neptune1", "neptune-offline", "neptune1/offline", {
        "project": "my-ws/my-proj",
        "path_map": [("/tmp/neptune-migrate-fixture-artifacts", "neptune1/artifacts")],
    }),
]


FIXTURES_EVERYWHERE = frozenset({"exporter-neptune3", "scale-offline", "offline-neptune1"})
"""One fixture per source form: the default run takes these through every destination and backend.
Every fixture goes through the MLflow SQLite store in the default run; the other fixtures through
the MLflow server, Aim and W&B are `slow` (the same mapping code, a different fixture)."""

_EVERY_FIXTURE_TESTS = {
    "test_every_fixture_imports_verifies_and_reimports_as_a_no_op",  # mlflow (sqlite, server), aim
    "test_fixture_imports_and_verifies",  # wandb
    "test_fixtures_through_a_remote_aim_server_verify",
}


SLOW_REPEATS = {
    # Aim writes 40,000 points in a minute: the crash-and-resume contract keeps MLflow, W&B and the
    # fake in the default run, and Aim's own SIGKILL cases (tests/store/test_aim_repo.py) stay there.
    "tests/contract/test_destination_contract.py::test_crash_mid_run_then_resume_gives_one_complete_equal_run[aim]",
    # Two importers at once: tests/store/test_import_lock.py keeps the one-dump case in the default run.
    "tests/destinations/mlflow/test_faults.py::test_two_processes_importing_copies_of_a_dump_at_once_leave_one_run_per_key",
}
"""Heavy cases whose kind another default-run test already covers (node ids)."""


@pytest.hookimpl(tryfirst=True)
def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Mark `slow` the every-fixture cases outside `FIXTURES_EVERYWHERE` except on the MLflow SQLite
    store, and the heavy repeats in `SLOW_REPEATS`."""
    for item in items:
        if item.nodeid in SLOW_REPEATS:
            item.add_marker(pytest.mark.slow)
            continue
        if getattr(item, "originalname", None) not in _EVERY_FIXTURE_TESTS:
            continue
        params = item.callspec.params if hasattr(item, "callspec") else {}
        fixture = params.get("fixture", params.get("name"))
        if fixture in FIXTURES_EVERYWHERE or params.get("mlflow_backend") == "sqlite":
            continue
        item.add_marker(pytest.mark.slow)


def export_fixture(name: str, out: Path) -> Path:
    """Export one fixture (by FIXTURE_SOURCES name) into `out` with the real source; return `out`."""
    from neptune_migrate.dump.writer import DumpWriter
    from neptune_migrate.pipeline.export import export_runs
    from neptune_migrate.sources import SOURCES, load_source
    from neptune_migrate.sources.base import PathMap, RunSelection, SourceOptions

    [(source, rel, opts)] = [(s, r, o) for n, s, r, o in FIXTURE_SOURCES if n == name]
    if source not in SOURCES:
        pytest.skip(f"source {source} not available")
    pairs = tuple((old, str(FIXTURES / new)) for old, new in opts.get("path_map", []))  # type: ignore[attr-defined]
    options = SourceOptions(path=FIXTURES / rel, project=opts.get("project"),  # type: ignore[arg-type]
                            path_map=PathMap(pairs))
    with DumpWriter(out) as writer:
        summary = export_runs(load_source(source, options), writer, RunSelection(), location=rel)
    assert summary.count("exported") > 0, summary.to_json()
    return out


@pytest.fixture(scope="session")
def fixture_dumps(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """Every available fixture exported into its own dump (sources not yet available are left out)."""
    from neptune_migrate.sources import SOURCES

    root = tmp_path_factory.mktemp("fixture-dumps")
    return {name: export_fixture(name, root / name) for name, source, _, _ in FIXTURE_SOURCES if source in SOURCES}
