"""The CLI contract (issue 12): exit codes that carry signal, exit 3 up front, flags, aliases, --json.

Real console entry point in subprocesses, real SQLite MLflow stores, real Aim and W&B code paths;
a closed port on 127.0.0.1 for the unreachable cases.
"""

from __future__ import annotations

import json
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest

from neptune_migrate.cli import Outcome, category_line, exit_code
from neptune_migrate.dump.writer import DumpWriter
from neptune_migrate.errors import ExitCode
from neptune_migrate.model import FileEntry, Loss, LossCategory
from tests.conftest import FIXTURES, REPO
from tests.factories import build_dump, float_points, key, make_record

LOST, GONE, FORM = (c.value for c in LossCategory)


# -- the one map --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("outcome", "strict", "code"),
    [
        (Outcome(), False, ExitCode.OK),
        (Outcome(categories={FORM: 50}), True, ExitCode.OK),  # changed form never fails
        (Outcome(categories={GONE: 7}), False, ExitCode.OK),  # a warning
        (Outcome(categories={GONE: 7}), True, ExitCode.PARTIAL),
        (Outcome(incomplete_runs=1), False, ExitCode.OK),
        (Outcome(incomplete_runs=1), True, ExitCode.PARTIAL),
        (Outcome(categories={LOST: 1}), False, ExitCode.PARTIAL),
        (Outcome(failed_runs=1), False, ExitCode.PARTIAL),
        (Outcome(problems=2), False, ExitCode.PARTIAL),
        (Outcome(categories={LOST: 1}, dry_run=True), False, ExitCode.BLOCKED),
        (Outcome(categories={GONE: 1}, dry_run=True), True, ExitCode.BLOCKED),
        (Outcome(categories={GONE: 1}, dry_run=True), False, ExitCode.OK),
    ],
)
def test_exit_code_map(outcome: Outcome, strict: bool, code: ExitCode) -> None:
    assert exit_code(outcome, strict=strict) is code
    assert bool(outcome.reasons(strict=strict)) == (code != ExitCode.OK)


def test_category_line_names_each_kind_and_never_calls_changed_form_a_loss() -> None:
    line = category_line({LOST: 2, GONE: 5, FORM: 7}, {FORM: {"key_renamed": 3, "step_converted": 4}})
    assert line == ("lost: 2; not in the source any more: 5 (warning); "
                    "changed form: 7 (key_renamed=3, step_converted=4)")
    assert "loss" not in line
    assert category_line({}) == "lost: 0; not in the source any more: 0; changed form: 0"


# -- helpers ------------------------------------------------------------------------------------


def gone_dump(root: Path, run_ids: tuple[str, ...] = ("GONE-1",)) -> Path:
    """A dump whose runs each miss one file the Neptune client had uploaded and deleted."""
    with DumpWriter(root) as dump:
        for rid in run_ids:
            k = key(rid)
            with dump.begin_run(k) as run:
                run.add_points("float", float_points("train/loss", [0.0, 1.0, 2.0], [0.5, 0.4, 0.3]))
                entry = FileEntry("model/ckpt", "file", "ckpt.pt", None, None, None,
                                  "deleted by the Neptune client after upload", "/data/ckpt.pt")
                loss = Loss("missing_file", "model/ckpt", 1, "deleted by the Neptune client after upload",
                            category=LossCategory.NOT_IN_SOURCE)
                run.commit(make_record(k, files=(entry,), losses=(loss,)))
    return root


def closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def last_line(text: str) -> str:
    return text.rstrip("\n").splitlines()[-1]


# -- categories in summaries, --strict, --json ----------------------------------------------------


def test_not_in_source_is_a_warning_and_strict_makes_it_exit_1(cli: Any, tmp_path: Path) -> None:
    dump = str(gone_dump(tmp_path / "dump"))
    uri = f"sqlite:///{tmp_path}/mlflow.db"
    done = cli("import", dump, "--to", "mlflow", "--tracking-uri", uri, "--json", check_rc=0)
    summary = json.loads(done.stdout)  # exactly one JSON document on stdout
    assert summary["command"] == "import" and summary["exit_code"] == 0 and summary["why"] == []
    assert summary["categories"][LOST] == 0 and summary["categories"][GONE] == 1
    assert summary["counts"] == {"created": 1}
    assert last_line(done.stderr) == ("lost: 0; not in the source any more: 1 (warning) (file_missing_in_dump=1); "
                                      "changed form: 0")
    report = json.loads(Path(summary["report"]).read_text())
    assert report["categories"][GONE] == 1
    [item] = [lo for lo in report["runs"][0]["losses"] if lo["kind"] == "file_missing_in_dump"]
    assert item["category"] == GONE and item["error"] is False

    strict = cli("import", dump, "--to", "mlflow", "--tracking-uri", uri, "--strict", check_rc=1)
    assert last_line(strict.stderr) == "import exit 1: not in the source any more: 1 (--strict)"

    md = tmp_path / "out" / "verify.md"
    ok = cli("verify", dump, "--to", "mlflow", "--tracking-uri", uri, "--json", "--markdown", str(md), check_rc=0)
    doc = json.loads(ok.stdout)
    assert doc["ok"] is True and doc["dump_categories"][GONE] == 1 and doc["exit_code"] == 0
    assert doc["reports"]["markdown"] == str(md)
    text = md.read_text()
    assert text.startswith("# Verification: mlflow sqlite:///")
    assert "**OK**: All runs match." in text
    assert "Warning: 1 item(s) were not in the source any more." in text
    assert "dump's own losses: lost 0, not in the source 1" in ok.stderr
    assert "warning: 1 item(s) were not in the source any more" in ok.stderr
    bad = cli("verify", dump, "--to", "mlflow", "--tracking-uri", uri, "--strict", check_rc=1)
    assert last_line(bad.stderr) == "verify exit 1: not in the source any more: 1 (--strict)"


def test_export_that_exits_1_says_why_on_its_last_line(cli: Any, tmp_path: Path) -> None:
    import shutil

    src = tmp_path / "exports"
    shutil.copytree(FIXTURES / "neptune-exporter" / "neptune2", src)
    [weights] = (src / "files").rglob("weights")
    weights.unlink()
    proc = cli("export", "--from", "neptune-exporter", str(src / "data"), "--out", str(tmp_path / "dump"),
               "--json", check_rc=1)
    assert last_line(proc.stderr) == "export exit 1: lost: 1"
    doc = json.loads(proc.stdout)
    assert (doc["command"], doc["exit_code"], doc["why"]) == ("export", 1, ["lost: 1"])
    assert doc["categories"] == {LOST: 1, GONE: 0, FORM: 0}
    assert doc["counts"] == {"exported": 1, "skipped": 0, "filtered": 0, "failed": 0}


# -- exit 3: unreachable, detected up front --------------------------------------------------------


@pytest.mark.parametrize("extra", [[], ["--dry-run"], ["verify"]], ids=["import", "dry-run", "verify"])
def test_refused_mlflow_server_exits_3_in_seconds_before_any_run(cli: Any, tmp_path: Path, extra: list[str]) -> None:
    dump = tmp_path / "dump"
    build_dump(dump, tmp_path, run_ids=("PROJ-1", "PROJ-2"), points=5)
    before = sorted(p.relative_to(dump) for p in dump.rglob("*"))
    port = closed_port()
    verb = "verify" if extra == ["verify"] else "import"
    flags = [] if extra == ["verify"] else extra
    started = time.monotonic()
    proc = cli(verb, str(dump), "--to", "mlflow", "--tracking-uri", f"http://u:secret@127.0.0.1:{port}", *flags)
    elapsed = time.monotonic() - started
    assert proc.returncode == 3, proc.stderr
    assert elapsed < 10, elapsed
    assert proc.stderr == (f"error: cannot reach the MLflow tracking server at http://127.0.0.1:{port}: "
                           "ConnectionRefusedError: [Errno 111] Connection refused "
                           "(checked before any run; nothing was written)\n")
    assert sorted(p.relative_to(dump) for p in dump.rglob("*")) == before  # no run tried, no report, no ledger


def test_refused_aim_server_and_wandb_api_exit_3(cli: Any, cli_env: dict[str, str], tmp_path: Path) -> None:
    dump = tmp_path / "dump"
    build_dump(dump, tmp_path, points=5)
    port = closed_port()
    started = time.monotonic()
    aim = cli("import", str(dump), "--to", "aim", "--aim-repo", f"aim://127.0.0.1:{port}")
    assert aim.returncode == 3, aim.stderr
    assert time.monotonic() - started < 10
    assert last_line(aim.stderr) == (f"error: cannot reach the Aim server at 127.0.0.1:{port}: ConnectionRefusedError: "
                                     "[Errno 111] Connection refused (checked before any run; nothing was written)")
    env = dict(cli_env, WANDB_BASE_URL=f"http://127.0.0.1:{port}", WANDB_API_KEY="x" * 40,
               WANDB_DIR=str(tmp_path / "wb"), WANDB_CONFIG_DIR=str(tmp_path / "wbcfg"))
    started = time.monotonic()
    wb = subprocess.run([sys.executable, "-m", "neptune_migrate", "verify", str(dump), "--to", "wandb",
                         "--wandb-mode", "online"], capture_output=True, text=True, env=env, timeout=120, check=False)
    assert wb.returncode == 3, wb.stderr
    assert time.monotonic() - started < 10
    assert f"error: cannot reach the W&B server at http://127.0.0.1:{port}: ConnectionRefusedError" in wb.stderr
    assert "x" * 40 not in wb.stderr


@pytest.mark.parametrize(
    ("uri", "message"),
    [
        ("mlflow.db", "error: --tracking-uri 'mlflow.db' is a file name, not a tracking URI; "
                      "for a SQLite store use sqlite:///mlflow.db"),
        ("sqlite://rel.db", "error: --tracking-uri 'sqlite://rel.db' cannot work: a SQLite URI has three slashes "
                            "before a relative path (sqlite:///rel.db) and four before an absolute one "
                            "(sqlite:////abs/path/rel.db)"),
    ],
)
def test_tracking_uri_that_cannot_work_is_a_usage_error(cli: Any, tmp_path: Path, uri: str, message: str) -> None:
    build_dump(tmp_path / "dump", tmp_path, points=5)
    proc = cli("import", str(tmp_path / "dump"), "--to", "mlflow", "--tracking-uri", uri, "--dry-run", check_rc=2)
    assert proc.stderr == message + "\n"


# -- install hints ----------------------------------------------------------------------------------


def run_without(modules: tuple[str, ...], args: list[str], env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    """The real entry point in a process where `modules` cannot be imported (as if not installed)."""
    code = ("import sys\n"
            f"for m in {modules!r}:\n    sys.modules[m] = None\n"
            f"sys.argv = ['neptune-migrate', *{args!r}]\n"
            "from neptune_migrate.cli import main\nmain()\n")
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=120,
                          check=False, cwd=REPO)


@pytest.mark.parametrize(
    ("to", "flags", "package"),
    [
        ("mlflow", ["--tracking-uri", "sqlite:///{tmp}/m.db"], "mlflow"),
        ("wandb", ["--wandb-mode", "offline", "--wandb-dir", "{tmp}/wb"], "wandb"),
        ("aim", ["--aim-repo", "{tmp}/aim"], "aim"),
    ],
)
def test_missing_destination_sdk_prints_the_install_hint_and_exits_2(
    cli_env: dict[str, str], tmp_path: Path, to: str, flags: list[str], package: str
) -> None:
    build_dump(tmp_path / "dump", tmp_path, points=5)
    args = ["import", str(tmp_path / "dump"), "--to", to, *(f.format(tmp=tmp_path) for f in flags)]
    proc = run_without((package,), args, cli_env)
    assert proc.returncode == 2, proc.stderr
    hint = f'pip install "neptune-migrate[{package}]"'
    assert proc.stderr == f"error: {package} is not installed; install it with: {hint}\n"
    assert not (tmp_path / "m.db").exists() and not (tmp_path / "aim").exists() and not (tmp_path / "wb").exists()
    assert not (tmp_path / "dump" / "_reports").exists()


def test_missing_neptune_scale_sdk_prints_the_hint_before_any_run(cli_env: dict[str, str], tmp_path: Path) -> None:
    args = ["export", "--from", "neptune-scale", str(FIXTURES / "neptune_scale" / "offline"), "--out",
            str(tmp_path / "dump")]
    proc = run_without(("neptune_api", "neptune_query"), args, cli_env)
    assert proc.returncode == 2, proc.stderr
    assert proc.stderr == ('error: neptune-scale is not installed; install it with: '
                           'pip install "neptune-migrate[neptune]"\n')
    assert not (tmp_path / "dump").exists()


# -- flags, aliases, help, output ------------------------------------------------------------------


def test_help_shows_choices_and_aliases_and_h_works(cli: Any) -> None:
    assert cli("-h", check_rc=0).stdout == cli("--help", check_rc=0).stdout
    export = cli("export", "-h", check_rc=0).stdout
    assert "--from [neptune-exporter|neptune-offline|neptune-scale|neptune2-api|neptune3-api]" in export
    assert "-r, --run-regex" in export and "-p, --only-project, --project-ids" in export and "--strict" in export
    imp = cli("import", "-h", check_rc=0).stdout
    for text in ("--to [mlflow|wandb|aim]", "--wandb-mode [online|offline]",
                 "--step-policy [auto|auto-series|scale|rank|floor]", "--tracking-uri, --mlflow-tracking-uri",
                 "--entity, --wandb-entity", "-a, --attributes",
                 "-r, --run-id", "--json", "--strict", "-v, --verbose"):
        assert text in imp, text
    assert "summary" in cli("--help", check_rc=0).stdout
    bad = cli("import", "x", "--to", "neptune", check_rc=2)
    assert "Invalid value for '--to': 'neptune' is not one of: mlflow, wandb, aim" in bad.stderr


def test_help_choices_are_the_registries() -> None:
    from neptune_migrate import cli
    from neptune_migrate.destinations import KNOWN_DESTINATIONS
    from neptune_migrate.sources import SOURCES

    assert tuple(sorted(SOURCES)) == cli.SOURCE_NAMES
    assert cli.DESTINATION_NAMES == KNOWN_DESTINATIONS


def test_summary_alias_and_verbose_after_the_verb(cli: Any, tmp_path: Path) -> None:
    build_dump(tmp_path / "dump", tmp_path, points=5)
    inspect = json.loads(cli("inspect", str(tmp_path / "dump"), "--json", check_rc=0).stdout)
    summary = json.loads(cli("summary", str(tmp_path / "dump"), "--json", "-v", check_rc=0).stdout)
    assert summary == inspect and summary["runs"] == 1
    cli("-v", "inspect", str(tmp_path / "dump"), "-vv", check_rc=0)


def test_exporter_flag_names_select_the_same_runs(cli: Any, tmp_path: Path) -> None:
    dump = tmp_path / "dump"
    build_dump(dump, tmp_path, run_ids=("PROJ-1", "PROJ-2", "PROJ-3"), points=5)
    uri = f"sqlite:///{tmp_path}/m.db"
    report = tmp_path / "not" / "yet" / "there" / "plan.json"
    proc = cli("import", str(dump), "--to", "mlflow", "--mlflow-tracking-uri", uri, "--dry-run",
               "-p", "my-ws/my-proj", "-r", "PROJ-1", "-r", "PROJ-3", "-a", "train/loss", "-a", "model/weights",
               "--report", str(report), "--json", check_rc=0)  # -a leaves PROJ-1's lost model/lost out
    doc = json.loads(proc.stdout)
    assert doc["counts"] == {"filtered": 1, "would_create": 2}
    assert doc["report"] == str(report) and report.is_file()  # folders created
    runs = json.loads(report.read_text())["runs"]
    planned = [r for r in runs if r["status"] == "would_create"]
    assert [r["key"] for r in planned] == ["my-ws/my-proj/PROJ-1", "my-ws/my-proj/PROJ-3"]
    assert all(r["files"] == 1 for r in planned)  # -a twice: exact paths, model/weights only
    assert doc["categories"][LOST] == 0
    assert not Path(uri.removeprefix("sqlite:///")).exists()


def test_no_line_is_wrapped_off_a_terminal(cli_env: dict[str, str], tmp_path: Path) -> None:
    env = {k: v for k, v in cli_env.items() if k not in ("COLUMNS", "LINES")}
    deep = tmp_path / ("a-rather-long-folder-name-" * 4) / "dump"
    build_dump(deep, tmp_path, run_ids=("A-RUN-ID-THAT-IS-LONG-ENOUGH-TO-MATTER-" + "X" * 40,), points=5)
    proc = subprocess.run([sys.executable, "-m", "neptune_migrate", "inspect", str(deep)], capture_output=True,
                          text=True, env=env, timeout=120, check=False)
    assert proc.returncode == 0, proc.stderr
    assert any(str(deep) in line for line in proc.stderr.splitlines())
    assert max(len(line) for line in proc.stderr.splitlines()) > 120
    uri = f"sqlite:///{tmp_path}/m.db"
    plan = subprocess.run([sys.executable, "-m", "neptune_migrate", "import", str(deep), "--to", "mlflow",
                           "--tracking-uri", uri, "--dry-run"], capture_output=True, text=True, env=env,
                          timeout=120, check=False)
    assert plan.returncode == 4, plan.stderr
    assert any(("A-RUN-ID-THAT-IS-LONG-ENOUGH-TO-MATTER-" + "X" * 40) in line and "would_create" in line
               for line in plan.stderr.splitlines())


def test_verify_shows_progress_on_a_terminal(cli: Any, cli_env: dict[str, str], tmp_path: Path) -> None:
    import os
    import pty

    dump = tmp_path / "dump"
    build_dump(dump, tmp_path, run_ids=("PROJ-1", "PROJ-2"), points=5)
    uri = f"sqlite:///{tmp_path}/m.db"
    cli("import", str(dump), "--to", "mlflow", "--tracking-uri", uri, check_rc=1)  # model/lost: lost by us
    master, slave = pty.openpty()  # verify exits 1 too: the dump's own lost item is part of the verdict
    env = dict(cli_env, TERM="xterm", COLUMNS="120")
    env.pop("NO_COLOR", None)
    proc = subprocess.Popen([sys.executable, "-m", "neptune_migrate", "verify", str(dump), "--to", "mlflow",
                             "--tracking-uri", uri], stdin=slave, stdout=slave, stderr=slave, env=env)
    os.close(slave)
    chunks = []
    while True:
        try:
            data = os.read(master, 65536)
        except OSError:  # EIO: the child closed the terminal
            break
        if not data:
            break
        chunks.append(data)
    assert proc.wait(timeout=120) == 1
    os.close(master)
    text = b"".join(chunks).decode("utf-8", "replace")
    assert "verify runs" in text and "2/2" in text  # the bar, on the terminal only
    plain = subprocess.run([sys.executable, "-m", "neptune_migrate", "verify", str(dump), "--to", "mlflow",
                            "--tracking-uri", uri], capture_output=True, text=True, env=cli_env, timeout=120,
                           check=False)
    assert plain.returncode == 1 and "the dump lost data at export" in plain.stderr
    assert "verify runs" not in plain.stderr and "verifying 2 run(s)" in plain.stderr
