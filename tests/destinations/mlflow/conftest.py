"""Real MLflow backends for the destination tests: a SQLite store and an `mlflow server`.

Both are session-scoped (one DB migration, one ~14 s server start per test session); tests keep
apart by using their own Neptune project names (one MLflow experiment per project).
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest


@dataclass(frozen=True)
class MlflowBackend:
    """Where a test writes: the tracking URI and the artifact root for experiments we create."""

    name: str
    tracking_uri: str
    artifact_location: str | None
    db_path: Path
    """The SQLite file behind the store (tests tamper with it to check verify)."""
    artifacts_root: Path


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _mlflow_executable() -> str:
    local = Path(sys.executable).with_name("mlflow")
    if local.is_file():
        return str(local)
    found = shutil.which("mlflow")
    if found is None:
        pytest.skip("the mlflow command is not installed")
    return found


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
    root = tmp_path_factory.mktemp("mlflow-server")
    port = _free_port()
    env = dict(os.environ, MLFLOW_SERVER_ENABLE_JOB_EXECUTION="false")
    log = (root / "server.log").open("wb")
    proc = subprocess.Popen(
        [_mlflow_executable(), "server",
         "--backend-store-uri", f"sqlite:///{root}/mlflow.db",
         "--artifacts-destination", str(root / "artifacts"),
         "--host", "127.0.0.1", "--port", str(port), "--workers", "1"],
        cwd=root, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
    )
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 90
        while True:
            if proc.poll() is not None:
                pytest.fail(f"mlflow server exited with {proc.returncode}:\n"
                            + (root / "server.log").read_text(errors="replace")[-3000:])
            try:
                with urllib.request.urlopen(f"{url}/health", timeout=2) as resp:
                    if resp.status == 200:
                        break
            except OSError:
                pass
            if time.monotonic() > deadline:
                pytest.fail("mlflow server did not answer /health within 90 s")
            time.sleep(0.5)
        yield MlflowBackend("server", url, None, root / "mlflow.db", root / "artifacts")
    finally:
        for sig in (signal.SIGTERM, signal.SIGKILL):
            try:
                os.killpg(proc.pid, sig)
            except ProcessLookupError:
                break
            try:
                proc.wait(timeout=10)
                break
            except subprocess.TimeoutExpired:
                continue
        log.close()


@pytest.fixture(params=["sqlite", pytest.param("server", marks=pytest.mark.server)])
def mlflow_backend(request: pytest.FixtureRequest) -> MlflowBackend:
    """Each backend in turn: the SQLite store, then the server (marked `server`)."""
    fixture = "mlflow_sqlite" if request.param == "sqlite" else "mlflow_server"
    backend: MlflowBackend = request.getfixturevalue(fixture)
    return backend
