"""Imported runs look native in MLflow: checked through MlflowClient on a real SQLite store.

Per-tag tags, provenance under `nm.` without machine paths, the experiment kind MLflow 3 reads,
one step scale per run, `monitoring/*` as `system/*` metrics, durations equal the source's; and
verify passes through every one of those mappings.
"""

from __future__ import annotations

import json
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest

from neptune_migrate.destinations.mlflow import mapping as m
from neptune_migrate.destinations.mlflow.destination import MlflowDestination
from neptune_migrate.pipeline.import_ import ImportOptions, import_runs
from neptune_migrate.retry import FAST
from neptune_migrate.verify.verifier import VerifyOptions, verify_runs
from tests.destinations.mlflow.conftest import MlflowBackend
from tests.destinations.native_dump import (
    CPU,
    CPU_VALUES,
    DURATION,
    GPU_VALUES,
    LOSS_STEPS,
    LR_STEPS,
    MEMORY_VALUES,
    PROJECT,
    build_native_dump,
    start_of,
)
from tests.factories import key

OPTS = ImportOptions(retry=FAST)
DURATION_MS = DURATION // timedelta(milliseconds=1)
TEMPLATE = "native-{project_name}"


@pytest.fixture(scope="module")
def imported(mlflow_sqlite: MlflowBackend, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    reader = build_native_dump(tmp_path_factory.mktemp("native") / "dump")
    dest = MlflowDestination(mlflow_sqlite.tracking_uri, TEMPLATE, artifact_location=mlflow_sqlite.artifact_location)
    report = import_runs(reader, dest, OPTS)
    assert [r.status for r in report.runs] == ["created"] * 3, [r.message for r in report.runs]
    exp = dest.client.get_experiment_by_name("native-native")
    runs = {r.data.tags[m.TAG_RUN_ID]: r for r in dest.client.search_runs([exp.experiment_id])}
    return {"reader": reader, "dest": dest, "report": report, "exp": exp, "runs": runs}


def test_each_neptune_tag_is_its_own_tag_and_search_runs_filters_on_it(imported: dict[str, Any]) -> None:
    client, exp = imported["dest"].client, imported["exp"]
    tags = imported["runs"]["NAT-1"].data.tags
    assert tags["neptune.tag.baseline"] == "true"
    assert tags["neptune.tag.extra"] == "true"
    assert json.loads(tags["neptune.tags"]) == ["baseline", "extra"]  # kept for round trips
    found = client.search_runs([exp.experiment_id], "tags.`neptune.tag.baseline` = 'true'")
    assert [r.data.tags[m.TAG_RUN_ID] for r in found] == ["NAT-1"]
    assert not any(k.startswith("neptune.tag.") for k in imported["runs"]["NAT-2"].data.tags)


def test_provenance_is_under_one_short_prefix_without_machine_paths(imported: dict[str, Any]) -> None:
    dest = imported["dest"]
    run = imported["runs"]["NAT-1"]
    tags = run.data.tags
    own = sorted(k for k in tags if k.startswith("nm."))
    assert own == ["nm.claim", "nm.digest", "nm.import_digest", "nm.imported_at", "nm.origin", "nm.source",
                   "nm.status"]
    assert tags["nm.source"] == "neptune-offline"
    assert not any(k.startswith("neptune_migrate.") for k in tags)
    assert not any("/home/alice" in v for v in tags.values())
    doc = dest._read_json_artifact(run.info.run_id, m.RUN_ARTIFACT)
    assert doc["provenance"]["location"] == "/home/alice/project/.neptune/offline/run__x"
    assert doc["import"]["dump_format"] == imported["reader"].manifest.format_version
    assert doc["import"]["mapping_version"] == m.MAPPING_VERSION


def test_experiment_opens_on_model_training(imported: dict[str, Any]) -> None:
    exp = imported["dest"].client.get_experiment(imported["exp"].experiment_id)
    assert exp.tags["mlflow.experimentKind"] == "custom_model_development"


def test_an_existing_experiment_gets_the_kind_unless_one_was_chosen(mlflow_sqlite: MlflowBackend) -> None:
    dest = MlflowDestination(mlflow_sqlite.tracking_uri, "{project}", artifact_location=mlflow_sqlite.artifact_location)
    plain = dest.client.create_experiment("native-plain")
    genai = dest.client.create_experiment("native-genai", tags={"mlflow.experimentKind": "genai_development"})
    dest._experiment_id("native-plain", create=True)
    dest._experiment_id("native-genai", create=True)
    assert dest.client.get_experiment(plain).tags["mlflow.experimentKind"] == "custom_model_development"
    assert dest.client.get_experiment(genai).tags["mlflow.experimentKind"] == "genai_development"


def test_series_of_a_run_share_one_step_scale(imported: dict[str, Any]) -> None:
    client = imported["dest"].client
    rid = imported["runs"]["NAT-1"].info.run_id
    lr = [h.step for h in client.get_metric_history(rid, "train/lr")]
    loss = [h.step for h in client.get_metric_history(rid, "train/loss")]
    assert sorted(lr) == [int(s * 10) for s in LR_STEPS] == [5, 10, 15]
    assert sorted(loss) == [int(s * 10) for s in LOSS_STEPS] == [0, 10, 20, 30, 40]
    changes = {c["path"]: c["scale"] for c in imported["report"].runs[1].step_changes}
    assert changes["train/lr"] == changes["train/loss"] == 10
    # a run without fractional steps keeps its steps
    rid0 = imported["runs"]["NAT-0"].info.run_id
    assert sorted(h.step for h in client.get_metric_history(rid0, "train/loss")) == [0, 1, 2, 3, 4]


def test_monitoring_series_are_mlflow_system_metrics_reported_as_renamed(imported: dict[str, Any]) -> None:
    client = imported["dest"].client
    run = imported["runs"]["NAT-1"]
    metrics = run.data.metrics
    assert not any(k.startswith("monitoring/") for k in metrics)
    expected = {"system/cpu_utilization_percentage": CPU_VALUES,
                "system/system_memory_usage_gigabytes": MEMORY_VALUES,
                "system/gpu_0_utilization_percentage": GPU_VALUES}
    for name, values in expected.items():
        history = sorted(client.get_metric_history(run.info.run_id, name), key=lambda h: h.step)
        assert [h.value for h in history] == values
        assert [h.step for h in history] == [0, 10, 20]  # the run's one scale
    report = imported["report"].runs[1]
    system = {lo["path"]: lo for lo in report.losses if lo["kind"] == "system_metric"}
    assert set(system) == {CPU, CPU.replace("cpu", "memory"), CPU.replace("cpu", "gpu_0")}
    assert system[CPU]["category"] == "changed_form" and system[CPU]["count"] == 3
    assert report.renamed_keys[CPU] == "system/cpu_utilization_percentage"


def test_durations_equal_the_sources(imported: dict[str, Any]) -> None:
    for run_id, run in imported["runs"].items():
        start = start_of(run_id)
        assert run.info.start_time == int(start.timestamp() * 1000)
        assert run.info.end_time - run.info.start_time == DURATION_MS == 5_415_250


def test_verify_passes_through_every_mapping(imported: dict[str, Any]) -> None:
    result = verify_runs(imported["reader"], imported["dest"], VerifyOptions(import_options=OPTS))
    assert [str(f) for f in result.findings] == []
    assert result.to_json()["totals"]["points_compared"] == 5 + 5 + 3 + 9 + 2 + 1


def test_an_import_by_the_previous_mapping_is_found_and_repaired(
    mlflow_sqlite: MlflowBackend, tmp_path: Path
) -> None:
    reader = build_native_dump(tmp_path / "dump")
    dest = MlflowDestination(mlflow_sqlite.tracking_uri, "legacy-{project_name}",
                             artifact_location=mlflow_sqlite.artifact_location)
    assert {r.status for r in import_runs(reader, dest, OPTS).runs} == {"created"}
    exp = dest.client.get_experiment_by_name("legacy-native")
    old = next(r for r in dest.client.search_runs([exp.experiment_id]) if r.data.tags[m.TAG_RUN_ID] == "NAT-0")
    for tag in ("status", "digest", "import_digest", "origin", "claim", "imported_at"):  # as mapping 1 wrote them
        dest.client.set_tag(old.info.run_id, f"neptune_migrate.{tag}", old.data.tags[f"nm.{tag}"])
        dest.client.delete_tag(old.info.run_id, f"nm.{tag}")
    dest.client.set_tag(old.info.run_id, "neptune_migrate.import_digest", "from-mapping-1")
    found = dest.find_run(key("NAT-0", PROJECT))
    assert found is not None and found.complete and found.import_digest == "from-mapping-1"
