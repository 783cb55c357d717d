"""Issue 15: the Kubernetes manifest and the Slurm script in docs/scale-out/ are ready to use."""

from __future__ import annotations

import re
import shlex
import shutil
import subprocess
from pathlib import Path

import pytest

from neptune_migrate.pipeline.shard import Shard, parse

DOCS = Path(__file__).resolve().parents[2] / "docs"
MANIFEST = DOCS / "scale-out" / "k8s-indexed-job.yaml"
SBATCH = DOCS / "scale-out" / "slurm-array.sbatch"


def test_kubernetes_manifest_is_an_indexed_job_with_per_index_retries() -> None:
    yaml = pytest.importorskip("yaml")
    [job] = list(yaml.safe_load_all(MANIFEST.read_text()))
    assert (job["apiVersion"], job["kind"]) == ("batch/v1", "Job")
    spec = job["spec"]
    assert spec["completionMode"] == "Indexed"
    assert isinstance(spec["backoffLimitPerIndex"], int) and spec["backoffLimitPerIndex"] >= 1
    assert spec["completions"] == spec["parallelism"] == spec["maxFailedIndexes"]
    pod = spec["template"]["spec"]
    assert pod["restartPolicy"] == "Never"  # podFailurePolicy requires it
    [rule] = spec["podFailurePolicy"]["rules"]
    assert rule["action"] == "FailIndex" and rule["onExitCodes"]["values"] == [2]
    [container] = pod["containers"]
    assert rule["onExitCodes"]["containerName"] == container["name"]
    script = " ".join(container["args"])
    n = spec["completions"]
    assert script.count(f"--shard auto/{n}") == 2  # import and verify, N = completions
    assert "neptune-migrate import /data/dump" in script and "neptune-migrate verify /data/dump" in script
    [mount] = container["volumeMounts"]
    assert mount["mountPath"] == "/data/dump"
    assert {v["name"] for v in pod["volumes"]} == {mount["name"]}
    [env] = container["env"]
    assert env["name"] == "MLFLOW_TRACKING_URI" and "secretKeyRef" in env["valueFrom"]
    # What a pod of the job sees: index i -> shard i+1 of N.
    assert [parse(f"auto/{n}", {"JOB_COMPLETION_INDEX": str(i)}) for i in range(n)] == [
        Shard(i + 1, n, "JOB_COMPLETION_INDEX") for i in range(n)]


def test_sbatch_script_parses_and_is_a_job_array() -> None:
    bash = shutil.which("bash")
    if bash is None:
        pytest.skip("bash is not installed")
    proc = subprocess.run([bash, "-n", str(SBATCH)], capture_output=True, text=True, check=False)
    assert proc.returncode == 0, proc.stderr
    text = SBATCH.read_text()
    assert text.startswith("#!/bin/bash\n")
    m = re.search(r"^#SBATCH --array=(\d+)-(\d+)$", text, re.MULTILINE)
    assert m is not None
    lo, hi = int(m[1]), int(m[2])
    commands = [shlex.split(line) for line in text.splitlines() if line.startswith("neptune-migrate ")]
    assert [c[:2] for c in commands] == [["neptune-migrate", "import"], ["neptune-migrate", "verify"]]
    assert all(c[-2:] == ["--shard", "auto"] for c in commands)
    # What the tasks of that array see: ranks 1..N whatever the first id.
    count = hi - lo + 1
    env = {"SLURM_ARRAY_TASK_MIN": str(lo), "SLURM_ARRAY_TASK_MAX": str(hi),
           "SLURM_ARRAY_TASK_COUNT": str(count), "SLURM_ARRAY_TASK_STEP": "1"}
    assert [parse("auto", {**env, "SLURM_ARRAY_TASK_ID": str(t)}).number for t in range(lo, hi + 1)] == list(
        range(1, count + 1))


def test_scale_out_page_links_both_files_and_merge() -> None:
    page = (DOCS / "scale-out.md").read_text()
    assert "(scale-out/k8s-indexed-job.yaml)" in page and "(scale-out/slurm-array.sbatch)" in page
    assert "neptune-migrate report merge" in page
