"""`neptune-migrate run`: export -> import -> verify in one command, with the real entry point, a
generated neptune-exporter source and a real MLflow SQLite store."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from tests.run.conftest import RUNS, Runner, run_args, store_contents


def _summary(out: str) -> dict[str, Any]:
    doc: dict[str, Any] = json.loads(out.strip().splitlines()[-1])
    doc["by_phase"] = {p["phase"]: p for p in doc["phases"]}
    return doc


def test_run_moves_and_verifies_in_one_command(reference: tuple[Path, str, dict[str, Any]]) -> None:
    dump, store, doc = reference
    phases = {p["phase"]: p for p in doc["phases"]}
    assert phases["export"]["counts"] == {"exported": RUNS, "skipped": 0, "filtered": 0, "failed": 0}
    assert phases["import"]["counts"] == {"created": RUNS}
    assert phases["verify"]["counts"] == {"runs": RUNS, "matching": RUNS, "findings": 0}
    assert doc["exit_code"] == 0 and doc["why"] == [] and doc["categories"]["lost"] == 0
    reports = [Path(r) for p in doc["phases"] for r in p["reports"]]
    assert [r.name.split("-")[0] for r in reports] == ["export", "import", "verify", "verify", "run"]
    assert all(r.is_file() and r.parent == dump / "_reports" for r in reports)
    assert json.loads(reports[-1].read_text())["exit_code"] == 0
    contents = store_contents(store)
    assert sorted(contents) == sorted(f"my-ws/my-proj/RUN-{i}" for i in range(1, RUNS + 1))
    run3 = contents["my-ws/my-proj/RUN-3"]
    assert ("parameters/lr", "0.003") in run3["params"] and run3["name"] == "trial 3"
    losses = sorted((m for m in run3["metrics"] if m[0] == "train/loss"), key=lambda m: m[3])
    assert [m[3] for m in losses] == list(range(20))
    assert losses[0][1] == pytest.approx(1 / 3) and losses[19][1] == pytest.approx(1 / 22)
    assert losses[0][2] == 1735787045000 and losses[19][2] == 1735787045000 + 19_000  # T0 + i seconds


@pytest.mark.slow  # the default run shows the same through the SIGKILL test's re-run (tests/run/test_run_kill.py)
def test_run_again_redoes_nothing(nm: Runner, reference: tuple[Path, str, dict[str, Any]],
                                  generated_source: Path) -> None:
    dump, store, _ = reference
    before = store_contents(store)
    proc = nm(*run_args(generated_source, dump, store, "--json", "--verify", "sample:0.3"), rc=0)
    doc = _summary(proc.stdout)
    assert doc["by_phase"]["export"]["counts"] == {"exported": 0, "skipped": RUNS, "filtered": 0, "failed": 0}
    assert doc["by_phase"]["import"]["counts"] == {"skipped": RUNS}
    verified = doc["by_phase"]["verify"]["counts"]
    assert verified["runs"] == verified["matching"] >= 1
    assert verified["runs"] + verified["not in the sample"] == RUNS
    assert "(a sample: sample:0.3 of the runs, chosen by a stable hash of the run key)" in proc.stderr
    assert store_contents(store) == before


def test_two_shards_of_run_move_together_what_one_run_moves(
    nm: Runner, reference: tuple[Path, str, dict[str, Any]], generated_source: Path, store: str, tmp_path: Path
) -> None:
    _, reference_store, _ = reference
    dump = tmp_path / "dump"
    docs = [_summary(nm(*run_args(generated_source, dump, store, "--json", "--shard", f"{k}/2"), rc=0).stdout)
            for k in (1, 2)]
    exported = [d["by_phase"]["export"]["counts"]["exported"] for d in docs]
    imported = [d["by_phase"]["import"]["counts"].get("created", 0) for d in docs]
    verified = [d["by_phase"]["verify"]["counts"] for d in docs]
    assert sum(exported) == sum(imported) == RUNS and all(exported), (exported, imported)
    assert [v["runs"] for v in verified] == exported and all(v["matching"] == v["runs"] for v in verified)
    reports = sorted(p.name for p in (dump / "_reports").iterdir())
    assert sum(".shard-1-of-2" in r or "shard-1-of-2" in r for r in reports) >= 3  # export, import, verify
    assert sum("shard-2-of-2" in r for r in reports) >= 3
    assert store_contents(store) == store_contents(reference_store)


def test_dry_run_plans_three_steps_and_writes_nothing(nm: Runner, generated_source: Path, tmp_path: Path) -> None:
    work = tmp_path / "work"
    work.mkdir()
    store = work / "none.db"
    proc = nm(*run_args(generated_source, work / "dump", f"sqlite:///{store}", "--dry-run", "--verify", "sample:0.5"),
              rc=0)
    out = proc.stderr
    assert f"exported: would_export {RUNS}, would_skip_if_unchanged 0 [planned]" in out
    assert f"imported: would_create {RUNS} [planned]" in out
    assert "verified: would_verify " in out and "(a sample: sample:0.5 of the runs" in out
    assert "dry run: nothing was written" in out
    assert list(work.iterdir()) == []


def test_bad_verify_value_is_a_usage_error(nm: Runner, generated_source: Path, tmp_path: Path) -> None:
    proc = nm(*run_args(generated_source, tmp_path / "dump", f"sqlite:///{tmp_path}/x.db", "--verify", "sample:2"),
              rc=2)
    assert "--verify 'sample:2': expected full, none or sample:FRACTION" in proc.stderr
    assert not (tmp_path / "dump").exists()
