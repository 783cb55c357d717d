"""The typer app: parse flags, build objects, call the pipeline. The one errors -> exit-code map."""

from __future__ import annotations

import json
import sys
from datetime import datetime
from pathlib import Path
from typing import Annotated, Any

import typer

from neptune_migrate import __version__
from neptune_migrate.errors import ExitCode, MigrateError, UsageError, redact_obj

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
            source, writer, selection, location=str(path.resolve()), force=force, on_run=on_run,
            source_root=path,
        )
        doc = summary.to_json()
        reports = writer.layout.reports_dir
        reports.mkdir(exist_ok=True)
        text = json.dumps(redact_obj(doc), indent=2, ensure_ascii=False, default=str) + "\n"
        (reports / f"export-{_stamp()}.json").write_text(text, encoding="utf-8")
        if report is not None:
            report.write_text(text, encoding="utf-8")
    for warning in summary.warnings:
        console.print(f"[yellow]warning:[/] {warning}")
    for outcome in summary.runs:
        for loss in outcome.losses:
            if loss["error"]:
                console.print(f"[red]lost:[/] {outcome.key}: {loss['kind']} {loss['path'] or ''}: "
                              f"{loss['detail']} ({loss['count']})")
            elif loss.get("category") == "not_in_source":
                console.print(f"[yellow]not in the source:[/] {outcome.key}: {loss['kind']} "
                              f"{loss['path'] or ''}: {loss['detail']} ({loss['count']})")
    counts = doc["counts"]
    console.print(
        f"exported {counts['exported']}, skipped {counts['skipped']} (already complete), "
        f"filtered {counts['filtered']}, failed {counts['failed']} -> {out}"
    )
    hint = summary.path_map_hint()
    if hint:
        console.print(f"hint: {hint}")
    if summary.has_problems:
        console.print(f"export exits {int(ExitCode.PARTIAL)}: {summary.problem_line()}")
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
        sys.stdout.write(json.dumps(redact_obj(summary.to_json()), indent=2, ensure_ascii=False) + "\n")
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


ToOpt = Annotated[str, typer.Option("--to", help="Destination: mlflow, wandb or aim.")]
TrackingOpt = Annotated[
    str | None,
    typer.Option("--tracking-uri", envvar="MLFLOW_TRACKING_URI", show_envvar=True,
                 help="MLflow: tracking server URL or sqlite:///path.db."),
]
ExperimentOpt = Annotated[
    str, typer.Option("--experiment-template", help="MLflow/Aim experiment name: {project}, {workspace}, "
                      "{project_name}.")
]
EntityOpt = Annotated[str | None, typer.Option("--entity", envvar="WANDB_ENTITY", help="W&B entity.")]
WandbProjectOpt = Annotated[str, typer.Option("--project-template", help="W&B project name template.")]
WandbModeOpt = Annotated[str, typer.Option("--wandb-mode", help="W&B: online or offline.")]
WandbDirOpt = Annotated[Path | None, typer.Option("--wandb-dir", help="W&B: folder for offline runs.")]
AimRepoOpt = Annotated[str | None, typer.Option("--aim-repo", help="Aim: repository path or aim://host:port.")]
StepPolicyOpt = Annotated[
    str, typer.Option("--step-policy", help="Fractional steps: auto (exact scale, else rank), scale, rank, floor.")
]
AttributesOpt = Annotated[
    str | None, typer.Option("--attributes", help="Only attributes whose path matches this regex.")
]


def _destination(
    to: str, tracking_uri: str | None, experiment_template: str, entity: str | None, project_template: str,
    wandb_mode: str, wandb_dir: Path | None, aim_repo: str | None,
) -> Any:
    from neptune_migrate.destinations import DestinationOptions, load_destination

    return load_destination(to, DestinationOptions(
        tracking_uri=tracking_uri,
        experiment_template=experiment_template,
        entity=entity,
        project_template=project_template,
        wandb_mode=wandb_mode,
        wandb_dir=wandb_dir,
        aim_repo=aim_repo,
    ))


def _import_options(
    selection: Any, attributes: str | None, step_policy: str, workers: int, *, dry_run: bool,
    on_conflict: str = "fail",
) -> Any:
    import re

    from neptune_migrate.pipeline.import_ import ON_CONFLICT, ImportOptions
    from neptune_migrate.pipeline.steps import STEP_POLICIES

    if on_conflict not in ON_CONFLICT:
        msg = f"--on-conflict {on_conflict!r}: choose one of {', '.join(ON_CONFLICT)}"
        raise UsageError(msg)
    if step_policy not in STEP_POLICIES:
        msg = f"--step-policy {step_policy!r}: choose one of {', '.join(STEP_POLICIES)}"
        raise UsageError(msg)
    if attributes is not None:
        try:
            re.compile(attributes)
        except re.error as exc:
            msg = f"--attributes {attributes!r}: {exc}"
            raise UsageError(msg) from exc
    if workers < 1:
        msg = "--workers must be at least 1"
        raise UsageError(msg)
    return ImportOptions(selection=selection, attribute_regex=attributes, step_policy=step_policy,
                         workers=workers, dry_run=dry_run, on_conflict=on_conflict)


def _stamp() -> str:
    from datetime import timezone

    return datetime.now(timezone.utc).strftime("%Y%m%dT%H%M%S.%fZ")


class _Progress:
    """Progress bars (runs, points, ETA) on a terminal; one plain line per run otherwise."""

    def __init__(self, *, dry_run: bool) -> None:
        from neptune_migrate.console import console

        self.console = console
        self.dry_run = dry_run
        self.bar: Any = None

    def __enter__(self) -> _Progress:
        if self.console.is_terminal:
            from rich.progress import BarColumn, Progress, TextColumn, TimeRemainingColumn

            self.bar = Progress(TextColumn("{task.description}"), BarColumn(),
                                TextColumn("{task.completed:,}/{task.total:,}"), TimeRemainingColumn(),
                                console=self.console, transient=True)
            self.bar.start()
        return self

    def __exit__(self, *exc: object) -> None:
        if self.bar is not None:
            self.bar.stop()

    def start(self, runs: int, points: int) -> None:
        if self.bar is not None:
            self.runs_task = self.bar.add_task("runs", total=runs)
            self.points_task = self.bar.add_task("points", total=points)

    def advance(self, points: int) -> None:
        if self.bar is not None:
            self.bar.advance(self.points_task, points)

    def run_done(self, result: Any) -> None:
        from rich.markup import escape

        if self.bar is not None:
            self.bar.advance(self.runs_task, 1)
        ok = result.status in ("created", "skipped", "repaired", "replaced", "would_create", "would_skip",
                               "would_repair", "would_replace")
        style = "green" if ok and not result.has_error_loss else "red"
        msg = f" {escape(result.message)}" if result.message else ""
        self.console.print(f"[{style}]{result.status:>12}[/] {escape(result.key)} points={result.points} "
                           f"files={result.files}{msg}")


def _print_import_summary(report: Any) -> None:
    from rich.markup import escape

    from neptune_migrate.console import console

    doc = report.to_json()
    for r in report.runs:
        for lo in r.losses:
            if lo["error"]:
                console.print(f"[red]lost:[/] {escape(r.key)}: {lo['kind']} {escape(lo['path'] or '')}: "
                              f"{escape(lo['detail'])} ({lo['count']})")
    if report.store:
        console.print(f"store: {escape(report.store)}", soft_wrap=True)
    losses = ", ".join(f"{k}={v}" for k, v in doc["losses"].items()) or "none"
    counts = ", ".join(f"{k} {v}" for k, v in doc["counts"].items())
    t = doc["totals"]
    console.print(f"{'plan' if report.dry_run else 'import'} -> {escape(report.target)}: {counts}; "
                  f"points {t['points']:,}, files {t['files']}, requests ~{t['requests']:,}")
    console.print(f"renamed keys {t['renamed_keys']}, collisions {t['collisions']}, "
                  f"step conversions {t['step_changes']}; losses: {losses}")
    if report.conflicts:
        console.print(f"[red]conflict:[/] {len(report.conflicts)} run(s) in the destination were imported from "
                      f"another dump: {escape(', '.join(report.conflicts))}; pass --on-conflict skip (leave them) "
                      "or --on-conflict replace (import this dump's runs over them)")
    if report.dry_run:
        seconds = sum(r.seconds for r in report.runs)
        console.print(f"estimated time: ~{seconds:,.0f} s (single worker); nothing was written")


def _import_lock(layout: Any, destination: Any, timeout: float | None, *, dry_run: bool) -> Any:
    """The import lock of (dump, destination target); a dry run writes nothing, so takes none."""
    import contextlib

    from rich.markup import escape

    from neptune_migrate.console import console
    from neptune_migrate.pipeline.lock import import_lock

    if dry_run:
        return contextlib.nullcontext()

    def on_wait(holder: Any) -> None:
        limit = "" if timeout is None else f" (at most {timeout:g} s)"
        console.print(f"waiting for the import lock held by {escape(holder.describe())}{limit}", soft_wrap=True)

    return import_lock(layout, destination, timeout=timeout, on_wait=on_wait)


@app.command("import")
def import_cmd(
    dump: Annotated[Path, typer.Argument(help="A dump folder written by `export`.")],
    to: ToOpt,
    dry_run: Annotated[
        bool, typer.Option("--dry-run", help="Write nothing; show the plan and what would be lost.")
    ] = False,
    workers: Annotated[int, typer.Option("--workers", help="Runs imported in parallel.")] = 1,
    lock_timeout: Annotated[
        float | None,
        typer.Option("--lock-timeout", metavar="SECONDS",
                     help="While another import of this dump into the same destination runs, wait at most "
                     "this long, then exit 3 (default: wait until it ends)."),
    ] = None,

    max_outage: Annotated[
        float,
        typer.Option("--max-outage", help="Seconds to wait for a destination that answers nothing "
                     "before failing the runs caught in the outage (0: no waiting beyond each "
                     "request's own retries)."),
    ] = 300.0,
    step_policy: StepPolicyOpt = "auto",
    attributes: AttributesOpt = None,
    on_conflict: Annotated[
        str, typer.Option("--on-conflict", help="A destination run imported from another dump: fail (exit 1, "
                          "naming the runs), skip (leave it) or replace (import over it).")
    ] = "fail",
    report: Annotated[Path | None, typer.Option("--report", help="Also write the JSON report here.")] = None,
    tracking_uri: TrackingOpt = None,
    experiment_template: ExperimentOpt = "{project}",
    entity: EntityOpt = None,
    project_template: WandbProjectOpt = "{project_name}",
    wandb_mode: WandbModeOpt = "online",
    wandb_dir: WandbDirOpt = None,
    aim_repo: AimRepoOpt = None,
    only_project: ProjectsOpt = None,
    run_id: RunIdOpt = None,
    run_regex: RunRegexOpt = None,
    tag: TagOpt = None,
    created_after: AfterOpt = None,
    created_before: BeforeOpt = None,
) -> None:
    """Replay a dump into a destination, idempotently (re-running never duplicates)."""
    from neptune_migrate.dump.reader import DumpReader
    from neptune_migrate.pipeline.import_ import import_runs
    from neptune_migrate.pipeline.ledger import Ledger

    reader = DumpReader(dump)
    selection = _selection(only_project, run_id, run_regex, tag, created_after, created_before)
    options = _import_options(selection, attributes, step_policy, workers, dry_run=dry_run,
                              on_conflict=on_conflict)
    if max_outage < 0:
        msg = "--max-outage must be 0 or more seconds"
        raise UsageError(msg)
    from dataclasses import replace

    options = replace(options, retry=replace(options.retry, max_outage=max_outage))
    destination = _destination(to, tracking_uri, experiment_template, entity, project_template,
                               wandb_mode, wandb_dir, aim_repo)
    if lock_timeout is not None and lock_timeout < 0:
        msg = "--lock-timeout must be 0 or more seconds"
        raise UsageError(msg)
    try:
        ledger = None if dry_run else Ledger(reader.layout, destination.name, destination.describe())
        with _import_lock(reader.layout, destination, lock_timeout, dry_run=dry_run), \
                _Progress(dry_run=dry_run) as progress:
            result = import_runs(reader, destination, options, ledger=ledger, progress=progress)
    finally:
        destination.close()
    text = json.dumps(redact_obj(result.to_json()), indent=2, ensure_ascii=False, default=str) + "\n"
    if not dry_run:
        reader.layout.reports_dir.mkdir(exist_ok=True)
        (reader.layout.reports_dir / f"import-{destination.name}-{_stamp()}.json").write_text(text, encoding="utf-8")
    if report is not None:
        report.write_text(text, encoding="utf-8")
    _print_import_summary(result)
    if result.failed:
        raise typer.Exit(ExitCode.BLOCKED if dry_run else ExitCode.PARTIAL)


@app.command("verify")
def verify_cmd(
    dump: Annotated[Path, typer.Argument(help="A dump folder written by `export`.")],
    to: ToOpt,
    sample: Annotated[
        float | None,
        typer.Option("--sample", help="Fraction (0-1] of series compared point by point (counts always)."),
    ] = None,
    seed: Annotated[int, typer.Option("--seed", help="Seed for --sample.")] = 0,
    report: Annotated[Path | None, typer.Option("--report", help="Write the JSON report here.")] = None,
    html_report: Annotated[Path | None, typer.Option("--html", help="Write the HTML report here.")] = None,
    step_policy: StepPolicyOpt = "auto",
    attributes: AttributesOpt = None,
    tracking_uri: TrackingOpt = None,
    experiment_template: ExperimentOpt = "{project}",
    entity: EntityOpt = None,
    project_template: WandbProjectOpt = "{project_name}",
    wandb_mode: WandbModeOpt = "online",
    wandb_dir: WandbDirOpt = None,
    aim_repo: AimRepoOpt = None,
    only_project: ProjectsOpt = None,
    run_id: RunIdOpt = None,
    run_regex: RunRegexOpt = None,
    tag: TagOpt = None,
    created_after: AfterOpt = None,
    created_before: BeforeOpt = None,
) -> None:
    """Read the destination back and compare it with the dump, run by run, point by point."""
    from neptune_migrate.console import console
    from neptune_migrate.dump.reader import DumpReader
    from neptune_migrate.verify.report import print_summary, write_html, write_json
    from neptune_migrate.verify.verifier import VerifyOptions, verify_runs

    if sample is not None and not 0 < sample <= 1:
        msg = "--sample must be a fraction in (0, 1]"
        raise UsageError(msg)
    reader = DumpReader(dump)
    selection = _selection(only_project, run_id, run_regex, tag, created_after, created_before)
    options = _import_options(selection, attributes, step_policy, 1, dry_run=True)
    destination = _destination(to, tracking_uri, experiment_template, entity, project_template,
                               wandb_mode, wandb_dir, aim_repo)
    from rich.markup import escape

    from neptune_migrate.pipeline.lock import running_import

    holder = running_import(reader.layout, destination)
    if holder is not None:
        console.print(f"[yellow]warning:[/] an import into this destination is running ({escape(holder.describe())}): "
                      "runs it has not finished yet show as missing or incomplete", soft_wrap=True)
    try:
        result = verify_runs(reader, destination, VerifyOptions(import_options=options, sample=sample, seed=seed))
    finally:
        destination.close()
    stamp = _stamp()
    json_path = report or reader.layout.reports_dir / f"verify-{destination.name}-{stamp}.json"
    html_path = html_report or reader.layout.reports_dir / f"verify-{destination.name}-{stamp}.html"
    write_json(result, json_path)
    try:
        write_html(result, html_path)
    except Exception as exc:  # noqa: BLE001 - the JSON report is written; a plot must not hide the verdict
        console.print(f"[yellow]warning:[/] the HTML report could not be rendered ({type(exc).__name__}: {exc})")
    print_summary(result)
    console.print(f"reports: {json_path} {html_path}")
    if not result.ok:
        raise typer.Exit(ExitCode.PARTIAL)


def main() -> None:
    """Console-script entry point: the one place errors become exit codes."""
    try:
        result = app(standalone_mode=False)
    except MigrateError as exc:
        from rich.markup import escape

        from neptune_migrate.console import console
        from neptune_migrate.errors import redact

        console.print(f"[red]error:[/] {escape(redact(str(exc)))}", highlight=False, soft_wrap=True)
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
