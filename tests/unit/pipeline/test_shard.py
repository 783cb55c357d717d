"""Issue 15: the shard partition (pure), and shards chosen from Kubernetes and Slurm variables."""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys
from pathlib import Path

import pytest

from neptune_migrate.dump.layout import DumpLayout
from neptune_migrate.errors import LockTimeoutError, UsageError
from neptune_migrate.model import RunKey, SourceRunId
from neptune_migrate.pipeline.lock import import_lock
from neptune_migrate.pipeline.shard import Shard, detect, divide_rate, owner_keys, parse, shard_number


def _key(rid: str, project: str = "ws/proj") -> RunKey:
    return RunKey(project, SourceRunId(rid))


def test_parse_k_of_n_counts_from_one() -> None:
    assert parse("2/3") == Shard(2, 3)
    assert parse(" 1 / 1 ") == Shard(1, 1)
    assert parse("3/3").label == "shard-3-of-3"
    assert str(parse("7/7")) == "7/7"


@pytest.mark.parametrize(("spec", "message"), [
    ("0/3", "K must be between 1 and 3 (shards count from 1)"),
    ("4/3", "K must be between 1 and 3"),
    ("2", "the shard count is missing (write K/N, e.g. 2/8)"),
    ("a/b", "expected K/N"),
    ("1/0", "shard count 0 must be between 1 and"),
    ("auto/3", "neither JOB_COMPLETION_INDEX"),
])
def test_parse_refuses_bad_specs_with_one_line(spec: str, message: str) -> None:
    with pytest.raises(UsageError) as info:
        parse(spec, {})
    assert message in str(info.value)
    assert "\n" not in str(info.value)


def test_hash_is_sha256_of_the_key_and_does_not_depend_on_the_process() -> None:
    key = _key("PROJ-12")
    expected = int.from_bytes(hashlib.sha256(b"ws/proj/PROJ-12").digest()[:8], "big") % 7 + 1
    assert shard_number(key, 7) == expected
    assert shard_number("ws/proj/PROJ-12", 7) == expected
    # Pinned: a change of hash would move every run of a half-done job to another shard.
    assert [shard_number(_key(f"PROJ-{i}"), 3) for i in range(1, 11)] == [
        shard_number(f"ws/proj/PROJ-{i}", 3) for i in range(1, 11)]
    code = "from neptune_migrate.pipeline.shard import shard_number; print(shard_number('ws/proj/PROJ-12', 7))"
    for seed in ("1", "2"):
        out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                             env={**os.environ, "PYTHONHASHSEED": seed})
        assert out.stdout.strip() == str(expected)


@pytest.mark.parametrize("count", [1, 3, 7])
def test_every_key_in_exactly_one_shard_and_shards_are_balanced(count: int) -> None:
    keys = [_key(f"RUN-{i}") for i in range(2100)]
    shards = [Shard(k, count) for k in range(1, count + 1)]
    owners = [[s.number for s in shards if s.owns(k)] for k in keys]
    assert all(len(o) == 1 for o in owners)
    sizes = [sum(1 for o in owners if o == [s.number]) for s in shards]
    assert sum(sizes) == 2100
    assert max(sizes) < 1.25 * 2100 / count
    assert min(sizes) > 0.75 * 2100 / count


def test_forks_go_with_the_root_of_their_chain() -> None:
    a, b, c, d, e = (_key(x) for x in "ABCDE")
    lost = _key("GONE")
    roots = owner_keys({a: None, b: a, c: b, d: lost, e: None})
    assert roots == {a: a, b: a, c: a, d: d, e: e}  # a parent not in the dump: the run is its own root
    x, y = _key("X"), _key("Y")
    assert owner_keys({x: y, y: x, c: x}) == {x: x, y: x, c: x}  # a cycle: its smallest key


K8S = {"JOB_COMPLETION_INDEX": "2"}


def test_kubernetes_indexed_job_needs_the_count() -> None:
    assert parse("auto/4", K8S) == Shard(3, 4, "JOB_COMPLETION_INDEX")
    assert detect({"JOB_COMPLETION_INDEX": "0"}, 1) == Shard(1, 1, "JOB_COMPLETION_INDEX")
    with pytest.raises(UsageError, match=r"shard count is not in the environment: pass --shard auto/N"):
        parse("auto", K8S)
    with pytest.raises(UsageError, match=r"JOB_COMPLETION_INDEX=2 is outside 0..1"):
        parse("auto/2", K8S)
    with pytest.raises(UsageError, match=r"JOB_COMPLETION_INDEX='x' is not an integer"):
        parse("auto/2", {"JOB_COMPLETION_INDEX": "x"})


def _slurm(task: int, lowest: int, count: int, step: int | None = None, highest: int | None = None) -> dict[str, str]:
    env = {"SLURM_ARRAY_TASK_ID": str(task), "SLURM_ARRAY_TASK_MIN": str(lowest),
           "SLURM_ARRAY_TASK_COUNT": str(count), "SLURM_ARRAY_JOB_ID": "991"}
    if step is not None:
        env["SLURM_ARRAY_TASK_STEP"] = str(step)
    if highest is not None:
        env["SLURM_ARRAY_TASK_MAX"] = str(highest)
    return env


def test_slurm_array_rank_is_derived_never_the_raw_id() -> None:
    # --array=0-3
    assert [parse("auto", _slurm(t, 0, 4, 1, 3)) for t in range(4)] == [
        Shard(n, 4, "SLURM_ARRAY_TASK_ID") for n in (1, 2, 3, 4)]
    # --array=1-4 (ids from 1): id 4 is shard 4/4, not out of range
    assert parse("auto", _slurm(4, 1, 4, 1, 4)).number == 4
    # --array=10-12 without STEP/MAX in the environment
    assert parse("auto/3", _slurm(12, 10, 3)).number == 3


def test_slurm_stepped_and_sparse_arrays() -> None:
    # --array=1-7:2 -> ids 1 3 5 7 are shards 1..4 of 4
    assert [parse("auto", _slurm(t, 1, 4, 2, 7)).number for t in (1, 3, 5, 7)] == [1, 2, 3, 4]
    # --array=100-400:100 (a sparse-looking but evenly stepped list 100,200,300,400)
    assert parse("auto", _slurm(300, 100, 4, 100, 400)) == Shard(3, 4, "SLURM_ARRAY_TASK_ID")
    # --array=0,1,5: an uneven list has no rank in the environment
    with pytest.raises(UsageError, match=r"not evenly stepped \(SLURM_ARRAY_TASK_ID=5 MIN=0 STEP=1 COUNT=3 MAX=5\)"):
        parse("auto", _slurm(5, 0, 3, 1, 5))
    with pytest.raises(UsageError, match=r"--shard auto/8 but the Slurm array has 4 task\(s\)"):
        parse("auto/8", _slurm(3, 1, 4, 2, 7))
    with pytest.raises(UsageError, match="without SLURM_ARRAY_TASK_MIN"):
        parse("auto", {"SLURM_ARRAY_TASK_ID": "3"})


def test_explicit_shard_wins_over_the_environment() -> None:
    assert parse("1/2", {**K8S, **_slurm(5, 1, 4, 2, 7)}) == Shard(1, 2)
    assert parse("auto/4", {**K8S, **_slurm(5, 1, 4, 2, 7)}).detected_from == "JOB_COMPLETION_INDEX"


def test_divide_rate_splits_the_job_budget() -> None:
    assert divide_rate(30.0, Shard(1, 3)) == 10.0
    assert divide_rate(30.0, None) == 30.0
    assert divide_rate(None, Shard(2, 3)) is None
    with pytest.raises(UsageError, match="--rate 0 must be more than 0"):
        divide_rate(0.0, Shard(1, 2))


class _Target:
    name = "mlflow"

    def describe(self) -> str:
        return "mlflow sqlite:///x.db"


def test_import_lock_is_per_shard_and_excludes_the_same_shard(tmp_path: Path) -> None:
    layout = DumpLayout(tmp_path)
    dest = _Target()
    one, two, three = (Shard(n, 3) for n in (1, 2, 3))
    with import_lock(layout, dest, shard=one):  # type: ignore[arg-type]
        with import_lock(layout, dest, shard=two, timeout=0):  # type: ignore[arg-type]
            pass  # another shard imports at the same time
        with (pytest.raises(LockTimeoutError, match=r"mlflow-[0-9a-f]{8}\.shard-1-of-3\.lock"),
              import_lock(layout, dest, shard=one, timeout=0.2)):  # type: ignore[arg-type]
            pass
        with (pytest.raises(LockTimeoutError, match=r"mlflow-[0-9a-f]{8}\.lock\)"),
              import_lock(layout, dest, timeout=0.2)):  # type: ignore[arg-type]
            pass  # an unsharded import waits for the shards
    with (import_lock(layout, dest, timeout=0),  # type: ignore[arg-type]
          pytest.raises(LockTimeoutError),
          import_lock(layout, dest, shard=three, timeout=0.2)):  # type: ignore[arg-type]
        pass
    assert sorted(p.name for p in layout.locks_dir.iterdir()) == sorted([
        f"{layout.target_name('mlflow', dest.describe())}.lock",
        *(f"{layout.target_name('mlflow', dest.describe())}.shard-{n}-of-3.lock" for n in (1, 2)),
    ])  # shard 3 waited on the target's lock: its own was never opened


def test_dump_writers_one_per_shard(tmp_path: Path) -> None:
    from neptune_migrate.dump.writer import DumpWriter

    with DumpWriter(tmp_path / "d", "shard-1-of-3"), DumpWriter(tmp_path / "d", "shard-2-of-3"):
        with pytest.raises(UsageError, match=r"shard-1-of-3 is being exported by another neptune-migrate process "
                                             rf"\(pid {os.getpid()} since "):
            DumpWriter(tmp_path / "d", "shard-1-of-3").open()
        with pytest.raises(UsageError, match="is being written by another neptune-migrate process"):
            DumpWriter(tmp_path / "d").open()  # an unsharded writer waits for no shard: refused
    with DumpWriter(tmp_path / "d"):
        pass  # every shard closed: free again


def test_cli_refuses_a_bad_shard_with_exit_2(cli, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    proc = cli("export", str(tmp_path), "--from", "neptune-offline", "--out", str(tmp_path / "d"), "--shard", "0/3")
    assert proc.returncode == 2, proc.stderr
    assert proc.stderr.strip().splitlines()[-1] == (
        "error: shard 0/3: K must be between 1 and 3 (shards count from 1)")
    assert not (tmp_path / "d").exists()


def test_a_model_and_its_versions_are_in_one_shard(tmp_path: Path, capsys) -> None:  # type: ignore[no-untyped-def]
    """Registry records go by (project, model id), so one shard imports all versions of a model in order;
    here from model_to_run.py runs (each keeps its own run id as key) and a run of the same project."""
    from neptune_migrate import cli
    from neptune_migrate.dump.reader import DumpReader, DumpRun
    from neptune_migrate.pipeline.shard import owned_scan
    from tests.conftest import FIXTURES

    dump = tmp_path / "d"
    old = sys.argv
    sys.argv = ["neptune-migrate", "export", "--from", "neptune-exporter",
                str(FIXTURES / "neptune-exporter" / "generated" / "model_to_run" / "data"), "--out", str(dump),
                "--models-from-runs"]
    try:
        with pytest.raises(SystemExit) as exc:
            cli.main()
    finally:
        sys.argv = old
    assert exc.value.code in (0, None)
    reader = DumpReader(dump)
    registry = {run.key for run in reader.scan() if isinstance(run, DumpRun) and run.record.kind != "run"}
    assert len(registry) == 4
    project = next(iter(registry)).project
    for count in (3, 7, 50):
        holders = [k for k in range(1, count + 1)
                   if registry & {r.key for r in owned_scan(reader.scan(), Shard(k, count)) if r.key}]
        assert holders == [shard_number(RunKey(project, SourceRunId("PROJ-CLF")), count)], count
        owned = [r.key for k in range(1, count + 1) for r in owned_scan(reader.scan(), Shard(k, count))]
        assert sorted(map(str, owned)) == sorted(str(r.key) for r in reader.scan())  # each run in one shard
