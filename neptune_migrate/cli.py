"""The typer app: parse flags, build objects, call the pipeline. The one errors -> exit-code map.

Exit codes come from two places only: `exit_code()` below (what a finished verb found: failed
runs, items by category, problems) and `main()` (errors raised on purpose: `MigrateError.exit_code`).
"""

from __future__ import annotations

import json
import os
import sys
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Annotated, Any

import typer

from neptune_migrate import __version__
from neptune_migrate.errors import ExitCode, MigrateError, UsageError, redact_obj
from neptune_migrate.model import LossCategory

SOURCE_NAMES = ("neptune-exporter", "neptune-offline", "neptune-scale", "neptune2-api", "neptune3-api")
"""`--from` choices: the keys of `sources.SOURCES`, spelled out so `--help` does not import the
registries (and pyarrow); a test keeps the two equal."""
LIVE_SOURCES = ("neptune2-api", "neptune3-api")
"""Sources that read a live server: no PATH; --api-token, --project/--workspace, --workers, --rate."""
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
    failed_models: int = 0
    """Registry models the registry step could not build (or would not, in a dry run)."""
    deferred_models: int = 0
    """Registry models not built yet (a shard waits for other shards' runs): not done, re-run."""
    dry_run: bool = False

    def reasons(self, *, strict: bool) -> list[str]:
        """Why the exit code is not 0, in words (empty when it is 0)."""
        out: list[str] = []
        if self.failed_runs:
            out.append(f"{self.failed_runs} run(s) {'would fail' if self.dry_run else 'failed'}")
        if self.conflicts:
            out.append(f"{self.conflicts} run(s) imported from another dump (--on-conflict)")
        if self.failed_models:
            out.append(f"{self.failed_models} registry model(s) {'would fail' if self.dry_run else 'failed'}")
        if self.deferred_models:
            out.append(f"{self.deferred_models} registry model(s) deferred: not done yet, run `import "
                       "--registry-only` once every shard finished")
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


# ---------------------------------------------------------------------------------------------
# neptune-migrate.toml: `--config`/`--profile` on every verb that takes settings. Both are eager, so
# the merged file + environment settings become the verb's click `default_map` before any other
# option is read: a flag given on the command line still wins, and a value from the file is
# converted and checked exactly as the same flag would be.

CONFIG_VERBS = ("export", "import", "verify", "run")
_NOT_SETTINGS = frozenset({"config", "profile", "verbose", "json", "help", "dry_run"})
_KEY_ALIASES = {"export": {"source": "path", "dump": "out"}, "run": {"source": "source", "dump": "dump"},
                "import": {"dump": "dump"}, "verify": {"dump": "dump"}}
"""Config keys that are a verb's argument, or a different flag per verb."""


def _verb_keys(command: Any, verb: str) -> dict[str, str]:
    """Config key -> click param name for one verb (a flag's long names, without dashes)."""
    from neptune_migrate.config import normalise_key

    out: dict[str, str] = {}
    for param in command.params:
        if getattr(param, "param_type_name", "") == "argument":
            continue
        for opt in param.opts:  # not `--discard-dump`: a key names the value it sets
            if opt.startswith("--"):
                key = normalise_key(opt[2:])
                if key not in _NOT_SETTINGS and param.name not in ("as_json", "verbose", "config", "profile"):
                    out[key] = param.name
    out.update(_KEY_ALIASES.get(verb, {}))
    return out


def _all_verb_keys(group: Any) -> tuple[dict[str, dict[str, str]], set[str]]:
    """Keys per verb, and the keys that take several values (lists)."""
    keys: dict[str, dict[str, str]] = {}
    lists: set[str] = set()
    for verb in CONFIG_VERBS:
        command = group.commands.get(verb)
        if command is None:
            continue
        keys[verb] = _verb_keys(command, verb)
        multiple = {p.name for p in command.params if getattr(p, "multiple", False)}
        lists.update(k for k, name in keys[verb].items() if name in multiple)
    return keys, lists


def _load_config(group: Any, config_file: Path | None, profile: str | None, *, resolve: bool = True) -> Any:
    from neptune_migrate import config as cfg

    keys, lists = _all_verb_keys(group)
    known = {k for verb_keys in keys.values() for k in verb_keys}
    return cfg.load(cfg.find_file(config_file), profile, known, lists=lists, resolve=resolve)


def _check_config_values(ctx: Any, verb_keys: Mapping[str, str], config: Any) -> None:
    """Convert every value the file or environment gives this verb as its flag would be, now: a bad
    value is an error naming where it was written (exit 2), not click's message about a flag."""
    params = {p.name: p for p in ctx.command.params}
    for key, setting in config.settings.items():
        name = verb_keys.get(key)
        if name is None or setting.value is None:
            continue
        try:
            params[name].process_value(ctx, setting.value)
        except typer.BadParameter as exc:
            where = setting.origin.removeprefix("file:")
            msg = f"{where}: {key}: {exc.format_message()}"
            raise UsageError(msg) from None


def _config_callback(ctx: typer.Context, param: typer.CallbackParam, value: Any) -> Any:
    """Record `--config`/`--profile`; once both are known, load the file into the verb's defaults."""
    ctx.meta[f"neptune_migrate.{param.name}"] = value
    if not all(f"neptune_migrate.{n}" in ctx.meta for n in ("config", "profile")) or ctx.resilient_parsing:
        return value
    group = ctx.parent.command if ctx.parent is not None else None
    verb = ctx.info_name or ""
    if group is None or verb not in CONFIG_VERBS:
        return value
    config = _load_config(group, ctx.meta["neptune_migrate.config"], ctx.meta["neptune_migrate.profile"])
    verb_keys = _verb_keys(ctx.command, verb)
    _check_config_values(ctx, verb_keys, config)
    ctx.default_map = {**(ctx.default_map or {}), **config.for_verb(verb_keys)}
    config.export_secrets()
    used = [k for k in config.settings if k in verb_keys or k in _SECRET_KEYS]
    if used:
        from neptune_migrate.console import console

        where = f"{config.path}" + (f" [profile {config.profile}]" if config.profile else "") if config.path else ""
        console.print(f"settings from {_esc(where or 'the environment')}: {_esc(', '.join(sorted(used)))} "
                      "(flags override them; `neptune-migrate config show` lists values and origins)", soft_wrap=True)
    return value


_SECRET_KEYS = frozenset({"api_token", "wandb_api_key", "mlflow_tracking_token", "mlflow_tracking_password"})
"""`config.SECRET_ENV`'s keys, spelled out so `--help` does not import the config module; a test keeps
the two equal."""

ConfigOpt = Annotated[
    Path | None,
    typer.Option("--config", is_eager=True, callback=_config_callback, metavar="FILE",
                 help="Settings file (default: ./neptune-migrate.toml if present; env NEPTUNE_MIGRATE_CONFIG)."),
]
ProfileOpt = Annotated[
    str | None,
    typer.Option("--profile", is_eager=True, callback=_config_callback,
                 help="Profile of the settings file (env NEPTUNE_MIGRATE_PROFILE)."),
]


def _parse_date(value: str | None, flag: str) -> datetime | None:
    if value is None:
        return None
    try:
        parsed = datetime.fromisoformat(value)
    except ValueError as exc:
        msg = f"{flag} {value!r}: expected an ISO date such as 2025-01-31 or 2025-01-31T12:00+00:00"
        raise UsageError(msg) from exc
    if parsed.tzinfo is None:
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
ModelsFromRunsOpt = Annotated[
    bool,
    typer.Option("--models-from-runs", help="Runs that Neptune's model_to_run.py made from models and model "
                 "versions (tags model / model_version, old_sys/* fields) become model registry records again."),
]
NoModelsOpt = Annotated[
    bool,
    typer.Option("--no-models", help="Leave the model registry (models and model versions, also "
                 "those --models-from-runs makes) out; by default it is exported with the runs (the run "
                 "filters apply to runs only)."),
]
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
    return datetime.now(timezone.utc).strftime("%Y%m%dT%H%M%S.%fZ")


def _resume_hint() -> str:
    from neptune_migrate.errors import redact

    if _ARGV is None:
        return "run the same command again"
    import shlex

    return "run the same command again: " + redact("neptune-migrate " + shlex.join(_ARGV))


# ---------------------------------------------------------------------------------------------
# export


def _divide_rate(rate: float | None, shard: Any) -> float | None:
    from neptune_migrate.pipeline.shard import divide_rate

    return divide_rate(rate, shard)


def _export_dry_run(source: Any, selection: Any, *, as_json: bool, shard: Any = None,
                    models_from_runs: bool = False) -> None:
    """`export --dry-run`: the source's own counts, no series downloaded, nothing written."""
    from neptune_migrate.console import console
    from neptune_migrate.sources.base import Estimating

    if not isinstance(source, Estimating):
        msg = f"--dry-run: {source.name} cannot estimate an export"
        raise UsageError(msg)
    est = source.estimate(selection)
    details = ", ".join(f"{k} {v:,}" for k, v in est.details.items())
    console.print(f"dry run: {est.runs:,} run(s), {est.attributes:,} attribute(s), {est.points:,} point(s), "
                  f"~{est.bytes:,} byte(s) would be read ({_esc(details)}); nothing was downloaded or written")
    if shard is not None:
        console.print(f"(counts of the whole selection, from the server's listing: shard {shard.number}/{shard.count} "
                      f"takes about 1/{shard.count} of them, chosen by a stable hash of each run key)")
    converted = int(est.details.get("model_to_run_runs", 0))
    if models_from_runs:
        console.print(f"--models-from-runs: {converted:,} of these run(s) would become model registry records "
                      "(made by Neptune's model_to_run.py)")
    elif converted:
        console.print(f"{converted:,} run(s) look like models / model versions that Neptune's model_to_run.py "
                      "turned into runs: pass --models-from-runs to export them as model registry records")
    summary = None
    if as_json:
        summary = {"command": "export", "dry_run": True, "runs": est.runs, "attributes": est.attributes,
                   "points": est.points, "bytes": est.bytes, "details": est.details,
                   "models_from_runs": converted if models_from_runs else 0}
    _finish("export", Outcome(dry_run=True), strict=False, summary=summary)



@app.command("export")
def export_cmd(
    from_: Annotated[
        str,
        typer.Option(
            "--from",
            **_choice(SOURCE_NAMES),
            help="Source form: neptune-offline (.neptune folders), neptune-scale (SQLite logs), "
            "neptune-exporter (official exporter parquet), "
            "neptune2-api / neptune3-api (live self-hosted 2.x / 3.x server).",
        ),
    ],
    out: Annotated[Path, typer.Option("--out", "-o", help="Dump folder to create or extend.")],
    path: Annotated[
        Path | None, typer.Argument(help="Where the Neptune data is (folder or file); not for live sources.")
    ] = None,
    project: Annotated[
        list[str] | None,
        typer.Option("--project", help="workspace/project: for offline sources that lack it (once); for live "
                     "sources the project(s) to export (repeatable)."),
    ] = None,
    workspace: Annotated[
        str | None, typer.Option("--workspace", help="Live sources: every project of this workspace.")
    ] = None,
    api_token: Annotated[
        str | None,
        typer.Option("--api-token", help="Live sources: the Neptune API token (default: env NEPTUNE_API_TOKEN; "
                     "never printed or stored).", show_default=False),
    ] = None,
    workers: Annotated[int, typer.Option(
        "--workers", min=1, help="Live sources: runs read at once and requests in flight at most (whole export).")] = 4,
    rate: Annotated[
        float | None, typer.Option("--rate", min=0.01, help="Live sources: requests per second at most (all workers).")
    ] = None,
    since_last: Annotated[
        bool, typer.Option("--since-last", help="Live sources: only runs created or modified since the last "
                           "export into this dump (watermark in the dump, with a 10-minute overlap).")
    ] = False,
    dry_run: Annotated[
        bool, typer.Option("--dry-run", help="Live sources: count runs, attributes, points and bytes from the "
                           "server's own counts; download no series, write nothing.")
    ] = False,
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
    models_from_runs: ModelsFromRunsOpt = False,
    no_models: NoModelsOpt = False,
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
    config: ConfigOpt = None,  # noqa: ARG001 - applied by its callback
    profile: ProfileOpt = None,  # noqa: ARG001 - applied by its callback
) -> None:
    """Read Neptune runs into a neutral dump (Parquet + JSON + content-addressed files)."""
    import os
    from dataclasses import replace

    from neptune_migrate.console import console
    from neptune_migrate.dump.layout import DumpLayout
    from neptune_migrate.dump.writer import DumpWriter
    from neptune_migrate.pipeline.export import RunOutcome, export_runs
    from neptune_migrate.sources import load_source
    from neptune_migrate.sources.base import PathMap, SourceOptions

    live = from_ in LIVE_SOURCES
    projects = list(project or [])
    if live:
        if path is not None:
            msg = f"--from {from_} reads a server: give no PATH (use --project WS/PROJ or --workspace WS)"
            raise UsageError(msg)
        for name in projects:
            if name.count("/") != 1 or not all(name.split("/")):
                msg = f"--project {name!r}: expected WORKSPACE/PROJECT"
                raise UsageError(msg)
    else:
        if path is None:
            msg = f"--from {from_} needs PATH: where the Neptune data is (folder or file)"
            raise UsageError(msg)
        if not path.exists():
            msg = f"{path}: no such file or folder"
            raise UsageError(msg)
        if len(projects) > 1:
            msg = f"--project is given {len(projects)} times; --from {from_} takes one workspace/project"
            raise UsageError(msg)
        # --api-token is not refused here: a settings profile may hold one for its live sources.
        live_flags = [flag for flag, used in (("--since-last", since_last), ("--dry-run", dry_run),
                                              ("--workspace", workspace is not None)) if used]
        if live_flags:
            msg = f"{', '.join(live_flags)}: only for live sources ({', '.join(LIVE_SOURCES)})"
            raise UsageError(msg)
    selection = _selection(only_project, run_id, run_regex, tag, created_after, created_before)
    if live:
        selection = replace(selection, projects=tuple(dict.fromkeys([*projects, *selection.projects])))
    layout = DumpLayout(out)
    shard = _shard(shard_spec)
    report = _shard_path(report, shard)
    options = SourceOptions(
        path=path if path is not None else Path(),
        project=(",".join(projects) or None) if live else (projects[0] if projects else None),
        path_map=PathMap.parse(path_map or []),
        files_path=files_path,
        include_previews=include_previews,
        include_incomplete=include_incomplete,
        workspace=workspace,
        api_token=api_token,
        workers=workers,
        rate=_divide_rate(rate, shard),  # --rate is for the whole job: each of N shards takes R/N
        state_dir=layout.state_dir if live else None,
        models=not no_models,
    )
    if api_token:
        # redact() masks the value of NEPTUNE_API_TOKEN wherever it would appear (messages, reports).
        os.environ["NEPTUNE_API_TOKEN"] = api_token
    source = load_source(from_, options)
    select = getattr(source, "select", None)
    if callable(select):
        select(selection)
    console.print(f"source: {_esc(source.describe())}")
    mark_id = ""
    if live:
        from neptune_migrate.pipeline import watermark

        location = str(getattr(source, "location", from_))
        used = {"run_ids": list(selection.run_ids), "run_regex": selection.run_regex,
                "tags": list(selection.tags), "created_after": created_after, "created_before": created_before}
        filters = json.dumps({k: v for k, v in used.items() if v}, sort_keys=True) if any(used.values()) else ""
        mark_id = watermark.watermark_id(from_, location, selection.projects, workspace, filters,
                                         shard.label if shard is not None else None)
        if since_last:
            mark, since = watermark.read_since(layout, mark_id)
            if since is None:
                console.print("since-last: no watermark for this source in the dump yet: full export")
            else:
                console.print(f"since-last: runs created or modified since {since.isoformat()} "
                              f"(last export listed at {mark.isoformat() if mark else '?'}, minus the overlap)")
                selection = replace(selection, modified_after=since)
                if not no_models and not watermark.registry_included(layout, mark_id):
                    console.print("since-last: the last export did not include the model registry: "
                                  "listing it in full")
                    selection = replace(selection, registry_in_full=True)
    if dry_run:
        _export_dry_run(source, selection, as_json=as_json, shard=shard, models_from_runs=models_from_runs)
        return
    listed_at = datetime.now(timezone.utc)

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
            source, writer, selection,
            location=str(getattr(source, "location", from_)) if path is None else str(path.resolve()),
            force=force, on_run=on_run, source_root=path, shard=shard, models_from_runs=models_from_runs,
            models=not no_models,
        )
        if live and not summary.count("failed"):
            from neptune_migrate.pipeline import watermark

            refused = any("refused the model registry listing" in w for w in summary.warnings)
            watermark.record(writer, mark_id, listed_at, len(summary.runs), models=not no_models and not refused)
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
    for warning in [*summary.warnings, *summary.notices]:
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
BulkOpt = Annotated[
    str,
    typer.Option("--bulk", **_choice(["never", "auto", "always"]), envvar="NEPTUNE_MIGRATE_BULK",
                 help="MLflow: write float points straight into the tracking database when it is a tested MLflow "
                 "schema (auto), never, or always (refuse any other store)."),
]
MlflowDbOpt = Annotated[
    str | None,
    typer.Option("--mlflow-db", envvar="NEPTUNE_MIGRATE_MLFLOW_DB",
                 help="MLflow: the database behind an http(s) --tracking-uri (postgresql://..., sqlite:///...), "
                 "for the bulk path and SQL reads."),
]
StepPolicyOpt = Annotated[
    str,
    typer.Option("--step-policy", **_choice(["auto", "auto-series", "scale", "rank", "floor"]),
                 help="Fractional steps: auto (one exact scale per run, else rank), auto-series (a scale "
                      "per series), scale, rank, floor."),
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
    wandb_mode: str, wandb_dir: Path | None, aim_repo: str | None, *, bulk: str = "auto",
    mlflow_db: str | None = None, read: str = "sql", write_workers: int = 1,
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
        bulk=bulk,
        mlflow_db=mlflow_db,
        read=read,
        write_workers=write_workers,
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
    for g in report.registry:  # models, versions and aliases of the registry step (after the runs)
        _print_items(g.key, g.losses)
        items.extend(g.losses)
    if report.store:
        console.print(f"store: {_esc(report.store)}", soft_wrap=True)
    counts = ", ".join(f"{k} {v}" for k, v in doc["counts"].items())
    t = doc["totals"]
    console.print(f"{'plan' if report.dry_run else 'import'} -> {_esc(report.target)}: {counts}; "
                  f"points {t['points']:,}, files {t['files']}, requests ~{t['requests']:,}")
    console.print(f"renamed keys {t['renamed_keys']}, collisions {t['collisions']}, "
                  f"step conversions {t['step_changes']}")
    if report.registry:
        from collections import Counter

        kinds = Counter((g.key.split(":", 1)[0], g.status) for g in report.registry)
        plural = {"model": "models", "version": "versions", "alias": "aliases"}
        console.print("registry: " + ", ".join(f"{plural.get(what, what)} {status} {n}"
                                               for (what, status), n in sorted(kinds.items())))
        for g in report.registry:
            if g.status in ("failed", "would_fail") or (g.message and g.key.startswith("model:")):
                console.print(f"  {_esc(g.key)}: {g.status} {_esc(g.message)}", soft_wrap=True)
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
    registry_only: Annotated[
        bool, typer.Option("--registry-only", help="Import no run, only build the model registry from the runs "
                           "already imported (after every shard of a sharded import finished).")
    ] = False,
    no_registry: Annotated[
        bool, typer.Option("--no-registry", help="Import the runs (model and version records too) but do not "
                           "build the model registry; each model is reported as not carried.")
    ] = False,
    strict: StrictOpt = False,
    as_json: JsonOpt = False,
    tracking_uri: TrackingOpt = None,
    experiment_template: ExperimentOpt = "{project}",
    entity: EntityOpt = None,
    project_template: WandbProjectOpt = "{project_name}",
    wandb_mode: WandbModeOpt = "online",
    wandb_dir: WandbDirOpt = None,
    aim_repo: AimRepoOpt = None,
    bulk: BulkOpt = "auto",
    mlflow_db: MlflowDbOpt = None,
    only_project: ProjectsOpt = None,
    run_id: RunIdOpt = None,
    run_regex: RunRegexOpt = None,
    tag: TagOpt = None,
    created_after: AfterOpt = None,
    created_before: BeforeOpt = None,
    shard_spec: ShardOpt = None,
    verbose: VerboseOpt = 0,  # noqa: ARG001 - applied by its callback
    config: ConfigOpt = None,  # noqa: ARG001 - applied by its callback
    profile: ProfileOpt = None,  # noqa: ARG001 - applied by its callback
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
    if registry_only and no_registry:
        msg = "--registry-only and --no-registry exclude each other"
        raise UsageError(msg)
    if registry_only and shard is not None:
        msg = "--registry-only builds every model once, after all shards: pass it without --shard"
        raise UsageError(msg)
    options = replace(options, retry=replace(options.retry, max_outage=max_outage), shard=shard,
                      registry="only" if registry_only else "none" if no_registry else "with")
    destination = _destination(to, tracking_uri, experiment_template, entity, project_template,
                               wandb_mode, wandb_dir, aim_repo, bulk=bulk, mlflow_db=mlflow_db,
                               write_workers=workers)
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
    failed_models, deferred_models = _registry_counts(result)
    outcome = Outcome(failed_runs=failed, categories=doc["categories"], conflicts=len(result.conflicts),
                      dry_run=dry_run, failed_models=failed_models, deferred_models=deferred_models)
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
    markdown_report: Annotated[
        Path | None, typer.Option("--markdown", help="Also write the report as Markdown here (for a PR or a ticket).")
    ] = None,
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
    mlflow_db: MlflowDbOpt = None,
    read: Annotated[
        str,
        typer.Option("--read", **_choice(["sql", "api"]),
                     help="MLflow: read float series back by SQL where the tracking database is known "
                     "(sql: a database --tracking-uri or --mlflow-db) or through the API (api)."),
    ] = "sql",
    only_project: ProjectsOpt = None,
    run_id: RunIdOpt = None,
    run_regex: RunRegexOpt = None,
    tag: TagOpt = None,
    created_after: AfterOpt = None,
    created_before: BeforeOpt = None,
    shard_spec: ShardOpt = None,
    verbose: VerboseOpt = 0,  # noqa: ARG001 - applied by its callback
    config: ConfigOpt = None,  # noqa: ARG001 - applied by its callback
    profile: ProfileOpt = None,  # noqa: ARG001 - applied by its callback
) -> None:
    """Read the destination back and compare it with the dump, run by run, point by point."""
    from neptune_migrate.console import console
    from neptune_migrate.dump.reader import DumpReader
    from neptune_migrate.verify.report import print_summary, write_html, write_json, write_markdown
    from neptune_migrate.verify.verifier import VerifyOptions, verify_runs

    if sample is not None and not 0 < sample <= 1:
        msg = "--sample must be a fraction in (0, 1]"
        raise UsageError(msg)
    reader = DumpReader(dump)
    selection = _selection(only_project, run_id, run_regex, tag, created_after, created_before)
    options = _import_options(selection, _attribute_regex(attributes), step_policy, 1, dry_run=True)
    shard = _shard(shard_spec)
    report, html_report = _shard_path(report, shard), _shard_path(html_report, shard)
    markdown_report = _shard_path(markdown_report, shard)
    from dataclasses import replace

    options = replace(options, shard=shard)
    destination = _destination(to, tracking_uri, experiment_template, entity, project_template,
                               wandb_mode, wandb_dir, aim_repo, mlflow_db=mlflow_db, read=read)
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
    if markdown_report is not None:
        write_markdown(result, markdown_report)
    print_summary(result)
    categories = result.dump_losses()  # the dump's own lost / not-in-source items: part of the verdict
    console.print(f"reports: {_esc(json_path)} {_esc(html_path)}"
                  + ("" if markdown_report is None else f" {_esc(markdown_report)}"))
    incomplete = sum(1 for r in result.runs if not r.source_complete)
    outcome = Outcome(categories=categories, incomplete_runs=incomplete,
                      problems=len(result.findings), problem_word="finding(s)")
    json_summary = None
    if as_json:
        doc = result.to_json()
        json_summary = {"command": "verify", "ok": result.ok, "destination": result.destination,
                        "target": result.target, "reports": {"json": str(json_path), "html": str(html_path),
                                    **({} if markdown_report is None else {"markdown": str(markdown_report)})},
                        "counts": doc["counts"], "totals": doc["totals"], "dump_categories": categories}
    _finish("verify", outcome, strict=strict, summary=json_summary)


# ---------------------------------------------------------------------------------------------
# run: export -> import -> verify in one command (the pieces in pipeline/run.py)


@app.command("run")
def run_cmd(
    from_: Annotated[
        str, typer.Option("--from", **_choice(SOURCE_NAMES), help="Source form (as for export).")
    ],
    to: ToOpt,
    source: Annotated[
        Path | None, typer.Argument(help="Where the Neptune data is (folder or file); not for live sources "
                                    "(neptune2-api, neptune3-api: --project WS/PROJ and --dump, token from "
                                    "NEPTUNE_API_TOKEN).")
    ] = None,
    dump: Annotated[
        Path | None,
        typer.Option("--dump", help="Dump folder to create or resume (default: beside the source, "
                     "<source>.neptune-migrate-dump)."),
    ] = None,
    keep_dump: Annotated[
        bool,
        typer.Option("--keep-dump/--discard-dump",
                     help="Keep the dump (default: it is your archive and what a re-run resumes from), or remove "
                     "it after a run that verified clean (its reports are kept beside it)."),
    ] = True,
    verify: Annotated[
        str, typer.Option("--verify", metavar="full|none|sample:FRACTION",
                          help="Verify every run (full), none, or a deterministic sample of the runs (e.g. "
                          "sample:0.1, chosen by a stable hash of the run key).")
    ] = "full",
    dry_run: Annotated[
        bool, typer.Option("--dry-run", help="Plan all three steps; write nothing to the dump or the destination.")
    ] = False,
    project: Annotated[
        list[str] | None,
        typer.Option("--project", help="workspace/project for sources that lack it; live sources: the "
                     "project(s) to read (repeatable, or comma-separated)."),
    ] = None,
    path_map: Annotated[
        list[str] | None, typer.Option("--path-map", help="OLD_PREFIX=NEW_PREFIX for moved files (repeatable)."),
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
    models_from_runs: ModelsFromRunsOpt = False,
    no_models: NoModelsOpt = False,
    workers: Annotated[int, typer.Option("--workers", help="Runs imported in parallel.")] = 1,
    lock_timeout: Annotated[
        float | None, typer.Option("--lock-timeout", metavar="SECONDS", help="As for import.")
    ] = None,
    max_outage: Annotated[float, typer.Option("--max-outage", help="As for import.")] = 300.0,
    step_policy: StepPolicyOpt = "auto",
    attributes: AttributesOpt = None,
    on_conflict: Annotated[
        str, typer.Option("--on-conflict", help="As for import: fail, skip or replace.")
    ] = "fail",
    strict: StrictOpt = False,
    as_json: JsonOpt = False,
    tracking_uri: TrackingOpt = None,
    experiment_template: ExperimentOpt = "{project}",
    entity: EntityOpt = None,
    project_template: WandbProjectOpt = "{project_name}",
    wandb_mode: WandbModeOpt = "online",
    wandb_dir: WandbDirOpt = None,
    aim_repo: AimRepoOpt = None,
    bulk: BulkOpt = "auto",
    mlflow_db: MlflowDbOpt = None,
    read: Annotated[
        str, typer.Option("--read", **_choice(["sql", "api"]), help="MLflow: as for verify (sql or api).")
    ] = "sql",
    only_project: ProjectsOpt = None,
    run_id: Annotated[list[str] | None, typer.Option("--run-id", help="Only this run id (repeatable).")] = None,
    run_regex: RunRegexOpt = None,
    tag: TagOpt = None,
    created_after: AfterOpt = None,
    created_before: BeforeOpt = None,
    shard_spec: ShardOpt = None,
    verbose: VerboseOpt = 0,  # noqa: ARG001 - applied by its callback
    config: ConfigOpt = None,  # noqa: ARG001 - applied by its callback
    profile: ProfileOpt = None,  # noqa: ARG001 - applied by its callback
) -> None:
    """Export, import and verify in one command; the same command resumes after a crash or Ctrl-C."""
    from dataclasses import replace

    from neptune_migrate.dump.layout import DumpLayout
    from neptune_migrate.pipeline.run import RunSummary, VerifyMode, default_dump
    from neptune_migrate.sources.base import PathMap, SourceOptions

    mode = VerifyMode.parse(verify)
    live = from_ in LIVE_SOURCES
    if live:
        if source is not None:
            msg = f"--from {from_} reads a server: give no SOURCE (use --project WS/PROJ)"
            raise UsageError(msg)
        if dump is None:
            msg = f"--from {from_} needs --dump: where to keep the dump (there is no source folder to put it beside)"
            raise UsageError(msg)
    elif source is None:
        msg = f"--from {from_} needs SOURCE: where the Neptune data is (folder or file)"
        raise UsageError(msg)
    elif not source.exists():
        msg = f"{source}: no such file or folder"
        raise UsageError(msg)
    if max_outage < 0 or (lock_timeout is not None and lock_timeout < 0):
        msg = "--max-outage and --lock-timeout must be 0 or more seconds"
        raise UsageError(msg)
    dump_path = dump if dump is not None else default_dump(source)  # type: ignore[arg-type]  # checked above
    selection = _selection(only_project, run_id, run_regex, tag, created_after, created_before)
    projects = tuple(dict.fromkeys(p.strip() for item in project or [] for p in item.split(",") if p.strip()))
    if live:
        if not projects:
            msg = f"--from {from_} needs --project WORKSPACE/PROJECT (several: comma-separated)"
            raise UsageError(msg)
        selection = replace(selection, projects=tuple(dict.fromkeys([*projects, *selection.projects])))
    options = _import_options(selection, _attribute_regex(attributes), step_policy, workers, dry_run=dry_run,
                              on_conflict=on_conflict)
    shard = _shard(shard_spec)
    options = replace(options, retry=replace(options.retry, max_outage=max_outage), shard=shard)
    if not live and len(projects) > 1:
        msg = f"--project is given {len(projects)} times; --from {from_} takes one workspace/project"
        raise UsageError(msg)
    source_options = SourceOptions(path=source if source is not None else Path(), project=",".join(projects) or None,
                                   path_map=PathMap.parse(path_map or []),
                                   files_path=files_path, include_previews=include_previews,
                                   include_incomplete=include_incomplete, models=not no_models,
                                   # resume state lives in the dump; a dry run writes nothing there
                                   state_dir=DumpLayout(dump_path).state_dir if live and not dry_run else None)
    if shard is not None and not keep_dump:
        msg = "--discard-dump with --shard: the dump is shared by every shard; remove it after all of them are done"
        raise UsageError(msg)
    destination = _destination(to, tracking_uri, experiment_template, entity, project_template,
                               wandb_mode, wandb_dir, aim_repo, bulk=bulk, mlflow_db=mlflow_db, read=read,
                               write_workers=workers)
    where = str(source) if source is not None else f"{from_} {','.join(projects)}"
    summary = RunSummary(source=where, dump=str(dump_path), destination=destination.describe(),
                         verify=mode, dry_run=dry_run, dump_kept=keep_dump)
    phase = "export"
    try:
        destination.check()  # unreachable: exit 3 now, before anything is exported
        if dry_run:
            outcome = _run_plan(from_, source_options, selection, dump_path, destination, options, mode, summary,
                                models_from_runs=models_from_runs)
        else:
            outcome = _run_export(from_, source_options, selection, dump_path, summary, shard,
                                  models_from_runs=models_from_runs)
            phase = "import"
            outcome = _merge_outcomes(outcome, _run_import(dump_path, destination, options, lock_timeout, summary,
                                                           shard))
            phase = "verify"
            outcome = _merge_outcomes(outcome, _run_verify(dump_path, destination, options, mode, summary))
    except KeyboardInterrupt:
        from neptune_migrate.console import console

        console.print(f"[yellow]interrupted[/] during {phase}: what was done is kept (the dump's committed runs, "
                      f"the destination's finished runs); to resume, {_esc(_resume_hint())}")
        raise typer.Exit(ExitCode.INTERRUPTED) from None
    finally:
        destination.close()
    _run_finish(summary, outcome, dump_path, strict=strict, as_json=as_json)


def _is_live(source: Any) -> bool:
    """The one mark of a live source, as `pipeline.export` reads it (`live = True` on the class)."""
    return bool(getattr(source, "live", False))


def _source_root(source: Any, source_options: Any) -> Path | None:
    """The folder an offline source reads (provenance paths are kept relative to it); None for a server."""
    return None if _is_live(source) else source_options.path


def _source_location(source: Any, source_options: Any) -> str:
    """Where the runs came from, as the export report and the manifest say it."""
    if _is_live(source):  # its server
        location = getattr(source, "location", None)
        return str(location) if location is not None else source.describe()
    return str(source_options.path.resolve())


def _merge_outcomes(a: Outcome, b: Outcome) -> Outcome:
    from neptune_migrate.pipeline.run import sum_counts

    return Outcome(failed_runs=a.failed_runs + b.failed_runs, categories=sum_counts(a.categories, b.categories),
                   incomplete_runs=a.incomplete_runs + b.incomplete_runs, problems=a.problems + b.problems,
                   conflicts=a.conflicts + b.conflicts, failed_models=a.failed_models + b.failed_models,
                   deferred_models=a.deferred_models + b.deferred_models, dry_run=a.dry_run or b.dry_run)


def _run_export(from_: str, source_options: Any, selection: Any, dump_path: Path, summary: Any,
                shard: Any = None, *, models_from_runs: bool = False) -> Outcome:
    """The export phase: `export_runs` into the dump (complete, unchanged runs are skipped)."""
    from neptune_migrate.console import console
    from neptune_migrate.dump.writer import DumpWriter
    from neptune_migrate.pipeline.export import RunOutcome, export_runs
    from neptune_migrate.sources import load_source

    source = load_source(from_, source_options)
    console.print(f"== export: {_esc(source.describe())} -> {_esc(dump_path)}", soft_wrap=True)

    def on_run(outcome: RunOutcome) -> None:
        if outcome.status != "filtered":
            style = {"exported": "green", "skipped": "dim", "failed": "red"}.get(outcome.status, "")
            console.print(f"[{style}]{outcome.status:>8}[/] {_esc(outcome.key)} points={outcome.points} "
                          f"files={outcome.files}{_esc(' ' + outcome.message if outcome.message else '')}")

    with DumpWriter(dump_path, shard.label if shard is not None else None) as writer:
        result = export_runs(source, writer, selection, location=_source_location(source, source_options),
                             on_run=on_run, source_root=_source_root(source, source_options), shard=shard,
                             models_from_runs=models_from_runs, models=source_options.models)
        doc = result.to_json()
        if shard is not None:
            doc["shard"] = shard.to_json()
        writer.layout.reports_dir.mkdir(exist_ok=True)
        report_path = writer.layout.reports_dir / _report_name("export", shard)
        report_path.write_text(json.dumps(redact_obj(doc), indent=2, ensure_ascii=False, default=str) + "\n",
                               encoding="utf-8")
    for warning in [*result.warnings, *result.notices]:
        console.print(f"[yellow]warning:[/] {_esc(warning)}")
    phase = summary.phase("export")
    phase.status, phase.counts, phase.categories = "done", dict(doc["counts"]), dict(doc["categories"])
    phase.reports.append(str(report_path))
    return Outcome(failed_runs=doc["counts"]["failed"], categories=doc["categories"],
                   incomplete_runs=doc["incomplete_runs"], problems=len(result.warnings),
                   problem_word="problem(s)")


def _run_import(dump_path: Path, destination: Any, options: Any, lock_timeout: float | None, summary: Any,
                shard: Any = None) -> Outcome:
    """The import phase: `import_runs` under the import lock (complete runs are skipped, cut ones repaired)."""
    from neptune_migrate.console import console
    from neptune_migrate.dump.reader import DumpReader
    from neptune_migrate.pipeline.import_ import import_runs
    from neptune_migrate.pipeline.ledger import Ledger

    reader = DumpReader(dump_path)
    console.print(f"== import: {_esc(dump_path)} -> {_esc(destination.describe())}", soft_wrap=True)
    progress = _Progress(dry_run=False)
    ledger = Ledger(reader.layout, destination.name, destination.describe(), shard)
    try:
        with _import_lock(reader.layout, destination, lock_timeout, dry_run=False, shard=shard), progress:
            result = import_runs(reader, destination, options, ledger=ledger, progress=progress)
    except KeyboardInterrupt:
        progress.interrupted("finished runs are kept; a run cut short is repaired on the next run")
        raise
    doc = result.to_json()
    if shard is not None:
        doc["shard"] = _shard_doc(shard, reader)
    reader.layout.reports_dir.mkdir(exist_ok=True)
    report_path = reader.layout.reports_dir / _report_name("import", shard, destination.name)
    report_path.write_text(json.dumps(redact_obj(doc), indent=2, ensure_ascii=False, default=str) + "\n",
                           encoding="utf-8")
    _print_import_summary(result, doc)
    phase = summary.phase("import")
    phase.status, phase.counts, phase.categories = "done", dict(doc["counts"]), dict(doc["categories"])
    phase.reports.append(str(report_path))
    failed = sum(1 for r in result.runs if r.status in ("failed", "would_fail"))
    failed_models, deferred_models = _registry_counts(result)
    return Outcome(failed_runs=failed, categories=doc["categories"], conflicts=len(result.conflicts),
                   failed_models=failed_models, deferred_models=deferred_models)


def _registry_counts(result: Any) -> tuple[int, int]:
    """Failed and deferred registry models of an import report, for its `Outcome`."""
    models = [g for g in result.registry if g.key.startswith("model:")]
    return (sum(1 for g in models if g.status in ("failed", "would_fail")),
            sum(1 for g in models if g.status == "deferred"))


def _run_verify(dump_path: Path, destination: Any, options: Any, mode: Any, summary: Any) -> Outcome:
    """The verify phase: `verify_runs` on every run, or on the runs of a deterministic sample."""
    from dataclasses import replace

    from neptune_migrate.console import console
    from neptune_migrate.pipeline.run import SampledReader
    from neptune_migrate.verify.report import print_summary, write_html, write_json
    from neptune_migrate.verify.verifier import VerifyOptions, verify_runs

    phase = summary.phase("verify")
    if mode.kind == "none":
        phase.status, phase.note = "skipped", "not verified (--verify none)"
        return Outcome()
    reader = SampledReader(dump_path, mode.fraction, options.shard)
    console.print(f"== verify ({mode}): {_esc(destination.describe())}", soft_wrap=True)
    progress = _VerifyProgress()
    with progress:
        # The reader already keeps to the shard (before sampling): the verifier takes what it yields.
        result = verify_runs(reader, destination,
                             VerifyOptions(import_options=replace(options, dry_run=True, shard=None)),
                             progress=progress)
    shard = options.shard
    name = _report_name("verify", shard, destination.name)
    json_path = reader.layout.reports_dir / name
    html_path = reader.layout.reports_dir / name.replace(".json", ".html")
    write_json(result, json_path)
    if shard is not None:  # the shard's facts for `report merge` (over the whole dump, not the sample)
        from neptune_migrate.dump.reader import DumpReader

        doc = json.loads(json_path.read_text(encoding="utf-8"))
        doc["shard"] = _shard_doc(shard, DumpReader(dump_path))
        json_path.write_text(json.dumps(doc, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
    try:
        write_html(result, html_path)
    except Exception as exc:  # noqa: BLE001 - the JSON report is written; a plot must not hide the verdict
        console.print(f"[yellow]warning:[/] the HTML report could not be rendered ({_esc(type(exc).__name__)}: "
                      f"{_esc(exc)})")
    print_summary(result)
    matching = sum(1 for r in result.runs if r.status == "match")
    phase.status = "done"
    phase.counts = {"runs": len(result.runs), "matching": matching, "findings": len(result.findings)}
    if mode.kind == "sample":
        phase.counts["not in the sample"] = reader.left_out
    phase.reports.extend([str(json_path), str(html_path)])
    incomplete = sum(1 for r in result.runs if not r.source_complete)
    return Outcome(incomplete_runs=incomplete, problems=len(result.findings), problem_word="problem(s)")


def _run_plan(
    from_: str, source_options: Any, selection: Any, dump_path: Path, destination: Any, options: Any, mode: Any,
    summary: Any, *, models_from_runs: bool = False,
) -> Outcome:
    """`run --dry-run`: what each phase would do. Nothing is written to the dump or the destination.

    Export: the source's runs against the dump's committed ones. Import: `import --dry-run` on the dump;
    runs not exported yet are first exported into a temporary dump (deleted afterwards) so their plan and
    what they would lose are real. Verify: how many runs would be read back.
    """
    import shutil
    import tempfile
    from dataclasses import replace

    from neptune_migrate.console import console
    from neptune_migrate.dump.reader import DumpReader
    from neptune_migrate.dump.writer import DumpWriter
    from neptune_migrate.pipeline.export import export_runs
    from neptune_migrate.pipeline.import_ import import_runs
    from neptune_migrate.pipeline.run import KeySelection, sample_size
    from neptune_migrate.pipeline.shard import source_owner_keys
    from neptune_migrate.sources import load_source
    from neptune_migrate.sources.base import ServerSelection

    source = load_source(from_, source_options)
    if isinstance(source, ServerSelection):  # a live source filters on the server, as export does
        source.select(selection)
    keys = [k for k in source.list_runs() if selection.matches_key(k)]
    if options.shard is not None:  # this shard's runs only, as its export, import and verify take them
        owners = source_owner_keys(source, keys)
        keys = [k for k in keys if options.shard.owns(owners[k])]
    exists = (dump_path / "manifest.json").is_file()
    reader = DumpReader(dump_path) if exists else None
    in_dump = {k for k in keys if reader is not None and reader.get_run(k) is not None}
    new = [k for k in keys if k not in in_dump]
    export = summary.phase("export")
    export.status = "planned"
    export.counts = {"would_export": len(new), "would_skip_if_unchanged": len(in_dump)}
    console.print(f"== plan export: {len(new)} run(s) to export, {len(in_dump)} already in {_esc(dump_path)}",
                  soft_wrap=True)
    outcome = Outcome(dry_run=True)
    planned: list[Any] = []
    if reader is not None:
        planned.append(import_runs(reader, destination, options))
    if new:
        tmp = Path(tempfile.mkdtemp(prefix="neptune-migrate-plan-"))
        try:
            only_new = KeySelection.narrowing(selection, frozenset(str(k) for k in new))
            with DumpWriter(tmp / "dump") as writer:
                exported = export_runs(source, writer, only_new,
                                       location=_source_location(source, source_options),
                                       source_root=_source_root(source, source_options),
                                       models_from_runs=models_from_runs, models=source_options.models)
            doc = exported.to_json()
            export.categories = dict(doc["categories"])
            outcome = Outcome(failed_runs=doc["counts"]["failed"], categories=doc["categories"], dry_run=True,
                              problems=len(exported.warnings))
            # Only the runs not in the real dump yet: the others were planned above from the real dump.
            planned.append(import_runs(DumpReader(tmp / "dump"), destination, replace(options, selection=only_new)))
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
    imp = summary.phase("import")
    imp.status = "planned"
    for report in planned:
        doc = report.to_json()
        for k, v in doc["counts"].items():
            if k != "filtered":
                imp.counts[k] = imp.counts.get(k, 0) + v
        for k, v in doc["categories"].items():
            imp.categories[k] = imp.categories.get(k, 0) + v
        _print_import_summary(report, doc)
        failed = sum(1 for r in report.runs if r.status in ("failed", "would_fail"))
        outcome = _merge_outcomes(outcome, Outcome(failed_runs=failed, categories=doc["categories"],
                                                   conflicts=len(report.conflicts), dry_run=True))
    ver = summary.phase("verify")
    if mode.kind == "none":
        ver.status, ver.note = "skipped", "not verified (--verify none)"
    else:
        ver.status = "planned"
        chosen = sample_size([str(k) for k in keys], mode.fraction)
        ver.counts = {"would_verify": chosen}
        if mode.kind == "sample":
            ver.counts["not in the sample"] = len(keys) - chosen
    return outcome


def _run_finish(summary: Any, outcome: Outcome, dump_path: Path, *, strict: bool, as_json: bool) -> None:
    """The one summary; discard the dump when asked and everything verified clean; exit per the map."""
    import shutil

    from neptune_migrate.console import console

    code = exit_code(outcome, strict=strict)
    if not summary.dry_run:
        if not summary.dump_kept and (code != ExitCode.OK or summary.verify.kind == "none"):
            summary.dump_kept = True
            why = "verify was skipped" if code == ExitCode.OK else "the run did not end clean"
            summary.phase("verify").note += f"{'; ' if summary.phase('verify').note else ''}dump kept: {why}"
        reports = dump_path / "_reports"
        if not summary.dump_kept:
            kept = dump_path.with_name(dump_path.name + ".reports")
            shutil.copytree(reports, kept, dirs_exist_ok=True)
            for p in summary.phases.values():
                p.reports = [str(kept / Path(r).name) for r in p.reports]
        path = (reports if summary.dump_kept else dump_path.with_name(dump_path.name + ".reports")) / (
            f"run-{_stamp()}.json")
        doc = summary.to_json()
        doc["exit_code"] = int(code)
        path.write_text(json.dumps(redact_obj(doc), indent=2, ensure_ascii=False, default=str) + "\n",
                        encoding="utf-8")
        summary.phase("verify").reports.append(str(path))
        if not summary.dump_kept:
            shutil.rmtree(dump_path)
    for line in summary.lines():
        console.print(_esc(line), soft_wrap=True, highlight=False)
    console.print(category_line(summary.categories()))
    json_summary = None
    if as_json:
        json_summary = summary.to_json()
        json_summary["command"] = "run"
    _finish("plan" if summary.dry_run else "run", outcome, strict=strict, summary=json_summary)


# ---------------------------------------------------------------------------------------------
# config show

config_app = typer.Typer(help="The settings file (neptune-migrate.toml): show the effective settings.",
                         no_args_is_help=True, add_completion=False, rich_markup_mode=None)
app.add_typer(config_app, name="config")


def _origin(sub: Any, param: Any, config: Any, verb_keys: Mapping[str, str]) -> str:
    source = sub.get_parameter_source(param.name)
    name = getattr(source, "name", "")  # click's ParameterSource (vendored by newer typer): compared by name
    if name == "COMMANDLINE":
        return "flag"
    if name == "ENVIRONMENT":
        envvar = param.envvar if isinstance(param.envvar, str) else ",".join(param.envvar or ())
        return f"env:{envvar}"
    if name == "DEFAULT_MAP":
        for key, name in verb_keys.items():
            if name == param.name and key in config.settings:
                return str(config.settings[key].origin)
    return "default"


@config_app.command("show", context_settings={"allow_extra_args": True, "ignore_unknown_options": True})
def config_show_cmd(
    ctx: typer.Context,
    verb: Annotated[
        str, typer.Argument(help="The verb whose settings to show: export, import, verify or run; any further "
                            "arguments are that verb's flags (their values then show as 'flag').",
                            **_choice(CONFIG_VERBS))
    ] = "run",
    config_file: Annotated[
        Path | None, typer.Option("--config", metavar="FILE", help="Settings file (default ./neptune-migrate.toml).")
    ] = None,
    profile: Annotated[str | None, typer.Option("--profile", help="Profile of the settings file.")] = None,
    as_json: JsonOpt = False,
) -> None:
    """Print the merged effective settings of a verb, secrets masked, each with where it came from
    (default, file:PATH:LINE, env:NAME or flag). Precedence: default < file < environment < flag."""
    from neptune_migrate.config import SECRET_ENV, Setting
    from neptune_migrate.console import console
    from neptune_migrate.errors import redact

    root = ctx.find_root()
    group: Any = root.command
    config = _load_config(group, config_file, profile, resolve=False)
    command = group.commands[verb]
    verb_keys = _verb_keys(command, verb)
    sub = command.make_context(verb, list(ctx.args), parent=root, resilient_parsing=True,
                               default_map=config.for_verb(verb_keys))
    rows: list[tuple[str, str, str]] = []
    names = {name: key for key, name in reversed(list(verb_keys.items()))}
    for param in command.params:
        key = names.get(param.name or "")
        if key is None:
            continue
        value = sub.params.get(param.name)
        origin = _origin(sub, param, config, verb_keys)
        setting = config.settings.get(key)
        if origin.startswith(("file:", "env:NEPTUNE_MIGRATE_")) and setting is not None:
            shown = setting.shown()
        elif key in SECRET_ENV:
            shown = "" if value is None else "***"
        elif isinstance(value, (list, tuple)):
            shown = redact(" ".join(str(v) for v in value))
        else:
            shown = "" if value is None else redact(str(value))
        rows.append((key, shown, origin))
    for key in sorted(SECRET_ENV):
        setting = config.settings.get(key)
        if key not in names:
            var = SECRET_ENV[key]
            if var in os.environ:  # the client's own variable wins over the file (it is never overwritten)
                setting = Setting(key, os.environ[var], f"env:{var}", secret=True)
            if setting is not None:
                rows.append((key, setting.shown(), f"{setting.origin} -> {var}"))
    where = str(config.path) if config.path else "no settings file"
    head = f"settings of `{verb}` from {where}" + (f", profile {config.profile}" if config.profile else "")
    if config.profiles:
        head += f" (profiles: {', '.join(config.profiles)})"
    if as_json:
        doc = {"verb": verb, "file": None if config.path is None else str(config.path), "profile": config.profile,
               "profiles": list(config.profiles),
               "settings": [{"key": k, "value": v, "origin": o} for k, v, o in rows]}
        sys.stdout.write(json.dumps(doc, ensure_ascii=False) + "\n")
        return
    from rich.table import Table

    table = Table(title=_esc(head), show_header=True, title_justify="left")
    for col in ("key", "value", "origin"):
        table.add_column(col, overflow="fold")
    for row in rows:
        table.add_row(*(_esc(c) for c in row))
    console.print(table)
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
