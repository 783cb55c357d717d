"""A real `mlflow server` on 127.0.0.1 for tests, in front of any backend store MLflow accepts
(a SQLite file, or a PostgreSQL database from `tests/support/postgres.py`).

The server runs in its own process group and is killed with it when the context ends. It serves
artifacts itself (`--artifacts-destination`, proxied), so clients never write its folders.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path


class ServerStartError(RuntimeError):
    """The server exited or never answered `/health`; the message ends with its log's tail."""


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def mlflow_executable() -> str | None:
    """The `mlflow` command next to this interpreter, else on PATH (None: not installed)."""
    local = Path(sys.executable).with_name("mlflow")
    if local.is_file():
        return str(local)
    return shutil.which("mlflow")


@contextlib.contextmanager
def running_mlflow_server(root: Path, backend_store_uri: str, *, timeout: float = 90) -> Iterator[str]:
    """Start `mlflow server --backend-store-uri URI` (artifacts in `root/artifacts`, log in
    `root/server.log`), wait for `/health`, yield its `http://127.0.0.1:PORT` URL, kill it after."""
    exe = mlflow_executable()
    if exe is None:
        raise FileNotFoundError("the mlflow command is not installed")
    port = _free_port()
    env = dict(os.environ, MLFLOW_SERVER_ENABLE_JOB_EXECUTION="false")
    log_path = root / "server.log"
    with log_path.open("wb") as log:
        proc = subprocess.Popen(
            [exe, "server", "--backend-store-uri", backend_store_uri,
             "--artifacts-destination", str(root / "artifacts"),
             "--host", "127.0.0.1", "--port", str(port), "--workers", "1"],
            cwd=root, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
        )
        url = f"http://127.0.0.1:{port}"
        try:
            deadline = time.monotonic() + timeout
            while True:
                if proc.poll() is not None:
                    raise ServerStartError(f"mlflow server exited with {proc.returncode}:\n"
                                       + log_path.read_text(errors="replace")[-3000:])
                with contextlib.suppress(OSError), urllib.request.urlopen(f"{url}/health", timeout=2) as resp:
                    if resp.status == 200:
                        break
                if time.monotonic() > deadline:
                    raise ServerStartError(f"mlflow server did not answer /health within {timeout:.0f} s:\n"
                                       + log_path.read_text(errors="replace")[-3000:])
                time.sleep(0.3)
            yield url
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
