"""Repeatable imports into W&B offline run files (issue 12), read back from the `.wandb` files."""

from __future__ import annotations

from datetime import datetime, timedelta
from pathlib import Path

from neptune_migrate.destinations.wandb import mapping as m
from neptune_migrate.destinations.wandb.destination import WandbDestination
from neptune_migrate.destinations.wandb.records import LoggedRun, read_run
from neptune_migrate.dump.reader import DumpReader
from neptune_migrate.pipeline.import_ import ImportOptions, import_runs
from neptune_migrate.retry import FAST
from neptune_migrate.verify.verifier import VerifyOptions, verify_runs
from tests.factories import T0, build_two_run_dump, key

OPTS = ImportOptions(retry=FAST)


def _logged(dest: WandbDestination, run_id: str) -> LoggedRun:
    [run_dir] = dest.run_dirs(dest.run_id_for(key(run_id)))
    return read_run(run_dir / f"run-{dest.run_id_for(key(run_id))}.wandb")


def test_import_digest_incomplete_runs_and_times(tmp_path: Path) -> None:
    build_two_run_dump(tmp_path / "dump")
    reader = DumpReader(tmp_path / "dump")
    dest = WandbDestination(mode="offline", directory=tmp_path / "wb")
    first = import_runs(reader, dest, ImportOptions(retry=FAST, attribute_regex="^train/loss$"))
    assert [r.status for r in first.runs] == ["created", "created"]
    assert sorted(k for k in _logged(dest, "PROJ-1").history if not k.startswith("_")) == ["train/loss"]
    full = import_runs(reader, dest, OPTS)
    assert [r.status for r in full.runs] == ["repaired", "skipped"]
    whole, cut = _logged(dest, "PROJ-1"), _logged(dest, "PROJ-2")
    assert sorted(k for k in whole.history if not k.startswith("_")) == ["eval/loss", "train/acc", "train/loss"]
    assert whole.summary[m.ORIGIN_KEY] == reader.manifest.dump_id
    assert len(whole.summary[m.IMPORT_DIGEST_KEY]) == 64
    # a run the source holds only in part: exit code 1 (W&B shows it failed) and a summary flag
    assert (whole.exit_code, cut.exit_code) == (0, 1)
    assert m.SOURCE_COMPLETE_KEY not in whole.summary
    assert cut.summary[m.SOURCE_COMPLETE_KEY] is False
    # durations: start and end as the source has them (modification time, else the last point)
    def duration(logged: LoggedRun) -> timedelta:
        return (datetime.fromisoformat(logged.summary[m.END_KEY])
                - datetime.fromisoformat(logged.summary[m.START_KEY]))
    assert duration(whole) == timedelta(hours=1)
    assert duration(cut) == timedelta(minutes=5, seconds=19)
    # and every history row keeps its point's own time: the last one is the run's last point
    last = max(ts for _, ts, _ in cut.history["train/loss"] if ts is not None)
    assert last == (T0 + timedelta(minutes=5, seconds=19)).timestamp()
    assert [r.status for r in import_runs(reader, dest, OPTS).runs] == ["skipped", "skipped"]
    report = verify_runs(reader, dest, VerifyOptions(import_options=OPTS))
    assert report.findings == []
    dest.close()


def test_another_dumps_offline_run_is_a_conflict(tmp_path: Path) -> None:
    build_two_run_dump(tmp_path / "a", points=20)
    build_two_run_dump(tmp_path / "b", points=12)
    a, b = DumpReader(tmp_path / "a"), DumpReader(tmp_path / "b")
    dest = WandbDestination(mode="offline", directory=tmp_path / "wb")
    import_runs(a, dest, OPTS)
    report = import_runs(b, dest, OPTS)
    assert [r.status for r in report.runs] == ["conflict", "conflict"]
    assert len(_logged(dest, "PROJ-1").history["train/loss"]) == 20
    assert _logged(dest, "PROJ-1").summary[m.ORIGIN_KEY] == a.manifest.dump_id
    replaced = import_runs(b, dest, ImportOptions(retry=FAST, on_conflict="replace"))
    assert [r.status for r in replaced.runs] == ["replaced", "replaced"]
    assert len(_logged(dest, "PROJ-1").history["train/loss"]) == 12
    assert _logged(dest, "PROJ-1").summary[m.ORIGIN_KEY] == b.manifest.dump_id
    dest.close()
