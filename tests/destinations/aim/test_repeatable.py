"""Repeatable imports into a real Aim repository (issue 12), read back with Aim's own API."""

from __future__ import annotations

from pathlib import Path

from neptune_migrate.destinations.aim import mapping as m
from neptune_migrate.destinations.aim.destination import AimDestination
from neptune_migrate.dump.reader import DumpReader
from neptune_migrate.pipeline.import_ import ImportOptions, import_runs
from neptune_migrate.retry import FAST
from neptune_migrate.verify.verifier import VerifyOptions, verify_runs
from tests.factories import T0, build_two_run_dump, key

OPTS = ImportOptions(retry=FAST)


def test_import_digest_conflicts_incomplete_runs_and_times(tmp_path: Path) -> None:
    from aim import Repo

    build_two_run_dump(tmp_path / "a", points=20)
    build_two_run_dump(tmp_path / "b", points=12)
    a, b = DumpReader(tmp_path / "a"), DumpReader(tmp_path / "b")
    dest = AimDestination(str(tmp_path / "aim"))
    first = import_runs(a, dest, ImportOptions(retry=FAST, attribute_regex="^train/loss$"))
    assert [r.status for r in first.runs] == ["created", "created"]
    full = import_runs(a, dest, OPTS)
    assert [r.status for r in full.runs] == ["repaired", "skipped"]
    assert [r.status for r in import_runs(b, dest, OPTS).runs] == ["conflict", "conflict"]
    assert verify_runs(a, dest, VerifyOptions(import_options=OPTS)).findings == []
    dest.close()

    repo = Repo.from_path(str(tmp_path / "aim"))
    whole, cut = repo.get_run(m.run_hash(key("PROJ-1"))), repo.get_run(m.run_hash(key("PROJ-2")))
    assert sorted(s.name for s in whole.metrics()) == ["eval/loss", "train/acc", "train/loss"]
    assert whole[m.TOOL]["origin"] == a.manifest.dump_id
    assert len(whole[m.TOOL]["import_digest"]) == 64
    assert cut[m.NEPTUNE]["source_complete"] is False
    assert "source_complete" not in whole[m.NEPTUNE]
    # Aim's own start, end and duration: the source's, not the import time
    assert whole.creation_time == T0.timestamp()
    assert whole.duration == 3600.0
    assert cut.end_time == T0.timestamp() + 5 * 60 + 19
    assert cut.duration == 5 * 60 + 19
