"""Neptune's hardware monitoring series, recognised once, named natively by each destination.

The neptune 1.x client logs CPU, memory and GPU usage as float series under
`monitoring/<8-hex hash>/<resource>[_<card>]` (older clients: `monitoring/<resource>`), e.g.
`monitoring/1a2b3c4d/cpu`, `monitoring/1a2b3c4d/gpu_memory_0`. Each destination's key sanitiser
renames these to its own system-metric names so that the system charts light up as they would
for a native run; values and units are kept exactly as Neptune logged them (CPU and GPU usage in
%, memory in GB, power in W), so the names say GB where the destination's own would say MB. The
rename is reported (`system_metric`, changed form) and verify compares through it.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from neptune_migrate.destinations.base import PreparedRun
from neptune_migrate.model import Loss

_MONITORING = re.compile(
    r"^monitoring/(?:[0-9a-f]{8}/)?(cpu|memory|gpu|gpu_memory|gpu_power)(?:_(\d+))?$"
)


@dataclass(frozen=True, slots=True)
class SystemMetric:
    """One recognised monitoring series: `resource` (cpu, memory, gpu, gpu_memory, gpu_power)
    and the GPU card (0 when Neptune logged a single card without an index)."""

    resource: str
    card: int = 0


def monitoring_metric(path: str) -> SystemMetric | None:
    """The system metric a Neptune attribute path holds, or None for any other path."""
    match = _MONITORING.match(path)
    if match is None:
        return None
    resource, card = match.group(1), match.group(2)
    if resource in ("cpu", "memory") and card is not None:
        return None  # per-core / per-bank gauges have no native system-metric name
    return SystemMetric(resource, int(card) if card is not None else 0)


def mlflow_name(metric: SystemMetric) -> str:
    """MLflow's `system/…` names (`mlflow.system_metrics`), units as Neptune logged them."""
    return {
        "cpu": "system/cpu_utilization_percentage",
        "memory": "system/system_memory_usage_gigabytes",
        "gpu": f"system/gpu_{metric.card}_utilization_percentage",
        "gpu_memory": f"system/gpu_{metric.card}_memory_usage_gigabytes",
        "gpu_power": f"system/gpu_{metric.card}_power_usage_watts",
    }[metric.resource]


def wandb_name(metric: SystemMetric) -> str:
    """W&B's `system/…` section (names as close to wandb's own as its key rules allow)."""
    return {
        "cpu": "system/cpu",
        "memory": "system/memory_gb",
        "gpu": f"system/gpu_{metric.card}_gpu",
        "gpu_memory": f"system/gpu_{metric.card}_memoryAllocatedGB",
        "gpu_power": f"system/gpu_{metric.card}_powerWatts",
    }[metric.resource]


def aim_name(metric: SystemMetric) -> str:
    """Aim's `__system__…` names (shown in the run's System tab)."""
    return {
        "cpu": "__system__cpu",
        "memory": "__system__memory_gb",
        "gpu": f"__system__gpu_{metric.card}",
        "gpu_memory": f"__system__gpu_{metric.card}_memory_gb",
        "gpu_power": f"__system__gpu_{metric.card}_power_watts",
    }[metric.resource]


def system_losses(run: PreparedRun) -> list[Loss]:
    """One `system_metric` item (changed form) per float series renamed to a system metric."""
    out = []
    for si in run.record.series:
        if si.kind == "float" and monitoring_metric(si.path) is not None:
            key = run.key_map.get(si.path, si.path)
            out.append(Loss("system_metric", si.path, si.count,
                            f"monitoring series shown as the system metric {key}"))
    return out
