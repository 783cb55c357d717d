"""The verify report (HTML and Markdown): names, per-run summary, a plot per series, readable values."""

from __future__ import annotations

import json
import re
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
from neptune_migrate.verify.report import (
    FOLD_AT,
    render_html,
    render_markdown,
    sparkline,
    user_value,
    write_markdown,
)
from neptune_migrate.verify.verifier import PLOT_BUCKETS, VerifyOptions, VerifyReport, downsample, verify_runs
from tests.factories import build_dump, float_points, key, make_record

RUN = "my-ws/my-proj/PROJ-1"


def _verify(reader: DumpReader, fake: FakeDestination) -> VerifyReport:
    return verify_runs(reader, fake, VerifyOptions(import_options=ImportOptions(retry=FAST)))


def _tampered(tmp_path: Path) -> VerifyReport:
    """PROJ-1 with one param changed, the point at step 7 changed, a file deleted; PROJ-2 intact."""
    build_dump(tmp_path / "dump", tmp_path, run_ids=("PROJ-1", "PROJ-2"))
    reader = DumpReader(tmp_path / "dump")
    fake = FakeDestination()
    import_runs(reader, fake, ImportOptions(retry=FAST))
    [run] = [r for r in fake.live_runs() if str(r.key) == RUN]
    loss = pa.concat_tables(run.series["float", "train/loss"])
    value = pc.if_else(pc.equal(loss.column("step"), 7.0), 9.5, loss.column("value"))
    run.series["float", "train/loss"] = [loss.set_column(loss.column_names.index("value"), "value", value)]
    run.params["info/labels"] = json.dumps({"type": "string_set", "value": ["a", "c"]})
    del run.files["model/weights/weights.bin"]
    return _verify(reader, fake)


@pytest.mark.parametrize(("encoded", "shown"), [
    ('{"type": "string_set", "value": ["a", "b"]}', '["a", "b"]'),
    ('{"type": "string", "value": "adam"}', "adam"),
    ('{"type": "float", "value": "NaN"}', "nan"),
    ('{"type": "bool", "value": true}', "True"),
    ('{"type": "int", "value": 64}', "64"),
    ('["list", [["str", "a"], ["str", "b"]]]', '["a", "b"]'),  # Aim's param encoding
    ('["float", 0.001]', "0.001"),
    ('["a", "b"]', '["a", "b"]'),  # already as a user writes it: unchanged
    ("900 bytes", "900 bytes"),
    ("{not json", "{not json"),
    (None, ""),
])
def test_values_are_shown_as_a_user_writes_them(encoded: str | None, shown: str) -> None:
    assert user_value(encoded) == shown


def test_each_run_has_its_name_key_and_a_summary_of_what_was_compared(tmp_path: Path) -> None:
    report = _tampered(tmp_path)
    doc = report.to_json()
    by_key = {r["key"]: r for r in doc["runs"]}
    assert by_key[RUN]["name"] == "resnet-baseline"
    # 12 params, 5 non-empty series (100 + 3 + 2 + 1 + 1 points), 1 file with a hash
    assert by_key[RUN]["summary"] == {
        "params": {"compared": 12, "differing": 1},
        "series": {"compared": 5, "differing": 1},
        "points": {"compared": 107, "differing": 1},
        "files": {"compared": 1, "differing": 1},
    }
    assert by_key["my-ws/my-proj/PROJ-2"]["summary"]["params"] == {"compared": 12, "differing": 0}
    page = render_html(report)
    assert page.count("<span class='run-name'>resnet-baseline</span> <code>my-ws/my-proj/PROJ-1</code>") == 1
    assert page.count("<span class='run-name'>resnet-baseline</span> <code>my-ws/my-proj/PROJ-2</code>") == 1
    summary = re.search(r"<table class='summary'>.*?</table>", page, re.S)
    assert summary is not None
    cells = re.findall(r"<tr><th>(\w+)</th><td class='n'>(\d+)</td><td class='n[ a-z]*'>(\d+)</td>",
                       summary.group(0))
    assert cells == [("params", "12", "1"), ("series", "5", "1"), ("points", "107", "1"), ("files", "1", "1")]


def test_every_series_has_a_plot_grouped_by_namespace_with_a_difference_marker(tmp_path: Path) -> None:
    report = _tampered(tmp_path)
    page = render_html(report)
    section = page.split("<section class='run' data-key='my-ws/my-proj/PROJ-1'")[1].split("</section>")[0]
    items = re.findall(r"<figure class='plot( differs)?' data-item='([^']+)'>", section)
    assert items == [("", "series:histogram:hist/w"), ("", "series:file:images/preds"),
                     ("", "series:string:train/log"), (" differs", "series:float:train/loss"),
                     ("", "series:float:train/special")]
    assert re.findall(r"<div class='ns'><h3>([^<]+)</h3>", section) == ["hist", "images", "train"]
    # one red marker, at step 7 of train/loss's x axis (steps 0..99 over 240 px from x=52)
    assert section.count("class=\"diff-mark\"") == 1
    assert f'x1="{52 + 7 / 99 * 240:.1f}"' in section
    # the wide dump curve and the dashed destination curve, each a drawn path
    loss = section.split("data-item='series:float:train/loss'>")[1].split("</figure>")[0]
    assert loss.count('class="curve dump"') == 1
    assert loss.count('class="curve dest"') == 1
    assert "float, 100 points" in loss
    special = section.split("data-item='series:float:train/special'>")[1].split("</figure>")[0]
    assert "no finite value (NaN/inf), steps shown" in special


def test_findings_table_shows_user_values_and_folds_long_ones(tmp_path: Path) -> None:
    report = _tampered(tmp_path)
    page = render_html(report)
    row = re.search(r"<tr class='kind-differs'><td>differs</td><td>param:info/labels</td><td></td>"
                    r"<td>(.*?)</td><td>(.*?)</td>", page)
    assert row is not None
    assert row.groups() == ("[&quot;a&quot;, &quot;b&quot;]", "[&quot;a&quot;, &quot;c&quot;]")
    assert '{"type"' not in page and "{&quot;type&quot;" not in page
    # the missing point's row is longer than FOLD_AT: folded behind its first characters
    [missing] = [f for f in report.findings if f.kind == "differs" and f.step == 7.0]
    assert missing.expected == "value=0.125"
    long = "x" * (FOLD_AT + 40)
    from neptune_migrate.verify.findings import Finding

    report.runs[0].findings.append(Finding(RUN, "differs", "param:long", expected=long, actual="y"))
    page = render_html(report)
    assert f"<details><summary>{'x' * FOLD_AT}...</summary>{long}</details>" in page


def test_markdown_has_the_same_content(tmp_path: Path) -> None:
    report = _tampered(tmp_path)
    text = render_markdown(report)
    assert "## resnet-baseline (`my-ws/my-proj/PROJ-1`): mismatch" in text
    assert "## resnet-baseline (`my-ws/my-proj/PROJ-2`): match" in text
    assert "| params | 12 | 1 |\n| series | 5 | 1 |\n| points | 107 | 1 |\n| files | 1 | 1 |" in text
    assert '| differs | param:info/labels |  | ["a", "b"] | ["a", "c"] |  |' in text
    assert "| differs | series:float:train/loss | 7 | value=0.125 | value=9.5 | value |" in text
    loss = sparkline([1.0 / (i + 1) for i in range(100)])
    assert f"| train | train/loss | float | 100 / 100 | {loss} | **differs** |" in text
    assert "| hist | hist/w | histogram | 1 / 1 |  | same |" in text
    assert text.count("| train/special |") == 2
    out = tmp_path / "deep" / "v.md"
    write_markdown(report, out)
    assert out.read_text(encoding="utf-8") == text


def test_markdown_escapes_pipes_and_cuts_long_values(tmp_path: Path) -> None:
    from neptune_migrate.verify.findings import Finding

    report = _tampered(tmp_path)
    report.runs[0].findings.append(Finding(RUN, "extra", "param:a|b", actual="line1\nline2|" + "z" * 200))
    text = render_markdown(report)
    row = next(line for line in text.splitlines() if "param:a" in line)
    assert row.startswith("| extra | param:a\\|b |  |  | line1 line2\\|zzz")
    assert row.endswith("... |  |")
    assert len(row) < 200


def test_sparkline_and_downsample_keep_the_shape() -> None:
    assert sparkline([0.0, 1.0, 2.0, 3.0, 4.0, 5.0, 6.0, 7.0]) == "▁▂▃▄▅▆▇█"
    assert sparkline([float("nan")]) == ""
    assert len(sparkline(list(map(float, range(1000))))) == 24
    steps = [float(s) for s in range(100_000)]
    values = [0.0] * 100_000
    values[54_321] = 1e6  # one spike among 100k points
    values[99] = float("nan")
    ds, dv = downsample(steps, values)
    assert len(ds) <= 2 * PLOT_BUCKETS
    assert ds == sorted(ds)
    assert (54_321.0, 1e6) in zip(ds, dv, strict=True)
    assert ds[0] == 0.0
    short = downsample([0.0, 1.0, 2.0], [1.0, float("inf"), 3.0])
    assert short == ([0.0, 2.0], [1.0, 3.0])


def test_a_typical_run_is_under_50_kb(tmp_path: Path) -> None:
    """8 metrics in 3 namespaces x 5,000 points, 12 params, 2 differing points: < 50 KB of HTML."""
    names = [f"{ns}/{m}" for ns, ms in (("train", ("loss", "acc", "lr")), ("val", ("loss", "acc", "f1")),
                                          ("monitoring", ("cpu", "memory"))) for m in ms]
    n = 5000
    with DumpWriter(tmp_path / "dump") as dump, dump.begin_run(key()) as run:
        for i, name in enumerate(names):
            run.add_points("float", float_points(name, list(range(n)), [((s * (i + 3)) % 97) / 97 for s in range(n)]))
        run.commit(make_record(key(), system=SystemInfo(name="big-run"),
                               fields={f"parameters/p{i}": Field("int", i) for i in range(12)}))
    reader = DumpReader(tmp_path / "dump")
    fake = FakeDestination()
    import_runs(reader, fake, ImportOptions(retry=FAST))
    [dest] = fake.live_runs()
    t = pa.concat_tables(dest.series["float", "val/f1"])
    v = pc.if_else(pc.is_in(t.column("step"), pa.array([10.0, 4000.0])), -1.0, t.column("value"))
    dest.series["float", "val/f1"] = [t.set_column(t.column_names.index("value"), "value", v)]
    report = _verify(reader, fake)
    page = render_html(report)
    size = len(page.encode("utf-8"))
    assert size < 50_000, size
    assert page.count("<figure class='plot") == 8
    assert page.count("class=\"diff-mark\"") == 2
    assert report.to_json()["runs"][0]["summary"]["points"] == {"compared": 8 * n, "differing": 2}


def test_a_run_without_a_name_shows_its_custom_run_id_or_its_key(tmp_path: Path) -> None:
    with DumpWriter(tmp_path / "dump") as dump:
        for rid, system in (("PROJ-1", SystemInfo(custom_run_id="sweep-7")), ("PROJ-2", SystemInfo())):
            with dump.begin_run(key(rid)) as run:
                run.add_points("float", float_points("loss", [0, 1], [1.0, 2.0]))
                run.commit(make_record(key(rid), system=system, fields={}))
    reader = DumpReader(tmp_path / "dump")
    fake = FakeDestination()
    import_runs(reader, fake, ImportOptions(retry=FAST))
    report = _verify(reader, fake)
    assert [r["name"] for r in report.to_json()["runs"]] == ["sweep-7", None]
    page = render_html(report)
    assert "<span class='run-name'>sweep-7</span> <code>my-ws/my-proj/PROJ-1</code>" in page
    assert "<span class='run-name'>my-ws/my-proj/PROJ-2</span> <span class='badge ok'>match</span>" in page
    assert "## my-ws/my-proj/PROJ-2: match" in render_markdown(report)
    assert re.findall(r"<div class='ns'><h3>([^<]+)</h3>", page) == ["(top level)", "(top level)"]


def test_plots_are_kept_for_a_bounded_number_of_runs_differing_ones_first(tmp_path: Path) -> None:
    build_dump(tmp_path / "dump", tmp_path, run_ids=("PROJ-1", "PROJ-2", "PROJ-3", "PROJ-4"))
    reader = DumpReader(tmp_path / "dump")
    fake = FakeDestination()
    import_runs(reader, fake, ImportOptions(retry=FAST))
    for dest in fake.live_runs():
        if str(dest.key).endswith(("PROJ-3", "PROJ-4")):
            dest.params["parameters/optimizer"] = "tampered"
    # plot_runs=4: up to 4 runs with findings keep their plots, and 4 // 4 = 1 matching run
    report = verify_runs(reader, fake, VerifyOptions(import_options=ImportOptions(retry=FAST), plot_runs=4))
    left_out = {r.key.rsplit("/", 1)[1]: r.plots_left_out for r in report.runs}
    assert left_out == {"PROJ-1": False, "PROJ-2": True, "PROJ-3": False, "PROJ-4": False}
    assert sorted({p.run.rsplit("/", 1)[1] for p in report.plots}) == ["PROJ-1", "PROJ-3", "PROJ-4"]
    page = render_html(report)
    section = page.split("data-key='my-ws/my-proj/PROJ-2'")[1].split("</section>")[0]
    assert "Plots left out for this run" in section
    assert "<figure" not in section
    assert "Plots left out for this run" in render_markdown(report)


def test_readme_screenshots_exist_are_small_and_are_referenced() -> None:
    from tests.conftest import REPO

    readme = (REPO / "README.md").read_text(encoding="utf-8")
    for name in ("mlflow-run.png", "aim-run.png", "verify-report.png"):
        png = REPO / "docs" / "img" / name
        assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n", name
        assert png.stat().st_size < 150_000, (name, png.stat().st_size)
        assert f"(docs/img/{name})" in readme
    assert "python docs/screenshots.py" in readme
