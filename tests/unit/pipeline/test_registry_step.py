"""The registry step's pure parts: names (collisions resolved deterministically and reported),
aliases for the newest version of each stage, and verify's comparison of registered models."""

from __future__ import annotations

from datetime import datetime, timezone
from pathlib import Path

from neptune_migrate.destinations.base import FileDigest, ModelSnapshot, RegistryModel, VersionSnapshot
from neptune_migrate.model import Provenance, RegistryInfo, RunKey, RunRecord, SourceRunId, SystemInfo
from neptune_migrate.pipeline.registry import base_name, model_key, registry_names
from neptune_migrate.registry import group_models
from neptune_migrate.verify.registry import compare_models


def _rec(project: str, rid: str, kind: str, name: str | None = None, stage: str | None = None) -> RunRecord:
    model_id = rid if kind == "model" else rid.rsplit("-", 1)[0]
    info = RegistryInfo(model_id=model_id) if kind == "model" else RegistryInfo(
        model_id=model_id, version_id=rid, version=int(rid.rsplit("-", 1)[1]), stage=stage)
    return RunRecord(key=RunKey(project, SourceRunId(rid)), kind=kind,  # type: ignore[arg-type]
                     system=SystemInfo(name=name, created_at=datetime(2025, 1, 1, tzinfo=timezone.utc)),
                     fields={}, provenance=Provenance("test", "here"), registry=info)


def test_model_names_come_from_neptune_names_else_keys_and_collisions_are_renamed_deterministically() -> None:
    groups = group_models([
        _rec("ws/b", "B-MOD", "model", name="resnet"),
        _rec("ws/a", "A-MOD", "model", name="ResNet"),  # same name up to case, in another project
        _rec("ws/a", "A-KEY", "model"),  # no name: its key
        _rec("ws/a", "A-ORPHAN-1", "model_version"),  # a version whose model the dump lacks
        _rec("ws/a", "A-X", "model", name="a/b:c"),
    ])
    names, losses = registry_names(groups)
    assert names == {("ws/a", "A-KEY"): "KEY", ("ws/a", "A-MOD"): "ResNet", ("ws/a", "A-ORPHAN"): "ORPHAN",
                     ("ws/a", "A-X"): "a_b_c", ("ws/b", "B-MOD"): "resnet-B-MOD"}
    assert [(lo.kind, lo.path) for lo in losses] == [("model_renamed", "ws/b/B-MOD")]
    assert "ws/a/A-MOD" in losses[0].detail
    # the same records in another order give the same names
    assert registry_names(list(reversed(groups)))[0] == names
    assert model_key("PROJ-MOD") == "MOD" and model_key("uuid") == "uuid"
    assert base_name(groups[0]) == "KEY"


def test_stage_holders_are_the_newest_version_of_each_stage() -> None:
    (group,) = group_models([_rec("ws/a", f"A-M-{n}", "model_version", stage=s)
                             for n, s in [(3, "production"), (1, "production"), (2, "staging"), (4, "none")]])
    assert [v.key.run_id for v in group.versions] == ["A-M-1", "A-M-2", "A-M-3", "A-M-4"]
    assert {s: v.key.run_id for s, v in group.stage_holders().items()} == {"production": "A-M-3",
                                                                          "staging": "A-M-2"}


def _snap(order: list[str], aliases: dict[str, str], size: int = 3) -> ModelSnapshot:
    return ModelSnapshot(name="m", tags={"neptune.model_id": "M"},
                         versions=[VersionSnapshot(v, str(i), tags={"neptune.version_id": v},
                                                   files={"f/x.bin": FileDigest(size, "ab" if size == 3 else "cd")})
                                   for i, v in enumerate(order, start=1)], aliases=aliases)


def test_compare_models_names_order_alias_and_file_differences() -> None:
    model = RegistryModel(project="ws/a", model_id="M", name="m", description=None, tags=frozenset(),
                          record_key=None, carrier_run_id=None)
    want = _snap(["M-1", "M-2", "M-3"], {"production": "M-3"})
    assert compare_models("k", model, want, _snap(["M-1", "M-2", "M-3"], {"production": "M-3"})) == []
    got = _snap(["M-2", "M-1", "M-3", "M-9"], {"production": "M-1", "staging": "M-2"}, size=4)
    found = {(f.kind, f.item) for f in compare_models("k", model, want, got)}
    assert found == {
        ("differs", "version:M-1:order"), ("extra", "version:M-9"), ("differs", "alias:production"),
        ("extra", "alias:staging"), *{("differs", f"file:M-{n}/f/x.bin") for n in (1, 2, 3)},
    }
    missing = compare_models("k", model, want, _snap(["M-1", "M-3"], {}))
    assert {(f.kind, f.item) for f in missing} == {("missing", "version:M-2"), ("missing", "alias:production")}


def test_a_shard_names_its_models_over_every_shards_models(tmp_path) -> None:  # type: ignore[no-untyped-def]
    """Review #18-dst 8: REG-CLS and REG-DUP are both "classifier" and fall into different shards; the
    shard owning only REG-DUP still names it `classifier-REG-DUP` (before, each shard saw only its
    own models and both registered "classifier")."""
    from neptune_migrate.dump.reader import DumpRun
    from neptune_migrate.pipeline.registry import named_groups
    from neptune_migrate.pipeline.shard import Shard, shard_number
    from tests.destinations.registry_dump import build_registry_dump

    project = next(f"ws/n{i}" for i in range(100)
                   if shard_number(RunKey(f"ws/n{i}", SourceRunId("REG-CLS")), 2)
                   != shard_number(RunKey(f"ws/n{i}", SourceRunId("REG-DUP")), 2))
    d = build_registry_dump(tmp_path / "dump", project=project, versions=1)
    runs = [r for r in d.reader.scan() if isinstance(r, DumpRun)]
    dup = Shard(shard_number(RunKey(project, SourceRunId("REG-DUP")), 2), 2)
    groups, names, renamed = named_groups(runs, dup)
    assert [g.model_id for g in groups] == ["REG-DUP"]
    assert names[project, "REG-DUP"] == "classifier-REG-DUP"
    assert [lo.path for lo in renamed] == [f"{project}/REG-DUP"]
    cls_groups, cls_names, _ = named_groups(runs, Shard(3 - dup.number, 2))
    assert [g.model_id for g in cls_groups] == ["REG-CLS"] and cls_names[project, "REG-CLS"] == "classifier"


def test_a_version_file_the_source_no_longer_held_is_reported_once_by_its_run_not_again_by_the_registry(
        tmp_path: Path) -> None:
    from dataclasses import replace

    from neptune_migrate.dump.reader import DumpReader
    from neptune_migrate.dump.writer import DumpWriter
    from neptune_migrate.model import FileEntry
    from neptune_migrate.pipeline.registry import build_model

    class NoRuns:  # the destination holds none of the runs: only find_run is asked
        def find_run(self, key: RunKey) -> None:
            return None

    version = replace(_rec("ws/a", "A-MOD-1", "model_version"), files=(
        FileEntry("model/weights", "file", "weights", None, None, missing="uploaded and deleted by the client"),
        FileEntry("model/card", "file", "card", "0" * 64, 3)))
    with DumpWriter(tmp_path / "dump"):
        pass
    [group] = group_models([_rec("ws/a", "A-MOD", "model"), version])
    model, losses = build_model(NoRuns(), DumpReader(tmp_path / "dump"), group, "mod")  # type: ignore[arg-type]
    # The file the source had lost is the run's loss (not_in_source), reported there once; the file whose
    # blob vanished from the dump is the registry's own loss.
    assert [(lo.kind, lo.path, lo.category.value) for lo in losses] == [
        ("version_file_missing", "A-MOD-1:model/card", "lost")]
    assert model.versions[0].files == ()
