"""PostgreSQL behind a real `mlflow server`: the API path and the bulk path over HTTP, side by side.

One throw-away PostgreSQL cluster (`tests/support/postgres.py`) and one `mlflow server
--backend-store-uri postgresql+psycopg://…` on 127.0.0.1 in front of it, per module. Each dump is
imported twice through the CLI over HTTP, into experiments of its own: once on the API path with
`--workers 4` (several `log_batch` requests of one run in flight), once with `--mlflow-db` naming the
server's database (`--bulk always`: float points by `COPY`, everything else through the server).
The two imports are then read back through `MlflowClient` over HTTP and compared row by row
(params, tags, every metric point with step, timestamp and value, `latest_metrics`), and `verify`
passes on both with `--read sql` and `--read api`.
"""

from __future__ import annotations

import json
import math
import shutil
import tempfile
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest

from neptune_migrate.destinations.mlflow.destination import MlflowDestination
from neptune_migrate.dump.reader import DumpReader
from neptune_migrate.dump.writer import DumpWriter
from neptune_migrate.model import Field
from neptune_migrate.pipeline.import_ import ImportOptions
from neptune_migrate.retry import FAST
from neptune_migrate.verify.verifier import VerifyOptions, verify_runs
from tests.conftest import FIXTURE_SOURCES
from tests.destinations.mlflow.test_bulk import T0, _edge_points, store_contents
from tests.factories import float_points, key, make_record
from tests.support.mlflow_server import ServerStartError, mlflow_executable, running_mlflow_server
from tests.support.postgres import Postgres

pytest.importorskip("mlflow")
pytestmark = pytest.mark.server

BIG = 1.7976931348623157e308
OPTS = ImportOptions(retry=FAST)


@dataclass(frozen=True)
class PgServer:
    url: str
    """`http://127.0.0.1:PORT` of the `mlflow server`."""
    db: str
    """The SQLAlchemy URI of the PostgreSQL database behind it (what `--mlflow-db` takes)."""


@pytest.fixture(scope="module")
def pg_server(postgres: Postgres) -> Iterator[PgServer]:
    """`mlflow server` on a fresh PostgreSQL database (the server migrates it at start)."""
    if mlflow_executable() is None:
        pytest.skip("the mlflow command is not installed")
    db = postgres.create_db("http_store")
    root = Path(tempfile.mkdtemp(prefix="neptune-migrate-pgserver-"))
    try:
        with running_mlflow_server(root, db) as url:
            yield PgServer(url, db)
    except ServerStartError as exc:
        pytest.fail(str(exc))
    finally:
        shutil.rmtree(root, ignore_errors=True)


def _http_dump(root: Path) -> Path:
    """NaN, +-inf, duplicate steps and a NaN/0.0 tie (the bulk tests' edge series), plus one run of
    4,000 points: 4 `log_batch` requests that `--workers 4` sends at once."""
    with DumpWriter(root) as dump:
        with dump.begin_run(key("HTTP-1")) as run:
            run.add_points("float", _edge_points())
            steps = list(range(40))
            run.add_points("float", float_points("train/loss", steps, [1 / (s + 1) for s in steps], T0))
            run.commit(make_record(key("HTTP-1"), fields={"lr": Field("float", 0.001), "name": Field("string", "é")}))
        with dump.begin_run(key("HTTP-2")) as run:
            for start in range(0, 4_000, 2_000):
                steps = list(range(start, start + 2_000))
                run.add_points("float", float_points("train/acc", steps, [s / 7 for s in steps],
                                                     T0 + timedelta(minutes=1, seconds=start)))
            run.commit(make_record(key("HTTP-2"), fields={"epochs": Field("int", 8)}))
    return root


def _lost_in_dump_only(proc: Any) -> bool:
    """Exit 1 because the dump itself lacks something (a fixture's deliberately missing file)."""
    text = proc.stdout + proc.stderr
    return bool(proc.returncode == 1 and ("lost: 1 (file_missing_in_dump=1)" in text
                                          or "verify exit 1: lost: 1" in text))


def _import_both(cli: Callable[..., Any], dump: Path, server: PgServer, tag: str, tmp: Path) -> None:
    """The API path with 4 requests in flight, then the bulk path next to the server."""
    api = cli("import", str(dump), "--to", "mlflow", "--tracking-uri", server.url, "--experiment-template",
              f"api-{tag}--{{project}}", "--workers", "4", "--report", str(tmp / f"api-{tag}.json"))
    assert api.returncode == 0 or _lost_in_dump_only(api), api.stderr
    blk = cli("import", str(dump), "--to", "mlflow", "--tracking-uri", server.url, "--mlflow-db", server.db,
              "--bulk", "always", "--experiment-template", f"bulk-{tag}--{{project}}",
              "--report", str(tmp / f"bulk-{tag}.json"))
    assert blk.returncode == 0 or _lost_in_dump_only(blk), blk.stderr
    runs = len(list(DumpReader(dump).runs()))
    for path in ("api", "bulk"):
        doc = json.loads((tmp / f"{path}-{tag}.json").read_text())
        assert [r["status"] for r in doc["runs"]] == ["created"] * runs, doc["runs"]
        assert doc.get("store") is None  # no fallback notice: each import took the path asked for


def _latest_by_get_run(url: str, prefix: str) -> dict[str, dict[str, float | str]]:
    """`get_run(...).data.metrics` (MLflow's `latest_metrics`) of every run under `prefix`."""
    dest = MlflowDestination(url, bulk_mode="never", read="api")
    out = {}
    for exp in dest.client.search_experiments():
        if exp.name.startswith(prefix):
            for run in dest.client.search_runs([exp.experiment_id]):
                metrics = dest.client.get_run(run.info.run_id).data.metrics
                out[f"{exp.name.removeprefix(prefix)}|{run.data.tags['neptune.run_id']}"] = {
                    k: "nan" if math.isnan(v) else v for k, v in metrics.items()}
    dest.close()
    return out


def _verify_all_ways(cli: Callable[..., Any], dump: Path, server: PgServer, tag: str, tmp: Path) -> int:
    """verify each import with --read sql (the server's database) and --read api; points compared.

    The bulk import's `--read sql` goes through the CLI (the flags), the other three in-process
    (the same code without three more interpreter starts)."""
    report = tmp / f"verify-{tag}.json"
    proc = cli("verify", str(dump), "--to", "mlflow", "--tracking-uri", server.url, "--mlflow-db", server.db,
               "--read", "sql", "--experiment-template", f"bulk-{tag}--{{project}}", "--report", str(report))
    assert proc.returncode == 0 or _lost_in_dump_only(proc), (proc.stdout[-2000:], proc.stderr[-2000:])
    doc = json.loads(report.read_text())
    assert [f for r in doc["runs"] for f in r["findings"]] == []
    assert doc["ok"] is (proc.returncode == 0)  # not "ok" only for what the dump itself lost
    compared = {doc["totals"]["points_compared"]}
    reader = DumpReader(dump)
    for path, read in (("bulk", "api"), ("api", "sql"), ("api", "api")):
        dest = MlflowDestination(server.url, f"{path}-{tag}--{{project}}", mlflow_db=server.db, read=read)
        result = verify_runs(reader, dest, VerifyOptions(import_options=OPTS))
        dest.close()
        assert [str(f) for f in result.findings] == [], (path, read)
        compared.add(result.to_json()["totals"]["points_compared"])
    assert len(compared) == 1, compared
    return compared.pop()


def test_api_and_bulk_over_http_on_postgresql_store_the_same_rows(
    tmp_path: Path, pg_server: PgServer, cli: Callable[..., Any]
) -> None:
    dump = _http_dump(tmp_path / "dump")
    _import_both(cli, dump, pg_server, "edge", tmp_path)
    api = store_contents(pg_server.url, prefix="api-edge--")
    blk = store_contents(pg_server.url, prefix="bulk-edge--")
    assert api == blk
    assert sorted(k.rsplit("|", 1)[1] for k in api) == ["HTTP-1", "HTTP-2"]
    [edge] = [v for k, v in api.items() if k.endswith("|HTTP-1")]
    assert edge["history"]["edge/x"] == sorted([
        (0, 1714564800000, "nan"), (1, 1714564801000, repr(BIG)), (1, 1714564802000, repr(-BIG)),
        (2, 1714564803000, "1.0"), (3, 1714564804000, "2.0"), (3, 1714564804000, "2.5"),
        (9, 1714564809000, "nan"), (9, 1714564809000, "0.0"), (4, 1714564810000, "7.0"),
        (5, 1714564811000, "-0.0"),  # PostgreSQL keeps the sign of zero
    ])
    assert edge["latest"]["edge/x"] == (9, 1714564809000, "nan")
    assert edge["params"] == {"lr": "0.001", "name": "é"}
    [big] = [v for k, v in api.items() if k.endswith("|HTTP-2")]
    start = 1714564800000 + 60_000  # float_points: one second per step
    assert big["history"]["train/acc"] == [(s, start + 1000 * s, repr(s / 7)) for s in range(4_000)]
    assert big["latest"]["train/acc"] == (3_999, start + 3_999_000, repr(3_999 / 7))
    latest_api = _latest_by_get_run(pg_server.url, "api-edge--")
    assert latest_api == _latest_by_get_run(pg_server.url, "bulk-edge--")
    assert latest_api[next(k for k in latest_api if k.endswith("|HTTP-1"))] == {
        "edge/x": "nan", "train/loss": 1 / 40}
    assert _verify_all_ways(cli, dump, pg_server, "edge", tmp_path) == 10 + 40 + 4_000  # one exact duplicate


@pytest.mark.slow
@pytest.mark.parametrize("name", [name for name, *_ in FIXTURE_SOURCES])
def test_every_fixture_over_http_on_postgresql_api_equals_bulk(
    tmp_path: Path, pg_server: PgServer, cli: Callable[..., Any], exported_fixture: Callable[[str], Path], name: str
) -> None:
    dump = exported_fixture(name)
    _import_both(cli, dump, pg_server, name, tmp_path)
    api = store_contents(pg_server.url, times=False, prefix=f"api-{name}--")
    blk = store_contents(pg_server.url, times=False, prefix=f"bulk-{name}--")
    assert api == blk
    assert len(api) == len(list(DumpReader(dump).runs()))
    assert _latest_by_get_run(pg_server.url, f"api-{name}--") == _latest_by_get_run(pg_server.url, f"bulk-{name}--")
    _verify_all_ways(cli, dump, pg_server, name, tmp_path)
