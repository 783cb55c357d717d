"""Fixtures for the Aim destination tests: a real local repository and a real `aim server`."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

pytest.importorskip("aim")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _release_remote_resources() -> None:
    """Let Aim's client release its server-side handles while the server still answers (else its
    atexit clean-up prints connection errors)."""
    import gc

    from aim.ext.cleanup import AutoClean
    from aim.ext.transport.remote_resource import RemoteResourceAutoClean

    gc.collect()
    finalizers = sorted(AutoClean._finalizers.items(), key=lambda item: item[1][0])
    # Remote resources first, then the repositories' own clean-up (which disconnects the client).
    for remote_first in (True, False):
        for _, (_, finalizer) in reversed(finalizers):
            info = finalizer.peek()
            if info is None:
                continue
            is_remote = isinstance(getattr(info[1], "__self__", None), RemoteResourceAutoClean)
            if is_remote == remote_first:
                finalizer()


@pytest.fixture(scope="session")
def aim_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """`aim server` on 127.0.0.1 over a fresh repository; yields `aim://127.0.0.1:PORT`."""
    root = tmp_path_factory.mktemp("aim-server")
    aim = str(Path(sys.executable).parent / "aim")
    subprocess.run([aim, "init", "--repo", str(root)], check=True, capture_output=True)
    port = _free_port()
    log = (root / "server.log").open("w")
    proc = subprocess.Popen([aim, "server", "--repo", str(root), "--host", "127.0.0.1", "--port", str(port)],
                            stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    try:
        deadline = time.monotonic() + 60
        while True:
            with socket.socket() as s:
                if s.connect_ex(("127.0.0.1", port)) == 0:
                    break
            if proc.poll() is not None or time.monotonic() > deadline:
                pytest.fail(f"aim server did not start: {(root / 'server.log').read_text()}")
            time.sleep(0.2)
        yield f"aim://127.0.0.1:{port}"
    finally:
        _release_remote_resources()
        os.killpg(proc.pid, signal.SIGTERM)  # the server and its uvicorn child, both ours
        try:
            proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
        log.close()
