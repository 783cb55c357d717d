"""verify reads MLflow metrics page by page and compares them in step windows (flat memory)."""

from __future__ import annotations

import sqlite3
from collections import Counter
from datetime import timedelta
from pathlib import Path
from typing import Any

import pyarrow as pa
import pytest

from neptune_migrate.destinations.mlflow import destination as mlflow_destination
from neptune_migrate.destinations.mlflow.destination import MlflowDestination
from neptune_migrate.dump.reader import DumpReader
from neptune_migrate.dump.writer import DumpWriter
from neptune_migrate.pipeline.import_ import ImportOptions, import_runs
from neptune_migrate.retry import FAST
from neptune_migrate.verify.verifier import VerifyOptions, verify_runs
from tests.destinations.mlflow.conftest import MlflowBackend
from tests.factories import T0, float_points, key, make_record

OPTS = ImportOptions(retry=FAST)


@pytest.mark.parametrize("read", ["api", "sql"])
def test_metrics_are_verified_page_by_page_and_a_changed_point_is_found(
    read: str, tmp_path: Path, mlflow_sqlite: MlflowBackend, monkeypatch: pytest.MonkeyPatch
) -> None:
    with DumpWriter(tmp_path / "dump") as dump, dump.begin_run(key("PAGED-1")) as run:
        steps = list(range(120))
        run.add_points("float", float_points("train/loss", steps, [1.0 / (s + 1) for s in steps]))
        # Logged back in time: MLflow pages by timestamp, so these pages are not in step order.
        back = list(range(40))
        run.add_points("float", pa.table({
            "path": ["train/back"] * 40, "step": pa.array(back, pa.float64()),
            "timestamp": pa.array([T0 + timedelta(seconds=100 - s) for s in back], pa.timestamp("us", tz="UTC")),
            "value": pa.array([float(s) for s in back], pa.float64()),
        }))
        run.commit(make_record(key("PAGED-1")))
    reader = DumpReader(tmp_path / "dump")
    dest = MlflowDestination(mlflow_sqlite.tracking_uri, f"paged-{read}-{{project}}",
                             artifact_location=mlflow_sqlite.artifact_location, read=read)
    assert all(r.status == "created" for r in import_runs(reader, dest, OPTS).runs)

    monkeypatch.setattr(mlflow_destination, "HISTORY_PAGE", 16)
    pages: Counter[str] = Counter()
    whole: Counter[str] = Counter()
    page_read = MlflowDestination.read_series_page
    whole_read = MlflowDestination.read_series

    def count_page(self: MlflowDestination, run_id: Any, kind: Any, k: str, token: str | None) -> Any:
        pages[k] += 1
        return page_read(self, run_id, kind, k, token)

    def count_whole(self: MlflowDestination, run_id: Any, kind: Any, k: str) -> Any:
        whole[k] += 1
        return whole_read(self, run_id, kind, k)

    monkeypatch.setattr(MlflowDestination, "read_series_page", count_page)
    monkeypatch.setattr(MlflowDestination, "read_series", count_whole)
    report = verify_runs(reader, dest, VerifyOptions(import_options=OPTS))
    assert [str(f) for f in report.findings] == []
    assert report.to_json()["totals"]["points_compared"] == 160
    assert pages["train/loss"] == 8  # 120 points in pages of 16
    if read == "api":
        assert whole == {"train/back": 1}  # MLflow pages by timestamp: out of step order, compared whole
    else:
        assert whole == {} and pages["train/back"] == 3  # SQL pages in step order: 40 points in 3 pages

    found = dest.find_run(key("PAGED-1"))
    assert found is not None
    with sqlite3.connect(mlflow_sqlite.db_path) as db:
        db.execute("UPDATE metrics SET value = 7.5 WHERE run_uuid = ? AND key = 'train/loss' AND step = 100",
                   (found.run_id,))
    pages.clear()
    changed = verify_runs(reader, dest, VerifyOptions(import_options=OPTS))
    assert [(f.kind, f.item, f.step, f.expected, f.actual) for f in changed.findings] == [
        ("differs", "series:float:train/loss", 100.0, "value=0.009900990099009901", "value=7.5")]
    assert pages["train/loss"] == 8
