"""Secrets never leave the process (issue 13): credentials and tokens in tracking URIs.

A real `mlflow server` sits behind a small authenticating gateway on 127.0.0.1 that, like many
corporate gateways, wants HTTP basic credentials (`user:password@` in the URI) and a `?token=` in
the URL, and that quotes the request URL in its error messages. The real CLI imports and verifies
through it with `-vv`; every file it produces and its stderr are then searched for the secrets.
"""

from __future__ import annotations

import base64
import contextlib
import http.client
import io
import json
import logging
import re
import socket
import subprocess
import sys
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from neptune_migrate.errors import redact, redact_obj
from tests.conftest import REPO
from tests.destinations.mlflow.conftest import MlflowBackend
from tests.factories import build_dump

USER, PASSWORD, TOKEN = "alice", "Pw-9f3k-s3cr3t", "tok-71c2-0b9e-secret"
BASIC = base64.b64encode(f"{USER}:{PASSWORD}".encode()).decode()
SECRETS = (PASSWORD, TOKEN, BASIC)


@contextlib.contextmanager
def gateway(upstream: str) -> Iterator[str]:
    """An authenticating gateway: basic auth and (for the tracking API) `?token=` required, both
    stripped, the request forwarded.

    A request creating a run whose id holds `ECHO` is refused with a 400 that quotes the URL it
    was sent to and the Authorization header (a permanent error for that run only).
    """
    host, port = upstream.rsplit(":", 1)

    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, format: str, *args: object) -> None:  # noqa: A002
            pass

        def _reply(self, status: int, payload: bytes, headers: list[tuple[str, str]] | None = None) -> None:
            self.send_response(status)
            for k, v in headers or [("Content-Type", "application/json")]:
                self.send_header(k, v)
            self.send_header("Content-Length", str(len(payload)))
            self.end_headers()
            self.wfile.write(payload)

        def _handle(self) -> None:
            body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
            if self.headers.get("Authorization") != f"Basic {BASIC}":
                self._reply(401, b'{"error_code": "UNAUTHENTICATED", "message": "no credentials"}')
                return
            prefix = f"/?token={TOKEN}"
            if self.path.startswith(prefix):
                path = self.path[len(prefix):]
            elif self.path.startswith("/api/2.0/mlflow-artifacts/"):
                path = self.path  # MLflow builds artifact URLs from the host alone (no query)
            else:
                self._reply(403, b'{"error_code": "PERMISSION_DENIED", "message": "no token"}')
                return
            if "?" not in path and "&" in path:
                path = path.replace("&", "?", 1)
            if path.endswith("/runs/create") and b"ECHO" in body:
                message = (f"gateway refused {self.command} http://{self.headers['Host']}{self.path} "
                           f"(Authorization: {self.headers['Authorization']})")
                payload = json.dumps({"error_code": "INVALID_PARAMETER_VALUE", "message": message})
                self._reply(400, payload.encode())
                return
            conn = http.client.HTTPConnection(host, int(port), timeout=120)
            headers = {k: v for k, v in self.headers.items()
                       if k.lower() not in ("host", "connection", "authorization")}
            conn.request(self.command, path, body=body, headers=headers)
            resp = conn.getresponse()
            data = resp.read()
            conn.close()
            self._reply(resp.status, data, [(k, v) for k, v in resp.getheaders()
                                            if k.lower() not in ("transfer-encoding", "connection", "content-length")])

        do_GET = do_POST = do_PUT = do_PATCH = do_DELETE = do_HEAD = _handle  # noqa: N815

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    server.daemon_threads = True
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://{USER}:{PASSWORD}@127.0.0.1:{server.server_address[1]}/?token={TOKEN}"
    finally:
        server.shutdown()
        server.server_close()


def _cli(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "neptune_migrate", *args], capture_output=True, text=True,
                          env=env, timeout=600, check=False, cwd=REPO)


def _everything_written(*folders: Path) -> dict[str, bytes]:
    return {str(p): p.read_bytes() for folder in folders for p in folder.rglob("*") if p.is_file()}


@pytest.mark.server
def test_credentials_and_tokens_never_reach_stderr_reports_ledger_or_dump(
    tmp_path: Path, mlflow_server: MlflowBackend, cli_env: dict[str, str]
) -> None:
    build_dump(tmp_path / "dump", tmp_path, run_ids=("OK-1", "ECHO-1"), points=10, lost_file=False)
    dump = str(tmp_path / "dump")
    env = dict(cli_env, COLUMNS="4000")
    (tmp_path / "out").mkdir()
    with gateway(mlflow_server.tracking_uri.removeprefix("http://")) as uri:
        dest = ("--to", "mlflow", "--tracking-uri", uri, "--experiment-template", "secrets-{project}")
        done = _cli(env, "-vv", "import", dump, *dest, "--report", str(tmp_path / "out" / "import.json"))
        checked = _cli(env, "-vv", "verify", dump, *dest, "--report", str(tmp_path / "out" / "verify.json"),
                       "--html", str(tmp_path / "out" / "verify.html"),
                       "--markdown", str(tmp_path / "out" / "verify.md"))
        dry = _cli(env, "-vv", "import", dump, *dest, "--dry-run")
    # The URI works (the gateway checked the credentials and the token) and one run was refused.
    assert done.returncode == 1, done.stderr
    report = json.loads((tmp_path / "out" / "import.json").read_text(encoding="utf-8"))
    status = {r["key"]: (r["status"], r["message"]) for r in report["runs"]}
    assert status["my-ws/my-proj/OK-1"] == ("created", "")
    assert status["my-ws/my-proj/ECHO-1"][0] == "failed"
    # The gateway's message is kept, with the secrets masked where they were.
    assert "gateway refused POST http://127.0.0.1:" in status["my-ws/my-proj/ECHO-1"][1]
    assert "/?token=*** " in status["my-ws/my-proj/ECHO-1"][1]  # a value is masked up to its end
    assert "Authorization: Basic ***" in status["my-ws/my-proj/ECHO-1"][1]
    assert "DEBUG" in done.stderr  # -vv printed the debug traceback of the refused run
    assert "Traceback (most recent call last)" in done.stderr
    assert checked.returncode == 1  # ECHO-1 is not in MLflow
    assert json.loads((tmp_path / "out" / "verify.json").read_text())["runs"][1]["status"] == "match"
    assert dry.returncode == 0, dry.stderr  # the plan: ECHO-1 would be created, OK-1 skipped
    written = _everything_written(tmp_path / "out", tmp_path / "dump")
    assert any("_ledger" in p for p in written)
    assert any("_reports" in p for p in written)
    assert str(tmp_path / "out" / "verify.md") in written  # the Markdown report is scanned too
    texts = {"import stderr": done.stderr.encode(), "verify stderr": checked.stderr.encode(),
             "dry-run stderr": dry.stderr.encode(), **written}
    leaks = [(where, s) for where, data in texts.items() for s in SECRETS if s.encode() in data]
    assert leaks == []


def test_a_database_uri_without_its_driver_is_a_usage_error_with_the_hint(
    tmp_path: Path, cli_env: dict[str, str]
) -> None:
    build_dump(tmp_path / "dump", tmp_path, run_ids=("DB-1",), points=3, lost_file=False)
    # psycopg (v3) comes with the [postgresql] extra; psycopg2 and the MySQL drivers do not.
    pg = _cli(cli_env, "import", str(tmp_path / "dump"), "--to", "mlflow",
              "--tracking-uri", f"postgresql+psycopg2://u:{PASSWORD}@127.0.0.1:1/db")
    my = _cli(cli_env, "verify", str(tmp_path / "dump"), "--to", "mlflow",
              "--tracking-uri", f"mysql://u:{PASSWORD}@127.0.0.1:1/db")
    assert (pg.returncode, my.returncode) == (2, 2), (pg.stderr, my.stderr)
    [pg_line] = pg.stderr.strip().splitlines()
    [my_line] = my.stderr.strip().splitlines()
    assert pg_line.startswith("error: postgresql+psycopg2:// tracking URI: the database driver psycopg2 is not "
                              "installed; install it with: pip install psycopg2-binary")
    assert 'pip install "psycopg[binary]" and use a postgresql+psycopg:// URI' in pg_line
    assert my_line.startswith("error: mysql:// tracking URI: the database driver MySQLdb is not installed")
    assert "pip install pymysql" in my_line
    assert PASSWORD not in pg.stderr + my.stderr
    assert not (tmp_path / "dump" / "_ledger").exists()


def test_a_database_that_refuses_connections_is_one_line_exit_3(tmp_path: Path, cli_env: dict[str, str]) -> None:
    pytest.importorskip("psycopg")
    build_dump(tmp_path / "dump", tmp_path, run_ids=("DB-1",), points=3, lost_file=False)
    with socket.socket() as free:  # a port nobody listens on
        free.bind(("127.0.0.1", 0))
        port = free.getsockname()[1]
    done = _cli(cli_env, "import", str(tmp_path / "dump"), "--to", "mlflow",
                "--tracking-uri", f"postgresql://u:{PASSWORD}@127.0.0.1:{port}/db")
    assert done.returncode == 3, done.stderr
    assert done.stderr.strip().splitlines() == [
        f"error: cannot reach the MLflow tracking database at 127.0.0.1:{port}: ConnectionRefusedError: [Errno 111] "
        "Connection refused (checked before any run; nothing was written)"]
    assert PASSWORD not in done.stdout + done.stderr
    assert not (tmp_path / "dump" / "_ledger").exists()


@pytest.mark.parametrize(("text", "expected"), [
    ("http://bob:hunter22@host:5000/api", "http://***@host:5000/api"),
    ("postgresql://u:p@ss@db.internal:5432/mlflow", "postgresql://***@db.internal:5432/mlflow"),
    ("https://h/x?a=1&token=abc123&b=2", "https://h/x?a=1&token=***&b=2"),
    ("https://h/?access_token=abc;api_key=def", "https://h/?access_token=***;api_key=***"),
    ("s3://b/k?X-Amz-Credential=AKIA%2F20250101&X-Amz-Signature=f00d&X-Amz-Date=20250101",
     "s3://b/k?X-Amz-Credential=***&X-Amz-Signature=***&X-Amz-Date=20250101"),
    ("https://acct.blob.core.windows.net/c/f?sv=2021&sig=Zm9v%3D&se=2030", "https://acct.blob.core.windows.net/c/f?sv=2021&sig=***&se=2030"),
    ("<a href='https://h/?x=1&amp;password=pw'>", "<a href='https://h/?x=1&amp;password=***'>"),
    ('{"url": "https://h/?secret=s"}', '{"url": "https://h/?secret=***"}'),
    ("Authorization: Bearer eyJhbGciOi.x.y", "Authorization: Bearer ***"),
    ("sqlite:////tmp/mlflow.db and file:///a/b@c stay", "sqlite:////tmp/mlflow.db and file:///a/b@c stay"),
    ("steps?page=2&step=3", "steps?page=2&step=3"),
])
def test_redact_masks_userinfo_query_tokens_and_headers(text: str, expected: str) -> None:
    assert redact(text) == expected


def test_redact_obj_masks_keys_and_nested_values(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("NEPTUNE_API_TOKEN", "nept-token-value-123")
    doc = {"a": ["x", {"https://u:p@h/": 1, "b": "key nept-token-value-123"}], "n": 3, "f": None}
    assert redact_obj(doc) == {"a": ["x", {"https://***@h/": 1, "b": "key <NEPTUNE_API_TOKEN>"}], "n": 3, "f": None}


def test_log_records_and_their_tracebacks_are_redacted(monkeypatch: pytest.MonkeyPatch) -> None:
    from neptune_migrate import console

    buffer = io.StringIO()
    monkeypatch.setattr(sys, "stderr", buffer)
    try:
        console.setup_logging(2)
        log = logging.getLogger("neptune_migrate.test")
        try:
            raise ConnectionError(f"POST http://{USER}:{PASSWORD}@h/api?token={TOKEN} failed")
        except ConnectionError:
            log.debug("request to %s failed", f"https://h/?api_key={TOKEN}", exc_info=True)
        log.warning("stack", stack_info=True)
    finally:
        logging.getLogger().handlers.clear()
        sys.excepthook = sys.__excepthook__
        logging.captureWarnings(False)
    out = buffer.getvalue()
    assert "ConnectionError: POST http://***@h/api?token=***" in re.sub(r"\s+", " ", out)
    assert "request to https://h/?api_key=*** failed" in out
    assert PASSWORD not in out
    assert TOKEN not in out
