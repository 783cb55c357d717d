"""The typer app: parse flags, build objects, call the pipeline. The one errors -> exit-code map."""

from __future__ import annotations

import json
import sys
from datetime import datetime
from pathlib import Path
from typing import Annotated, Any, NoReturn

import typer

from neptune_migrate import __version__
from neptune_migrate.errors import ExitCode, MigrateError, UsageError

_EXIT_DOC = {
    ExitCode.OK: "success",
    ExitCode.PARTIAL: "partial failure, losses, or verify mismatch",
    ExitCode.USAGE: "usage, configuration or unreadable input",
    ExitCode.UNREACHABLE: "cannot reach a source or destination",
    ExitCode.BLOCKED: "dry run found blocking problems",
}
EXIT_CODES_HELP = "Exit codes: " + ", ".join(f"{c.value} {d}" for c, d in _EXIT_DOC.items()) + "."

app = typer.Typer(
    name="neptune-migrate",
    help=(
        "Move Neptune runs to MLflow, Weights & Biases or Aim, completely and provably.\n\n"
        "export: Neptune data -> neutral dump; import: dump -> destination; "
        "verify: read the destination back and compare; inspect: summarise a dump.\n\n"
        + EXIT_CODES_HELP
    ),
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    rich_markup_mode=None,
)


def _version(value: bool) -> None:
    if value:
        typer.echo(f"neptune-migrate {__version__}")
        raise typer.Exit(0)


@app.callback()
def _root(
    verbose: Annotated[int, typer.Option("--verbose", "-v", count=True, help="More log output.")] = 0,
    version: Annotated[  # noqa: ARG001 - handled by the eager callback
        bool, typer.Option("--version", callback=_version, is_eager=True, help="Show the version.")
    ] = False,
) -> None:
    from neptune_migrate.console import setup_logging

    setup_logging(verbose)


def _parse_date(value: str | None, flag: str) -> datetime | None:
    if value is None:
        return None
    try:
        parsed = datetime.fromisoformat(value)
    except ValueError as exc:
        msg = f"{flag} {value!r}: expected an ISO date such as 2025-01-31 or 2025-01-31T12:00+00:00"
        raise UsageError(msg) from exc
    if parsed.tzinfo is None:
        from datetime import timezone

        parsed = parsed.replace(tzinfo=timezone.utc)
    return parsed


RunIdOpt = Annotated[list[str] | None, typer.Option("--run-id", help="Only this run id (repeatable).")]
RunRegexOpt = Annotated[str | None, typer.Option("--run-regex", help="Only run ids matching this regex.")]
TagOpt = Annotated[list[str] | None, typer.Option("--tag", help="Only runs with this tag (repeatable).")]
AfterOpt = Annotated[str | None, typer.Option("--created-after", help="Only runs created at or after (ISO).")]
BeforeOpt = Annotated[str | None, typer.Option("--created-before", help="Only runs created before (ISO).")]
ProjectsOpt = Annotated[
    list[str] | None, typer.Option("--only-project", help="Only runs of this workspace/project.")
]


def _selection(
    only_project: list[str] | None,
    run_id: list[str] | None,
    run_regex: str | None,
    tag: list[str] | None,
    created_after: str | None,
    created_before: str | None,
) -> Any:
    import re

    from neptune_migrate.sources.base import RunSelection

    if run_regex is not None:
        try:
            re.compile(run_regex)
        except re.error as exc:
            msg = f"--run-regex {run_regex!r}: {exc}"
            raise UsageError(msg) from exc
    return RunSelection(
        projects=tuple(only_project or ()),
        run_ids=tuple(run_id or ()),
        run_regex=run_regex,
        tags=tuple(tag or ()),
        created_after=_parse_date(created_after, "--created-after"),
        created_before=_parse_date(created_before, "--created-before"),
    )


@app.command("export")
def export_cmd(
    path: Annotated[Path, typer.Argument(help="Where the Neptune data is (folder or file).")],
    from_: Annotated[
        str,
        typer.Option(
            "--from",
            help="Source form: neptune-offline (.neptune folders), neptune-scale (SQLite logs), "
            "neptune-exporter (official exporter parquet).",
        ),
    ],
    out: Annotated[Path, typer.Option("--out", "-o", help="Dump folder to create or extend.")],
    project: Annotated[
        str | None, typer.Option("--project", help="workspace/project for sources that lack it.")
    ] = None,
    path_map: Annotated[
        list[str] | None,
        typer.Option("--path-map", help="OLD_PREFIX=NEW_PREFIX for moved files (repeatable)."),
    ] = None,
    files_path: Annotated[
        Path | None, typer.Option("--files-path", help="neptune-exporter: its files folder.")
    ] = None,
    include_previews: Annotated[
        bool, typer.Option("--include-previews", help="neptune-scale: keep metric previews.")
    ] = False,
    include_incomplete: Annotated[
        bool, typer.Option("--include-incomplete", help="Also export runs a source marks incomplete.")
    ] = False,
    force: Annotated[bool, typer.Option("--force", help="Re-export runs already complete.")] = False,
    report: Annotated[Path | None, typer.Option("--report", help="Also write the JSON report here.")] = None,
    only_project: ProjectsOpt = None,
    run_id: RunIdOpt = None,
    run_regex: RunRegexOpt = None,
    tag: TagOpt = None,
    created_after: AfterOpt = None,
    created_before: BeforeOpt = None,
) -> None:
    """Read Neptune runs into a neutral dump (Parquet + JSON + content-addressed files)."""
    from neptune_migrate.console import console
    from neptune_migrate.dump.writer import DumpWriter
    from neptune_migrate.pipeline.export import RunOutcome, export_runs
    from neptune_migrate.sources import load_source
    from neptune_migrate.sources.base import PathMap, SourceOptions

    if not path.exists():
        msg = f"{path}: no such file or folder"
        raise UsageError(msg)
    selection = _selection(only_project, run_id, run_regex, tag, created_after, created_before)
    options = SourceOptions(
        path=path,
        project=project,
        path_map=PathMap.parse(path_map or []),
        files_path=files_path,
        include_previews=include_previews,
        include_incomplete=include_incomplete,
    )
    source = load_source(from_, options)
    console.print(f"source: {source.describe()}")

    def on_run(outcome: RunOutcome) -> None:
        style = {"exported": "green", "skipped": "dim", "filtered": "dim", "failed": "red"}
        extra = "" if outcome.complete else " (incomplete in the source)"
        if outcome.partial_copy:
            extra += " (partial copy)"
        msg = f" {outcome.message}" if outcome.message else ""
        console.print(
            f"[{style[outcome.status]}]{outcome.status:>8}[/] {outcome.key}"
            f" points={outcome.points} files={outcome.files}{extra}{msg}"
        )

    with DumpWriter(out) as writer:
        summary = export_runs(
            source, writer, selection, location=str(path.resolve()), force=force, on_run=on_run
        )
        doc = summary.to_json()
        stamp = summary.started_at.replace(":", "").replace("-", "")[:15]
        reports = writer.layout.reports_dir
        reports.mkdir(exist_ok=True)
        text = json.dumps(doc, indent=2, ensure_ascii=False, default=str) + "\n"
        (reports / f"export-{stamp}.json").write_text(text, encoding="utf-8")
        if report is not None:
            report.write_text(text, encoding="utf-8")
    for warning in summary.warnings:
        console.print(f"[yellow]warning:[/] {warning}")
    for outcome in summary.runs:
        for loss in outcome.losses:
            if loss["error"]:
                console.print(f"[red]lost:[/] {outcome.key}: {loss['kind']} {loss['path'] or ''}: "
                              f"{loss['detail']} ({loss['count']})")
    counts = doc["counts"]
    console.print(
        f"exported {counts['exported']}, skipped {counts['skipped']} (already complete), "
        f"filtered {counts['filtered']}, failed {counts['failed']} -> {out}"
    )
    if summary.has_problems:
        raise typer.Exit(ExitCode.PARTIAL)


@app.command("inspect")
def inspect_cmd(
    dump: Annotated[Path, typer.Argument(help="A dump folder.")],
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON on stdout.")] = False,
    no_check: Annotated[bool, typer.Option("--no-check", help="Skip checksum verification.")] = False,
) -> None:
    """Summarise a dump and check every checksum; exit 1 if anything is wrong in it."""
    from neptune_migrate.console import stdout
    from neptune_migrate.dump.reader import DumpReader
    from neptune_migrate.dump.summary import summarize

    summary = summarize(DumpReader(dump), check=not no_check)
    if as_json:
        sys.stdout.write(json.dumps(summary.to_json(), indent=2, ensure_ascii=False) + "\n")
    else:
        from rich.table import Table

        table = Table(title=f"dump {dump} (format {summary.format_version})", show_header=False)
        table.add_row("runs", f"{summary.runs} " + ", ".join(f"{k}={v}" for k, v in summary.kinds.items()))
        table.add_row("attributes", str(summary.fields))
        table.add_row("series", ", ".join(f"{k}={v}" for k, v in sorted(summary.series.items())) or "0")
        table.add_row("points", ", ".join(f"{k}={v}" for k, v in sorted(summary.points.items())) or "0")
        table.add_row("files", f"{summary.files} ({summary.file_bytes} bytes), missing {summary.missing_files}")
        table.add_row("series bytes", str(summary.part_bytes))
        table.add_row("incomplete runs", ", ".join(summary.incomplete_runs) or "none")
        table.add_row("partial copies", ", ".join(summary.partial_copies) or "none")
        table.add_row("losses at export", ", ".join(f"{k}={v}" for k, v in summary.losses.items()) or "none")
        table.add_row("uncommitted (crashed) runs", ", ".join(summary.uncommitted) or "none")
        stdout.print(table)
        for p in summary.problems:
            stdout.print(f"[red]problem:[/] {p}")
        stdout.print(f"{len(summary.problems)} problem(s)")
    if summary.problems:
        raise typer.Exit(ExitCode.PARTIAL)


def _destination_unavailable(name: str) -> NoReturn:
    from neptune_migrate.destinations import DESTINATIONS, KNOWN_DESTINATIONS

    if name not in KNOWN_DESTINATIONS:
        msg = f"unknown destination {name!r}; choose one of: {', '.join(KNOWN_DESTINATIONS)}"
        raise UsageError(msg)
    if name not in DESTINATIONS:
        msg = f"destination {name!r} is not available yet in neptune-migrate {__version__}"
        raise UsageError(msg)
    raise AssertionError(name)


@app.command("import")
def import_cmd(
    dump: Annotated[Path, typer.Argument(help="A dump folder written by `export`.")],
    to: Annotated[str, typer.Option("--to", help="mlflow, wandb or aim.")],
    dry_run: Annotated[  # noqa: ARG001 - used once a destination is registered
        bool, typer.Option("--dry-run", help="Write nothing; show the plan and what would be lost.")
    ] = False,
) -> None:
    """Replay a dump into a destination, idempotently (re-running never duplicates)."""
    from neptune_migrate.dump.reader import DumpReader

    DumpReader(dump)
    _destination_unavailable(to)


@app.command("verify")
def verify_cmd(
    dump: Annotated[Path, typer.Argument(help="A dump folder written by `export`.")],
    to: Annotated[str, typer.Option("--to", help="mlflow, wandb or aim.")],
) -> None:
    """Read the destination back and compare it with the dump, run by run, point by point."""
    from neptune_migrate.dump.reader import DumpReader

    DumpReader(dump)
    _destination_unavailable(to)


def main() -> None:
    """Console-script entry point: the one place errors become exit codes."""
    try:
        result = app(standalone_mode=False)
    except MigrateError as exc:
        from rich.markup import escape

        from neptune_migrate.console import console

        console.print(f"[red]error:[/] {escape(str(exc))}", highlight=False, soft_wrap=True)
        sys.exit(int(exc.exit_code))
    except typer.Exit as exc:
        sys.exit(exc.exit_code)
    except (typer.Abort, KeyboardInterrupt):
        sys.stderr.write("aborted\n")
        sys.exit(130)
    except Exception as exc:
        # Click's usage errors (typer vendors click) arrive here in non-standalone mode.
        if any(cls.__name__ == "ClickException" for cls in type(exc).__mro__):
            exc.show()  # type: ignore[attr-defined]
            sys.exit(ExitCode.USAGE)
        raise
    sys.exit(result if isinstance(result, int) else ExitCode.OK)
