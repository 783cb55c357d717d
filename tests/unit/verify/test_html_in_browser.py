"""The HTML report opens in real headless Chromium, without errors, and shows the plots."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

from neptune_migrate.destinations.fake import FakeDestination
from neptune_migrate.dump.reader import DumpReader
from neptune_migrate.pipeline.import_ import ImportOptions, import_runs
from neptune_migrate.retry import FAST
from neptune_migrate.verify.report import write_html
from neptune_migrate.verify.verifier import VerifyOptions, verify_runs
from tests.factories import build_dump

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
         "--disable-background-networking", "--disable-component-update", "--disable-sync",
         "--hide-scrollbars"]


@pytest.mark.skipif(CHROMIUM is None, reason="chromium not installed (Debian package 'chromium')")
def test_html_report_renders_with_plots_in_headless_chromium(tmp_path: Path) -> None:
    from PIL import Image

    build_dump(tmp_path / "dump", tmp_path, run_ids=("PROJ-1",))
    reader = DumpReader(tmp_path / "dump")
    fake = FakeDestination()
    import_runs(reader, fake, ImportOptions(retry=FAST))
    [run] = fake.live_runs()
    run.params["parameters/optimizer"] = "tampered"
    report = verify_runs(reader, fake, VerifyOptions(import_options=ImportOptions(retry=FAST)))
    page = tmp_path / "report.html"
    write_html(report, page)
    profile = tmp_path / "profile"
    base = [str(CHROMIUM), *FLAGS, f"--user-data-dir={profile}"]
    dom = subprocess.run([*base, "--dump-dom", page.as_uri()], capture_output=True, text=True,
                         timeout=120, check=True).stdout
    assert dom.count("data:image/png;base64,") == 1  # train/loss (train/special has no finite value)
    assert "param:parameters/optimizer" in dom
    shot = tmp_path / "shot.png"
    subprocess.run([*base, f"--screenshot={shot}", "--window-size=1000,1400", page.as_uri()],
                   capture_output=True, timeout=120, check=True)
    image = Image.open(shot).convert("RGB")
    assert image.size == (1000, 1400)
    pixels = list(image.getdata())
    # The plot draws the dump as a wide translucent blue line, the destination dashed orange on top.
    blue = sum(1 for r, g, b in pixels if b > 200 and r < 180 and 150 < g < 215)
    orange = sum(1 for r, g, b in pixels if r > 200 and 90 < g < 190 and b < 110)
    assert blue > 500, blue
    assert orange > 200, orange
