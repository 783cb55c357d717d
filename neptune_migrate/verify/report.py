"""Verify reports: rich terminal summary, JSON (docs/verify-report.md), self-contained HTML."""

from __future__ import annotations

import base64
import html
import io
import json
import math
from pathlib import Path

from neptune_migrate.errors import redact, redact_obj
from neptune_migrate.verify.verifier import PlotData, VerifyReport


def write_json(report: VerifyReport, path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    doc = redact_obj(report.to_json())
    path.write_text(json.dumps(doc, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")


def _have_matplotlib() -> bool:
    try:
        import matplotlib  # noqa: F401
    except ImportError:
        return False
    return True


def _plot_png(plot: PlotData) -> str | None:
    """A PNG (base64) of the source curve under the destination curve; None if nothing finite."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    def plottable(steps: list[float], values: list[float]) -> tuple[list[float], list[float]]:
        # NaN, inf and the +-1.8e308 MLflow stores for inf cannot be drawn: leave them out.
        pairs = [(s, v) for s, v in zip(steps, values, strict=True) if math.isfinite(v) and abs(v) < 1e300]
        return [s for s, _ in pairs], [v for _, v in pairs]

    es, ev = plottable(plot.expected_steps, plot.expected_values)
    as_, av = plottable(plot.actual_steps, plot.actual_values)
    if not es and not as_:
        return None
    fig, ax = plt.subplots(figsize=(6.4, 3.2), dpi=100)
    few = len(plot.expected_steps) <= 100  # a handful of points: show them, a line alone may be invisible
    ax.plot(es, ev, linewidth=4, alpha=0.45, color="tab:blue",
            label="dump (source)", marker="o" if few else None, markersize=8)
    ax.plot(as_, av, linewidth=1.2, color="tab:orange",
            label="destination", linestyle="--", marker="x" if few else None, markersize=6)
    ax.set_title(f"{plot.run} {plot.item}", fontsize=8)
    ax.set_xlabel("destination step")
    ax.legend(fontsize=7)
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png")
    plt.close(fig)
    return base64.b64encode(buf.getvalue()).decode("ascii")


_CSS = """
body{font-family:system-ui,sans-serif;margin:2em;color:#222}
table{border-collapse:collapse;margin:.5em 0 1.5em}
td,th{border:1px solid #ccc;padding:3px 8px;font-size:13px;text-align:left;vertical-align:top}
.ok{color:#17803d}.bad{color:#b42318}.kind-missing{background:#fff4e5}.kind-extra{background:#eef4ff}
.kind-differs{background:#fdecec}.kind-error{background:#f3e8ff}
figure{display:inline-block;margin:0 1em 1em 0}
"""


def render_html(report: VerifyReport) -> str:
    """One self-contained page: summary, per run a table of findings, embedded plots."""
    doc = report.to_json()
    counts = doc["counts"]
    totals = doc["totals"]
    dump = report.dump_losses()
    if report.findings:
        verdict = f'<p class="bad">{len(report.findings)} finding(s).</p>'
    elif dump["lost"]:
        verdict = (f'<p class="bad">The destination matches the dump, but the dump lost {dump["lost"]} '
                   "item(s) at export.</p>")
    else:
        verdict = '<p class="ok">All runs match.</p>'
    if dump["not_in_source"]:
        verdict += f'<p>Warning: {dump["not_in_source"]} item(s) were not in the source any more.</p>'

    parts = [
        "<!DOCTYPE html><html lang='en'><head><meta charset='utf-8'>",
        f"<title>neptune-migrate verify: {html.escape(report.destination)}</title>",
        f"<style>{_CSS}</style></head><body>",
        f"<h1>Verification: {html.escape(report.target)}</h1>",
        verdict,
        "<table><tr><th>runs</th><th>matching</th><th>series compared</th><th>sampled out</th>"
        "<th>points compared</th>"
        + "".join(f"<th>{k}</th>" for k in counts) + "</tr><tr>"
        + f"<td>{totals['runs']}</td><td>{totals['runs_matching']}</td><td>{totals['series_compared']}</td>"
        f"<td>{totals['series_sampled_out']}</td><td>{totals['points_compared']}</td>"
        + "".join(f"<td>{v}</td>" for v in counts.values()) + "</tr></table>",
    ]
    if report.sample is not None:
        parts.append(f"<p>Sampled: {report.sample:.0%} of series compared point by point; "
                     "point counts compared for all.</p>")
    plots_by_run: dict[str, list[PlotData]] = {}
    for p in report.plots:
        plots_by_run.setdefault(p.run, []).append(p)
    for run in report.runs:
        cls = "ok" if run.status == "match" else "bad"
        parts.append(f"<h2>{html.escape(run.key)} <span class='{cls}'>{html.escape(run.status)}</span></h2>")
        parts.append(f"<p>destination run: {html.escape(str(run.destination_run_id))}; "
                     f"{run.series_compared} series, {run.points_compared} points compared</p>")
        if run.findings:
            parts.append("<table><tr><th>kind</th><th>item</th><th>step</th><th>expected</th>"
                         "<th>actual</th><th>detail</th></tr>")
            for f in run.findings:
                step = "" if f.step is None else f"{f.step:g}"
                parts.append(
                    f"<tr class='kind-{f.kind}'><td>{f.kind}</td><td>{html.escape(f.item)}</td><td>{step}</td>"
                    f"<td>{html.escape(f.expected or '')}</td><td>{html.escape(f.actual or '')}</td>"
                    f"<td>{html.escape(f.detail)}</td></tr>"
                )
            parts.append("</table>")
        run_plots = plots_by_run.get(run.key, [])
        if run_plots and not _have_matplotlib():
            parts.append("<p>(install matplotlib for plots: pip install \"neptune-migrate[report]\")</p>")
            run_plots = []
        for plot in run_plots:
            png = _plot_png(plot)
            if png is None:
                continue
            parts.append(f"<figure><img alt='{html.escape(plot.item)}' src='data:image/png;base64,{png}'>"
                         f"<figcaption>{html.escape(plot.item)}</figcaption></figure>")
    parts.append("</body></html>")
    return "\n".join(parts)


def write_html(report: VerifyReport, path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(redact(render_html(report)), encoding="utf-8")


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
