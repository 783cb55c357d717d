"""The HTML report in real headless Chromium (one launch): every run by name, every plot drawn, no
horizontal overflow at 1280 px.

The page itself has no script. The test appends one to a copy: it measures the rendered DOM
(SVG geometry, element boxes) and writes the figures into the DOM, which `--dump-dom` returns.
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from pathlib import Path

import pyarrow as pa
import pyarrow.compute as pc
import pytest

from neptune_migrate.destinations.fake import FakeDestination
from neptune_migrate.dump.reader import DumpReader
from neptune_migrate.dump.writer import DumpWriter
from neptune_migrate.model import Field, SystemInfo
from neptune_migrate.pipeline.import_ import ImportOptions, import_runs
from neptune_migrate.retry import FAST
from neptune_migrate.verify.report import write_html
from neptune_migrate.verify.verifier import VerifyOptions, verify_runs
from tests.factories import float_points, key, make_record, write_full_run

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
         "--disable-background-networking", "--disable-component-update", "--disable-sync",
         "--hide-scrollbars"]
WIDTH = 1280

MEASURE = """
<script>
(function () {
  const vw = window.innerWidth;
  const runs = [...document.querySelectorAll("section.run")].map(s => ({
    key: s.dataset.key, name: s.querySelector(".run-name").textContent,
    keyShown: (s.querySelector("h2 code") || {textContent: null}).textContent}));
  const plots = [...document.querySelectorAll("figure.plot")].map(f => {
    const svg = f.querySelector("svg");
    const shapes = [...f.querySelectorAll(".curve")].map(c => {
      const b = c.getBBox(); const r = c.getBoundingClientRect();
      const st = getComputedStyle(c);
      return {cls: c.getAttribute("class"), w: b.width, h: b.height, visible: r.width > 0 || r.height > 0,
              stroke: st.stroke, display: st.display};
    });
    const box = svg.getBoundingClientRect();
    return {run: f.closest("section").dataset.key, item: f.dataset.item,
            caption: f.querySelector("figcaption").textContent, svgW: box.width, svgH: box.height,
            shapes: shapes, marks: f.querySelectorAll(".diff-mark").length};
  });
  const wide = [...document.body.querySelectorAll("*")].filter(e => e.getBoundingClientRect().right > vw + 0.5)
    .map(e => e.tagName + "." + e.className);
  const out = document.createElement("pre");
  out.id = "measure";
  out.textContent = JSON.stringify({vw: vw, scrollWidth: document.documentElement.scrollWidth,
    runs: runs, plots: plots, wide: wide.slice(0, 20)});
  document.body.appendChild(out);
})();
</script>
"""


def _report_page(tmp_path: Path) -> Path:
    """Two runs: a full one (every series kind) with differences and long values, and a run whose
    name and keys are long enough to overflow a careless layout."""
    long_ns = "a_very_long_namespace_without_any_break_" * 3
    with DumpWriter(tmp_path / "dump") as dump:
        with dump.begin_run(key("PROJ-1")) as run:
            run.commit(write_full_run(run, key("PROJ-1"), tmp_path))
        with dump.begin_run(key("PROJ-2")) as run:
            for name in ("train/loss", "val/loss", f"{long_ns}/metric"):
                run.add_points("float", float_points(name, list(range(300)), [((s * 7) % 31) / 31 for s in range(300)]))
            run.commit(make_record(key("PROJ-2"), system=SystemInfo(name="n" * 150),
                                   fields={"parameters/blob": Field("string", "z" * 600)}))
    reader = DumpReader(tmp_path / "dump")
    fake = FakeDestination()
    import_runs(reader, fake, ImportOptions(retry=FAST))
    for dest in fake.live_runs():
        t = pa.concat_tables(dest.series["float", "train/loss"])
        v = pc.if_else(pc.equal(t.column("step"), 3.0), 50.0, t.column("value"))
        dest.series["float", "train/loss"] = [t.set_column(t.column_names.index("value"), "value", v)]
        for k in dest.params:
            dest.params[k] = dest.params[k].replace("z" * 600, "y" * 600)
    report = verify_runs(reader, fake, VerifyOptions(import_options=ImportOptions(retry=FAST)))
    page = tmp_path / "report.html"
    write_html(report, page)
    return page


@pytest.mark.skipif(CHROMIUM is None, reason="chromium not installed (Debian package 'chromium')")
def test_html_report_in_headless_chromium_names_every_run_draws_every_plot_and_fits_1280px(tmp_path: Path) -> None:
    page = _report_page(tmp_path)
    measured = tmp_path / "measured.html"
    measured.write_text(page.read_text(encoding="utf-8").replace("</body>", MEASURE + "</body>"), encoding="utf-8")
    base = [str(CHROMIUM), *FLAGS, f"--user-data-dir={tmp_path / 'profile'}", f"--window-size={WIDTH},800"]
    dom = subprocess.run([*base, "--dump-dom", measured.as_uri()], capture_output=True, text=True,
                         timeout=120, check=True).stdout
    found = re.search(r'<pre id="measure">(.*?)</pre>', dom, re.S)
    assert found is not None, dom[-2000:]
    m = json.loads(found.group(1).replace("&quot;", '"').replace("&amp;", "&").replace("&lt;", "<")
                   .replace("&gt;", ">"))
    assert m["vw"] == WIDTH
    # every run, by name, with its key beside
    assert m["runs"] == [
        {"key": "my-ws/my-proj/PROJ-1", "name": "resnet-baseline", "keyShown": "my-ws/my-proj/PROJ-1"},
        {"key": "my-ws/my-proj/PROJ-2", "name": "n" * 150, "keyShown": "my-ws/my-proj/PROJ-2"},
    ]
    # every compared series has a plot, and each plot has both curves drawn with a real extent
    by_run: dict[str, list[str]] = {}
    for p in m["plots"]:
        by_run.setdefault(p["run"], []).append(p["item"])
        assert (p["svgW"], p["svgH"]) == (300, 150), p
        assert [s["cls"] for s in p["shapes"]] == ["curve dump", "curve dest"], p
        for s in p["shapes"]:
            assert s["visible"] and s["display"] != "none", p
            assert s["stroke"] in ("rgb(31, 119, 180)", "rgb(255, 127, 14)"), p
            assert s["w"] > 0 or s["h"] > 0, p  # one point is a circle; several span the x axis
        if p["item"].startswith("series:float:") and "no finite" not in p["caption"]:
            assert min(s["w"] for s in p["shapes"]) > 200, p  # a curve across the 240 px axis
    long_ns = "a_very_long_namespace_without_any_break_" * 3
    assert sorted(by_run["my-ws/my-proj/PROJ-1"]) == [
        "series:file:images/preds", "series:float:train/loss", "series:float:train/special",
        "series:histogram:hist/w", "series:string:train/log"]
    assert sorted(by_run["my-ws/my-proj/PROJ-2"]) == [
        f"series:float:{long_ns}/metric", "series:float:train/loss", "series:float:val/loss"]
    marks = {(p["run"], p["item"]): p["marks"] for p in m["plots"]}
    assert marks["my-ws/my-proj/PROJ-1", "series:float:train/loss"] == 1
    assert marks["my-ws/my-proj/PROJ-2", "series:float:val/loss"] == 0
    # nothing wider than the window: long names, keys and 600-character values fold
    assert m["wide"] == []
    assert m["scrollWidth"] <= WIDTH
