"""Regenerate the README's screenshots in docs/img/ from the bundled sample, with one command:

    python docs/screenshots.py                  # from the repository root, with the venv active
    python docs/screenshots.py --keep /tmp/shots  # keep the dump, stores and reports for a look

What it does, from a clean checkout (needs the `mlflow` and `aim` extras and Debian's `chromium`):

1. exports the bundled neptune-exporter sample (`fixtures/neptune-exporter/neptune3/data`) into a
   dump, imports it into a fresh MLflow SQLite store and a fresh Aim repository, and verifies the
   MLflow import (`--html`, `--markdown`), all through the `neptune-migrate` CLI;
2. starts `mlflow server` and `aim up` on 127.0.0.1 (free ports), opens the verify report and one
   imported run's page in each UI in headless Chromium (1280 x 800, driven over the DevTools
   protocol on 127.0.0.1: it waits until the page shows the run's name, then screenshots);
3. writes `docs/img/mlflow-run.png`, `docs/img/aim-run.png`, `docs/img/verify-report.png`,
   reduced to a palette of colours so each stays under 150 KB, and stops both servers.

A server that does not come up, or a page that never shows the run, is one line on stderr and that
screenshot is skipped; the others are still written and the exit status is 1. On a loaded machine
the whole run takes a few minutes (the servers are slow to start).
"""

from __future__ import annotations

import argparse
import base64
import contextlib
import io
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
SAMPLE = REPO / "fixtures" / "neptune-exporter" / "neptune3" / "data"
WIDTH, HEIGHT = 1280, 800
MAX_BYTES = 150_000
CHROMIUM_FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                  "--disable-background-networking", "--disable-component-update", "--disable-sync",
                  "--hide-scrollbars", f"--window-size={WIDTH},{HEIGHT}"]


def _say(text: str) -> None:
    print(f"screenshots: {text}", file=sys.stderr, flush=True)


def _cli(*args: str, cwd: Path, ok: tuple[int, ...] = (0,)) -> None:
    proc = subprocess.run([sys.executable, "-m", "neptune_migrate", *args], cwd=cwd, capture_output=True,
                          text=True, check=False, env={**os.environ, "PYTHONPATH": str(REPO)})
    if proc.returncode not in ok:
        sys.stderr.write(proc.stderr)
        msg = f"neptune-migrate {args[0]} exited {proc.returncode}"
        raise SystemExit(msg)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@contextlib.contextmanager
def _server(cmd: list[str], url: str, cwd: Path, log: Path, timeout: float = 180) -> Iterator[bool]:
    """Start a server in its own process group; yield whether `url` answered; always stop it."""
    with log.open("wb") as out:
        proc = subprocess.Popen(cmd, cwd=cwd, stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
    try:
        deadline = time.monotonic() + timeout
        up = False
        while time.monotonic() < deadline and proc.poll() is None:
            try:
                with urllib.request.urlopen(url, timeout=5):  # our own server, on 127.0.0.1
                    up = True
                    break
            except OSError:
                time.sleep(1)
        if not up:
            _say(f"{cmd[0]} did not answer at {url} (log: {log})")
        yield up
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()


_DISMISS = """for (const b of document.querySelectorAll("button")) {
  const label = b.getAttribute("aria-label") || "";
  if (b.textContent.trim() === "Skip" || /^close/i.test(label)) b.click();
}"""
"""Close what a first visit pops up over the run (Aim's community invitation, MLflow's assistant)."""


class _Browser:
    """Headless Chromium driven over the DevTools protocol (127.0.0.1 only): navigate, wait until
    the page shows what it should (single-page UIs render long after `load`), screenshot."""

    def __init__(self, chromium: str, profile: Path) -> None:
        from websockets.sync.client import connect  # installed with aim

        profile.mkdir(parents=True, exist_ok=True)
        (profile / "DevToolsActivePort").unlink(missing_ok=True)
        self.proc = subprocess.Popen([chromium, *CHROMIUM_FLAGS, f"--user-data-dir={profile}",
                                      "--remote-debugging-address=127.0.0.1", "--remote-debugging-port=0",
                                      "about:blank"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                                     start_new_session=True)
        port_file = profile / "DevToolsActivePort"
        deadline = time.monotonic() + 60
        while not port_file.exists() or not port_file.read_text().strip():
            if time.monotonic() > deadline:
                self.close()
                msg = "chromium did not open its DevTools port"
                raise SystemExit(msg)
            time.sleep(0.2)
        port = port_file.read_text().split()[0]
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/json/list", timeout=10) as resp:
            pages = [t for t in json.load(resp) if t["type"] == "page"]
        self.stack = contextlib.ExitStack()
        self.ws = self.stack.enter_context(connect(pages[0]["webSocketDebuggerUrl"], max_size=None,
                                                   open_timeout=30))
        self.next_id = 0
        self.call("Emulation.setDeviceMetricsOverride", width=WIDTH, height=HEIGHT, deviceScaleFactor=1,
                  mobile=False)

    def call(self, method: str, **params: Any) -> dict[str, Any]:
        self.next_id += 1
        self.ws.send(json.dumps({"id": self.next_id, "method": method, "params": params}))
        while True:
            msg = json.loads(self.ws.recv(timeout=120))
            if msg.get("id") == self.next_id:
                if "error" in msg:
                    raise RuntimeError(f"{method}: {msg['error']}")
                return dict(msg.get("result", {}))

    def shot(self, url: str, shows: str, timeout: float = 180) -> bytes | None:
        """The PNG of `url` once its text contains `shows` (None if it never does)."""
        self.call("Page.navigate", url=url)
        probe = f"!!document.body && document.body.innerText.includes({json.dumps(shows)})"
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            result = self.call("Runtime.evaluate", expression=probe, returnByValue=True)
            if result.get("result", {}).get("value") is True:
                self.call("Runtime.evaluate", expression=_DISMISS)
                time.sleep(3)  # charts draw after the text appears
                data = self.call("Page.captureScreenshot", format="png")["data"]
                return base64.b64decode(data)
            time.sleep(1)
        _say(f"{url} did not show {shows!r} within {timeout:.0f} s")
        return None

    def close(self) -> None:
        with contextlib.suppress(Exception):
            self.stack.close()
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.proc.pid, signal.SIGTERM)
        try:
            self.proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait()


def _save_small(png: bytes | None, out: Path) -> bool:
    """Write `png` reduced to a palette small enough for MAX_BYTES; False if there is nothing to write."""
    from PIL import Image

    if png is None:
        return False
    image = Image.open(io.BytesIO(png)).convert("RGB")
    buf = io.BytesIO()
    image.save(buf, format="PNG", optimize=True)
    for palette in (256, 128, 64, 32):  # exact colours when small enough, else fewer colours
        if buf.tell() <= MAX_BYTES:
            break
        buf = io.BytesIO()
        image.quantize(colors=palette, method=Image.Quantize.FASTOCTREE).save(buf, format="PNG", optimize=True)
    out.write_bytes(buf.getvalue())
    _say(f"wrote {out.relative_to(REPO) if out.is_relative_to(REPO) else out} ({buf.tell() // 1024} KB)")
    return True


def _mlflow_run(db: Path) -> tuple[str, str]:
    """(URL path of the first imported run's page, its name)."""
    from mlflow.tracking import MlflowClient

    client = MlflowClient(tracking_uri=f"sqlite:///{db}")
    runs = [r for e in client.search_experiments() for r in client.search_runs([e.experiment_id])]
    run = min(runs, key=lambda r: (r.info.run_name or "", r.info.run_id))
    # MLflow 3.17's UI keeps "GenAI / Model training" per browser (default GenAI) and ignores the
    # experiment's kind tag when that switch is shown; the URL parameter picks Model training.
    return (f"#/experiments/{run.info.experiment_id}/runs/{run.info.run_id}?workflowType=machine_learning",
            run.info.run_name or run.info.run_id)


def _aim_run(repo: Path) -> tuple[str, str]:
    """(URL path of the first imported run's page, its name)."""
    from aim import Repo

    runs = sorted(Repo(str(repo)).iter_runs(), key=lambda r: (r.name or "", r.hash))
    return f"runs/{runs[0].hash}", runs[0].name or runs[0].hash


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, default=REPO / "docs" / "img", help="where the PNGs go")
    parser.add_argument("--keep", type=Path, default=None, help="work here and keep it (default: a temp dir)")
    parser.add_argument("--wait", type=float, default=180, help="seconds a UI may take to show the run")
    args = parser.parse_args()
    chromium = shutil.which("chromium") or shutil.which("chromium-browser")
    if chromium is None:
        _say("chromium not found (Debian package 'chromium')")
        return 2
    work = args.keep or Path(tempfile.mkdtemp(prefix="nm-shots-"))
    if work.exists() and args.keep:
        shutil.rmtree(work)
    work.mkdir(parents=True, exist_ok=True)
    args.out.mkdir(parents=True, exist_ok=True)
    failed = 0
    try:
        dump, db, aim_repo = work / "dump", work / "mlflow.db", work / "aim"
        _say("export, import (MLflow, Aim), verify")
        # exit 1 is allowed: the sample's dump records files the exporter itself did not keep
        _cli("export", str(SAMPLE), "--from", "neptune-exporter", "--out", str(dump), cwd=work, ok=(0, 1))
        _cli("import", str(dump), "--to", "mlflow", "--tracking-uri", f"sqlite:///{db}", cwd=work, ok=(0, 1))
        aim_repo.mkdir()
        subprocess.run([str(Path(sys.executable).parent / "aim"), "init", "--repo", str(aim_repo)], cwd=work,
                       capture_output=True, check=True)
        _cli("import", str(dump), "--to", "aim", "--aim-repo", str(aim_repo), cwd=work, ok=(0, 1))
        report = work / "verify.html"
        _cli("verify", str(dump), "--to", "mlflow", "--tracking-uri", f"sqlite:///{db}", "--html", str(report),
             "--markdown", str(work / "verify.md"), "--report", str(work / "verify.json"), cwd=work, ok=(0, 1))
        browser = _Browser(chromium, work / "chromium-profile")
        try:
            if not _save_small(browser.shot(report.as_uri(), "Verification"), args.out / "verify-report.png"):
                failed += 1
            bin_dir = Path(sys.executable).parent
            port = _free_port()
            mlflow_cmd = [str(bin_dir / "mlflow"), "server", "--host", "127.0.0.1", "--port", str(port),
                          "--backend-store-uri", f"sqlite:///{db}", "--workers", "1"]
            with _server(mlflow_cmd, f"http://127.0.0.1:{port}/health", work, work / "mlflow-server.log") as up:
                path, name = _mlflow_run(db)
                png = browser.shot(f"http://127.0.0.1:{port}/{path}", name, args.wait) if up else None
                if not _save_small(png, args.out / "mlflow-run.png"):
                    failed += 1
            port = _free_port()
            aim_cmd = [str(bin_dir / "aim"), "up", "--repo", str(aim_repo), "--host", "127.0.0.1",
                       "--port", str(port)]
            with _server(aim_cmd, f"http://127.0.0.1:{port}/", work, work / "aim-up.log") as up:
                path, name = _aim_run(aim_repo)
                png = browser.shot(f"http://127.0.0.1:{port}/{path}", name, args.wait) if up else None
                if not _save_small(png, args.out / "aim-run.png"):
                    failed += 1
        finally:
            browser.close()
    finally:
        if args.keep is None:
            shutil.rmtree(work, ignore_errors=True)
        else:
            _say(f"kept {work}")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
