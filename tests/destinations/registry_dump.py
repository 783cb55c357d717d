"""A dump holding a Neptune 2.x model registry, for the destinations' registry tests.

Project `ws/reg` (each test passes its own project to keep MLflow experiments apart):
- run `REG-7` (a training run with a float series): the source run of version 4;
- model `REG-CLS` ("classifier", description, Neptune tags) with versions 1..5, created in that
  order: 1 archived, 2 production, 3 staging, 4 production (made from `REG-7`), 5 none; every
  version has a `model/binary` file with known bytes, version 2 also `model/config` (two files);
- model `REG-DUP` named "classifier" too (a name collision) with one staging version.

So: two versions in production (the alias goes to 4, the newest), one version without a stage.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path

from neptune_migrate.dump.reader import DumpReader
from neptune_migrate.dump.writer import DumpWriter
from neptune_migrate.model import (
    Field,
    FileEntry,
    Provenance,
    RegistryInfo,
    RunKey,
    RunRecord,
    SourceRunId,
    StageChange,
    SystemInfo,
)
from tests.factories import T0, float_points

STAGES = {1: "archived", 2: "production", 3: "staging", 4: "production", 5: "none"}


def version_bytes(model_id: str, n: int) -> bytes:
    """The content of a version's `model/binary` file (distinct per version)."""
    return f"{model_id}-{n} weights ".encode() * 40 + bytes([n])


@dataclass(frozen=True)
class RegistryDump:
    reader: DumpReader
    project: str

    def k(self, run_id: str) -> RunKey:
        return RunKey(self.project, SourceRunId(run_id))


def _record(k: RunKey, kind: str, i: int, *, name: str | None = None, description: str | None = None,
            tags: frozenset[str] = frozenset(), files: tuple[FileEntry, ...] = (),
            registry: RegistryInfo | None = None, fields: dict[str, Field] | None = None) -> RunRecord:
    return RunRecord(
        key=k, kind=kind,  # type: ignore[arg-type]
        system=SystemInfo(name=name, description=description, created_at=T0 + timedelta(hours=i),
                          modified_at=T0 + timedelta(hours=i, minutes=5), state="inactive", tags=tags),
        fields=fields or {}, provenance=Provenance("neptune2-api", "http://neptune.local"),
        files=files, registry=registry,
    )


def build_registry_dump(root: Path, project: str = "ws/reg", versions: int = 5,
                        name: str = "classifier", stages: dict[int, str] | None = None,
                        version_tags: bool = True, dup_name: str | None = None,
                        changed: frozenset[int] = frozenset(), left_out: frozenset[int] = frozenset()) -> RegistryDump:
    """The dump above; `name` is both models' name (registered model names are global to a server);
    `stages` overrides some versions' stages (a re-export after stages moved), `version_tags=False`
    exports the versions without Neptune tags (removed since); `dup_name` names REG-DUP otherwise;
    `changed` versions hold other model bytes (a re-export whose files changed), `left_out` versions
    are not in the dump (a later export adds them back)."""
    def k(run_id: str) -> RunKey:
        return RunKey(project, SourceRunId(run_id))

    with DumpWriter(root) as dump:
        with dump.begin_run(k("REG-7")) as run:
            run.add_points("float", float_points("train/loss", [0.0, 1.0, 2.0], [0.9, 0.5, 0.2]))
            run.commit(_record(k("REG-7"), "run", 0, name="training"))
        with dump.begin_run(k("REG-CLS")) as run:
            run.commit(_record(k("REG-CLS"), "model", 1, name=name, description="an image classifier",
                               tags=frozenset({"vision", "prod"}), registry=RegistryInfo(model_id="REG-CLS"),
                               fields={"info/framework": Field("string", "torch")}))
        for n in range(1, versions + 1):
            vid = f"REG-CLS-{n}"
            if n in left_out:
                continue
            with dump.begin_run(k(vid)) as run:
                data = version_bytes("REG-CLS", n)
                sha, size = run.store_bytes(data[::-1] if n in changed else data)
                files = [FileEntry("model/binary", "file", "model.bin", sha, size)]
                if n == 2:
                    csha, csize = run.store_bytes(b'{"layers": 50}')
                    files.append(FileEntry("model/config", "file", "config.json", csha, csize))
                stage = {**STAGES, **(stages or {})}.get(n, "none")
                info = RegistryInfo(
                    model_id="REG-CLS", version_id=vid, version=n, stage=stage,
                    stage_history=(StageChange("none", T0), StageChange(stage, T0 + timedelta(days=n))),
                    source_run=k("REG-7") if n == 4 else None)
                run.add_points("float", float_points("validation/loss", [0.0, 1.0], [0.5, 0.4 - n / 100]))
                vtags = frozenset({f"v{n}-tag"} if version_tags else ())
                run.commit(_record(k(vid), "model_version", 1 + n, description=f"version {n}",
                                   tags=vtags, files=tuple(files), registry=info,
                                   fields={"validation/acc": Field("float", 0.9 + n / 100)}))
        with dump.begin_run(k("REG-DUP")) as run:
            run.commit(_record(k("REG-DUP"), "model", 20, name=dup_name or name,
                               registry=RegistryInfo(model_id="REG-DUP")))
        with dump.begin_run(k("REG-DUP-1")) as run:
            sha, size = run.store_bytes(version_bytes("REG-DUP", 1))
            run.commit(_record(k("REG-DUP-1"), "model_version", 21,
                               files=(FileEntry("model/binary", "file", "model.bin", sha, size),),
                               registry=RegistryInfo(model_id="REG-DUP", version_id="REG-DUP-1", version=1,
                                                     stage="staging")))
    return RegistryDump(DumpReader(root), project)
