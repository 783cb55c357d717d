"""Ctrl-C: a real SIGINT to a real `neptune-migrate` process importing into / verifying a real MLflow store."""

from __future__ import annotations

import json
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.factories import build_dump

RUNS = 30


def interrupt_after(args: list[str], env: dict[str, str], marker: str, delay: float = 0.0) -> tuple[int, str]:
    """Start the CLI, wait for a stderr line containing `marker`, send SIGINT; return (exit code, stderr)."""
    proc = subprocess.Popen([sys.executable, "-m", "neptune_migrate", *args], stderr=subprocess.PIPE,
                            stdout=subprocess.DEVNULL, text=True, env=env)
    assert proc.stderr is not None
    lines: list[str] = []
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        line = proc.stderr.readline()
        if not line:
            break
        lines.append(line)
        if marker in line:
            time.sleep(delay)
            proc.send_signal(signal.SIGINT)
            break
    rest = proc.communicate(timeout=120)[1]
    return proc.returncode, "".join(lines) + rest


def imported_dump(tmp_path: Path, runs: int) -> tuple[Path, str]:
    dump = tmp_path / "dump"
    build_dump(dump, tmp_path, run_ids=tuple(f"RUN-{i:02d}" for i in range(runs)), points=5)
    return dump, f"sqlite:///{tmp_path}/mlflow.db"


def check_import_interrupted_then_resumed(cli_env: dict[str, str], cli, dump: Path, uri: str, runs: int) -> None:  # type: ignore[no-untyped-def]
    args = ["import", str(dump), "--to", "mlflow", "--tracking-uri", uri]
    code, err = interrupt_after(args, cli_env, "created")
    assert code == 130, err
    found = re.search(rf"^interrupted: (\d+) of {runs} runs done \(created (\d+)\)\. finished runs are kept; a run "
                      r"cut short is repaired on the next import; to resume, run the same command again: "
                      r"neptune-migrate import .*--tracking-uri sqlite:///\S+/mlflow\.db$", err, re.M)
    assert found, err
    done = int(found.group(1))
    assert 1 <= done < runs and int(found.group(2)) == done
    assert "Traceback" not in err

    again = cli(*args, "--json", check_rc=1)  # the same command resumes
    summary = json.loads(again.stdout)
    assert summary["why"] == [f"lost: {runs}"]  # every factory run misses model/lost, nothing else
    counts = summary["counts"]
    assert counts.get("skipped", 0) >= done
    assert sum(counts.values()) == runs and set(counts) <= {"skipped", "created", "repaired"}


def test_ctrl_c_during_import_says_what_was_done_and_exits_130(cli_env: dict[str, str], tmp_path: Path, cli) -> None:  # type: ignore[no-untyped-def]
    # 30 runs, not 6: six small runs were once all imported (1.1 s) before the SIGINT landed
    dump, uri = imported_dump(tmp_path, RUNS)
    check_import_interrupted_then_resumed(cli_env, cli, dump, uri, RUNS)


@pytest.mark.slow
def test_ctrl_c_during_verify_says_what_was_done_and_exits_130(cli_env: dict[str, str], tmp_path: Path, cli) -> None:  # type: ignore[no-untyped-def]
    dump, uri = imported_dump(tmp_path, RUNS)
    check_import_interrupted_then_resumed(cli_env, cli, dump, uri, RUNS)
    code, err = interrupt_after(["verify", str(dump), "--to", "mlflow", "--tracking-uri", uri], cli_env,
                                f"verifying {RUNS} run(s)", delay=1.0)
    assert code == 130, err
    found = re.search(rf"^interrupted: (\d+) of {RUNS} runs verified \((?:match \d+|none finished)\); verify only "
                      r"reads, nothing was written; to resume, run the same command again: neptune-migrate verify ",
                      err, re.M)
    assert found, err
    assert int(found.group(1)) < RUNS
    assert not list((dump / "_reports").glob("verify-*"))  # no verdict written for a verify cut short
