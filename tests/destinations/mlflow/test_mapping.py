"""Pure mapping rules and error classification (no MLflow backend needed)."""

from __future__ import annotations

import math
from datetime import datetime, timedelta, timezone

import pyarrow as pa
import pytest
import requests

from neptune_migrate.destinations.mlflow import mapping as m
from neptune_migrate.destinations.mlflow.destination import MlflowDestination, _quote, _redact
from neptune_migrate.destinations.mlflow.errors import classify_error
from neptune_migrate.errors import MissingDependencyError, PermanentError, TransientError
from neptune_migrate.model import Field, SystemInfo

KEYS = [
    "train/loss", "a//b", "/lead", "trail/", "x/../y", "./a", "..hidden", ".", "..", "",
    "weird@[chars],=()", "ünïcødé/ключ 日本: ok", "sp ace/dot.ted-dash", "a/./b/...",
    "x" * 300, "y/" * 200, "tab\there", "emoji😀",
]


@pytest.mark.parametrize("path", KEYS)
def test_sanitize_key_is_accepted_by_mlflow(path: str) -> None:
    from mlflow.utils.validation import _validate_metric_name, _validate_param_name, _validate_tag_name

    key = m.sanitize_key(path)
    assert len(key) <= m.MAX_KEY
    _validate_metric_name(key)  # type: ignore[no-untyped-call]
    _validate_param_name(key)  # type: ignore[no-untyped-call]
    _validate_tag_name(key)  # type: ignore[no-untyped-call]
    assert m.sanitize_key(key) == key  # idempotent


def test_sanitize_key_exact() -> None:
    assert m.sanitize_key("train/loss") == "train/loss"
    assert m.sanitize_key("ünï/ключ: x") == "ünï/ключ: x"
    assert m.sanitize_key("a//b@c") == "a/b_c"
    assert m.sanitize_key("/x/./y/../z/") == "x/_/y/__/z"
    assert m.sanitize_key("..a") == "_.a"
    long = m.sanitize_key("k" * 300)
    assert long == "k" * 240 + "-" + m._short_hash("k" * 300)
    assert m.sanitize_key("k" * 299 + "a") != long


def test_param_values() -> None:
    assert m.param_value(Field("float", 1e-3)) == "0.001"
    assert m.param_value(Field("float", float("nan"))) == "nan"
    assert m.param_value(Field("float", float("-inf"))) == "-inf"
    assert m.param_value(Field("int", 2**62)) == "4611686018427387904"
    assert m.param_value(Field("bool", False)) == "False"
    t = datetime(2025, 3, 1, 12, 0, 0, 123456, tzinfo=timezone.utc)
    assert m.param_value(Field("datetime", t)) == "2025-03-01T12:00:00.123456+00:00"
    assert m.param_value(Field("string_set", frozenset({"b", "a", "é"}))) == '["a", "b", "é"]'
    assert m.param_value(Field("string", "x")) == "x"


def test_fit_marks_truncation() -> None:
    assert m.fit("abc", 3) == ("abc", False)
    cut, truncated = m.fit("x" * 6001, 6000)
    assert truncated and len(cut) == 6000 and cut == "x" * 5986 + "...[truncated]"


def test_experiment_names() -> None:
    assert m.experiment_name("{project}", "ws/proj") == "ws/proj"
    assert m.experiment_name("neptune-{workspace}-{project_name}", "ws/proj") == "neptune-ws-proj"
    assert m.experiment_name("{project_name}", "proj") == "proj"
    assert len(m.experiment_name("{project}", "w/" + "p" * 600)) <= 500


def test_status_and_times() -> None:
    t0 = datetime(2025, 1, 1, tzinfo=timezone.utc)
    assert m.run_status(SystemInfo(failed=True, state="inactive")) == "FAILED"
    assert m.run_status(SystemInfo(state="Aborted")) == "KILLED"
    assert m.run_status(SystemInfo(state="running")) == "FINISHED"
    assert m.end_time_ms(SystemInfo(created_at=t0, modified_at=t0 - timedelta(seconds=5))) == m.ms(t0)
    assert m.end_time_ms(SystemInfo(created_at=t0)) == m.ms(t0)
    assert m.end_time_ms(SystemInfo()) is None
    assert m.ms(t0 + timedelta(microseconds=1999)) == m.ms(t0) + 1
    assert m.ms(datetime(1969, 12, 31, 23, 59, 59, 999500, tzinfo=timezone.utc)) == -1


def test_expected_float_rules() -> None:
    ts = pa.array([datetime(2025, 1, 1, 0, 0, 0, 1500, tzinfo=timezone.utc), None, None, None, None],
                  pa.timestamp("us", tz="UTC"))
    points = pa.table({
        "path": ["p"] * 5, "step": [0.0, 1.0, 2.0, 2.0, 3.0], "timestamp": ts,
        "value": [float("inf"), float("nan"), 1.0, 1.0, None], "dest_step": pa.array([0, 1, 2, 2, 3], pa.int64()),
    })
    got = m.expected_float(points).to_pylist()
    base = datetime(2025, 1, 1, 0, 0, 0, 1000, tzinfo=timezone.utc)
    epoch = datetime(1970, 1, 1, tzinfo=timezone.utc)
    assert [r["step"] for r in got] == [0, 1, 2]  # exact duplicate stored once, null value dropped
    assert [r["timestamp"] for r in got] == [base, epoch, epoch]
    assert got[0]["value"] == m.FLOAT_MAX and math.isnan(got[1]["value"]) and got[2]["value"] == 1.0
    losses = {(lo.kind, lo.path): lo.count for lo in m.chunk_losses("float", points)}
    assert losses == {("inf_clamped", "p"): 1, ("null_value_dropped", "p"): 1, ("timestamp_missing", "p"): 4}


def test_quote_and_redact() -> None:
    assert _quote("PROJ-1") == ("=", "'PROJ-1'")
    assert _quote("it's") == ("=", "\"it's\"")
    assert _quote("a'b\"c") == ("LIKE", "'a_b_c'")
    assert _redact("https://user:secret@mlflow.example.com:5000/path?token=x") == "https://mlflow.example.com:5000/path"
    dest = MlflowDestination("http://bob:hunter2@127.0.0.1:5000")
    assert "hunter2" not in dest.describe() and "bob" not in dest.describe()
    assert dest.describe() == "mlflow http://127.0.0.1:5000"


def test_missing_mlflow_gives_install_hint(monkeypatch: pytest.MonkeyPatch) -> None:
    import sys

    monkeypatch.setitem(sys.modules, "mlflow", None)  # makes `import mlflow` raise ImportError
    with pytest.raises(MissingDependencyError, match=r"neptune-migrate\[mlflow\]"):
        _ = MlflowDestination("sqlite:///nowhere.db").client


def _mlflow_error(code: str) -> Exception:
    from mlflow.exceptions import MlflowException
    from mlflow.protos.databricks_pb2 import ErrorCode

    return MlflowException("boom", error_code=ErrorCode.Value(code))


def _raised_from(outer: type[Exception], inner: Exception, message: str) -> Exception:
    try:
        try:
            raise inner
        except Exception:  # noqa: BLE001
            raise outer(message)  # noqa: B904 - MLflow raises without `from`, like this
    except Exception as exc:  # noqa: BLE001
        return exc


def test_classify_error() -> None:
    from mlflow.exceptions import MlflowException, RestException

    resp = requests.Response()
    resp.status_code = 503
    assert classify_error(requests.HTTPError("503", response=resp)) == "transient"
    resp404 = requests.Response()
    resp404.status_code = 404
    assert classify_error(requests.HTTPError("404", response=resp404)) == "permanent"
    assert classify_error(requests.ConnectionError("refused")) == "transient"
    assert classify_error(requests.Timeout("slow")) == "transient"
    assert classify_error(ConnectionResetError()) == "transient"
    assert classify_error(TimeoutError()) == "transient"
    assert classify_error(_mlflow_error("TEMPORARILY_UNAVAILABLE")) == "transient"
    assert classify_error(_mlflow_error("REQUEST_LIMIT_EXCEEDED")) == "transient"
    assert classify_error(_mlflow_error("INVALID_PARAMETER_VALUE")) == "permanent"
    assert classify_error(_mlflow_error("RESOURCE_DOES_NOT_EXIST")) == "permanent"
    assert classify_error(RestException({"error_code": "INTERNAL_ERROR", "message": "db"})) == "transient"  # type: ignore[no-untyped-call]
    assert classify_error(RestException({"error_code": "BAD_REQUEST", "message": "no"})) == "permanent"  # type: ignore[no-untyped-call]
    wrapped = _raised_from(MlflowException, requests.ConnectionError("Max retries exceeded"),
                           "API request to http://x failed with exception Max retries exceeded")
    assert classify_error(wrapped) == "transient"
    status = MlflowException("API request to endpoint /x failed with error code 502 != 200. Response body: ''")
    assert classify_error(status) == "transient"
    assert classify_error(MlflowException("something else")) == "permanent"
    assert classify_error(TransientError("x")) == "transient"
    assert classify_error(PermanentError("x")) == "permanent"
    assert classify_error(ValueError("bad")) == "permanent"
    assert classify_error(FileNotFoundError("gone")) == "permanent"
