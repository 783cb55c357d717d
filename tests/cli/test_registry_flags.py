"""`import --no-registry` and `--registry-only` through the real console entry point, into a real Aim
repo (issue 18, destination review 3 and 13)."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.destinations.registry_dump import build_registry_dump


def test_no_registry_imports_the_runs_reports_each_model_not_carried_and_exits_0(cli, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    pytest.importorskip("aim")
    d = build_registry_dump(tmp_path / "dump", versions=2)
    repo = tmp_path / "aim"
    done = cli("import", str(d.reader.root), "--to", "aim", "--aim-repo", str(repo), "--no-registry", check_rc=0)
    assert "registry: models not_carried 2" in done.stderr, done.stderr
    from aim import Repo

    runs = list(Repo.from_path(str(repo)).iter_runs())
    params = {r[...]["neptune"]["run_id"]: r[...].get("neptune_registry") for r in runs}
    assert sorted(params) == ["REG-7", "REG-CLS", "REG-CLS-1", "REG-CLS-2", "REG-DUP", "REG-DUP-1"]
    assert set(params.values()) == {None}  # runs only: no registry param was written
    both = cli("import", str(d.reader.root), "--to", "aim", "--aim-repo", str(repo), "--no-registry",
               "--registry-only")
    assert both.returncode == 2 and "exclude each other" in both.stderr
    sharded = cli("import", str(d.reader.root), "--to", "aim", "--aim-repo", str(repo), "--registry-only",
                  "--shard", "1/2")
    assert sharded.returncode == 2 and "without --shard" in sharded.stderr
    only = cli("import", str(d.reader.root), "--to", "aim", "--aim-repo", str(repo), "--registry-only", check_rc=0)
    assert "registry: " in only.stderr and "models created 2" in only.stderr, only.stderr
