"""Fixtures of the `run` tests: a generated neptune-exporter source, an initialised MLflow store,
and the real console entry point run in a folder of the test's choosing."""

from __future__ import annotations

import importlib.util
import os
import shutil
import sqlite3
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import FIXTURES, REPO

RUNS = 6
"""Runs in the generated source: enough that a SIGKILL lands with work left in every phase."""


def _layouts() -> Any:
    spec = importlib.util.spec_from_file_location("make_exporter_layouts",
                                                  FIXTURES / "scripts" / "make_exporter_layouts.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def write_source(root: Path, runs: int = RUNS, points: int = 20) -> Path:
    """A current-layout neptune-exporter source (per-run parquet files) with `runs` runs, each with
    four params and a float series of `points` points (values and timestamps fixed)."""
    m = _layouts()
    data = root / "data" / m.sanitize(m.PROJECT)
    for i in range(runs):
        run = f"RUN-{i + 1}"
        rows = [m.row(run, "sys/id", "string", run), m.row(run, "sys/name", "string", f"trial {i + 1}"),
                *m.params(run, lr=0.001 * (i + 1)),
                *m.series(run, "train/loss", "float_series", [(str(s), 1.0 / (s + i + 1)) for s in range(points)])]
        m.write_parquet(data / f"{m.sanitize(run)}_part_0.parquet", rows, row_group_rows=64)
    (root / "files").mkdir(exist_ok=True)
    return root / "data"


@pytest.fixture(scope="session")
def generated_source(tmp_path_factory: pytest.TempPathFactory) -> Path:
    pytest.importorskip("pyarrow")
    return write_source(tmp_path_factory.mktemp("source"))


@pytest.fixture(scope="session")
def store_template(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """An empty MLflow SQLite store with its schema created once (copying it saves each test the
    migrations, which take seconds)."""
    mlflow = pytest.importorskip("mlflow")
    path = tmp_path_factory.mktemp("template") / "mlflow.db"
    mlflow.tracking.MlflowClient(f"sqlite:///{path}").search_experiments()
    return path


@pytest.fixture
def store(tmp_path: Path, store_template: Path) -> str:
    """A fresh copy of the initialised store: its tracking URI."""
    path = tmp_path / "mlflow.db"
    shutil.copy(store_template, path)
    return f"sqlite:///{path}"


def cli_env(extra: dict[str, str] | None = None) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items()
           if not k.startswith(("NEPTUNE_MIGRATE_", "MLFLOW_", "WANDB_", "NEPTUNE_API_TOKEN"))}
    env["PYTHONPATH"] = str(REPO) + os.pathsep + os.environ.get("PYTHONPATH", "")
    env["NO_COLOR"] = "1"
    env["COLUMNS"] = "200"
    env.update(extra or {})
    return env


Runner = Callable[..., subprocess.CompletedProcess[str]]


@pytest.fixture
def nm(tmp_path: Path) -> Runner:
    """`neptune-migrate ARGS` in `cwd` (default: the test's folder); returns the CompletedProcess."""

    def run(*args: str, cwd: Path | None = None, env: dict[str, str] | None = None,
            rc: int | None = None) -> subprocess.CompletedProcess[str]:
        proc = subprocess.run([sys.executable, "-m", "neptune_migrate", *args], capture_output=True, text=True,
                              cwd=cwd or tmp_path, env=cli_env(env), timeout=300, check=False)
        if rc is not None:
            assert proc.returncode == rc, (proc.returncode, proc.stdout, proc.stderr)
        return proc

    return run


def store_contents(uri: str) -> dict[str, Any]:
    """What the MLflow store holds per source run (active runs; a key twice fails): name, status,
    params, metric points and tags, without what differs between two imports of the same data by
    design (run and experiment ids, import times, the dump's own id)."""
    path = uri.removeprefix("sqlite:///")
    con = sqlite3.connect(path)
    try:
        out: dict[str, Any] = {}
        runs = con.execute("SELECT run_uuid, name, status, start_time, end_time, lifecycle_stage FROM runs "
                           "WHERE lifecycle_stage = 'active'").fetchall()
        for run_uuid, name, status, start, end, stage in runs:
            tags = dict(con.execute("SELECT key, value FROM tags WHERE run_uuid=?", (run_uuid,)).fetchall())
            key = f"{tags.get('neptune.project')}/{tags.get('neptune.run_id')}"
            stable = {k: v for k, v in tags.items() if not _volatile(k)}
            assert key not in out, f"{key} is in the store twice"
            out[key] = {
                "name": name, "status": status, "start": start, "end": end, "stage": stage,
                "params": sorted(con.execute("SELECT key, value FROM params WHERE run_uuid=?", (run_uuid,))),
                "metrics": sorted(con.execute("SELECT key, value, timestamp, step FROM metrics WHERE run_uuid=?",
                                              (run_uuid,))),
                "tags": stable,
            }
        return out
    finally:
        con.close()


def _volatile(tag: str) -> bool:
    return tag in ("nm.origin", "nm.imported_at", "nm.claim", "nm.heartbeat", "mlflow.parentRunId")


def run_args(source: Path, dump: Path, store: str, *extra: str) -> list[str]:
    return ["run", str(source), "--from", "neptune-exporter", "--to", "mlflow", "--tracking-uri", store,
            "--dump", str(dump), *extra]


@pytest.fixture(scope="session")
def reference(tmp_path_factory: pytest.TempPathFactory, generated_source: Path, store_template: Path,
              ) -> tuple[Path, str, dict[str, Any]]:
    """One uninterrupted `run` of the generated source: (dump, store URI, the run's JSON summary)."""
    import json

    root = tmp_path_factory.mktemp("reference")
    shutil.copy(store_template, root / "mlflow.db")
    store = f"sqlite:///{root / 'mlflow.db'}"
    proc = subprocess.run([sys.executable, "-m", "neptune_migrate",
                           *run_args(generated_source, root / "dump", store, "--json")],
                          capture_output=True, text=True, cwd=root, env=cli_env(), timeout=300, check=False)
    assert proc.returncode == 0, (proc.stdout, proc.stderr)
    return root / "dump", store, json.loads(proc.stdout.strip().splitlines()[-1])
