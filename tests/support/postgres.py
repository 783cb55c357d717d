"""A throw-away PostgreSQL cluster for tests: `initdb` in a temp dir, 127.0.0.1 on a free port.

The binaries come from PATH, else Debian's `/usr/lib/postgresql/<version>/bin` (the `postgresql`
package). PostgreSQL refuses to run as root: as root the cluster is owned by and run as `nobody`
(uid 65534, with `setpriv`). Tests skip with the reason when no `initdb` is found.

Run the PostgreSQL tests locally: `apt-get install postgresql` (or put any PostgreSQL's `bin/` on
PATH), then `python -m pytest -q tests/destinations/mlflow/test_bulk.py`.
"""

from __future__ import annotations

import contextlib
import glob
import os
import shutil
import socket
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from tests.support.unprivileged import unprivileged


@dataclass(frozen=True)
class Postgres:
    host: str
    port: int
    user: str
    root: Path

    def url(self, db: str, driver: str = "postgresql+psycopg") -> str:
        return f"{driver}://{self.user}@{self.host}:{self.port}/{db}"

    def create_db(self, name: str, template: str | None = None) -> str:
        """Create database `name` (a fresh one per store), optionally as a copy of `template`, and
        return its SQLAlchemy URL."""
        import psycopg

        with psycopg.connect(f"host={self.host} port={self.port} user={self.user} dbname=postgres",
                             autocommit=True) as conn:
            copy = f' TEMPLATE "{template}"' if template else ""
            conn.execute(f'CREATE DATABASE "{name}"{copy}')
        return self.url(name)


def find_bin(name: str) -> str | None:
    """`initdb`/`pg_ctl` from PATH, else the newest Debian PostgreSQL's bin folder."""
    found = shutil.which(name)
    if found:
        return found
    for folder in sorted(glob.glob("/usr/lib/postgresql/*/bin"), key=lambda p: int(p.split("/")[-2]), reverse=True):
        candidate = Path(folder) / name
        if candidate.is_file():
            return str(candidate)
    return None


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@contextlib.contextmanager
def running_postgres(root: Path, *, durable: bool = False) -> Iterator[Postgres]:
    """initdb a cluster in `root`, start it on 127.0.0.1 (free port, unix socket in `root`), stop it.

    Tests run it with fsync off; `durable=True` (benchmarks) keeps PostgreSQL's default durability."""
    initdb, pg_ctl = find_bin("initdb"), find_bin("pg_ctl")
    if initdb is None or pg_ctl is None:
        raise FileNotFoundError("initdb/pg_ctl not found (apt-get install postgresql)")
    prefix: list[str] = []
    if os.geteuid() == 0:
        as_nobody = unprivileged()
        if as_nobody is None:
            raise PermissionError("running as root without setpriv: PostgreSQL cannot be started")
        prefix = as_nobody
        os.chmod(root, 0o777)  # a throw-away folder the `nobody` cluster lives in
    data = root / "data"
    sock = root / "sock"
    sock.mkdir()
    os.chmod(sock, 0o777)
    user = "postgres"
    env = dict(os.environ, LC_ALL="C", LANG="C", PGTZ="UTC")
    subprocess.run([*prefix, initdb, "-D", str(data), "-U", user, "--auth=trust", "-E", "UTF8",
                    "--no-sync"], check=True, capture_output=True, env=env, cwd=root)
    port = _free_port()
    opts = f"-c listen_addresses=127.0.0.1 -c port={port} -c unix_socket_directories={sock} -c max_connections=50"
    if not durable:
        opts += " -c fsync=off -c synchronous_commit=off -c full_page_writes=off"
    subprocess.run([*prefix, pg_ctl, "-D", str(data), "-o", opts, "-l", str(root / "server.log"), "-w",
                    "-t", "60", "start"], check=True, capture_output=True, env=env, cwd=root)
    try:
        deadline = time.monotonic() + 30
        while True:
            with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), timeout=1):
                break
            if time.monotonic() > deadline:
                raise TimeoutError("PostgreSQL did not listen within 30 s")
            time.sleep(0.2)
        yield Postgres("127.0.0.1", port, user, root)
    finally:
        subprocess.run([*prefix, pg_ctl, "-D", str(data), "-m", "immediate", "-w", "stop"],
                       capture_output=True, env=env, cwd=root, check=False)
