"""Neptune's model registry into W&B (issue 18), offline: the real SDK writes one registry run per
model with a `model` artifact per version (Neptune's order, stage aliases), read back from the run
file with our own reader; the link into the registry is kept as intent (the SDK cannot link offline)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from neptune_migrate.destinations.base import RegistryModel
from neptune_migrate.destinations.retrying import RetryingDestination
from neptune_migrate.destinations.wandb import WandbDestination
from neptune_migrate.destinations.wandb.records import iter_records
from neptune_migrate.dump.reader import DumpReader, DumpRun
from neptune_migrate.pipeline.import_ import ImportOptions, import_runs
from neptune_migrate.pipeline.registry import build_model, owned_groups, registry_names
from neptune_migrate.retry import FAST
from neptune_migrate.verify.verifier import VerifyOptions, verify_runs
from tests.destinations.registry_dump import STAGES, build_registry_dump, version_bytes

OPTS = ImportOptions(retry=FAST)


def _artifacts(path: Path) -> list[tuple[str, dict[str, object], list[str], dict[str, int]]]:
    """(description, metadata, aliases, {file: size}) of every model artifact record, in file order."""
    out = []
    for rec in iter_records(path):
        if rec.WhichOneof("record_type") == "artifact" and rec.artifact.type == "model":
            a = rec.artifact
            out.append((a.description, json.loads(a.metadata), list(a.aliases),
                        {c.path: int(c.size) for c in a.manifest.contents}))
    return out


def test_versions_become_model_artifacts_in_order_with_stage_aliases_and_verify(tmp_path: Path) -> None:
    d = build_registry_dump(tmp_path / "dump", versions=3)
    dest = WandbDestination(mode="offline", directory=tmp_path / "wb")
    report = import_runs(d.reader, dest, OPTS)
    assert not report.failed, report.to_json()
    st = {r.key: r.status for r in report.registry}
    assert st[f"version:{d.project}/REG-CLS-3"] == "created"
    assert st[f"alias:{d.project}/REG-CLS@production"] == "set"
    model = next(r for r in report.registry if r.key == f"model:{d.project}/REG-CLS")
    assert [(lo["kind"], lo["count"], lo["category"]) for lo in model.losses] == [
        ("registry_link_after_sync", 3, "changed_form")]
    rid = dest._registry.run_id(_model(d.reader, dest))
    files = sorted((tmp_path / "wb" / "wandb").glob(f"offline-run-*-{rid}/run-{rid}.wandb"))
    assert len(files) == 1
    arts = _artifacts(files[0])
    assert [meta["neptune_version_id"] for _, meta, _, _ in arts] == ["REG-CLS-1", "REG-CLS-2", "REG-CLS-3"]
    assert [desc for desc, _, _, _ in arts] == ["version 1", "version 2", "version 3"]
    assert [meta["neptune_stage"] for _, meta, _, _ in arts] == [STAGES[n] for n in (1, 2, 3)]
    assert [sorted(a) for _, _, a, _ in arts] == [["archived", "latest"], ["latest", "production"],
                                                  ["latest", "staging"]]
    ident = [json.dumps({"neptune_model_id": "REG-CLS", "neptune_project": d.project,
                         "neptune_stage": STAGES[n], "neptune_version_id": f"REG-CLS-{n}"}, sort_keys=True).encode()
             for n in (1, 2, 3)]
    assert arts[1][3] == {"model/binary/model.bin": len(version_bytes("REG-CLS", 2)),
                          "model/config/config.json": 14, "neptune_version.json": len(ident[1])}
    # review #18-dst 4: W&B dedupes artifact versions by the digest of their files, so each carries
    # its identity file; the manifests of the three versions (and of any with equal files) differ
    assert all(a[3]["neptune_version.json"] == len(i) for a, i in zip(arts, ident, strict=True))
    manifests = [_manifest(files[0], n) for n in range(3)]
    assert len({tuple(sorted(mf.items())) for mf in manifests}) == 3
    assert {mf["neptune_version.json"] for mf in manifests} == {_md5(i) for i in ident}
    assert arts[0][1]["link_target"] == "wandb-registry-model/classifier"
    # the bytes W&B will upload are staged inside the offline folder, equal to the dump's
    staged = list((tmp_path / "wb" / "neptune-migrate-staging").rglob("*"))
    contents = {f.read_bytes() for f in staged if f.is_file()}
    assert {version_bytes("REG-CLS", n) for n in (1, 2, 3)} <= contents

    again = import_runs(d.reader, dest, OPTS)
    assert {r.status for r in again.registry} == {"skipped"}
    assert len(sorted((tmp_path / "wb" / "wandb").glob(f"offline-run-*-{rid}"))) == 1
    check = verify_runs(d.reader, dest, VerifyOptions(import_options=OPTS))
    assert check.findings == [], [str(f) for f in check.findings]

    # tamper with the staged bytes W&B would upload: verify names the file
    for f in staged:
        if f.is_file() and f.read_bytes() == version_bytes("REG-CLS", 3):
            f.write_bytes(b"other bytes")
    tampered = verify_runs(d.reader, dest, VerifyOptions(import_options=OPTS))
    assert [(f.kind, f.item) for f in tampered.findings] == [("differs", "file:REG-CLS-3/model/binary/model.bin")]


def _manifest(path: Path, index: int) -> dict[str, str]:
    """File -> W&B digest of the `index`-th model artifact record."""
    recs = [r.artifact for r in iter_records(path)
            if r.WhichOneof("record_type") == "artifact" and r.artifact.type == "model"]
    return {c.path: c.digest for c in recs[index].manifest.contents}


def _md5(data: bytes) -> str:
    import base64
    import hashlib

    return base64.b64encode(hashlib.md5(data).digest()).decode()


def _model(reader: DumpReader, dest: WandbDestination) -> RegistryModel:
    """The neutral model the registry step hands to W&B (to find its registry run)."""
    runs = [r for r in reader.scan() if isinstance(r, DumpRun)]
    groups = owned_groups(runs, None)
    names, _ = registry_names(groups)
    group = next(g for g in groups if g.model_id == "REG-CLS")
    model, _ = build_model(RetryingDestination(dest, FAST), reader, group, names[group.project, group.model_id])
    return model


def test_two_names_w_and_b_stores_alike_become_two_collections(tmp_path: Path) -> None:
    """Review #18-dst 7: "my model" and "my-model" are one artifact collection name in W&B
    ("my-model"); names are deduplicated as W&B stores them, so the second model is renamed
    (`model_renamed`) and the two models' versions never share one collection."""
    d = build_registry_dump(tmp_path / "dump", versions=1, name="my model", dup_name="my-model")
    dest = WandbDestination(mode="offline", directory=tmp_path / "wb")
    report = import_runs(d.reader, dest, OPTS)
    assert not report.failed, report.to_json()
    dup = next(r for r in report.registry if r.key == f"model:{d.project}/REG-DUP")
    assert [lo["kind"] for lo in dup.losses][:1] == ["model_renamed"]
    collections = {}
    for path in (tmp_path / "wb" / "wandb").glob("offline-run-*/run-*.wandb"):
        for rec in iter_records(path):
            if rec.WhichOneof("record_type") == "artifact" and rec.artifact.type == "model":
                meta = json.loads(rec.artifact.metadata)
                collections[meta["neptune_version_id"]] = rec.artifact.name
    assert collections == {"REG-CLS-1": "my-model", "REG-DUP-1": "my-model-REG-DUP"}
    check = verify_runs(d.reader, dest, VerifyOptions(import_options=OPTS))
    assert [str(f) for f in check.findings if f.run.startswith("model:")] == []


def test_online_registry_is_planned_as_the_failure_the_real_run_meets(tmp_path: Path, monkeypatch: Any) -> None:
    """Review #18-dst last 4: online, the registry is not written; the plan (dry run) must not say
    would_create: plan_model refuses with the real run's one line and its `--no-registry` hint
    (the pipeline turns it into would_fail / failed, shown through MLflow's file store test)."""
    import pytest

    from neptune_migrate.errors import PermanentError

    netrc = tmp_path / ".netrc"  # a login the credentials check accepts; nothing is sent
    netrc.write_text("machine api.wandb.ai\n  login user\n  password " + "x" * 40 + "\n")
    netrc.chmod(0o600)
    monkeypatch.setenv("NETRC", str(netrc))
    d = build_registry_dump(tmp_path / "dump", versions=1)
    model = _model(d.reader, WandbDestination(mode="offline", directory=tmp_path / "wb"))
    online = WandbDestination(mode="online", directory=tmp_path / "wb-online")
    for step in (online._registry.plan_model, online._registry.ensure_model):
        with pytest.raises(PermanentError, match="offline mode only") as err:
            step(model)
        assert "--no-registry" in str(err.value)
    assert not (tmp_path / "wb-online").exists()


def test_staged_bytes_changed_under_an_intact_marker_rewrite_the_registry_run(tmp_path: Path) -> None:
    """Review #18-dst last 2: the registry run's marker digest names the dump's model, but the bytes
    W&B staged for `wandb sync` (the SDK's `artifacts/staging` copies) changed: a re-run used to
    skip it (and a version needing a write failed with "not open"); now the run is written again
    whole, in order, and verify is clean."""
    d = build_registry_dump(tmp_path / "dump", versions=3)
    dest = WandbDestination(mode="offline", directory=tmp_path / "wb")
    assert not import_runs(d.reader, dest, OPTS).failed
    staging = tmp_path / "wb" / "neptune-migrate-staging" / "artifacts" / "staging"
    [staged] = [f for f in staging.iterdir() if f.read_bytes() == version_bytes("REG-CLS", 2)]
    staged.write_bytes(bytes(b ^ 0xFF for b in version_bytes("REG-CLS", 2)))  # same size, other bytes
    assert [f.item for f in verify_runs(d.reader, dest, VerifyOptions(import_options=OPTS)).findings] == [
        "file:REG-CLS-2/model/binary/model.bin"]
    again = import_runs(d.reader, dest, OPTS)
    st = {r.key: r.status for r in again.registry}
    assert [st[f"version:{d.project}/REG-CLS-{n}"] for n in (1, 2, 3)] == ["created"] * 3, again.to_json()
    rid = dest._registry.run_id(_model(d.reader, dest))
    [path] = sorted((tmp_path / "wb" / "wandb").glob(f"offline-run-*-{rid}/run-{rid}.wandb"))
    assert [meta["neptune_version_id"] for _, meta, _, _ in _artifacts(path)] == ["REG-CLS-1", "REG-CLS-2",
                                                                                  "REG-CLS-3"]
    assert verify_runs(d.reader, dest, VerifyOptions(import_options=OPTS)).findings == []
    assert {r.status for r in import_runs(d.reader, dest, OPTS).registry} == {"skipped"}

    # a version asked for while the complete run is not open: the run is reopened and written whole
    model = _model(d.reader, dest)
    dest._registry.ensure_version(model, "classifier", model.versions[1], None)
    dest._registry.set_aliases(model, "classifier", {})
    [path] = sorted((tmp_path / "wb" / "wandb").glob(f"offline-run-*-{rid}/run-{rid}.wandb"))
    assert [meta["neptune_version_id"] for _, meta, _, _ in _artifacts(path)] == ["REG-CLS-1", "REG-CLS-2",
                                                                                  "REG-CLS-3"]
    assert verify_runs(d.reader, dest, VerifyOptions(import_options=OPTS)).findings == []
    dest.close()
