"""Neptune's monitoring paths -> each destination's system-metric names (pure mapping)."""

from __future__ import annotations

import pytest

from neptune_migrate.destinations.aim.mapping import sanitize_key as aim_key
from neptune_migrate.destinations.mlflow.mapping import sanitize_key as mlflow_key
from neptune_migrate.destinations.system_metrics import SystemMetric, monitoring_metric
from neptune_migrate.destinations.wandb.mapping import sanitize_key as wandb_key


@pytest.mark.parametrize(("path", "metric"), [
    ("monitoring/1a2b3c4d/cpu", SystemMetric("cpu")),
    ("monitoring/cpu", SystemMetric("cpu")),  # older clients: no process hash
    ("monitoring/1a2b3c4d/memory", SystemMetric("memory")),
    ("monitoring/1a2b3c4d/gpu", SystemMetric("gpu", 0)),
    ("monitoring/1a2b3c4d/gpu_3", SystemMetric("gpu", 3)),
    ("monitoring/1a2b3c4d/gpu_memory_1", SystemMetric("gpu_memory", 1)),
    ("monitoring/1a2b3c4d/gpu_power_0", SystemMetric("gpu_power", 0)),
    ("monitoring/1a2b3c4d/stdout", None),
    ("monitoring/1a2b3c4d/hostname", None),
    ("monitoring/1a2b3c4d/cpu_0", None),
    ("monitoring/NOTAHASH/cpu", None),
    ("train/cpu", None),
    ("my/monitoring/1a2b3c4d/cpu", None),
])
def test_monitoring_paths_are_recognised(path: str, metric: SystemMetric | None) -> None:
    assert monitoring_metric(path) == metric


def test_each_destination_names_them_natively() -> None:
    paths = ["monitoring/1a2b3c4d/cpu", "monitoring/1a2b3c4d/memory", "monitoring/1a2b3c4d/gpu_1",
             "monitoring/1a2b3c4d/gpu_memory_1", "monitoring/1a2b3c4d/gpu_power_1", "monitoring/1a2b3c4d/stdout"]
    assert [mlflow_key(p) for p in paths] == [
        "system/cpu_utilization_percentage", "system/system_memory_usage_gigabytes",
        "system/gpu_1_utilization_percentage", "system/gpu_1_memory_usage_gigabytes",
        "system/gpu_1_power_usage_watts", "monitoring/1a2b3c4d/stdout"]
    assert [wandb_key(p) for p in paths] == [
        "system/cpu", "system/memory_gb", "system/gpu_1_gpu", "system/gpu_1_memoryAllocatedGB",
        "system/gpu_1_powerWatts", "monitoring/1a2b3c4d/stdout"]
    assert [aim_key(p) for p in paths] == [
        "__system__cpu", "__system__memory_gb", "__system__gpu_1", "__system__gpu_1_memory_gb",
        "__system__gpu_1_power_watts", "monitoring/1a2b3c4d/stdout"]
