"""Soak: random SIGKILLs of real imports per destination, and random faults in front of `mlflow server`.

Run on demand: `python -m pytest -m slow tests/reliability` (about 30 minutes on a busy 2-core machine). Each
case asserts that nothing is lost: after the kills, one more import completes, and `verify`
(the real CLI) finds every run of the dump, each once, equal to the dump. Set
`NEPTUNE_MIGRATE_SOAK_SUMMARY=FILE` to append one Markdown table row per case to FILE (the table
in docs/reliability.md comes from there). The small cases without `slow` run by default.
"""

from __future__ import annotations

import json
import os
import random
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import pytest

from neptune_migrate.destinations.mlflow.destination import MlflowDestination
from neptune_migrate.pipeline.import_ import ImportOptions, import_runs
from neptune_migrate.retry import RetryPolicy
from tests.conftest import REPO
from tests.destinations.mlflow.conftest import MlflowBackend, mlflow_server  # noqa: F401 - the fixture
from tests.factories import build_clean_dump
from tests.support.proxy import FaultProxy, RandomFaults

Target = Callable[[Path], list[str]]
"""Destination flags for a target folder."""

TARGETS: dict[str, Target] = {
    "mlflow": lambda root: ["--to", "mlflow", "--tracking-uri", f"sqlite:///{root}/mlflow.db"],
    "wandb": lambda root: ["--to", "wandb", "--wandb-mode", "offline", "--wandb-dir", str(root / "wandb")],
    "aim": lambda root: ["--to", "aim", "--aim-repo", str(root / "aim")],
}


@dataclass
class Summary:
    case: str
    kills: int = 0
    faults: int = 0
    retries: int = 0
    runs_verified: int = 0
    seconds: float = 0.0

    def row(self) -> str:
        return (f"| {self.case} | {self.kills} | {self.faults} | {self.retries} | {self.runs_verified} | "
                f"{self.seconds:.0f} s |")


def _record(summary: Summary) -> None:
    print("\n" + summary.row())
    out = os.environ.get("NEPTUNE_MIGRATE_SOAK_SUMMARY")
    if out:
        with Path(out).open("a", encoding="utf-8") as fh:
            fh.write(summary.row() + "\n")


def _env() -> dict[str, str]:
    return dict(os.environ, PYTHONPATH=str(REPO), NO_COLOR="1", COLUMNS="200", WANDB_SILENT="true")


def _cli(*args: str) -> list[str]:
    return [sys.executable, "-m", "neptune_migrate", *args]


def _verify_cli(dump: Path, target: list[str], report: Path, runs: int) -> None:
    """The real `verify`: exit 0, every run of the dump found once and equal."""
    proc = subprocess.run(_cli("verify", str(dump), *target, "--report", str(report)), env=_env(),
                          capture_output=True, text=True, timeout=600, check=False)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    doc = json.loads(report.read_text())
    assert doc["ok"] is True
    assert doc["totals"]["runs"] == runs
    assert doc["totals"]["runs_matching"] == runs
    assert doc["counts"] == {"missing": 0, "extra": 0, "differs": 0, "error": 0}


def _fresh_target(destination: str, root: Path) -> list[str]:
    """A new, empty target folder (the import creates the store in it: for MLflow, a kill during
    MLflow's own schema migration must leave no half-made store, see tests/store/test_store_init.py)."""
    root.mkdir(parents=True, exist_ok=True)
    return TARGETS[destination](root)


def kill_soak(tmp: Path, destination: str, kills: int, seed: int, runs: int = 4, points: int = 20_000) -> Summary:
    """SIGKILL imports at random moments until `kills` kills landed; whenever an import gets to
    finish, verify it and start again on a fresh target."""
    started = time.monotonic()
    ids = tuple(f"KILL-{i}" for i in range(runs))
    dump = build_clean_dump(tmp / "dump", ids, points=points).root
    rng = random.Random(seed)
    summary = Summary(f"{destination}: {kills} random SIGKILLs, {runs} runs x {points:,} points")
    verbose = bool(os.environ.get("NEPTUNE_MIGRATE_SOAK_SUMMARY"))
    # How long one whole import takes here: kills are spread over it.
    scratch = tmp / "timing"
    t0 = time.monotonic()
    subprocess.run(_cli("import", str(dump), *_fresh_target(destination, scratch)), env=_env(), capture_output=True,
                   timeout=600, check=True)
    whole = time.monotonic() - t0
    shutil.rmtree(scratch)
    cycle = 0
    for _ in range(kills * 6):  # bounded: most rounds end in a kill
        if summary.kills >= kills:
            break
        target = _fresh_target(destination, tmp / f"target-{cycle}")
        proc = subprocess.Popen(_cli("import", str(dump), *target), env=_env(), stdout=subprocess.DEVNULL,
                                stderr=subprocess.PIPE, start_new_session=True)
        # Early in the import: a kill then leaves some runs done, one half-written and some not
        # started, and each cycle (fresh target) takes several kills before an import gets through.
        delay = rng.uniform(0.1, 0.45) * whole
        try:
            proc.wait(timeout=delay)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)  # the import and any helper it started, like a crash
            proc.wait()
            summary.kills += 1
            if verbose:
                print(f"{destination}: kill {summary.kills} after {delay:.1f} s (cycle {cycle})", flush=True)
            continue
        stderr = proc.stderr.read().decode() if proc.stderr else ""
        assert proc.returncode == 0, stderr
        # Finished before the kill: the machine is faster than the timing run said; aim earlier.
        whole = min(whole, delay)
        _verify_cli(dump, target, tmp / f"verify-{cycle}.json", runs)
        summary.runs_verified += runs
        cycle += 1
    assert summary.kills == kills
    target = _fresh_target(destination, tmp / f"target-{cycle}")
    final = subprocess.run(_cli("import", str(dump), *target, "--report", str(tmp / "final.json")), env=_env(),
                           capture_output=True, text=True, timeout=900, check=False)
    assert final.returncode == 0, final.stderr
    statuses = {r["status"] for r in json.loads((tmp / "final.json").read_text())["runs"]}
    assert statuses <= {"created", "repaired", "skipped"}
    _verify_cli(dump, target, tmp / "verify-final.json", runs)
    summary.runs_verified += runs
    summary.seconds = time.monotonic() - started
    return summary


def fault_soak(tmp: Path, server: MlflowBackend, seed: int, runs: int, points: int, rate: float = 0.2) -> Summary:
    """Import through the proxy faulting `rate` of all requests (503, 429, resets before and after
    the server acted); every run must be created and verify clean, each once."""
    started = time.monotonic()
    ids = tuple(f"FLT{seed}-{i:02d}" for i in range(runs))
    dump = build_clean_dump(tmp / "dump", ids, points=points)
    template = f"soak-{seed}-{{project}}"
    policy = RetryPolicy(max_attempts=8, initial_wait=0.05, max_wait=1.0, max_total=60)
    chaos = RandomFaults(rate=rate, seed=seed)
    with FaultProxy(server.tracking_uri.removeprefix("http://"), chaos=chaos) as proxy:
        report = import_runs(dump, MlflowDestination(proxy.url, template), ImportOptions(retry=policy))
    assert [r.status for r in report.runs] == ["created"] * runs, [(r.key, r.message) for r in report.runs]
    assert report.retries == len(proxy.injected)
    _verify_cli(dump.root, ["--to", "mlflow", "--tracking-uri", server.tracking_uri,
                            "--experiment-template", template], tmp / "verify.json", runs)
    return Summary(f"mlflow server: {rate:.0%} random faults (seed {seed}), {runs} runs x {points:,} points",
                   faults=len(proxy.injected), retries=report.retries, runs_verified=runs,
                   seconds=time.monotonic() - started)


# -- default run: small --------------------------------------------------------------------------------


def test_two_sigkills_of_an_mlflow_import_lose_nothing(tmp_path: Path) -> None:
    _record(kill_soak(tmp_path, "mlflow", kills=2, seed=1, runs=2, points=5000))


@pytest.mark.slow  # default run: test_faults.py's seeded 20 % fault import of 4 runs
@pytest.mark.server
def test_a_seeded_20_percent_fault_import_loses_nothing(tmp_path: Path, mlflow_server: MlflowBackend) -> None:  # noqa: F811
    _record(fault_soak(tmp_path, mlflow_server, seed=5, runs=3, points=1500))


# -- the soak: python -m pytest -m slow tests/reliability -------------------------------------------


@pytest.mark.slow
@pytest.mark.timeout(1800)
@pytest.mark.parametrize("destination", sorted(TARGETS))
def test_soak_twenty_random_sigkills(tmp_path: Path, destination: str) -> None:
    _record(kill_soak(tmp_path, destination, kills=20, seed=20, runs=6, points=10_000))


@pytest.mark.slow
@pytest.mark.server
@pytest.mark.timeout(900)
@pytest.mark.parametrize("seed", [1, 2])
def test_soak_twenty_percent_faults(tmp_path: Path, mlflow_server: MlflowBackend, seed: int) -> None:  # noqa: F811
    _record(fault_soak(tmp_path, mlflow_server, seed=seed, runs=14, points=5000))
