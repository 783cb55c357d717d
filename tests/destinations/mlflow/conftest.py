"""Real MLflow backends for the destination tests: a SQLite store and an `mlflow server`.

Both are session-scoped (one DB migration, one ~14 s server start per test session); tests keep
apart by using their own Neptune project names (one MLflow experiment per project).
"""

from __future__ import annotations

import shutil
import tempfile
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.conftest import export_fixture
from tests.support.mlflow_server import ServerStartError, mlflow_executable, running_mlflow_server
from tests.support.postgres import Postgres, find_bin, running_postgres


@dataclass(frozen=True)
class MlflowBackend:
    """Where a test writes: the tracking URI and the artifact root for experiments we create."""

    name: str
    tracking_uri: str
    artifact_location: str | None
    db_path: Path
    """The SQLite file behind the store (tests tamper with it to check verify)."""
    artifacts_root: Path


@pytest.fixture(scope="session")
def mlflow_sqlite(tmp_path_factory: pytest.TempPathFactory) -> MlflowBackend:
    """A SQLite tracking store (`sqlite:///<tmp>/mlflow.db`), artifacts in `<tmp>/artifacts`."""
    pytest.importorskip("mlflow")
    root = tmp_path_factory.mktemp("mlflow-sqlite")
    return MlflowBackend("sqlite", f"sqlite:///{root}/mlflow.db", str(root / "artifacts"), root / "mlflow.db",
                         root / "artifacts")


@pytest.fixture(scope="session")
def mlflow_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[MlflowBackend]:
    """A real `mlflow server` on 127.0.0.1 (SQLite backend, proxied artifacts), killed with its
    process group at the end of the session."""
    pytest.importorskip("mlflow")
    if mlflow_executable() is None:
        pytest.skip("the mlflow command is not installed")
    root = tmp_path_factory.mktemp("mlflow-server")
    try:
        with running_mlflow_server(root, f"sqlite:///{root}/mlflow.db") as url:
            yield MlflowBackend("server", url, None, root / "mlflow.db", root / "artifacts")
    except ServerStartError as exc:
        pytest.fail(str(exc))


@pytest.fixture(scope="session")
def postgres() -> Iterator[Postgres]:
    """One throw-away PostgreSQL cluster per test session (each store gets its own database)."""
    pytest.importorskip("psycopg", reason="psycopg (v3) is not installed: pip install 'psycopg[binary]'")
    if find_bin("initdb") is None:
        pytest.skip("PostgreSQL's initdb is not installed (apt-get install postgresql)")
    # Not under pytest's tmp folder: as root the cluster runs as `nobody`, who cannot enter it.
    root = Path(tempfile.mkdtemp(prefix="neptune-migrate-pg-"))
    try:
        with running_postgres(root) as pg:
            yield pg
    finally:
        shutil.rmtree(root, ignore_errors=True)


@pytest.fixture(params=["sqlite", pytest.param("server", marks=pytest.mark.server)])
def mlflow_backend(request: pytest.FixtureRequest) -> MlflowBackend:
    """Each backend in turn: the SQLite store, then the server (marked `server`)."""
    fixture = "mlflow_sqlite" if request.param == "sqlite" else "mlflow_server"
    backend: MlflowBackend = request.getfixturevalue(fixture)
    return backend


@pytest.fixture(scope="session")
def exported_fixture(tmp_path_factory: pytest.TempPathFactory) -> Callable[[str], Path]:
    """Export a fixture by name (once per session) and return its dump folder."""
    done: dict[str, Path] = {}

    def get(name: str) -> Path:
        if name not in done:
            done[name] = export_fixture(name, tmp_path_factory.mktemp("dump") / name)
        return done[name]

    return get
