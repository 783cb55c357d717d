"""`run` killed with SIGKILL in each of its three phases, then run again: the end state verifies and
equals an uninterrupted run's (the import phase in the default run; export and verify are `slow`)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from tests.run.conftest import RUNS, Runner, cli_env, run_args, store_contents

PHASES = {
    # phase: (a line printed inside the phase, with work left after it; the report written at its end)
    "export": ("exported my-ws/my-proj/RUN-1", "export-"),
    "import": ("created my-ws/my-proj/RUN-", "import-"),
    "verify": ("verifying 6 run(s)", "verify-"),
}


@pytest.mark.parametrize("phase", [
    pytest.param("export", marks=pytest.mark.slow),
    "import",
    pytest.param("verify", marks=pytest.mark.slow),
])
def test_sigkill_in_a_phase_then_rerun_equals_an_uninterrupted_run(
    phase: str, nm: Runner, reference: tuple[Path, str, dict[str, Any]], generated_source: Path, store: str,
    tmp_path: Path,
) -> None:
    assert RUNS == 6
    marker, report = PHASES[phase]
    dump = tmp_path / "dump"
    child = subprocess.Popen([sys.executable, "-m", "neptune_migrate", *run_args(generated_source, dump, store)],
                             stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, cwd=tmp_path,
                             env=cli_env(), start_new_session=True)
    seen: list[str] = []
    assert child.stderr is not None
    try:
        for line in child.stderr:
            seen.append(line)
            if marker in line:
                os.kill(child.pid, signal.SIGKILL)
                break
    finally:
        child.stderr.close()
        if child.poll() is None and not any(marker in s for s in seen):
            os.kill(child.pid, signal.SIGKILL)
        child.wait(timeout=60)
    assert child.returncode == -signal.SIGKILL, "".join(seen)
    # The kill landed inside the phase: its report (written when the phase ends) is not there.
    assert not list((dump / "_reports").glob(f"{report}*")), "".join(seen)
    if phase == "import":
        assert 1 <= len(store_contents(store)) < RUNS  # some runs imported, some left: a real mid-phase kill

    again = nm(*run_args(generated_source, dump, store, "--json", "--discard-dump"), rc=0)
    doc = json.loads(again.stdout.strip().splitlines()[-1])
    phases = {p["phase"]: p for p in doc["phases"]}
    assert phases["verify"]["counts"] == {"runs": RUNS, "matching": RUNS, "findings": 0}
    assert doc["exit_code"] == 0
    if phase != "export":
        assert phases["export"]["counts"]["skipped"] == RUNS  # nothing complete and unchanged is redone
    if phase == "verify":
        assert phases["import"]["counts"] == {"skipped": RUNS}
    assert store_contents(store) == store_contents(reference[1])
    # --discard-dump: a run that verified clean removes the dump and keeps its reports beside it
    assert not dump.exists() and doc["dump_kept"] is False
    kept = sorted(p.name.split("-")[0] for p in (tmp_path / "dump.reports").iterdir())
    assert kept.count("run") == 1 and kept.count("import") >= 1 and kept.count("verify") == 2
    assert all(Path(r).parent == tmp_path / "dump.reports" for p in doc["phases"] for r in p["reports"])
