"""Imports a registry dump into MLflow and SIGKILLs itself at a chosen point (a real kill -9).

`python -m tests.support.registry_kill_worker <dump> <tracking uri> <artifact location|-> <when> <n>`:
- `after-version n`: right after the n-th model version was created (between two versions);
- `before-version n`: inside the n-th version's creation, after its logged model got its files
  but before `create_model_version` is sent (a half-made version: a pending logged model).
"""

from __future__ import annotations

import os
import signal
import sys
from pathlib import Path
from typing import Any

from neptune_migrate.destinations.mlflow import MlflowDestination
from neptune_migrate.dump.reader import DumpReader
from neptune_migrate.pipeline.import_ import ImportOptions, import_runs
from neptune_migrate.pipeline.ledger import Ledger
from neptune_migrate.retry import FAST


def main() -> None:
    dump, uri, location, when, n = sys.argv[1:6]
    dest = MlflowDestination(uri, artifact_location=None if location == "-" else location)
    client = dest.client
    calls = {"n": 0}
    create = client.create_model_version

    def create_model_version(*args: Any, **kwargs: Any) -> Any:
        calls["n"] += 1
        if when == "before-version" and calls["n"] == int(n):
            os.kill(os.getpid(), signal.SIGKILL)
        made = create(*args, **kwargs)
        if when == "after-version" and calls["n"] == int(n):
            os.kill(os.getpid(), signal.SIGKILL)
        return made

    client.create_model_version = create_model_version
    reader = DumpReader(Path(dump))
    ledger = Ledger(reader.layout, dest.name, dest.describe())
    import_runs(reader, dest, ImportOptions(retry=FAST), ledger=ledger)


if __name__ == "__main__":
    main()
