"""A self-hosted 2.x registry, end to end: the real neptune 1.x client reads models and versions from the
fake 2.x server, `run` imports them into MLflow's registry, and MlflowClient reads the registry back."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from tests.support.fake_neptune import v2_fixtures
from tests.support.fake_neptune.v2 import FakeNeptune2, small_project, small_registry
from tests.support.inprocess import run_cli

insecure_oauth = v2_fixtures.insecure_oauth  # autouse: plain http to the fake, no token from the environment
server = v2_fixtures.server


def _files(root: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in root.rglob("*") if p.is_file()}


def test_a_live_registry_reaches_mlflow_in_neptunes_order_with_stage_aliases_and_file_bytes(
        server: FakeNeptune2, tmp_path: Path, capsys: pytest.CaptureFixture[str],
        monkeypatch: pytest.MonkeyPatch) -> None:
    from mlflow import MlflowClient
    from mlflow.artifacts import download_artifacts

    small_project(server)
    served = small_registry(server)
    monkeypatch.setenv("NEPTUNE_API_TOKEN", server.api_token())
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    args = ("run", "--from", "neptune2-api", "--project", "ws/proj", "--to", "mlflow", "--tracking-uri", uri,
            "--dump", str(tmp_path / "dump"))
    _, out, err = run_cli(capsys, *args, check_rc=0)
    assert "models created 2, versions created 5" in out + err, out + err

    client = MlflowClient(uri)
    models = {m.name: m for m in client.search_registered_models()}
    assert set(models) == {"classifier", "detector"}
    clf = models["classifier"]
    assert clf.description == "resnet classifier" and clf.tags["neptune.model_id"] == "PROJ-CLF"
    versions = sorted(client.search_model_versions("name='classifier'"), key=lambda v: int(v.version))
    # Neptune's order is MLflow's order; every version keeps its id and stage as tags.
    assert [(str(v.version), v.tags["neptune.version_id"], v.tags["neptune.stage"]) for v in versions] == [
        ("1", "PROJ-CLF-1", "archived"), ("2", "PROJ-CLF-2", "production"),
        ("3", "PROJ-CLF-3", "staging"), ("4", "PROJ-CLF-4", "production")]
    # The newest version of a stage holds its alias; the older production version keeps only the tag.
    assert dict(client.get_registered_model("classifier").aliases) == {
        "archived": 1, "staging": 3, "production": 4}
    assert [v.description for v in versions] == [served[f"CLF-{n}"].description for n in range(1, 5)]
    # Each version's files are its artifacts, byte for byte what the server holds.
    os.environ["MLFLOW_TRACKING_URI"] = uri
    try:
        for n, v in enumerate(versions, start=1):
            got = _files(Path(download_artifacts(artifact_uri=v.source, dst_path=str(tmp_path / f"v{n}"))))
            assert served[f"CLF-{n}"].files["model/weights"][0] in got.values(), (n, sorted(got))
    finally:
        del os.environ["MLFLOW_TRACKING_URI"]

    # The same command again creates nothing: no version twice, the aliases where they were.
    run_cli(capsys, *args, check_rc=0)
    assert len(client.search_model_versions("name='classifier'")) == 4
    assert len(client.search_model_versions("name='detector'")) == 1
    assert dict(client.get_registered_model("classifier").aliases) == {
        "archived": 1, "staging": 3, "production": 4}
