"""`export --from neptune2-api` reads the model registry: the real neptune 1.x client against the fake 2.x server."""

from __future__ import annotations

import hashlib
import json
import os
import sys
import time
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest

from neptune_migrate.dump.reader import DumpReader
from neptune_migrate.dump.writer import DumpWriter
from neptune_migrate.errors import SourceFormatError
from neptune_migrate.model import RunKey, RunRecord, SourceRunId
from neptune_migrate.pipeline.export import ExportSummary, export_runs
from neptune_migrate.registry import group_models
from neptune_migrate.sources.base import RunSelection, SourceOptions
from neptune_migrate.sources.neptune2_api.source import Neptune2ApiSource
from tests.support.fake_neptune import v2_fixtures
from tests.support.fake_neptune.v2 import FakeNeptune2, FakeRun2, small_project, small_registry
from tests.support.inprocess import run_cli

insecure_oauth = v2_fixtures.insecure_oauth  # autouse: plain http to the fake, no token from the environment
server = v2_fixtures.server


def export(server: FakeNeptune2, dump: Path, selection: RunSelection | None = None, *,
           models_from_runs: bool = False, **options: Any) -> tuple[ExportSummary, Neptune2ApiSource]:
    opts = SourceOptions(path=Path(), api_token=server.api_token(), state_dir=dump / "_state", **options)
    source = Neptune2ApiSource(opts)
    source.retrier.sleep = lambda seconds: time.sleep(min(seconds, 0.01))
    with DumpWriter(dump) as writer:
        summary = export_runs(source, writer, selection or RunSelection(projects=("ws/proj",)), location="fake",
                              models_from_runs=models_from_runs)
    return summary, source


def records(dump: Path) -> dict[str, RunRecord]:
    return {run.key.run_id: run.record for run in DumpReader(dump).runs()}


def series_points(dump: Path, run_id: str, path: str) -> list[tuple[float, float, Any]]:
    reader = DumpReader(dump)
    run = next(r for r in reader.runs() if r.key.run_id == run_id)
    t = reader.read_series(run, "float", path)
    return list(zip(t["step"].to_pylist(), t["value"].to_pylist(), t["timestamp"].to_pylist(), strict=True))


def served_system(fake: FakeRun2) -> dict[str, Any]:
    return {"name": fake.name, "description": fake.description, "tags": set(fake.tags), "created": fake.created}


def test_models_and_versions_equal_what_the_fake_serves(server: FakeNeptune2, tmp_path: Path) -> None:
    small_project(server)
    served = small_registry(server)
    dump = tmp_path / "dump"
    summary, _ = export(server, dump)
    assert summary.count("exported") == 3 + 2 + 5 and summary.count("failed") == 0
    recs = records(dump)
    assert {k: r.kind for k, r in recs.items()} == {
        "PROJ-1": "run", "PROJ-2": "run", "PROJ-3": "run", "PROJ-CLF": "model", "PROJ-DET": "model",
        "PROJ-CLF-1": "model_version", "PROJ-CLF-2": "model_version", "PROJ-CLF-3": "model_version",
        "PROJ-CLF-4": "model_version", "PROJ-DET-1": "model_version"}
    for key, fake in served.items():
        rec = recs[f"PROJ-{key}"]
        got = {"name": rec.system.name, "description": rec.system.description, "tags": set(rec.system.tags),
               "created": rec.system.created_at}
        assert got == served_system(fake), key
        assert rec.registry is not None and rec.registry.origin == "registry"
        assert rec.registry.stage_history == ()  # the 2.x API holds the current stage only
        if fake.container_type == "modelVersion":
            assert rec.registry.model_id == fake.model_id
            assert rec.registry.version_id == fake.sys_id
            assert rec.registry.stage == fake.stage
            assert rec.fields["sys/stage"].value == fake.stage
        else:
            assert rec.registry.model_id == fake.sys_id and rec.registry.version_id is None
        for path, (_typ, value) in fake.fields.items():
            assert rec.fields[path].value == value, (key, path)
        assert {f.attribute_path: f.sha256 for f in rec.files} == {
            path: hashlib.sha256(content).hexdigest() for path, (content, _ext) in fake.files.items()}
        for path, pts in fake.float_series.items():
            got_pts = series_points(dump, rec.key.run_id, path)
            assert [(s, v) for s, v, _ in got_pts] == [(s, v) for s, v, _ in pts]
            assert [int(ts.timestamp() * 1000) for _, _, ts in got_pts] == [ts for _, _, ts in pts]
    groups = {g.model_id: g for g in group_models(recs.values())}
    clf = groups["PROJ-CLF"]
    assert clf.model is not None and clf.model.system.name == "classifier"
    assert [v.key.run_id for v in clf.versions] == ["PROJ-CLF-1", "PROJ-CLF-2", "PROJ-CLF-3", "PROJ-CLF-4"]
    assert {s: v.key.run_id for s, v in clf.stage_holders().items()} == {
        "archived": "PROJ-CLF-1", "production": "PROJ-CLF-4", "staging": "PROJ-CLF-3"}
    assert [v.key.run_id for v in groups["PROJ-DET"].versions] == ["PROJ-DET-1"]


def test_listings_ask_for_one_type_and_never_mix(server: FakeNeptune2, tmp_path: Path) -> None:
    small_project(server)
    small_registry(server)
    _summary, source = export(server, tmp_path / "a", RunSelection(projects=("ws/proj",), tags=("b",)))
    asked = [tuple(json.loads(q).get("type", [])) for _m, p, q in server.log
             if p.endswith("/leaderboard/entries/search")]
    assert asked == [("run",), ("model",), ("modelVersion",)]
    recs = records(tmp_path / "a")
    # --tag selects runs only; every model and version is exported with them
    assert sorted(k for k, r in recs.items() if r.kind == "run") == ["PROJ-1", "PROJ-2"]
    assert sum(1 for r in recs.values() if r.kind != "run") == 7
    assert source.listed_kind(RunKey("ws/proj", SourceRunId("PROJ-CLF-2"))) == "model_version"
    # --no-models: runs only
    _, _ = export(server, tmp_path / "b", models=False)
    assert sorted(records(tmp_path / "b")) == ["PROJ-1", "PROJ-2", "PROJ-3"]


@pytest.mark.parametrize("omit_type", [False, True])
def test_a_run_in_a_model_listing_is_refused_not_mixed_in(server: FakeNeptune2, tmp_path: Path,
                                                          omit_type: bool) -> None:
    """A server that answers a model listing with runs too: the export stops with a clear error instead
    of exporting runs as models; without `type` in the entries, their shape tells (runs have sys/failed)."""
    small_project(server)
    small_registry(server)
    server.mix_into = {"model": "run"}
    server.omit_type = omit_type
    with pytest.raises(SourceFormatError, match="listed a run where it was asked for models only"):
        export(server, tmp_path / "d")
    # without the broken answer, entries without `type` are told apart by their shape
    server.mix_into = {}
    summary, _ = export(server, tmp_path / "e")
    assert summary.count("failed") == 0
    assert {k: r.kind for k, r in records(tmp_path / "e").items() if r.kind != "run"} == {
        "PROJ-CLF": "model", "PROJ-DET": "model", "PROJ-CLF-1": "model_version", "PROJ-CLF-2": "model_version",
        "PROJ-CLF-3": "model_version", "PROJ-CLF-4": "model_version", "PROJ-DET-1": "model_version"}


@pytest.mark.parametrize("status", [400, 403, 404])
def test_a_refused_registry_listing_is_a_warning_and_the_runs_are_exported(
        server: FakeNeptune2, tmp_path: Path, status: int) -> None:
    small_project(server)
    small_registry(server)
    server.refuse_types = {"model": status}
    summary, _ = export(server, tmp_path / "d")
    assert summary.count("failed") == 0
    recs = records(tmp_path / "d")
    assert sorted(recs) == ["PROJ-1", "PROJ-2", "PROJ-3"] and {r.kind for r in recs.values()} == {"run"}
    assert summary.warnings == [
        f"ws/proj: the server refused the model registry listing (HTTP {status}); registry not exported"]


def run_export_cli(capsys: pytest.CaptureFixture[str], server: FakeNeptune2, dump: Path,
                   *args: str) -> tuple[int, str]:
    rc, _, err = run_cli(capsys, "export", "--from", "neptune2-api", "--api-token", server.api_token(),
                         "--project", "ws/proj", "--out", str(dump), *args)
    return rc, " ".join(err.split())


def test_since_last_lists_the_registry_an_older_export_left_out(server: FakeNeptune2, capsys,  # type: ignore[no-untyped-def]
                                                                 tmp_path: Path) -> None:
    small_project(server)
    served = small_registry(server)
    dump = tmp_path / "d"
    rc, err = run_export_cli(capsys, server, dump, "--no-models")
    assert rc == 0, err
    assert {r.kind for r in records(dump).values()} == {"run"}
    manifest = json.loads((dump / "manifest.json").read_text())
    [entry] = manifest["live_watermarks"].values()
    assert entry["models"] is False
    # the registry was last modified in 2024, long before the watermark: it is listed in full anyway
    rc, err = run_export_cli(capsys, server, dump, "--since-last")
    assert rc == 0, err
    assert "the last export did not include the model registry: listing it in full" in err
    recs = records(dump)
    assert sorted(k for k, r in recs.items() if r.kind != "run") == sorted(f"PROJ-{k}" for k in served)
    [entry] = json.loads((dump / "manifest.json").read_text())["live_watermarks"].values()
    assert entry["models"] is True
    # from now on the registry listing is narrowed like the runs'
    rc, err = run_export_cli(capsys, server, dump, "--since-last")
    assert rc == 0, err
    assert "listing it in full" not in err


def test_since_last_on_a_dump_of_the_previous_release_lists_the_registry(server: FakeNeptune2, capsys,  # type: ignore[no-untyped-def]
                                                                          tmp_path: Path) -> None:
    small_project(server)
    small_registry(server)
    dump = tmp_path / "d"
    rc, err = run_export_cli(capsys, server, dump, "--no-models")
    assert rc == 0, err
    manifest = json.loads((dump / "manifest.json").read_text())
    for entry in manifest["live_watermarks"].values():
        del entry["models"]  # as the previous release wrote it
    (dump / "manifest.json").write_text(json.dumps(manifest))
    rc, err = run_export_cli(capsys, server, dump, "--since-last")
    assert rc == 0, err
    assert sum(1 for r in records(dump).values() if r.kind != "run") == 7


@pytest.mark.filterwarnings("ignore:Neptune's model registry has been deprecated")
def test_the_real_client_reads_the_fake_registry(server: FakeNeptune2) -> None:
    """The fake speaks what neptune 1.x's own registry calls send (so the source's reads are realistic)."""
    import neptune

    small_registry(server)
    token = server.api_token()
    with neptune.init_project(project="ws/proj", api_token=token, mode="read-only") as project:
        models = project.fetch_models_table(columns=[]).to_pandas()
    assert sorted(models["sys/id"]) == ["PROJ-CLF", "PROJ-DET"]
    with neptune.init_model(with_id="PROJ-CLF", project="ws/proj", api_token=token, mode="read-only") as model:
        assert model["sys/name"].fetch() == "classifier"
        versions = model.fetch_model_versions_table(columns=[]).to_pandas()
    assert sorted(versions["sys/id"]) == ["PROJ-CLF-1", "PROJ-CLF-2", "PROJ-CLF-3", "PROJ-CLF-4"]
    with neptune.init_model_version(with_id="PROJ-CLF-2", project="ws/proj", api_token=token,
                                    mode="read-only") as version:
        assert version["sys/stage"].fetch() == "production"
        assert version["sys/model_id"].fetch() == "PROJ-CLF"
        assert [round(v, 6) for v in version["val/acc"].fetch_values()["value"]] == [
            round(0.7 + s / 100, 6) for s in range(6)]


def test_dry_run_counts_models_and_versions(server: FakeNeptune2, capsys, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    from neptune_migrate import cli

    small_project(server)
    small_registry(server)
    old, environ = sys.argv, dict(os.environ)
    sys.argv = ["neptune-migrate", "export", "--from", "neptune2-api", "--api-token", server.api_token(),
                "--project", "ws/proj", "--out", str(tmp_path / "d"), "--dry-run", "--json"]
    try:
        with pytest.raises(SystemExit) as exc:
            cli.main()
    finally:
        sys.argv = old
        os.environ.clear()
        os.environ.update(environ)
    out, _err = capsys.readouterr()
    assert exc.value.code in (0, None)
    doc = json.loads(out.strip().splitlines()[-1])
    assert doc["runs"] == 3
    assert doc["details"]["models"] == 2 and doc["details"]["model_versions"] == 5
    assert not (tmp_path / "d").exists()


def model_to_run_copy(server: FakeNeptune2, old_id: str, model_id: str, stage: str | None = None) -> FakeRun2:
    """A run as Neptune's model_to_run.py makes it on the server from model / version `old_id`."""
    kind = "model_version" if stage is not None else "model"
    run = server.add_run("ws/proj", tags={kind, "vision"}, group_tags={model_id}, custom_run_id=old_id,
                         name=f"copy of {old_id}")
    run.fields["old_sys/id"] = ("string", old_id)
    run.fields["old_sys/owner"] = ("string", "carol")
    if stage is not None:
        run.fields["old_sys/model_id"] = ("string", model_id)
        run.fields["old_sys/stage"] = ("string", stage)
    return run


def test_a_model_held_natively_and_as_a_model_to_run_copy_is_exported_once(server: FakeNeptune2,
                                                                            tmp_path: Path) -> None:
    """On a 2.x server where model_to_run.py ran, the native registry record is kept; the script's run of the
    same model / version stays a run and says why; a model only the runs hold still becomes a model."""
    small_registry(server)
    dup_model = model_to_run_copy(server, "PROJ-CLF", "PROJ-CLF")
    dup_version = model_to_run_copy(server, "PROJ-CLF-3", "PROJ-CLF", "staging")
    model_to_run_copy(server, "PROJ-OLD", "PROJ-OLD")
    model_to_run_copy(server, "PROJ-OLD-1", "PROJ-OLD", "production")
    dump = tmp_path / "d"
    summary, _ = export(server, dump, models_from_runs=True)
    assert summary.count("failed") == 0
    recs = records(dump)
    for dup in (dup_model, dup_version):
        rec = recs[dup.sys_id]
        assert rec.kind == "run" and rec.registry is None
        [loss] = [lo for lo in rec.losses if lo.kind == "registry_duplicate"]
        assert str(dup.fields["old_sys/id"][1]) in loss.detail
    groups = {g.model_id: g for g in group_models(recs.values())}
    clf = groups["PROJ-CLF"]
    assert clf.model is not None and clf.model.key.run_id == "PROJ-CLF" and clf.model.registry is not None
    assert clf.model.registry.origin == "registry" and clf.duplicates == []
    assert [v.key.run_id for v in clf.versions] == ["PROJ-CLF-1", "PROJ-CLF-2", "PROJ-CLF-3", "PROJ-CLF-4"]
    old = groups["PROJ-OLD"]
    assert old.model is not None and old.model.registry is not None and old.model.registry.origin == "model_to_run"
    assert [v.registry.version_id for v in old.versions if v.registry] == ["PROJ-OLD-1"]
    # group_models alone (an older dump holding both): the native record wins, whatever the order
    converted = replace(recs[dup_version.sys_id], losses=())
    from neptune_migrate.registry import from_model_to_run

    as_version = from_model_to_run(converted)
    assert as_version is not None
    for order in ([*recs.values(), as_version], [as_version, *recs.values()]):
        [clf] = [g for g in group_models(order) if g.model_id == "PROJ-CLF"]
        assert [v.key.run_id for v in clf.versions] == ["PROJ-CLF-1", "PROJ-CLF-2", "PROJ-CLF-3", "PROJ-CLF-4"]
        assert [d.key.run_id for d in clf.duplicates] == [dup_version.sys_id]


def test_models_from_runs_on_a_live_dump_converts_without_reading_again(server: FakeNeptune2,
                                                                         tmp_path: Path) -> None:
    model_to_run_copy(server, "PROJ-OLD", "PROJ-OLD")
    model_to_run_copy(server, "PROJ-OLD-1", "PROJ-OLD", "production")
    dump = tmp_path / "d"
    summary, _ = export(server, dump)
    assert summary.count("exported") == 2 and {r.kind for r in records(dump).values()} == {"run"}
    assert len([p for _m, p, _q in server.log if p.endswith("/v1/attributes")]) == 2
    n_before = len(server.log)
    summary, _ = export(server, dump, models_from_runs=True)
    assert [r.message for r in summary.runs] == ["the dump held it as a run: turned it into a registry record"] * 2
    reads = [p for _m, p, _q in server.log[n_before:] if p.endswith("/v1/attributes")]
    assert reads == []  # the converted records are the dump's copies: no attribute read
    recs = records(dump)
    assert sorted(r.kind for r in recs.values()) == ["model", "model_version"]
    assert {r.system.owner for r in recs.values()} == {"carol"}


def test_dry_run_counts_what_models_from_runs_would_convert(server: FakeNeptune2, capsys,  # type: ignore[no-untyped-def]
                                                            tmp_path: Path) -> None:
    small_project(server)
    model_to_run_copy(server, "PROJ-OLD", "PROJ-OLD")
    model_to_run_copy(server, "PROJ-OLD-1", "PROJ-OLD", "production")
    plain = server.add_run("ws/proj", tags={"model"})  # a tag alone is not the script's mark
    plain.fields["old_sys/id"] = ("string", "PROJ-9")
    rc, err = run_export_cli(capsys, server, tmp_path / "d", "--dry-run", "--models-from-runs")
    assert rc == 0, err
    assert "--models-from-runs: 2 of these run(s) would become model registry records" in err
    assert not (tmp_path / "d").exists()
    rc, err = run_export_cli(capsys, server, tmp_path / "d", "--dry-run", "--json")
    assert rc == 0, err
    assert "2 run(s) look like models / model versions" in err and "pass --models-from-runs" in err
