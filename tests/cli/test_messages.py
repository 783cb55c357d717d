"""Messages are never cut before their cause: the one line keeps the root cause, reports keep the chain."""

from __future__ import annotations

from pathlib import Path

from neptune_migrate.destinations.base import PreparedRun
from neptune_migrate.destinations.fake import FakeDestination
from neptune_migrate.dump.reader import DumpReader
from neptune_migrate.errors import MissingDependencyError, PermanentError, chain_text, one_line
from neptune_migrate.model import DestinationRunId
from neptune_migrate.pipeline.import_ import ImportOptions, import_runs
from neptune_migrate.retry import FAST
from tests.factories import build_dump


def chained(outer_text: str) -> PermanentError:
    try:
        try:
            raise OSError(28, "No space left on device: '/var/mlflow/artifacts'")
        except OSError as inner:
            raise RuntimeError("log_batch failed\nwith a second line") from inner
    except RuntimeError as mid:
        err = PermanentError(outer_text)
        err.__cause__ = mid
        return err


def test_one_line_ends_with_the_root_cause_even_when_the_outer_message_is_long() -> None:
    err = chained("MLflow refused run my-ws/my-proj/PROJ-1: " + "x" * 1000)
    line = one_line(err)
    assert "\n" not in line and len(line) <= 400
    assert line.endswith("(cause: OSError: [Errno 28] No space left on device: '/var/mlflow/artifacts')")
    assert line.startswith("MLflow refused run my-ws/my-proj/PROJ-1: xxx")
    assert chain_text(err) == [
        "PermanentError: MLflow refused run my-ws/my-proj/PROJ-1: " + "x" * 1000,
        "RuntimeError: log_batch failed\nwith a second line",
        "OSError: [Errno 28] No space left on device: '/var/mlflow/artifacts'",
    ]
    assert one_line(OSError("plain")) == "OSError: plain"
    hint = MissingDependencyError("mlflow", "mlflow")
    hint.__cause__ = ImportError("No module named 'mlflow'")
    assert one_line(hint) == 'mlflow is not installed; install it with: pip install "neptune-migrate[mlflow]"'


class RefusingDestination(FakeDestination):
    """The fake, refusing every run with a chained error (as an SDK wrapping an OS error would)."""

    def create_run(self, run: PreparedRun) -> DestinationRunId:
        raise chained("the destination refused the run")


def test_a_failed_run_keeps_the_root_cause_and_the_report_keeps_the_chain(tmp_path: Path) -> None:
    build_dump(tmp_path / "dump", tmp_path, points=5)
    report = import_runs(DumpReader(tmp_path / "dump"), RefusingDestination(), ImportOptions(retry=FAST))
    [run] = report.runs
    assert run.status == "failed"
    assert run.message == ("the destination refused the run "
                           "(cause: OSError: [Errno 28] No space left on device: '/var/mlflow/artifacts')")
    doc = report.to_json()
    assert doc["runs"][0]["error_chain"] == [
        "PermanentError: the destination refused the run",
        "RuntimeError: log_batch failed\nwith a second line",
        "OSError: [Errno 28] No space left on device: '/var/mlflow/artifacts'",
    ]
