"""The typer app: parse flags, build objects, call the pipeline. The one errors -> exit-code map.

Exit codes come from two places only: `exit_code()` below (what a finished verb found: failed
runs, items by category, problems) and `main()` (errors raised on purpose: `MigrateError.exit_code`).
"""

from __future__ import annotations

import json
import sys
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Annotated, Any

import typer

from neptune_migrate import __version__
from neptune_migrate.errors import ExitCode, MigrateError, UsageError, redact_obj
from neptune_migrate.model import LossCategory

SOURCE_NAMES = ("neptune-exporter", "neptune-offline", "neptune-scale")
"""`--from` choices: the keys of `sources.SOURCES`, spelled out so `--help` does not import the
registries (and pyarrow); a test keeps the two equal."""
DESTINATION_NAMES = ("mlflow", "wandb", "aim")
"""`--to` choices: `destinations.KNOWN_DESTINATIONS`, spelled out for the same reason."""

_EXIT_DOC = {
    ExitCode.OK: "success (items not in the source any more are warnings, unless --strict)",
    ExitCode.PARTIAL: "a run failed, data was lost by us, or verify found mismatches",
    ExitCode.USAGE: "usage, configuration, missing extra or unreadable input",
    ExitCode.UNREACHABLE: "a destination cannot be reached (checked before any run)",
    ExitCode.BLOCKED: "dry run found blocking problems (a run would fail or lose data)",
    ExitCode.INTERRUPTED: "interrupted (Ctrl-C); run the same command again to resume",
}
EXIT_CODES_HELP = "Exit codes: " + ", ".join(f"{c.value} {d}" for c, d in _EXIT_DOC.items()) + "."

app = typer.Typer(
    name="neptune-migrate",
    help=(
        "Move Neptune runs to MLflow, Weights & Biases or Aim, completely and provably.\n\n"
        "export: Neptune data -> neutral dump; import: dump -> destination; "
        "verify: read the destination back and compare; inspect (alias summary): summarise a dump.\n\n"
        + EXIT_CODES_HELP
    ),
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    rich_markup_mode=None,
    context_settings={"help_option_names": ["-h", "--help"]},
)

_ARGV: list[str] | None = None
"""The command line `main()` ran with (for the resume hint after Ctrl-C)."""


# ---------------------------------------------------------------------------------------------
# The one map from what a verb found to its exit code.


@dataclass(frozen=True)
class Outcome:
    """What a finished verb found, in the terms the exit code depends on."""

    failed_runs: int = 0
    """Runs that could not be exported, imported (or would not be, in a dry run)."""
    categories: Mapping[str, int] = field(default_factory=dict)
    """Reported items summed per `LossCategory` value."""
    incomplete_runs: int = 0
    """Runs the source itself holds only in part (a crash cut its log): a warning, like not_in_source."""
    problems: int = 0
    """Unreadable input (source warnings, damaged dump) or verify findings."""
    problem_word: str = "problem(s)"
    conflicts: int = 0
    """Destination runs of another dump left in place (`--on-conflict fail`)."""
    dry_run: bool = False

    def reasons(self, *, strict: bool) -> list[str]:
        """Why the exit code is not 0, in words (empty when it is 0)."""
        out: list[str] = []
        if self.failed_runs:
            out.append(f"{self.failed_runs} run(s) {'would fail' if self.dry_run else 'failed'}")
        if self.conflicts:
            out.append(f"{self.conflicts} run(s) imported from another dump (--on-conflict)")
        lost = self.categories.get(LossCategory.LOST.value, 0)
        if lost:
            out.append(f"lost: {lost}")
        if self.problems:
            out.append(f"{self.problems} {self.problem_word}")
        if strict:
            gone = self.categories.get(LossCategory.NOT_IN_SOURCE.value, 0)
            if gone:
                out.append(f"not in the source any more: {gone} (--strict)")
            if self.incomplete_runs:
                out.append(f"{self.incomplete_runs} run(s) incomplete in the source (--strict)")
        return out


def exit_code(outcome: Outcome, *, strict: bool = False) -> ExitCode:
    """The one map: lost by us, failed runs and problems exit 1 (4 in a dry run); items not in the
    source any more (and runs a crash cut short) only with `--strict`; changed form never."""
    if not outcome.reasons(strict=strict):
        return ExitCode.OK
    return ExitCode.BLOCKED if outcome.dry_run else ExitCode.PARTIAL


def _finish(verb: str, outcome: Outcome, *, strict: bool, summary: dict[str, Any] | None) -> None:
    """Print the verdict (the last line says why when non-zero), the `--json` summary, and exit."""
    from neptune_migrate.console import console

    code = exit_code(outcome, strict=strict)
    reasons = outcome.reasons(strict=strict)
    if summary is not None:
        summary["exit_code"] = int(code)
        summary["why"] = reasons
        sys.stdout.write(json.dumps(summary, ensure_ascii=False, default=str) + "\n")
        sys.stdout.flush()
    if code != ExitCode.OK:
        console.print(f"[red]{verb} exit {int(code)}:[/] {_esc('; '.join(reasons))}")
        raise typer.Exit(int(code))


def _esc(text: object) -> str:
    from rich.markup import escape

    return escape(str(text))


def category_line(categories: Mapping[str, int], by_kind: Mapping[str, Mapping[str, int]] | None = None) -> str:
    """`lost: N; not in the source any more: N (warning); changed form: N`, with the kinds behind each."""

    def part(label: str, cat: LossCategory, suffix: str = "") -> str:
        n = categories.get(cat.value, 0)
        suffix = suffix if n else ""
        kinds = (by_kind or {}).get(cat.value) or {}
        detail = f" ({', '.join(f'{k}={v}' for k, v in sorted(kinds.items()))})" if kinds and n else ""
        return f"{label}: {n}{suffix}{detail}"

    return "; ".join((
        part("lost", LossCategory.LOST),
        part("not in the source any more", LossCategory.NOT_IN_SOURCE, " (warning)"),
        part("changed form", LossCategory.CHANGED_FORM),
    ))


def _kinds_by_category(items: list[dict[str, Any]]) -> dict[str, dict[str, int]]:
    from neptune_migrate.model import Loss

    out: dict[str, dict[str, int]] = {}
    for item in items:
        lo = Loss.from_json(item)
        kinds = out.setdefault(lo.category.value, {})
        kinds[lo.kind] = kinds.get(lo.kind, 0) + lo.count
    return out


def _print_items(key: str, items: list[dict[str, Any]]) -> None:
    """One line per item lost by us (the others are summed in the category line)."""
    from neptune_migrate.console import console

    for lo in items:
        if lo.get("category", "lost" if lo.get("error") else "") == LossCategory.LOST.value:
            console.print(f"[red]lost:[/] {_esc(key)}: {_esc(lo['kind'])} {_esc(lo['path'] or '')}: "
                          f"{_esc(lo['detail'])} ({lo['count']})")


# ---------------------------------------------------------------------------------------------
# Options shared by several verbs. Each is one `Annotated` alias: adding a flag is a local edit.


def _choice(choices: list[str] | tuple[str, ...]) -> dict[str, Any]:
    """Option settings that show the choices in `--help` and refuse others (exit 2, click's message)."""
    allowed = tuple(choices)

    def check(value: str | None) -> str | None:
        if value is not None and value not in allowed:
            msg = f"{value!r} is not one of: {', '.join(allowed)}"
            raise typer.BadParameter(msg)
        return value

    return {"metavar": "[" + "|".join(allowed) + "]", "callback": check}


def _version(value: bool) -> None:
    if value:
        typer.echo(f"neptune-migrate {__version__}")
        raise typer.Exit(0)


def _verbosity(value: int) -> int:
    if value:
        from neptune_migrate.console import setup_logging

        setup_logging(value)
    return value


@app.callback()
def _root(
    verbose: Annotated[int, typer.Option("--verbose", "-v", count=True, help="More log output.")] = 0,
    version: Annotated[  # noqa: ARG001 - handled by the eager callback
        bool, typer.Option("--version", callback=_version, is_eager=True, help="Show the version.")
    ] = False,
) -> None:
    from neptune_migrate.console import setup_logging

    setup_logging(verbose)


VerboseOpt = Annotated[
    int, typer.Option("--verbose", "-v", count=True, callback=_verbosity, help="More log output (-vv: debug).")
]
StrictOpt = Annotated[
    bool, typer.Option("--strict", help="Also exit 1 when items are not in the source any more (warnings).")
]
JsonOpt = Annotated[bool, typer.Option("--json", help="Print one machine-readable summary (JSON) on stdout.")]
ShardOpt = Annotated[
    str | None,
    typer.Option("--shard", metavar="K/N",
                 help="Only shard K of N (K from 1) of the runs, by a stable hash of the run key (forks with "
                 "their root); auto/N: K from JOB_COMPLETION_INDEX (Kubernetes Indexed Job); auto: K and N "
                 "from the Slurm array. See docs/scale-out.md."),
]


def _shard(spec: str | None) -> Any:
    """`--shard` -> a `pipeline.shard.Shard` (None without the flag)."""
    if spec is None:
        return None
    import os

    from neptune_migrate.pipeline.shard import parse

    return parse(spec, os.environ)


def _shard_doc(shard: Any, reader: Any) -> dict[str, Any]:
    """What a shard's report says about the shard and the dump (for `report merge`)."""
    from neptune_migrate.pipeline.shard import report_facts

    return report_facts(shard, reader)


def _shard_path(path: Path | None, shard: Any) -> Path | None:
    """A report path the user gave, made the shard's own (`v.json` -> `v.shard-2-of-8.json`): N shards
    started with the same command line never write the same file."""
    if path is None or shard is None:
        return path
    return path.with_name(f"{path.stem}.{shard.label}{path.suffix}")


def _report_name(verb: str, shard: Any, *parts: str) -> str:
    """`<verb>[-<parts>][-shard-K-of-N]-<stamp>.json`: shards never write the same report file."""
    label = [shard.label] if shard is not None else []
    return "-".join([verb, *parts, *label, _stamp()]) + ".json"


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


RunIdOpt = Annotated[
    list[str] | None,
    typer.Option("--run-id", "-r", help="Only this run id (repeatable; -r as in neptune-exporter load)."),
]
RunRegexOpt = Annotated[str | None, typer.Option("--run-regex", help="Only run ids matching this regex.")]
ExportRunRegexOpt = Annotated[
    str | None,
    typer.Option("--run-regex", "-r", help="Only run ids matching this regex (searched; -r as in neptune-exporter "
                 "export, whose neptune2 flavour anchored it at the start: add ^ for that)."),
]
TagOpt = Annotated[list[str] | None, typer.Option("--tag", help="Only runs with this tag (repeatable).")]
AfterOpt = Annotated[str | None, typer.Option("--created-after", help="Only runs created at or after (ISO).")]
BeforeOpt = Annotated[str | None, typer.Option("--created-before", help="Only runs created before (ISO).")]
ProjectsOpt = Annotated[
    list[str] | None,
    typer.Option("--only-project", "-p", "--project-ids",
                 help="Only runs of this workspace/project (repeatable; -p/--project-ids as in neptune-exporter)."),
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


def _write_report(path: Path, text: str) -> None:
    """Write a report where the user asked, creating the folders (as `verify --html` does)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text, encoding="utf-8")


def _stamp() -> str:
    from datetime import timezone

    return datetime.now(timezone.utc).strftime("%Y%m%dT%H%M%S.%fZ")


def _resume_hint() -> str:
    from neptune_migrate.errors import redact

    if _ARGV is None:
        return "run the same command again"
    import shlex

    return "run the same command again: " + redact("neptune-migrate " + shlex.join(_ARGV))


# ---------------------------------------------------------------------------------------------
# export


@app.command("export")
def export_cmd(
    path: Annotated[Path, typer.Argument(help="Where the Neptune data is (folder or file).")],
    from_: Annotated[
        str,
        typer.Option(
            "--from",
            **_choice(SOURCE_NAMES),
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
        Path | None, typer.Option("--files-path", "-f", help="neptune-exporter: its files folder.")
    ] = None,
    include_previews: Annotated[
        bool, typer.Option("--include-previews", help="neptune-scale: keep metric previews.")
    ] = False,
    include_incomplete: Annotated[
        bool, typer.Option("--include-incomplete", help="Also export runs a source marks incomplete.")
    ] = False,
    force: Annotated[bool, typer.Option("--force", help="Re-export runs already complete.")] = False,
    report: Annotated[Path | None, typer.Option("--report", help="Also write the JSON report here.")] = None,
    strict: StrictOpt = False,
    as_json: JsonOpt = False,
    only_project: ProjectsOpt = None,
    run_id: Annotated[list[str] | None, typer.Option("--run-id", help="Only this run id (repeatable).")] = None,
    run_regex: ExportRunRegexOpt = None,
    tag: TagOpt = None,
    created_after: AfterOpt = None,
    created_before: BeforeOpt = None,
    shard_spec: ShardOpt = None,
    verbose: VerboseOpt = 0,  # noqa: ARG001 - applied by its callback
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
    shard = _shard(shard_spec)
    report = _shard_path(report, shard)
    options = SourceOptions(
        path=path,
        project=project,
        path_map=PathMap.parse(path_map or []),
        files_path=files_path,
        include_previews=include_previews,
        include_incomplete=include_incomplete,
    )
    source = load_source(from_, options)
    console.print(f"source: {_esc(source.describe())}")

    def on_run(outcome: RunOutcome) -> None:
        style = {"exported": "green", "skipped": "dim", "filtered": "dim", "failed": "red"}
        extra = "" if outcome.complete else " (incomplete in the source)"
        if outcome.partial_copy:
            extra += " (partial copy)"
        msg = f" {outcome.message}" if outcome.message else ""
        console.print(
            f"[{style[outcome.status]}]{outcome.status:>8}[/] {_esc(outcome.key)}"
            f" points={outcome.points} files={outcome.files}{_esc(extra + msg)}"
        )

    with DumpWriter(out, shard.label if shard is not None else None) as writer:
        summary = export_runs(
            source, writer, selection, location=str(path.resolve()), force=force, on_run=on_run,
            source_root=path, shard=shard,
        )
        doc = summary.to_json()
        if shard is not None:
            doc["shard"] = shard.to_json()
        reports = writer.layout.reports_dir
        reports.mkdir(exist_ok=True)
        text = json.dumps(redact_obj(doc), indent=2, ensure_ascii=False, default=str) + "\n"
        report_path = reports / _report_name("export", shard)
        report_path.write_text(text, encoding="utf-8")
        if report is not None:
            _write_report(report, text)
    for warning in summary.warnings:
        console.print(f"[yellow]warning:[/] {_esc(warning)}")
    items: list[dict[str, Any]] = []
    for run_outcome in summary.runs:
        if run_outcome.status == "exported":
            _print_items(run_outcome.key, run_outcome.losses)
            items.extend(run_outcome.losses)
    counts = doc["counts"]
    console.print(category_line(doc["categories"], _kinds_by_category(items)))
    console.print(
        f"exported {counts['exported']}, skipped {counts['skipped']} (already complete), "
        f"filtered {counts['filtered']}, failed {counts['failed']} -> {_esc(out)}"
    )
    hint = summary.path_map_hint()
    if hint:
        console.print(f"hint: {_esc(hint)}")
    outcome = Outcome(failed_runs=counts["failed"], categories=doc["categories"],
                      incomplete_runs=doc["incomplete_runs"], problems=len(summary.warnings),
                      problem_word="source warning(s)")
    json_summary = None
    if as_json:
        json_summary = {"command": "export", "dump": str(out), "report": str(report or report_path),
                        "counts": counts, "categories": doc["categories"],
                        "incomplete_runs": doc["incomplete_runs"], "warnings": len(summary.warnings)}
    _finish("export", outcome, strict=strict, summary=json_summary)


# ---------------------------------------------------------------------------------------------
# inspect (alias summary)


def inspect_cmd(
    dump: Annotated[Path, typer.Argument(help="A dump folder.")],
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON on stdout.")] = False,
    no_check: Annotated[bool, typer.Option("--no-check", help="Skip checksum verification.")] = False,
    verbose: VerboseOpt = 0,  # noqa: ARG001 - applied by its callback
) -> None:
    """Summarise a dump and check every checksum; exit 1 if anything is wrong in it."""
    from neptune_migrate.console import console
    from neptune_migrate.dump.reader import DumpReader
    from neptune_migrate.dump.summary import summarize

    summary = summarize(DumpReader(dump), check=not no_check)
    if as_json:
        sys.stdout.write(json.dumps(redact_obj(summary.to_json()), indent=2, ensure_ascii=False) + "\n")
    else:
        from rich.table import Table

        table = Table(title=f"dump {_esc(dump)} (format {summary.format_version})", show_header=False)
        table.add_row("runs", f"{summary.runs} " + ", ".join(f"{k}={v}" for k, v in summary.kinds.items()))
        table.add_row("attributes", str(summary.fields))
        table.add_row("series", ", ".join(f"{k}={v}" for k, v in sorted(summary.series.items())) or "0")
        table.add_row("points", ", ".join(f"{k}={v}" for k, v in sorted(summary.points.items())) or "0")
        table.add_row("files", f"{summary.files} ({summary.file_bytes} bytes), missing {summary.missing_files}")
        table.add_row("series bytes", str(summary.part_bytes))
        table.add_row("incomplete runs", _esc(", ".join(summary.incomplete_runs) or "none"))
        table.add_row("partial copies", _esc(", ".join(summary.partial_copies) or "none"))
        table.add_row("items at export", ", ".join(f"{k}={v}" for k, v in summary.losses.items()) or "none")
        table.add_row("uncommitted (crashed) runs", _esc(", ".join(summary.uncommitted) or "none"))
        console.print(table)  # where every verb prints its human output: stderr
        for p in summary.problems:
            console.print(f"[red]problem:[/] {_esc(p)}")
        console.print(f"{len(summary.problems)} problem(s)")
    if summary.problems:
        raise typer.Exit(ExitCode.PARTIAL)


app.command("inspect")(inspect_cmd)
app.command("summary", help="Alias of inspect (the name neptune-exporter uses).")(inspect_cmd)


# ---------------------------------------------------------------------------------------------
# import and verify


def _dest_help(names: tuple[str, ...]) -> str:
    return "Destination: " + ", ".join(names) + "."


ToOpt = Annotated[
    str, typer.Option("--to", **_choice(DESTINATION_NAMES), help=_dest_help(DESTINATION_NAMES))
]
TrackingOpt = Annotated[
    str | None,
    typer.Option("--tracking-uri", "--mlflow-tracking-uri", envvar="MLFLOW_TRACKING_URI", show_envvar=True,
                 help="MLflow: tracking server URL or sqlite:///path.db."),
]
ExperimentOpt = Annotated[
    str, typer.Option("--experiment-template", help="MLflow/Aim experiment name: {project}, {workspace}, "
                      "{project_name}.")
]
EntityOpt = Annotated[
    str | None, typer.Option("--entity", "--wandb-entity", envvar="WANDB_ENTITY", help="W&B entity.")
]
WandbProjectOpt = Annotated[str, typer.Option("--project-template", help="W&B project name template.")]
WandbModeOpt = Annotated[
    str, typer.Option("--wandb-mode", **_choice(["online", "offline"]), help="W&B: online or offline.")
]
WandbDirOpt = Annotated[Path | None, typer.Option("--wandb-dir", help="W&B: folder for offline runs.")]
AimRepoOpt = Annotated[str | None, typer.Option("--aim-repo", help="Aim: repository path or aim://host:port.")]
StepPolicyOpt = Annotated[
    str,
    typer.Option("--step-policy", **_choice(["auto", "scale", "rank", "floor"]),
                 help="Fractional steps: auto (exact scale, else rank), scale, rank, floor."),
]
AttributesOpt = Annotated[
    list[str] | None,
    typer.Option("--attributes", "-a", help="Only these attributes: one value is a regex searched in the path; "
                 "several (repeat -a) are exact paths, as in neptune-exporter."),
]


def _attribute_regex(values: list[str] | None) -> str | None:
    """neptune-exporter's `-a`: one value is a regex, several are exact attribute paths."""
    import re

    if not values:
        return None
    if len(values) == 1:
        return values[0]
    return "^(?:" + "|".join(re.escape(v) for v in values) + ")$"


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


class _Progress:
    """Progress bars (runs, points, ETA) on a terminal; one plain line per run otherwise."""

    def __init__(self, *, dry_run: bool) -> None:
        from neptune_migrate.console import console

        self.console = console
        self.dry_run = dry_run
        self.bar: Any = None
        self.total = 0
        self.done: list[Any] = []

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
        self.total = runs
        if self.bar is not None:
            self.runs_task = self.bar.add_task("runs", total=runs)
            self.points_task = self.bar.add_task("points", total=points)

    def advance(self, points: int) -> None:
        if self.bar is not None:
            self.bar.advance(self.points_task, points)

    def run_done(self, result: Any) -> None:
        self.done.append(result)
        if self.bar is not None:
            self.bar.advance(self.runs_task, 1)
        ok = result.status in ("created", "skipped", "repaired", "replaced", "would_create", "would_skip",
                               "would_repair", "would_replace")
        style = "green" if ok and not result.has_error_loss else "red"
        msg = f" {_esc(result.message)}" if result.message else ""
        self.console.print(f"[{style}]{result.status:>12}[/] {_esc(result.key)} points={result.points} "
                           f"files={result.files}{msg}")

    def interrupted(self, what: str) -> None:
        from collections import Counter

        statuses = Counter(r.status for r in self.done)
        detail = ", ".join(f"{k} {v}" for k, v in sorted(statuses.items())) or "none finished"
        self.console.print(f"[yellow]interrupted:[/] {len(self.done)} of {self.total} runs done ({detail}). "
                           f"{what}; to resume, {_esc(_resume_hint())}")


def _print_import_summary(report: Any, doc: dict[str, Any]) -> None:
    from neptune_migrate.console import console

    items: list[dict[str, Any]] = []
    for r in report.runs:
        _print_items(r.key, r.losses)
        items.extend(r.losses)
    if report.store:
        console.print(f"store: {_esc(report.store)}", soft_wrap=True)
    counts = ", ".join(f"{k} {v}" for k, v in doc["counts"].items())
    t = doc["totals"]
    console.print(f"{'plan' if report.dry_run else 'import'} -> {_esc(report.target)}: {counts}; "
                  f"points {t['points']:,}, files {t['files']}, requests ~{t['requests']:,}")
    console.print(f"renamed keys {t['renamed_keys']}, collisions {t['collisions']}, "
                  f"step conversions {t['step_changes']}")
    console.print(category_line(doc["categories"], _kinds_by_category(items)))
    if report.conflicts:
        console.print(f"[red]conflict:[/] {len(report.conflicts)} run(s) in the destination were imported from "
                      f"another dump: {_esc(', '.join(report.conflicts))}; pass --on-conflict skip (leave them) "
                      "or --on-conflict replace (import this dump's runs over them)")
    if report.dry_run:
        seconds = sum(r.seconds for r in report.runs)
        console.print(f"estimated time: ~{seconds:,.0f} s (single worker); nothing was written")


def _import_lock(layout: Any, destination: Any, timeout: float | None, *, dry_run: bool, shard: Any = None) -> Any:
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

    return import_lock(layout, destination, timeout=timeout, on_wait=on_wait, shard=shard)


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
    strict: StrictOpt = False,
    as_json: JsonOpt = False,
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
    shard_spec: ShardOpt = None,
    verbose: VerboseOpt = 0,  # noqa: ARG001 - applied by its callback
) -> None:
    """Replay a dump into a destination, idempotently (re-running never duplicates)."""
    from neptune_migrate.dump.reader import DumpReader
    from neptune_migrate.pipeline.import_ import import_runs
    from neptune_migrate.pipeline.ledger import Ledger

    reader = DumpReader(dump)
    selection = _selection(only_project, run_id, run_regex, tag, created_after, created_before)
    options = _import_options(selection, _attribute_regex(attributes), step_policy, workers, dry_run=dry_run,
                              on_conflict=on_conflict)
    if max_outage < 0:
        msg = "--max-outage must be 0 or more seconds"
        raise UsageError(msg)
    from dataclasses import replace

    shard = _shard(shard_spec)
    report = _shard_path(report, shard)
    options = replace(options, retry=replace(options.retry, max_outage=max_outage), shard=shard)
    destination = _destination(to, tracking_uri, experiment_template, entity, project_template,
                               wandb_mode, wandb_dir, aim_repo)
    if lock_timeout is not None and lock_timeout < 0:
        msg = "--lock-timeout must be 0 or more seconds"
        raise UsageError(msg)
    progress = _Progress(dry_run=dry_run)
    try:
        destination.check()  # before the lock file: an unreachable destination leaves no trace in the dump
        ledger = None if dry_run else Ledger(reader.layout, destination.name, destination.describe(), shard)
        with _import_lock(reader.layout, destination, lock_timeout, dry_run=dry_run, shard=shard), progress:
            result = import_runs(reader, destination, options, ledger=ledger, progress=progress)
    except KeyboardInterrupt:
        what = ("nothing was written" if dry_run else
                "finished runs are kept; a run cut short is repaired on the next import")
        progress.interrupted(what)
        raise typer.Exit(ExitCode.INTERRUPTED) from None
    finally:
        destination.close()
    doc = result.to_json()
    if shard is not None:
        doc["shard"] = _shard_doc(shard, reader)
    text = json.dumps(redact_obj(doc), indent=2, ensure_ascii=False, default=str) + "\n"
    report_path: Path | None = report
    if not dry_run:
        reader.layout.reports_dir.mkdir(exist_ok=True)
        report_path = reader.layout.reports_dir / _report_name("import", shard, destination.name)
        report_path.write_text(text, encoding="utf-8")
    if report is not None:
        _write_report(report, text)
    _print_import_summary(result, doc)
    failed = sum(1 for r in result.runs if r.status in ("failed", "would_fail"))
    outcome = Outcome(failed_runs=failed, categories=doc["categories"], conflicts=len(result.conflicts),
                      dry_run=dry_run)
    json_summary = None
    if as_json:
        json_summary = {"command": "import", "dry_run": dry_run, "destination": result.destination,
                        "target": result.target, "report": None if report_path is None else str(report or report_path),
                        "counts": doc["counts"], "totals": doc["totals"], "categories": doc["categories"],
                        "retries": doc["retries"]}
    _finish("plan" if dry_run else "import", outcome, strict=strict, summary=json_summary)


class _VerifyProgress:
    """A progress bar of runs on a terminal; nothing per run otherwise (the summary table lists them)."""

    def __init__(self) -> None:
        from neptune_migrate.console import console

        self.console = console
        self.bar: Any = None
        self.total = 0
        self.done: list[Any] = []

    def __enter__(self) -> _VerifyProgress:
        if self.console.is_terminal:
            from rich.progress import BarColumn, Progress, TextColumn, TimeRemainingColumn

            self.bar = Progress(TextColumn("verify runs"), BarColumn(), TextColumn("{task.completed:,}/{task.total:,}"),
                                TimeRemainingColumn(), console=self.console, transient=True)
            self.bar.start()
        return self

    def __exit__(self, *exc: object) -> None:
        if self.bar is not None:
            self.bar.stop()

    def start(self, runs: int) -> None:
        self.total = runs
        if self.bar is not None:
            self.task = self.bar.add_task("runs", total=runs)
        else:
            self.console.print(f"verifying {runs} run(s)")

    def run_done(self, result: Any) -> None:
        self.done.append(result)
        if self.bar is not None:
            self.bar.advance(self.task, 1)


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
    strict: StrictOpt = False,
    as_json: JsonOpt = False,
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
    shard_spec: ShardOpt = None,
    verbose: VerboseOpt = 0,  # noqa: ARG001 - applied by its callback
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
    options = _import_options(selection, _attribute_regex(attributes), step_policy, 1, dry_run=True)
    shard = _shard(shard_spec)
    report, html_report = _shard_path(report, shard), _shard_path(html_report, shard)
    from dataclasses import replace

    options = replace(options, shard=shard)
    destination = _destination(to, tracking_uri, experiment_template, entity, project_template,
                               wandb_mode, wandb_dir, aim_repo)
    from neptune_migrate.pipeline.lock import running_import

    holder = running_import(reader.layout, destination, shard)
    if holder is not None:
        console.print(f"[yellow]warning:[/] an import into this destination is running ({_esc(holder.describe())}): "
                      "runs it has not finished yet show as missing or incomplete", soft_wrap=True)
    progress = _VerifyProgress()
    try:
        with progress:
            result = verify_runs(reader, destination, VerifyOptions(import_options=options, sample=sample, seed=seed),
                                 progress=progress)
    except KeyboardInterrupt:
        from collections import Counter

        statuses = Counter(r.status for r in progress.done)
        detail = ", ".join(f"{k} {v}" for k, v in sorted(statuses.items())) or "none finished"
        console.print(f"[yellow]interrupted:[/] {len(progress.done)} of {progress.total} runs verified ({detail}); "
                      f"verify only reads, nothing was written; to resume, {_esc(_resume_hint())} "
                      f"(add --run-id for the runs left)")
        raise typer.Exit(ExitCode.INTERRUPTED) from None
    finally:
        destination.close()
    name = _report_name("verify", shard, destination.name)
    json_path = report or reader.layout.reports_dir / name
    html_path = html_report or reader.layout.reports_dir / name.replace(".json", ".html")
    write_json(result, json_path)
    if shard is not None:  # the shard's facts for `report merge`, beside the report's own fields
        doc = json.loads(json_path.read_text(encoding="utf-8"))
        doc["shard"] = _shard_doc(shard, reader)
        json_path.write_text(json.dumps(doc, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
    try:
        write_html(result, html_path)
    except Exception as exc:  # noqa: BLE001 - the JSON report is written; a plot must not hide the verdict
        console.print(f"[yellow]warning:[/] the HTML report could not be rendered ({_esc(type(exc).__name__)}: "
                      f"{_esc(exc)})")
    print_summary(result)
    categories = result.dump_losses()  # the dump's own lost / not-in-source items: part of the verdict
    console.print(f"reports: {_esc(json_path)} {_esc(html_path)}")
    incomplete = sum(1 for r in result.runs if not r.source_complete)
    outcome = Outcome(categories=categories, incomplete_runs=incomplete,
                      problems=len(result.findings), problem_word="finding(s)")
    json_summary = None
    if as_json:
        doc = result.to_json()
        json_summary = {"command": "verify", "ok": result.ok, "destination": result.destination,
                        "target": result.target, "reports": {"json": str(json_path), "html": str(html_path)},
                        "counts": doc["counts"], "totals": doc["totals"], "dump_categories": categories}
    _finish("verify", outcome, strict=strict, summary=json_summary)


# ---------------------------------------------------------------------------------------------
# report merge

report_app = typer.Typer(help="Work with reports: merge the reports of the shards of one job.",
                         no_args_is_help=True, rich_markup_mode=None)
app.add_typer(report_app, name="report")


@report_app.command("merge")
def report_merge_cmd(
    dirs: Annotated[list[Path], typer.Argument(
        metavar="DIR...", help="Folders holding the shards' reports, or dumps (their _reports/ is read).")],
    kind: Annotated[
        str | None, typer.Option("--kind", **_choice(["import", "verify"]),
                                 help="Which reports to merge (needed when the folders hold both).")
    ] = None,
    dump: Annotated[
        Path | None, typer.Option("--dump", help="The dump the shards worked on (default: a DIR that is a dump); "
                                  "every run of it must be in one shard's report.")
    ] = None,
    shard_count: Annotated[
        int | None, typer.Option("--shard-count", metavar="N", help="Only reports of shards K/N with this N "
                                 "(when the folders hold reports of jobs split differently).")
    ] = None,
    out: Annotated[Path | None, typer.Option("--out", "-o", help="Write the merged JSON report here "
                                             "(default: merged-<kind>-<time>.json in the first folder).")] = None,
    as_json: JsonOpt = False,
    verbose: VerboseOpt = 0,  # noqa: ARG001 - applied by its callback
) -> None:
    """One import or verify report from the shards' reports; exit 1 when a shard is missing, a run
    was handled by two shards or by none, or the merged report itself fails."""
    from neptune_migrate.console import console
    from neptune_migrate.pipeline.report_merge import merge, report_dirs

    result = merge(dirs, kind=kind, dump=dump, count=shard_count)
    doc = result.report
    path = out or report_dirs(dirs[:1])[0] / f"merged-{result.kind}-{_stamp()}.json"
    _write_report(path, json.dumps(redact_obj(doc), indent=2, ensure_ascii=False, default=str) + "\n")
    for shard in doc["shards"]:
        style = {"ok": "green", "failed": "red", "missing": "red"}[shard["status"]]
        detail = "" if shard["report"] is None else f" runs={shard['runs']} {_esc(shard['report'])}"
        console.print(f"[{style}]{shard['status']:>8}[/] shard {shard['shard']}{detail}", soft_wrap=True)
    for problem in result.problems:
        console.print(f"[red]problem:[/] {_esc(problem)}", soft_wrap=True)
    counts = ", ".join(f"{k} {v}" for k, v in doc.get("counts", {}).items())
    console.print(f"merged {len(doc['shards'])} shard(s) of {result.kind} -> {_esc(doc.get('target'))}: "
                  f"{len(doc.get('runs', []))} run(s); {counts}")
    console.print(f"report: {_esc(path)}")
    runs = doc.get("runs", [])
    if result.kind == "import":
        outcome = Outcome(
            failed_runs=sum(1 for r in runs if r.get("status") in ("failed", "would_fail")),
            categories=doc.get("categories", {}),
            conflicts=sum(1 for r in runs if r.get("status") in ("conflict", "would_conflict")),
            problems=len(result.problems), problem_word="coverage problem(s)",
            dry_run=bool(doc.get("dry_run")))
    else:
        findings = sum(len(r.get("findings", [])) for r in runs)
        outcome = Outcome(categories=doc.get("dump_losses", {}),
                          incomplete_runs=sum(1 for r in runs if not r.get("source_complete", True)),
                          problems=len(result.problems) + findings,
                          problem_word="coverage problem(s) or finding(s)")
    summary = None
    if as_json:
        summary = {"command": "report merge", "kind": result.kind, "report": str(path),
                   "shards": doc["shards"], "problems": result.problems, "counts": doc.get("counts", {})}
    _finish("report merge", outcome, strict=False, summary=summary)


def main() -> None:
    """Console-script entry point: the one place errors become exit codes."""
    global _ARGV
    _ARGV = sys.argv[1:]
    try:
        result = app(standalone_mode=False)
    except MigrateError as exc:
        from neptune_migrate.console import console
        from neptune_migrate.errors import one_line, redact

        console.print(f"[red]error:[/] {_esc(redact(one_line(exc)))}", highlight=False, soft_wrap=True)
        sys.exit(int(exc.exit_code))
    except typer.Exit as exc:
        sys.exit(exc.exit_code)
    except (typer.Abort, KeyboardInterrupt):
        sys.stderr.write("interrupted; nothing more was done\n")
        sys.exit(ExitCode.INTERRUPTED)
    except Exception as exc:
        # Click's usage errors (typer vendors click) arrive here in non-standalone mode.
        if any(cls.__name__ == "ClickException" for cls in type(exc).__mro__):
            exc.show()  # type: ignore[attr-defined]
            sys.exit(ExitCode.USAGE)
        raise
    sys.exit(result if isinstance(result, int) else ExitCode.OK)
