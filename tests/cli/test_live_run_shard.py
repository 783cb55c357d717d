"""`run` and `export` against a live (fake 2.x) server with shards: dry-run plans, per-shard rate and
watermarks, and the refusals that keep a shared dump safe."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from neptune_migrate.dump.layout import DumpLayout
from neptune_migrate.dump.manifest import read_manifest
from neptune_migrate.pipeline import watermark
from neptune_migrate.pipeline.shard import Shard
from tests.support.fake_neptune import v2_fixtures
from tests.support.fake_neptune.v2 import FakeNeptune2, small_project
from tests.support.inprocess import run_cli

insecure_oauth = v2_fixtures.insecure_oauth  # autouse: plain http to the fake, no token from the environment
server = v2_fixtures.server


def test_run_dry_run_plans_a_live_project_per_shard(server: FakeNeptune2, capsys, monkeypatch,  # type: ignore[no-untyped-def]
                                                    tmp_path: Path) -> None:
    small_project(server)
    monkeypatch.setenv("NEPTUNE_API_TOKEN", server.api_token())
    base = ("run", "--from", "neptune2-api", "--project", "ws/proj", "--to", "mlflow",
            "--tracking-uri", f"sqlite:///{tmp_path / 'm.db'}", "--dump", str(tmp_path / "dump"), "--dry-run", "--json")
    planned = []
    for spec in ("1/2", "2/2"):
        _, out, _ = run_cli(capsys, *base, "--shard", spec, check_rc=0)
        doc = json.loads(out.strip().splitlines()[-1])
        phases = {p["phase"]: p for p in doc["phases"]}
        planned.append((phases["export"]["counts"]["would_export"], phases["verify"]["counts"]["would_verify"]))
    assert sum(e for e, _ in planned) == 3 and all(e == v for e, v in planned), planned
    _, out, _ = run_cli(capsys, *base, check_rc=0)
    assert json.loads(out.strip().splitlines()[-1])["phases"][0]["counts"]["would_export"] == 3
    assert not (tmp_path / "dump").exists() and not (tmp_path / "m.db").exists()


def test_each_shard_takes_its_share_of_the_rate_and_keeps_its_own_watermark(
    server: FakeNeptune2, capsys, monkeypatch, tmp_path: Path  # type: ignore[no-untyped-def]
) -> None:
    from neptune_migrate import sources

    small_project(server)
    monkeypatch.setenv("NEPTUNE_API_TOKEN", server.api_token())
    seen: list[Any] = []
    real = sources.load_source

    def spy(name: str, options: Any) -> Any:
        seen.append(options)
        return real(name, options)

    monkeypatch.setattr(sources, "load_source", spy)
    dump = tmp_path / "dump"
    for spec in ("1/2", "2/2"):
        run_cli(capsys, "export", "--from", "neptune2-api", "--project", "ws/proj", "--out", str(dump),
                "--rate", "50", "--shard", spec, check_rc=0)
    assert [o.rate for o in seen] == [25.0, 25.0]  # --rate is for the whole job
    marks = read_manifest(DumpLayout(dump)).extra[watermark.KEY]
    assert sorted(k.rsplit(" ", 1)[-1] for k in marks) == ["shard-1-of-2", "shard-2-of-2"]
    assert all(m["runs_listed"] >= 1 for m in marks.values())
    assert len(read_manifest(DumpLayout(dump)).exports) == 2  # neither shard overwrote the other's entry


def test_watermark_ids_differ_by_shard() -> None:
    one = watermark.watermark_id("neptune2-api", "http://n", ("ws/p",), None, "", Shard(1, 2).label)
    two = watermark.watermark_id("neptune2-api", "http://n", ("ws/p",), None, "", Shard(2, 2).label)
    whole = watermark.watermark_id("neptune2-api", "http://n", ("ws/p",), None)
    assert len({one, two, whole}) == 3


def test_run_refuses_discard_dump_with_shard_and_takes_projects_as_a_list(
    capsys, tmp_path: Path  # type: ignore[no-untyped-def]
) -> None:
    src = Path(__file__).resolve().parents[2] / "fixtures" / "neptune-exporter" / "neptune3" / "data"
    base = ("run", str(src), "--from", "neptune-exporter", "--to", "mlflow",
            "--tracking-uri", f"sqlite:///{tmp_path / 'm.db'}", "--dump", str(tmp_path / "dump"))
    _, _, err = run_cli(capsys, *base, "--shard", "1/2", "--discard-dump", check_rc=2)
    assert "--discard-dump with --shard: the dump is shared by every shard" in err
    _, _, err = run_cli(capsys, *base, "--project", "ws/a", "--project", "ws/b", check_rc=2)
    assert "--project is given 2 times; --from neptune-exporter takes one workspace/project" in err
    assert not (tmp_path / "dump").exists() and not (tmp_path / "m.db").exists()
