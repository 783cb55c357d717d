"""Issue 15: N shards as separate processes on one dump equal one unsharded import, and merge."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pyarrow as pa
import pytest

from neptune_migrate.dump.writer import DumpWriter
from neptune_migrate.model import Field, ForkPoint, RunKey
from neptune_migrate.pipeline.shard import Shard, owner_keys
from tests.factories import T0, float_points, key, make_record
from tests.store.conftest import cli_args

RUNS = 14
FORKS = {"RUN-3": "RUN-1", "RUN-4": "RUN-3", "RUN-9": "RUN-8", "RUN-12": "RUN-2"}
"""child -> parent: two chains (1 <- 3 <- 4) and single forks."""


def fork_dump(root: Path, project: str = "ws/shards", runs: int = RUNS) -> dict[RunKey, RunKey]:
    """RUNS runs with params, two float series, a string series and a file; some forked.
    Returns run key -> root of its fork chain."""
    parents: dict[RunKey, RunKey | None] = {}
    with DumpWriter(root) as dump:
        for i in range(1, runs + 1):
            rid = f"RUN-{i}"
            k = key(rid, project)
            with dump.begin_run(k) as run:
                steps = list(range(40 + i))
                run.add_points("float", float_points("train/loss", steps, [1.0 / (s + i) for s in steps]))
                run.add_points("float", float_points("val/acc", steps[:5], [s / 5 for s in steps[:5]]))
                run.add_points("string", pa.table({
                    "path": ["train/log"], "step": [0.0],
                    "timestamp": pa.array([T0], pa.timestamp("us", tz="UTC")), "value": [rid],
                }))
                src = root.parent / f"{rid}.bin"
                src.write_bytes(rid.encode() * (100 + i))
                sha, size = run.store_file(src)
                from neptune_migrate.model import FileEntry

                files = (FileEntry("model/weights", "file", "weights.bin", sha, size, "application/octet-stream",
                                   None, str(src)),)
                parent = FORKS.get(rid)
                fork = None if parent is None else ForkPoint(key(parent, project), 3.0)
                parents[k] = None if fork is None else fork.parent
                run.commit(make_record(k, files=files, fork=fork, fields={
                    "parameters/lr": Field("float", 0.001 * i), "parameters/run": Field("string", rid)}))
    return owner_keys(parents)


@pytest.fixture(scope="module")
def dump_and_roots(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict[RunKey, RunKey]]:
    root = tmp_path_factory.mktemp("shards")
    roots = fork_dump(root / "dump")
    return root / "dump", roots


def _env() -> dict[str, str]:
    import os

    from tests.conftest import REPO

    return {**os.environ, "PYTHONPATH": str(REPO), "NO_COLOR": "1", "COLUMNS": "200"}


def _workers(dump: Path, specs: list[str], out: Path) -> dict[str, dict[str, Any]]:
    """Run one worker process per spec at the same time; what each destination holds, by spec."""
    procs = {spec: subprocess.Popen([sys.executable, "-m", "tests.support.shard_worker", str(dump), spec,
                                     str(out / f"{spec.replace('/', '-')}.json")], env=_env(),
                                    stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
             for spec in specs}
    for spec, proc in procs.items():
        stdout, stderr = proc.communicate(timeout=300)
        assert proc.returncode == 0, (spec, stdout, stderr)
    return {spec: json.loads((out / f"{spec.replace('/', '-')}.json").read_text()) for spec in specs}


def _untimed(doc: dict[str, Any]) -> dict[str, Any]:
    """A report without timings and destination run ids (another store, other ids)."""
    doc = {k: v for k, v in doc.items() if k not in ("started_at", "finished_at", "shard", "shards", "merge")}
    doc["runs"] = [{k: v for k, v in r.items() if k not in ("seconds", "destination_run_id")} for r in doc["runs"]]
    return doc


@pytest.fixture(scope="module")
def unsharded(dump_and_roots: tuple[Path, dict[RunKey, RunKey]],
              tmp_path_factory: pytest.TempPathFactory) -> tuple[dict[str, Any], dict[str, Any]]:
    from tests.support.shard_worker import main

    source, _ = dump_and_roots
    out = tmp_path_factory.mktemp("all")
    shutil.copytree(source, out / "dump")
    main(str(out / "dump"), "all", str(out / "held.json"))  # in this process: the reference import
    report = json.loads((out / "dump" / "_reports" / "import-fake-all.json").read_text())
    return json.loads((out / "held.json").read_text()), report


def _sharded(source: Path, count: int, tmp_path: Path) -> tuple[Path, dict[str, dict[str, Any]]]:
    """A copy of the dump imported by `count` shard processes at once."""
    dump = tmp_path / "dump"
    shutil.copytree(source, dump, ignore=shutil.ignore_patterns("_reports", "_ledger", "_locks"))
    return dump, _workers(dump, [f"{n}/{count}" for n in range(1, count + 1)], tmp_path)


@pytest.fixture(scope="module")
def three_shards(dump_and_roots: tuple[Path, dict[RunKey, RunKey]],
                 tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict[str, dict[str, Any]]]:
    return _sharded(dump_and_roots[0], 3, tmp_path_factory.mktemp("three"))


@pytest.mark.parametrize("count", [pytest.param(1, marks=pytest.mark.slow), 3,
                                   pytest.param(7, marks=pytest.mark.slow)])
def test_n_shard_processes_import_exactly_what_one_import_does(
    count: int, dump_and_roots: tuple[Path, dict[RunKey, RunKey]],
    unsharded: tuple[dict[str, Any], dict[str, Any]], tmp_path: Path, request: pytest.FixtureRequest,
) -> None:
    source, roots = dump_and_roots
    specs = [f"{n}/{count}" for n in range(1, count + 1)]
    if count == 3:
        dump, held = request.getfixturevalue("three_shards")
    else:
        dump, held = _sharded(source, count, tmp_path)
    whole, whole_report = unsharded
    assert len(whole) == RUNS and all(r["complete"] for r in whole.values())
    # No run imported twice (the worker also asserts it inside one destination), union == unsharded.
    seen = [k for spec in specs for k in held[spec]]
    assert len(seen) == len(set(seen)) == RUNS
    union = {k: v for spec in specs for k, v in held[spec].items()}
    assert union == whole  # runs, every series' points (count and sha256), params, files (sha256)
    # Forks are imported by the shard of the root of their chain.
    for spec in specs:
        shard = Shard(int(spec.split("/")[0]), count)
        for k in held[spec]:
            run_key = next(r for r in roots if str(r) == k)
            assert shard.owns(roots[run_key]), (spec, k)
    # Shards wrote their own ledgers and reports, never the same file.
    ledgers = sorted(p.name for p in (dump / "_ledger").iterdir())
    assert len(ledgers) == count and all(f".shard-{n}-of-{count}.jsonl" in ledgers[n - 1]
                                         for n in range(1, count + 1))
    for n, spec in enumerate(specs, 1):
        name = next(p for p in (dump / "_ledger").iterdir() if p.name.endswith(f".shard-{n}-of-{count}.jsonl"))
        lines = [json.loads(line) for line in name.read_text().splitlines()]
        assert sorted(e["key"] for e in lines) == sorted(held[spec])
    # The merged report equals the unsharded one apart from timings.
    from neptune_migrate.pipeline.report_merge import merge

    result = merge([dump])  # the CLI around it: test_merge_names_missing_shards_and_overlaps
    merged = result.report
    assert _untimed(merged) == _untimed(whole_report)
    assert [s["shard"] for s in merged["shards"]] == specs
    assert {s["status"] for s in merged["shards"]} == {"ok"}
    assert result.problems == []


def test_merge_names_missing_shards_and_overlaps(
    three_shards: tuple[Path, dict[str, dict[str, Any]]], tmp_path: Path,
) -> None:
    from neptune_migrate.errors import UsageError
    from neptune_migrate.pipeline.report_merge import merge

    dump, _ = three_shards
    reports = tmp_path / "reports"
    reports.mkdir()
    for n in (1, 3):
        shutil.copy(dump / "_reports" / f"import-fake-shard-{n}-of-3.json", reports)
    proc = subprocess.run(cli_args("report", "merge", str(reports), "--dump", str(dump), "--out",
                                   str(tmp_path / "m1.json")),
                          env=_env(), capture_output=True, text=True, timeout=120, check=False)
    assert proc.returncode == 1, proc.stdout + proc.stderr
    assert "problem: missing shard(s): 2/3 (no report)" in proc.stderr
    shard2 = json.loads((dump / "_reports" / "import-fake-shard-2-of-3.json").read_text())
    mine = len(shard2["runs"])
    assert f"problem: {mine} run(s) of the dump are in no shard's report: " in proc.stderr
    assert "report merge exit 1: 2 coverage problem(s)" in proc.stderr
    merged = json.loads((tmp_path / "m1.json").read_text())
    assert [(s["shard"], s["status"]) for s in merged["shards"]] == [("1/3", "ok"), ("3/3", "ok"), ("2/3", "missing")]

    # Shard 2's report, with one run of shard 1 in it as well: an overlap.
    doc = json.loads((dump / "_reports" / "import-fake-shard-1-of-3.json").read_text())
    stray = dict(doc["runs"][0])
    shard2["runs"].append(stray)
    (reports / "import-fake-shard-2-of-3.json").write_text(json.dumps(shard2))
    result = merge([reports])
    assert result.problems == [
        f"1 run(s) handled by more than one shard: {stray['key']} (shards 1, 2)",
        f"shard 2/3 owns {mine} run(s) but its report lists {mine + 1} ({reports / 'import-fake-shard-2-of-3.json'})",
    ]
    # A shard re-run replaces its earlier report: the newest one of each shard counts.
    shard2["runs"].pop()
    shard2["finished_at"] = "9999-01-01T00:00:00+00:00"
    (reports / "import-fake-shard-2-of-3-rerun.json").write_text(json.dumps(shard2))
    result = merge([reports])
    assert result.problems == []
    assert result.ignored == 1
    # A model the shard deferred (waiting for another shard's runs) is not done: a problem naming it.
    waiting = {**shard2, "registry": [{"key": "model:ws/p/MOD", "status": "deferred", "destination": None,
                                       "message": "", "losses": []}],
               "finished_at": "9999-01-02T00:00:00+00:00"}
    (reports / "import-fake-shard-2-of-3-deferred.json").write_text(json.dumps(waiting))
    assert merge([reports]).problems == [
        "1 registry model(s) deferred (waiting for other shards' runs): model:ws/p/MOD; run `import "
        "--registry-only` (without --shard) now that every shard finished"]
    (reports / "import-fake-shard-2-of-3-deferred.json").unlink()
    # A report of a job split another way (N=4) in the same folder: refused, unless N is chosen.
    other = {**shard2, "shard": {**shard2["shard"], "number": 1, "count": 4, "label": "shard-1-of-4"}}
    (reports / "import-fake-shard-1-of-4.json").write_text(json.dumps(other))
    with pytest.raises(UsageError, match=r"reports of 2 different jobs: .*\(dump \w+, 3 shards\); .*4 shards"):
        merge([reports])
    assert merge([reports], count=3).problems == []

    # Not a shard report anywhere: a usage error naming the folder.
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(UsageError, match=f"no shard import or verify report in {empty}"):
        merge([empty])


def _mlflow_store(db: Path) -> dict[str, Any]:
    """What a SQLite MLflow store holds, by source key: metrics, params, artifacts (size, sha256), one
    entry per active run carrying the key (a run imported twice would show as two)."""
    import hashlib
    import sqlite3
    from urllib.parse import urlsplit

    out: dict[str, Any] = {}
    with sqlite3.connect(f"file:{db}?mode=ro", uri=True) as conn:
        rows = conn.execute("""
            SELECT r.run_uuid, r.artifact_uri, p.value || '/' || i.value FROM runs r
            JOIN tags p ON p.run_uuid = r.run_uuid AND p.key = 'neptune.project'
            JOIN tags i ON i.run_uuid = r.run_uuid AND i.key = 'neptune.run_id'
            WHERE r.lifecycle_stage = 'active'""").fetchall()
        for run_uuid, artifact_uri, k in rows:
            metrics = conn.execute("SELECT key, step, value, timestamp FROM metrics WHERE run_uuid = ? "
                                   "ORDER BY key, step", (run_uuid,)).fetchall()
            params = dict(conn.execute("SELECT key, value FROM params WHERE run_uuid = ?", (run_uuid,)).fetchall())
            root = Path(urlsplit(artifact_uri).path)
            files = {str(f.relative_to(root)): (f.stat().st_size, hashlib.sha256(f.read_bytes()).hexdigest())
                     for f in sorted(root.rglob("*")) if f.is_file()}
            out.setdefault(k, []).append({"metrics": metrics, "params": params, "files": files})
    return out


@pytest.mark.parametrize("all_processes", [
    False, pytest.param(True, marks=[pytest.mark.slow, pytest.mark.timeout(1200)])])
def test_three_shards_into_one_mlflow_store_equal_one_import(
    all_processes: bool, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The real case: `import --shard K/3` for K = 1, 2, 3 at once into one SQLite MLflow store, next to
    one unsharded import into another store. Shards 1 and 2 are their own processes; shard 3 runs the
    same CLI command in this process (one MLflow start-up less in the default run; the slow variant
    starts all three, then verifies by shards and merges the verify reports)."""
    pytest.importorskip("mlflow")
    from typer.testing import CliRunner

    from neptune_migrate.cli import app
    from neptune_migrate.destinations import DestinationOptions, load_destination
    from neptune_migrate.dump.reader import DumpReader
    from neptune_migrate.pipeline.import_ import ImportOptions, import_runs
    from neptune_migrate.pipeline.ledger import Ledger
    from neptune_migrate.pipeline.report_merge import merge

    runs = 6
    dump = tmp_path / "dump"
    fork_dump(dump, project="ws/mlflow-shards", runs=runs)
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    uri_a = f"sqlite:///{tmp_path}/a/mlflow.db"
    monkeypatch.chdir(tmp_path / "b")  # MLflow's ./mlruns artifact root of a local store
    whole_dest = load_destination("mlflow", DestinationOptions(tracking_uri=f"sqlite:///{tmp_path}/b/mlflow.db"))
    whole_dest.prepare_store()  # one schema migration, copied: the shards' store starts ready too
    shutil.copy(tmp_path / "b" / "mlflow.db", tmp_path / "a" / "mlflow.db")

    def shard_args(n: int) -> list[str]:
        return ["import", str(dump), "--to", "mlflow", "--tracking-uri", uri_a, "--shard", f"{n}/3",
                "--report", str(tmp_path / "import.json")]

    procs = [subprocess.Popen(cli_args(*shard_args(n)), cwd=tmp_path / "a", env=_env(), stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE, text=True) for n in ((1, 2, 3) if all_processes else (1, 2))]
    if not all_processes:
        monkeypatch.chdir(tmp_path / "a")
        done = CliRunner().invoke(app, shard_args(3))
        assert done.exit_code == 0, done.output
        monkeypatch.chdir(tmp_path / "b")
    reader = DumpReader(dump)
    try:
        report = import_runs(reader, whole_dest, ImportOptions(),
                             ledger=Ledger(reader.layout, whole_dest.name, whole_dest.describe()))
    finally:
        whole_dest.close()
    for proc in procs:
        out, err = proc.communicate(timeout=600)
        assert proc.returncode == 0, (proc.args, out, err)
    sharded = _mlflow_store(tmp_path / "a" / "mlflow.db")
    whole = _mlflow_store(tmp_path / "b" / "mlflow.db")
    assert len(whole) == runs and all(len(v) == 1 for v in whole.values())
    assert {k: len(v) for k, v in sharded.items()} == dict.fromkeys(whole, 1)  # no run imported twice
    assert sharded == whole  # every metric point (step, value, timestamp), param and artifact (bytes)
    assert sum(len(e["metrics"]) for v in whole.values() for e in v) == sum(40 + i + 5 for i in range(1, runs + 1))
    assert all(e["files"] for v in whole.values() for e in v)

    result = merge([dump])
    assert result.problems == []
    assert [(s["shard"], s["status"]) for s in result.report["shards"]] == [("1/3", "ok"), ("2/3", "ok"), ("3/3", "ok")]
    assert sum(s["runs"] for s in result.report["shards"]) == runs

    def comparable(doc: dict[str, Any]) -> dict[str, Any]:  # another store: another target, ids, store line
        return {k: v for k, v in _untimed(doc).items() if k not in ("target", "store")}

    assert comparable(result.report) == comparable(json.loads(json.dumps(report.to_json(), default=str)))
    # One command line for every shard: the --report path gets each shard's label.
    assert sorted(p.name for p in tmp_path.glob("import*.json")) == [f"import.shard-{n}-of-3.json" for n in (1, 2, 3)]
    ledgers = sorted(p.name.split(".", 1) for p in (dump / "_ledger").iterdir())
    assert len({name for name, _ in ledgers}) == 2  # store A (three shard ledgers) and store B (one)
    assert sorted(rest for _, rest in ledgers) == ["jsonl", *(f"shard-{n}-of-3.jsonl" for n in (1, 2, 3))]
    if not all_processes:
        return
    verifies = [subprocess.Popen(cli_args("verify", str(dump), "--to", "mlflow", "--tracking-uri", uri_a,
                                          "--shard", f"{n}/3"), cwd=tmp_path / "a", env=_env(),
                                 stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for n in (1, 2, 3)]
    for proc in verifies:
        out, err = proc.communicate(timeout=600)
        assert proc.returncode == 0, (proc.args, out, err)
    proc = subprocess.run(cli_args("report", "merge", str(dump), "--kind", "verify", "--out",
                                   str(tmp_path / "verify.json")),
                          env=_env(), capture_output=True, text=True, timeout=300, check=False)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    merged = json.loads((tmp_path / "verify.json").read_text())
    assert merged["ok"] is True
    assert merged["totals"]["runs"] == merged["totals"]["runs_matching"] == runs
    assert sorted(r["key"] for r in merged["runs"]) == sorted(whole)


def _exporter_source(root: Path, copies: int = 6) -> Path:
    """neptune-exporter parquet with `copies` x the two runs of the neptune3 fixture (run ids suffixed)."""
    import pyarrow.compute as pc
    import pyarrow.parquet as pq

    from tests.conftest import FIXTURES

    src = FIXTURES / "neptune-exporter" / "neptune3" / "data"
    for f in sorted(src.rglob("*.parquet")):
        table = pq.read_table(f)
        parts = [table.set_column(table.schema.get_field_index("run_id"), "run_id",
                                  pc.binary_join_element_wise(table.column("run_id"), pa.scalar(f"c{i}"), "-"))
                 for i in range(copies)]
        (root / f.relative_to(src)).parent.mkdir(parents=True, exist_ok=True)
        pq.write_table(pa.concat_tables(parts), root / f.relative_to(src))
    return root


def _digests(dump: Path) -> dict[str, str]:
    return {d.name: json.loads((d / "run.json").read_text())["digest"] for d in sorted((dump / "runs").iterdir())}


def test_three_shard_threads_export_into_one_new_dump_at_once(tmp_path: Path) -> None:
    """The default-run case of the one below, in threads (each writer has its own lock descriptors, so
    the flocks exclude each other as between processes): one manifest, every shard's entry, the runs
    and digests of one unsharded export."""
    import threading

    from neptune_migrate.dump.writer import DumpWriter
    from neptune_migrate.pipeline.export import export_runs
    from neptune_migrate.sources import load_source
    from neptune_migrate.sources.base import RunSelection, SourceOptions

    source = _exporter_source(tmp_path / "source", copies=3)

    def export(out: Path, shard: Shard | None) -> None:
        with DumpWriter(out, shard.label if shard else None) as writer:
            export_runs(load_source("neptune-exporter", SourceOptions(path=source)), writer, RunSelection(),
                        location=str(source), source_root=source, shard=shard)

    export(tmp_path / "whole", None)
    start = threading.Barrier(3)
    errors: list[BaseException] = []

    def shard_export(n: int) -> None:
        try:
            start.wait()
            export(tmp_path / "sharded", Shard(n, 3))
        except BaseException as exc:  # noqa: BLE001 - reported by the assertion below
            errors.append(exc)

    threads = [threading.Thread(target=shard_export, args=(n,)) for n in (1, 2, 3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(120)
    assert errors == []
    assert len(_digests(tmp_path / "whole")) == 6
    assert _digests(tmp_path / "sharded") == _digests(tmp_path / "whole")
    manifest = json.loads((tmp_path / "sharded" / "manifest.json").read_text())
    assert sorted(e["shard"] for e in manifest["exports"]) == ["shard-1-of-3", "shard-2-of-3", "shard-3-of-3"]
    assert sum(e["counts"]["exported"] for e in manifest["exports"]) == 6
    assert manifest["source_roots"] == [str(source)]


@pytest.mark.slow  # default run: test_three_shard_threads_export_into_one_new_dump_at_once
def test_three_shards_export_into_one_new_dump_at_once(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Shards creating and filling one dump at the same time: one manifest (one dump id, every shard's
    export entry, one source root), the same runs with the same digests as one unsharded export."""
    from typer.testing import CliRunner

    from neptune_migrate.cli import app
    from neptune_migrate.dump.reader import DumpReader
    from neptune_migrate.dump.summary import summarize

    source = _exporter_source(tmp_path / "source")
    monkeypatch.chdir(tmp_path)

    def args(out: str, *extra: str) -> list[str]:
        return ["export", str(source), "--from", "neptune-exporter", "--out", str(tmp_path / out), *extra]

    whole = CliRunner().invoke(app, args("whole"))
    assert whole.exit_code == 1, whole.output  # the fixture's files are not copied: 12 missing_file, lost
    assert "exported 12, skipped 0 (already complete), filtered 0, failed 0" in whole.output
    procs = [subprocess.Popen(cli_args(*args("sharded", "--shard", f"{n}/3")), env=_env(), stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE, text=True) for n in (1, 2)]
    mine = CliRunner().invoke(app, args("sharded", "--shard", "3/3"))
    assert mine.exit_code in (0, 1), mine.output
    exported = [int(mine.output.split("exported ")[-1].split(",")[0])]
    for proc in procs:
        out, err = proc.communicate(timeout=300)
        assert proc.returncode in (0, 1), (out, err)
        exported.append(int(err.split("exported ")[-1].split(",")[0]))
    assert sum(exported) == 12
    assert _digests(tmp_path / "sharded") == _digests(tmp_path / "whole")
    manifest = json.loads((tmp_path / "sharded" / "manifest.json").read_text())
    assert sorted(e["shard"] for e in manifest["exports"]) == ["shard-1-of-3", "shard-2-of-3", "shard-3-of-3"]
    assert sum(e["counts"]["exported"] for e in manifest["exports"]) == 12
    assert manifest["source_roots"] == [str(source)]
    summary = summarize(DumpReader(tmp_path / "sharded"), check=True)
    assert summary.runs == 12 and summary.problems == [] and summary.uncommitted == []
    reports = sorted(p.name for p in (tmp_path / "sharded" / "_reports").iterdir())
    assert [re.sub(r"-\d{8}T[\d.]+Z\.json$", "", r) for r in reports] == [f"export-shard-{n}-of-3" for n in (1, 2, 3)]


def test_verify_by_shards_then_merge_equals_one_verify(
    dump_and_roots: tuple[Path, dict[RunKey, RunKey]], tmp_path: Path,
) -> None:
    """`verify --shard K/3` x 3 (in this process, on one fake destination), merged: the same report as
    one unsharded verify apart from timings, every run once."""
    from neptune_migrate.destinations.fake import FakeDestination
    from neptune_migrate.dump.reader import DumpReader
    from neptune_migrate.pipeline.import_ import ImportOptions, import_runs
    from neptune_migrate.pipeline.report_merge import merge
    from neptune_migrate.pipeline.shard import report_facts
    from neptune_migrate.retry import FAST
    from neptune_migrate.verify.verifier import VerifyOptions, verify_runs

    dump = tmp_path / "dump"
    shutil.copytree(dump_and_roots[0], dump, ignore=shutil.ignore_patterns("_reports", "_ledger", "_locks"))
    reader = DumpReader(dump)
    dest = FakeDestination()
    import_runs(reader, dest, ImportOptions(retry=FAST))
    whole = verify_runs(reader, dest, VerifyOptions(import_options=ImportOptions(retry=FAST))).to_json()
    reports = tmp_path / "reports"
    reports.mkdir()
    keys: list[str] = []
    for n in (1, 2, 3):
        shard = Shard(n, 3)
        doc = verify_runs(reader, dest, VerifyOptions(import_options=ImportOptions(retry=FAST, shard=shard))).to_json()
        doc["shard"] = report_facts(shard, reader)
        keys += [r["key"] for r in doc["runs"]]
        (reports / f"verify-fake-{shard.label}.json").write_text(json.dumps(doc))
    assert sorted(keys) == sorted(r["key"] for r in whole["runs"]) and len(keys) == RUNS
    result = merge([reports], kind="verify", dump=dump)
    assert result.problems == []
    merged = result.report
    assert merged["ok"] is True and whole["ok"] is True
    whole["runs"].sort(key=lambda r: r["key"])  # an unsharded verify lists runs in folder order
    assert _untimed(merged) == _untimed(whole)
