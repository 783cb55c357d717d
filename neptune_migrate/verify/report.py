"""Verify reports: rich terminal summary, JSON (docs/verify-report.md), self-contained HTML, Markdown."""

from __future__ import annotations

import html
import json
import math
from pathlib import Path
from typing import Any

from neptune_migrate.errors import redact, redact_obj
from neptune_migrate.verify.verifier import PlotData, RunVerification, VerifyReport


def write_json(report: VerifyReport, path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    doc = redact_obj(report.to_json())
    path.write_text(json.dumps(doc, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")


# --- values as a user writes them ------------------------------------------------------------

_AIM_TAGS = frozenset({"bool", "int", "float", "str", "list", "none"})


def _py(value: Any, *, top: bool) -> str:
    """A decoded value as a user writes it: `adam`, `0.001`, `True`, `["a", "b"]`."""
    if isinstance(value, bool):
        return str(value)
    if isinstance(value, str):
        return value if top else json.dumps(value, ensure_ascii=False)
    if isinstance(value, list):
        return "[" + ", ".join(_py(v, top=False) for v in value) + "]"
    if value is None:
        return "None"
    return str(value)


def _decode_typed(data: Any) -> tuple[bool, Any]:
    """(True, value) when `data` is one of the typed encodings destinations compare params in."""
    if isinstance(data, dict) and set(data) == {"type", "value"} and isinstance(data["type"], str):
        value = data["value"]
        if data["type"] == "float" and isinstance(value, str):  # NaN / Infinity, spelled out in JSON
            return True, float(value)
        return True, value
    if isinstance(data, list) and len(data) == 2 and data[0] in _AIM_TAGS:  # Aim: [type, value]
        tag, value = data
        if tag == "list" and isinstance(value, list):
            return True, [_decode_typed(v)[1] for v in value]
        if tag == "float" and isinstance(value, str):
            return True, float(value)
        return True, value
    return False, data


def user_value(text: str | None) -> str:
    """A finding's value as a user would write it, not in the internal typed encoding.

    `{"type": "string_set", "value": ["a", "b"]}` and Aim's `["list", [["str", "a"], ...]]` become
    `["a", "b"]`; `{"type": "string", "value": "adam"}` becomes `adam`; other text is shown as is.
    """
    if text is None:
        return ""
    stripped = text.strip()
    if not stripped.startswith(("{", "[")):
        return text
    try:
        data = json.loads(stripped)
    except ValueError:
        return text
    typed, value = _decode_typed(data)
    return _py(value, top=True) if typed else text


# --- plots as inline SVG --------------------------------------------------------------------------

PLOT_W, PLOT_H = 300, 150
_ML, _MR, _MT, _MB = 52, 8, 8, 22  # margins: room for the y labels left, x labels below
_DUMP_COLOR, _DEST_COLOR, _DIFF_COLOR = "#1f77b4", "#ff7f0e", "#d62728"


def _num(v: float) -> str:
    return f"{v:.4g}"


def _series_key(item: str) -> str:
    return item.split(":", 2)[-1]


def namespace(item_or_key: str) -> str:
    """The source namespace a series is grouped under: the first segment of its key."""
    key = _series_key(item_or_key)
    return key.split("/", 1)[0] if "/" in key else "(top level)"


def _plot_svg(plot: PlotData, differs: bool) -> str:
    """A small self-contained SVG: the dump as a wide translucent blue line, the destination as a
    thin dashed orange line on top, red ticks at the steps that differ. Non-float series (strings,
    files, histograms) show where their points are: dump above, destination below."""
    xs = plot.expected_steps + plot.actual_steps + plot.diff_steps
    numeric = plot.kind == "float" and not plot.positions_only
    ys = plot.expected_values + plot.actual_values if numeric else [0.0, 1.0]
    x0, x1 = (min(xs), max(xs)) if xs else (0.0, 1.0)
    y0, y1 = (min(ys), max(ys)) if ys else (0.0, 1.0)
    if x1 == x0:
        x0, x1 = x0 - 1, x1 + 1
    if y1 == y0:
        y0, y1 = y0 - 1, y1 + 1
    iw, ih = PLOT_W - _ML - _MR, PLOT_H - _MT - _MB

    def px(x: float) -> str:
        return f"{_ML + (x - x0) / (x1 - x0) * iw:.1f}"

    def py(y: float) -> str:
        return f"{_MT + (1 - (y - y0) / (y1 - y0)) * ih:.1f}"

    out = [f'<svg class="plot-svg" width="{PLOT_W}" height="{PLOT_H}" viewBox="0 0 {PLOT_W} {PLOT_H}" '
           f'role="img" aria-label="{html.escape(plot.key)}">',
           f'<rect x="{_ML}" y="{_MT}" width="{iw}" height="{ih}" fill="{"#fff3f3" if differs else "#fafafa"}" '
           'stroke="#bbb"/>']
    out.extend(f'<line class="diff-mark" x1="{px(s)}" x2="{px(s)}" y1="{_MT}" y2="{_MT + ih}" '
               f'stroke="{_DIFF_COLOR}" stroke-width="1.5"/>' for s in plot.diff_steps)

    def curve(steps: list[float], values: list[float], cls: str, color: str, style: str, row: float) -> None:
        if not steps:
            return
        if not numeric:  # one tick per point position
            y = _MT + row * ih
            d = "".join(f"M{px(s)} {y - 9:.1f}v18" for s in steps)
            out.append(f'<path class="{cls}" d="{d}" stroke="{color}" {style} fill="none"/>')
            return
        if len(steps) == 1:
            r = 5 if cls.endswith("dump") else 2.5  # the destination's dot inside the dump's ring
            out.append(f'<circle class="{cls}" cx="{px(steps[0])}" cy="{py(values[0])}" r="{r}" fill="{color}" '
                       f'stroke="{color}" {style}/>')
            return
        d = "M" + "L".join(f"{px(s)} {py(v)}" for s, v in zip(steps, values, strict=True))
        out.append(f'<path class="{cls}" d="{d}" stroke="{color}" {style} fill="none"/>')

    curve(plot.expected_steps, plot.expected_values, "curve dump", _DUMP_COLOR,
          'stroke-width="4" stroke-opacity="0.45" fill-opacity="0.45"', 0.3)
    curve(plot.actual_steps, plot.actual_values, "curve dest", _DEST_COLOR,
          'stroke-width="1.5" stroke-dasharray="4 2"', 0.7)
    font = 'font-size="12" fill="#333"'
    out.append(f'<text x="{_ML - 4}" y="{_MT + 10}" text-anchor="end" {font}>'
               f'{_num(y1) if numeric else "dump"}</text>')
    out.append(f'<text x="{_ML - 4}" y="{_MT + ih}" text-anchor="end" {font}>'
               f'{_num(y0) if numeric else "dest."}</text>')
    out.append(f'<text x="{_ML}" y="{PLOT_H - 6}" {font}>{_num(x0)}</text>')
    out.append(f'<text x="{PLOT_W - _MR}" y="{PLOT_H - 6}" text-anchor="end" {font}>{_num(x1)}</text>')
    out.append(f'<text x="{_ML + iw / 2:.0f}" y="{PLOT_H - 6}" text-anchor="middle" {font}>step</text>')
    out.append("</svg>")
    return "".join(out)


# --- the page --------------------------------------------------------------------------------------

FOLD_AT = 80
"""Values longer than this are folded (`<details>`) in HTML and cut (`...`) in Markdown."""

_CSS = """
*{box-sizing:border-box}
body{font-family:system-ui,sans-serif;margin:0 auto;padding:1.2em 1.5em;max-width:1280px;color:#222;
overflow-wrap:anywhere}
h1{font-size:26px}h2{font-size:22px;margin:1.6em 0 .3em;border-top:2px solid #ddd;padding-top:.6em}
h3{font-size:17px;margin:1em 0 .3em;color:#444}
h2 code{font-size:15px;font-weight:normal;color:#555;background:#f3f3f3;padding:1px 5px;border-radius:3px}
table{border-collapse:collapse;margin:.5em 0 1.2em}
td,th{border:1px solid #ccc;padding:4px 8px;font-size:14px;text-align:left;vertical-align:top}
th{background:#f5f5f5}
table.findings{width:100%;table-layout:fixed}
table.findings td{font-family:ui-monospace,monospace;font-size:13px}
table.findings col.kind{width:76px}table.findings col.item{width:24%}table.findings col.step{width:64px}
td.n{text-align:right;font-variant-numeric:tabular-nums}
.ok{color:#17803d}.bad{color:#b42318}.badge{font-size:13px;padding:1px 6px;border-radius:9px;color:#fff}
.badge.ok{background:#17803d}.badge.bad{background:#b42318}
.kind-missing{background:#fff4e5}.kind-extra{background:#eef4ff}
.kind-differs{background:#fdecec}.kind-error{background:#f3e8ff}
.groups{display:flex;flex-wrap:wrap;gap:4px 18px}.ns h3{margin:.6em 0 .3em}
.plots{display:flex;flex-wrap:wrap;gap:10px}
figure.plot{margin:0;padding:6px;border:1px solid #ddd;border-radius:4px;width:314px}
figure.plot.differs{border:2px solid #d62728;padding:5px}
figure.plot figcaption{font-size:15px;font-weight:600;margin-bottom:3px}
figure.plot figcaption small{display:block;font-weight:normal;font-size:12px;color:#555}
.legend span{display:inline-block;margin-right:1.2em}
.swatch{display:inline-block;width:22px;height:4px;vertical-align:middle;margin-right:4px}
details summary{cursor:pointer}
"""


def _fold(text: str) -> str:
    """HTML for a value: escaped, and folded behind its first characters when long."""
    if len(text) <= FOLD_AT:
        return html.escape(text)
    return (f"<details><summary>{html.escape(text[:FOLD_AT])}...</summary>"
            f"{html.escape(text)}</details>")


def _points_text(plot: PlotData) -> str:
    def n(count: int) -> str:
        return f"{count} point{'' if count == 1 else 's'}"

    text = (n(plot.expected_count) if plot.expected_count == plot.actual_count else
            f"{n(plot.expected_count)} in the dump, {plot.actual_count} in the destination")
    if plot.kind == "float" and plot.positions_only:
        text += "; no finite value (NaN/inf), steps shown"
    return text


def _run_title(run: RunVerification) -> str:
    return run.name or run.key


def _group_plots(plots: list[PlotData]) -> list[tuple[str, list[PlotData]]]:
    groups: dict[str, list[PlotData]] = {}
    for p in sorted(plots, key=lambda p: (namespace(p.item), p.key)):
        groups.setdefault(namespace(p.item), []).append(p)
    return list(groups.items())


def _differing_items(run: RunVerification) -> set[str]:
    return {f.item for f in run.findings}


def _verdict(report: VerifyReport) -> tuple[bool, list[str]]:
    dump = report.dump_losses()
    lines = []
    if report.findings:
        good = False
        lines.append(f"{len(report.findings)} finding(s).")
    elif dump["lost"]:
        good = False
        lines.append(f"The destination matches the dump, but the dump lost {dump['lost']} item(s) at export.")
    else:
        good = True
        lines.append("All runs match.")
    if dump["not_in_source"]:
        lines.append(f"Warning: {dump['not_in_source']} item(s) were not in the source any more.")
    return good, lines


_SUMMARY_ROWS = ("params", "series", "points", "files")
_LEFT_OUT = ("Plots left out for this run, to keep the report small on a large project (runs with findings "
             "are drawn first); its numbers are complete here and in the JSON report.")


def render_html(report: VerifyReport) -> str:
    """One self-contained page (no script, no external resource): the verdict and totals; per run,
    its name with the key beside, a summary table, a plot for every compared series grouped by
    namespace, and the findings."""
    doc = report.to_json()
    counts = doc["counts"]
    totals = doc["totals"]
    good, lines = _verdict(report)
    parts = [
        "<!DOCTYPE html><html lang='en'><head><meta charset='utf-8'>",
        "<meta name='viewport' content='width=device-width, initial-scale=1'>",
        f"<title>neptune-migrate verify: {html.escape(report.destination)}</title>",
        f"<style>{_CSS}</style></head><body>",
        f"<h1>Verification: {html.escape(report.target)}</h1>",
        f"<p class='verdict {'ok' if good else 'bad'}'>{html.escape(lines[0])}</p>",
        *(f"<p>{html.escape(line)}</p>" for line in lines[1:]),
        "<table class='totals'><tr><th>runs</th><th>matching</th><th>series compared</th><th>sampled out</th>"
        "<th>points compared</th>"
        + "".join(f"<th>{k}</th>" for k in counts) + "</tr><tr>"
        + f"<td class='n'>{totals['runs']}</td><td class='n'>{totals['runs_matching']}</td>"
        f"<td class='n'>{totals['series_compared']}</td><td class='n'>{totals['series_sampled_out']}</td>"
        f"<td class='n'>{totals['points_compared']}</td>"
        + "".join(f"<td class='n'>{v}</td>" for v in counts.values()) + "</tr></table>",
        "<p class='legend'>"
        f"<span><i class='swatch' style='background:{_DUMP_COLOR};opacity:.5'></i>dump (source)</span>"
        f"<span><i class='swatch' style='background:{_DEST_COLOR}'></i>destination</span>"
        f"<span><i class='swatch' style='background:{_DIFF_COLOR};width:3px;height:14px'></i>"
        "step with a difference</span> Curves are downsampled for drawing; the JSON report and the "
        "findings keep every number exact.</p>",
    ]
    if report.sample is not None:
        parts.append(f"<p>Sampled: {report.sample:.0%} of series compared point by point; "
                     "point counts compared for all.</p>")
    plots_by_run: dict[str, list[PlotData]] = {}
    for p in report.plots:
        plots_by_run.setdefault(p.run, []).append(p)
    for run in report.runs:
        cls = "ok" if run.status == "match" else "bad"
        title = _run_title(run)
        key_beside = f" <code>{html.escape(run.key)}</code>" if run.name else ""
        parts.append(f"<section class='run' data-key='{html.escape(run.key)}' data-name='{html.escape(title)}'>")
        parts.append(f"<h2><span class='run-name'>{html.escape(title)}</span>{key_beside} "
                     f"<span class='badge {cls}'>{html.escape(run.status)}</span></h2>")
        parts.append(f"<p>destination run: <code>{html.escape(str(run.destination_run_id))}</code>"
                     + ("" if run.source_complete else "; the source held only part of this run") + "</p>")
        summary = run.summary()
        parts.append("<table class='summary'><tr><th></th><th>compared</th><th>differing</th></tr>")
        for area in _SUMMARY_ROWS:
            n = summary[area]
            diff_cls = " bad" if n["differing"] else ""
            parts.append(f"<tr><th>{area}</th><td class='n'>{n['compared']}</td>"
                         f"<td class='n{diff_cls}'>{n['differing']}</td></tr>")
        parts.append("</table>")
        if run.series_sampled_out:
            parts.append(f"<p>{run.series_sampled_out} series sampled out (point counts compared only).</p>")
        differing = _differing_items(run)
        groups = _group_plots(plots_by_run.get(run.key, []))
        if run.plots_left_out:
            parts.append(f"<p>{_LEFT_OUT}</p>")
        if groups:
            parts.append("<div class='groups'>")
        for ns, plots in groups:
            parts.append(f"<div class='ns'><h3>{html.escape(ns)}</h3><div class='plots'>")
            for plot in plots:
                differs = plot.differs or plot.item in differing
                mark = " <span class='badge bad'>differs</span>" if differs else ""
                points = _points_text(plot)
                parts.append(
                    f"<figure class='plot{' differs' if differs else ''}' data-item='{html.escape(plot.item)}'>"
                    f"<figcaption>{html.escape(plot.key)}{mark}<small>{html.escape(plot.kind)}, {points}"

                    f"</small></figcaption>{_plot_svg(plot, differs)}</figure>")
            parts.append("</div></div>")
        if groups:
            parts.append("</div>")
        if run.findings:
            parts.append("<h3>findings</h3><table class='findings'><colgroup><col class='kind'><col class='item'>"
                         "<col class='step'><col><col><col></colgroup>"
                         "<tr><th>kind</th><th>item</th><th>step</th><th>expected</th><th>actual</th>"
                         "<th>detail</th></tr>")
            for f in run.findings:
                step = "" if f.step is None else f"{f.step:g}"
                parts.append(
                    f"<tr class='kind-{f.kind}'><td>{f.kind}</td><td>{_fold(f.item)}</td><td>{step}</td>"
                    f"<td>{_fold(user_value(f.expected))}</td><td>{_fold(user_value(f.actual))}</td>"
                    f"<td>{_fold(f.detail)}</td></tr>"
                )
            parts.append("</table>")
        if run.dump_losses:
            parts.append("<h3>the dump's own losses</h3><ul>")
            parts.extend(f"<li>{html.escape(lo['category'])}: {html.escape(lo['kind'])} "
                         f"{html.escape(lo['path'] or '')} ({lo['count']}): {_fold(lo['detail'])}</li>"
                         for lo in run.dump_losses)
            parts.append("</ul>")
        parts.append("</section>")
    parts.append("</body></html>")
    return "\n".join(parts)


def write_html(report: VerifyReport, path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(redact(render_html(report)), encoding="utf-8")


# --- Markdown ---------------------------------------------------------------------------------------

_SPARKS = "\u2581\u2582\u2583\u2584\u2585\u2586\u2587\u2588"
SPARK_WIDTH = 24


def sparkline(values: list[float], width: int = SPARK_WIDTH) -> str:
    """A curve in `width` block characters (each the mean of its share of the points)."""
    finite = [v for v in values if math.isfinite(v) and abs(v) < 1e300]
    if not finite:
        return ""
    if len(finite) > width:
        size = len(finite) / width
        finite = [sum(c) / len(c) for c in (finite[int(i * size):int((i + 1) * size)] for i in range(width)) if c]
    lo, hi = min(finite), max(finite)
    span = hi - lo
    return "".join(_SPARKS[0 if span == 0 else min(7, int((v - lo) / span * 8))] for v in finite)


def _md(text: str, limit: int = FOLD_AT) -> str:
    """A table cell: cut when long, pipes and newlines escaped, in backticks when it is code-like."""
    one = " ".join(text.split())
    if len(one) > limit:
        one = one[:limit] + "..."
    return one.replace("\\", "\\\\").replace("|", "\\|")


def render_markdown(report: VerifyReport) -> str:
    """The HTML report's content as Markdown for a pull request or a ticket: plots become
    sparklines, long values are cut (the JSON report keeps them whole)."""
    doc = report.to_json()
    counts = doc["counts"]
    totals = doc["totals"]
    good, lines = _verdict(report)
    out = [f"# Verification: {_md(report.target, 200)}", "",
           f"**{'OK' if good else 'NOT OK'}**: {lines[0]}", *(["", *lines[1:]] if lines[1:] else []), "",
           "| runs | matching | series compared | sampled out | points compared | "
           + " | ".join(counts) + " |",
           "|" + "---:|" * (5 + len(counts)),
           f"| {totals['runs']} | {totals['runs_matching']} | {totals['series_compared']} | "
           f"{totals['series_sampled_out']} | {totals['points_compared']} | "
           + " | ".join(str(v) for v in counts.values()) + " |", ""]
    if report.sample is not None:
        out += [f"Sampled: {report.sample:.0%} of series compared point by point; point counts compared for all.",
                ""]
    plots_by_run: dict[str, list[PlotData]] = {}
    for p in report.plots:
        plots_by_run.setdefault(p.run, []).append(p)
    for run in report.runs:
        key_beside = f" (`{run.key}`)" if run.name else ""
        out += [f"## {_md(_run_title(run), 200)}{key_beside}: {run.status}", "",
                f"Destination run: `{run.destination_run_id}`"
                + ("" if run.source_complete else "; the source held only part of this run"), ""]
        summary = run.summary()
        out += ["| | compared | differing |", "|---|---:|---:|"]
        out += [f"| {area} | {summary[area]['compared']} | {summary[area]['differing']} |" for area in _SUMMARY_ROWS]
        out.append("")
        differing = _differing_items(run)
        groups = _group_plots(plots_by_run.get(run.key, []))
        if run.plots_left_out:
            out += [_LEFT_OUT, ""]
        if groups:
            out += ["| namespace | series | kind | points (dump / destination) | curve (dump) | |",
                    "|---|---|---|---:|---|---|"]
            for ns, plots in groups:
                for plot in plots:
                    differs = plot.differs or plot.item in differing
                    curve = sparkline(plot.expected_values) if plot.kind == "float" else ""
                    out.append(f"| {_md(ns)} | {_md(plot.key)} | {plot.kind} | {plot.expected_count} / "
                               f"{plot.actual_count} | {curve} | {'**differs**' if differs else 'same'} |")
            out.append("")
        if run.findings:
            out += ["| kind | item | step | expected | actual | detail |", "|---|---|---:|---|---|---|"]
            for f in run.findings:
                step = "" if f.step is None else f"{f.step:g}"
                out.append(f"| {f.kind} | {_md(f.item)} | {step} | {_md(user_value(f.expected))} | "
                           f"{_md(user_value(f.actual))} | {_md(f.detail)} |")
            out.append("")
        for lo in run.dump_losses:
            out.append(f"- the dump's own loss, {lo['category']}: {lo['kind']} {_md(lo['path'] or '')} "
                       f"({lo['count']}): {_md(lo['detail'])}")
        if run.dump_losses:
            out.append("")
    return "\n".join(out).rstrip("\n") + "\n"


def write_markdown(report: VerifyReport, path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(redact(render_markdown(report)), encoding="utf-8")


def print_summary(report: VerifyReport) -> None:
    """Terminal summary on stderr (rich)."""
    from rich.markup import escape
    from rich.table import Table

    from neptune_migrate.console import console

    table = Table(title=f"verify {report.target}")
    for col in ("run", "status", "series", "points", "findings"):
        table.add_column(col)
    for r in report.runs:
        style = "green" if r.status == "match" else "red"
        table.add_row(escape(r.key), f"[{style}]{r.status}[/]", str(r.series_compared),
                      str(r.points_compared), str(len(r.findings)))
    console.print(table)
    for f in report.findings[:30]:
        console.print(f"[red]{f.kind}[/] {escape(str(f))}")
    if len(report.findings) > 30:
        console.print(f"... {len(report.findings) - 30} more findings in the JSON/HTML report")
    for r in report.runs:
        for lo in r.dump_losses:
            style = "red]lost at export" if lo["category"] == "lost" else "yellow]not in the source"
            console.print(f"[{style}:[/] {escape(r.key)}: {lo['kind']} {escape(lo['path'] or '')}: "
                          f"{escape(lo['detail'])} ({lo['count']})")
    counts = report.counts()
    summary = ", ".join(f"{k} {v}" for k, v in counts.items())
    dump = report.dump_losses()
    if report.findings:
        verdict = "[red]mismatches found[/]"
    elif dump["lost"]:
        verdict = "[red]the destination matches the dump, but the dump lost data at export[/]"
    else:
        verdict = "[green]all runs match[/]"
    console.print(f"{verdict}: {len(report.runs)} runs; findings: {summary}; dump's own losses: "
                  f"lost {dump['lost']}, not in the source {dump['not_in_source']}")
    if dump["not_in_source"]:
        console.print(f"[yellow]warning:[/] {dump['not_in_source']} item(s) were not in the source any more "
                      "when it was exported (see the dump's report)")
