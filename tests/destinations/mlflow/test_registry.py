"""Neptune's model registry into MLflow's (issue 18), against a real SQLite store and `mlflow server`,
read back through `MlflowClient`: names, descriptions, version order, aliases, tags, file bytes;
re-runs, kill -9 between two versions and inside one, tampering found by verify."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import jsonschema
import pytest

from neptune_migrate.destinations.mlflow import MlflowDestination
from neptune_migrate.destinations.mlflow import mapping as m
from neptune_migrate.pipeline.import_ import ImportOptions, import_runs
from neptune_migrate.retry import FAST
from neptune_migrate.verify.report import render_html
from neptune_migrate.verify.verifier import VerifyOptions, verify_runs
from tests.destinations.mlflow.conftest import MlflowBackend
from tests.destinations.registry_dump import STAGES, RegistryDump, build_registry_dump, version_bytes

OPTS = ImportOptions(retry=FAST)
VERSIONS = [f"REG-CLS-{n}" for n in range(1, 6)]


def _dest(backend: MlflowBackend) -> MlflowDestination:
    return MlflowDestination(backend.tracking_uri, artifact_location=backend.artifact_location)


def _dump(tmp_path: Path, backend: MlflowBackend, test: str, versions: int = 5) -> tuple[RegistryDump, str]:
    name = f"clf-{test}-{backend.name}"
    dump = build_registry_dump(tmp_path / "dump", project=f"ws/{test}-{backend.name}", name=name, versions=versions)
    return dump, name


def _client(backend: MlflowBackend) -> Any:
    from mlflow import MlflowClient

    return MlflowClient(tracking_uri=backend.tracking_uri)


def _versions(client: Any, name: str) -> list[Any]:
    return sorted(client.search_model_versions(f"name = '{name}'"), key=lambda v: int(v.version))


def _files(backend: MlflowBackend, mv: Any, into: Path) -> dict[str, bytes]:
    from mlflow.artifacts import download_artifacts

    local = Path(download_artifacts(artifact_uri=mv.source, dst_path=str(into), tracking_uri=backend.tracking_uri))
    return {f.relative_to(local).as_posix(): f.read_bytes() for f in local.rglob("*") if f.is_file()}


def _statuses(report: Any) -> dict[str, str]:
    return {r.key: r.status for r in report.registry}


def _run_ids(client: Any, project: str) -> dict[str, str]:
    exp = client.get_experiment_by_name(project)
    return {r.data.tags[m.TAG_RUN_ID]: r.info.run_id for r in client.search_runs([exp.experiment_id], "")}


def test_registry_is_built_in_neptunes_order_and_reads_back_equal(
    mlflow_backend: MlflowBackend, tmp_path: Path
) -> None:
    d, name = _dump(tmp_path, mlflow_backend, "rt")
    dest = _dest(mlflow_backend)
    report = import_runs(d.reader, dest, OPTS)
    assert not report.failed, report.to_json()
    p = d.project
    assert _statuses(report) == {
        f"model:{p}/REG-CLS": "created", **{f"version:{p}/{v}": "created" for v in VERSIONS},
        f"alias:{p}/REG-CLS@archived": "set", f"alias:{p}/REG-CLS@production": "set",
        f"alias:{p}/REG-CLS@staging": "set",
        f"model:{p}/REG-DUP": "created", f"version:{p}/REG-DUP-1": "created", f"alias:{p}/REG-DUP@staging": "set",
    }
    client = _client(mlflow_backend)
    rm = client.get_registered_model(name)
    assert rm.description == "an image classifier"
    assert rm.tags["neptune.model_id"] == "REG-CLS"
    assert rm.tags["neptune.project"] == p
    assert json.loads(rm.tags["neptune.tags"]) == ["prod", "vision"]
    # the newest version of each stage holds its alias: two in production, 4 is the newer
    assert {a: str(v) for a, v in rm.aliases.items()} == {"archived": "1", "production": "4", "staging": "3"}
    versions = _versions(client, name)
    assert [int(v.version) for v in versions] == [1, 2, 3, 4, 5]
    assert [v.tags["neptune.version_id"] for v in versions] == VERSIONS
    assert [v.tags["neptune.stage"] for v in versions] == [STAGES[n] for n in range(1, 6)]
    assert [v.description for v in versions] == [f"version {n}" for n in range(1, 6)]
    assert [v.tags["neptune.version"] for v in versions] == ["1", "2", "3", "4", "5"]
    assert json.loads(versions[2].tags["neptune.stage_history"]) == [
        {"stage": "none", "at": "2025-03-01T12:00:00+00:00"}, {"stage": "staging", "at": "2025-03-04T12:00:00+00:00"}]
    assert json.loads(versions[0].tags["neptune.tags"]) == ["v1-tag"]
    runs = _run_ids(client, p)
    assert versions[3].run_id == runs["REG-7"]  # made from an imported run: linked to it
    assert versions[3].tags["neptune.source_run"] == f"{p}/REG-7"
    assert [v.run_id for v in versions[:3]] == [runs[v] for v in VERSIONS[:3]]  # else its own run
    assert [v.tags["neptune.carrier_run_id"] for v in versions] == [runs[v] for v in VERSIONS]
    for n, mv in enumerate(versions, start=1):
        files = _files(mlflow_backend, mv, tmp_path / f"dl{n}")
        want = {"model/binary/model.bin": version_bytes("REG-CLS", n)}
        if n == 2:
            want["model/config/config.json"] = b'{"layers": 50}'
        assert files == want
    dup = client.get_registered_model(f"{name}-REG-DUP")  # the same Neptune name: renamed and reported
    assert dup.tags["neptune.model_id"] == "REG-DUP"
    assert {a: str(v) for a, v in dup.aliases.items()} == {"staging": "1"}
    renamed = next(r for r in report.registry if r.key == f"model:{p}/REG-DUP")
    assert next(lo["kind"] for lo in renamed.losses) == "model_renamed"

    again = import_runs(d.reader, dest, OPTS)
    assert set(_statuses(again).values()) == {"skipped"}
    assert len(_versions(client, name)) == 5
    check = verify_runs(d.reader, dest, VerifyOptions(import_options=OPTS))
    models = {r.key: r for r in check.runs if r.key.startswith("model:")}
    assert sorted(models) == [f"model:{p}/REG-CLS", f"model:{p}/REG-DUP"]
    assert models[f"model:{p}/REG-CLS"].files_compared == 6
    assert check.findings == []
    assert check.ok
    schema = json.loads((Path(__file__).parents[3] / "docs/schemas/verify-report.schema.json").read_text())
    jsonschema.validate(check.to_json(), schema)  # model entries fit the documented report
    assert f"model:{p}/REG-CLS" in render_html(check)


def test_dry_run_lists_models_versions_and_aliases_and_writes_nothing(tmp_path: Path) -> None:
    pytest.importorskip("mlflow")
    d = build_registry_dump(tmp_path / "dump", name="clf-dry")
    db = tmp_path / "new.db"
    dest = MlflowDestination(f"sqlite:///{db}", artifact_location=(tmp_path / "art").as_uri())
    report = import_runs(d.reader, dest, ImportOptions(retry=FAST, dry_run=True))
    plan = _statuses(report)
    assert plan[f"model:{d.project}/REG-CLS"] == "would_create"
    assert [plan[f"version:{d.project}/{v}"] for v in VERSIONS] == ["would_create"] * 5
    assert plan[f"alias:{d.project}/REG-CLS@production"] == "would_set"
    production = next(r for r in report.registry if r.key == f"alias:{d.project}/REG-CLS@production")
    assert production.destination == "REG-CLS-4"
    assert next(r for r in report.registry if r.key == f"model:{d.project}/REG-DUP").destination == "clf-dry-REG-DUP"
    assert not db.exists()
    assert not (tmp_path / "art").exists()


def _kill_worker(d: RegistryDump, backend: MlflowBackend, when: str, n: int) -> None:
    cmd = [sys.executable, "-m", "tests.support.registry_kill_worker", str(d.reader.root), backend.tracking_uri,
           backend.artifact_location or "-", when, str(n)]
    done = subprocess.run(cmd, cwd=Path(__file__).parents[3], capture_output=True, timeout=240, check=False)
    assert done.returncode == -9, done.stderr.decode(errors="replace")[-2000:]


@pytest.mark.parametrize(("backend", "when", "n"), [
    ("mlflow_sqlite", "after-version", 2),  # between two versions: the one kept in the default run
    pytest.param("mlflow_sqlite", "before-version", 3, marks=pytest.mark.slow),  # inside one version
    pytest.param("mlflow_server", "after-version", 2, marks=[pytest.mark.slow, pytest.mark.server]),
])
def test_kill_9_during_the_registry_then_rerun_creates_no_duplicate_and_keeps_order(
    request: pytest.FixtureRequest, tmp_path: Path, backend: str, when: str, n: int
) -> None:
    mlflow_sqlite: MlflowBackend = request.getfixturevalue(backend)
    d, name = _dump(tmp_path, mlflow_sqlite, f"kill{n}", versions=4)
    _kill_worker(d, mlflow_sqlite, when, n)
    client = _client(mlflow_sqlite)
    made = 2  # versions 1 and 2 exist in both cases; version 3's files may be a pending logged model
    assert [v.tags["neptune.version_id"] for v in _versions(client, name)] == VERSIONS[:made]
    report = import_runs(d.reader, _dest(mlflow_sqlite), OPTS)
    st = _statuses(report)
    assert [st[f"version:{d.project}/{v}"] for v in VERSIONS[:4]] == ["skipped"] * made + ["created"] * (4 - made)
    versions = _versions(client, name)
    assert [v.tags["neptune.version_id"] for v in versions] == VERSIONS[:4]
    assert [int(v.version) for v in versions] == [1, 2, 3, 4]
    exp = client.get_experiment_by_name(d.project)
    logged = client.search_logged_models([exp.experiment_id], filter_string="tags.`neptune.version_id` = 'REG-CLS-3'")
    assert len(logged) == 1  # the pending logged model of the killed import was finished, not doubled
    check = verify_runs(d.reader, _dest(mlflow_sqlite), VerifyOptions(import_options=OPTS))
    assert check.findings == []


def test_verify_names_tampering_and_a_rerun_completes_a_half_made_version(
    mlflow_sqlite: MlflowBackend, tmp_path: Path
) -> None:
    d, name = _dump(tmp_path, mlflow_sqlite, "tamper", versions=3)
    dest = _dest(mlflow_sqlite)
    assert not import_runs(d.reader, dest, OPTS).failed
    client = _client(mlflow_sqlite)
    client.delete_model_version_tag(name, "3", "neptune.stage")
    client.delete_registered_model_alias(name, "production")
    mv2 = _versions(client, name)[1]
    bad = tmp_path / "bad" / "model" / "binary"
    bad.mkdir(parents=True)
    (bad / "model.bin").write_bytes(b"other bytes")
    client.log_model_artifacts(mv2.tags["nm.logged_model_id"], str(tmp_path / "bad"))
    report = verify_runs(d.reader, dest, VerifyOptions(import_options=OPTS))
    assert not report.ok
    found = {(f.kind, f.item) for f in report.findings}
    assert found == {
        ("missing", "version:REG-CLS-3:tag:neptune.stage"),
        ("missing", "alias:production"),
        ("differs", "file:REG-CLS-2/model/binary/model.bin"),
    }
    model = next(r for r in report.runs if r.key == f"model:{d.project}/REG-CLS")
    assert model.status == "mismatch"
    size = next(f for f in report.findings if f.item.startswith("file:"))
    assert size.expected == f"{len(version_bytes('REG-CLS', 2))} bytes" and size.actual == "11 bytes"
    assert report.to_json()["runs"][-2]["findings"]  # in the JSON report like run findings

    again = import_runs(d.reader, dest, OPTS)
    st = _statuses(again)
    assert st[f"version:{d.project}/REG-CLS-3"] == "completed"
    assert st[f"alias:{d.project}/REG-CLS@production"] == "set"
    assert len(_versions(client, name)) == 3
    assert _versions(client, name)[2].tags["neptune.stage"] == "staging"
    after = verify_runs(d.reader, dest, VerifyOptions(import_options=OPTS))
    assert {(f.kind, f.item) for f in after.findings} == {("differs", "file:REG-CLS-2/model/binary/model.bin")}


@pytest.mark.slow
def test_exporter_registry_fixture_end_to_end_through_the_cli(cli, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    """The neptune-exporter model_registry sample: export, import, verify with the real console entry
    point; the registered model, its production alias and the version's file bytes read back."""
    pytest.importorskip("mlflow")
    src = Path(__file__).parents[3] / "fixtures/neptune-exporter/generated/model_registry"
    dump, uri = tmp_path / "dump", f"sqlite:///{tmp_path}/mlflow.db"
    cli("export", str(src / "model_data"), "--from", "neptune-exporter", "--files-path", str(src / "model_files"),
        "--out", str(dump), check_rc=0)
    plan = cli("import", str(dump), "--to", "mlflow", "--tracking-uri", uri, "--dry-run", check_rc=0)
    assert "registry: aliases would_set 1, models would_create 1, versions would_create 1" in plan.stderr
    done = cli("import", str(dump), "--to", "mlflow", "--tracking-uri", uri, check_rc=0)
    assert "registry: aliases set 1, models created 1, versions created 1" in done.stderr
    cli("verify", str(dump), "--to", "mlflow", "--tracking-uri", uri, check_rc=0)
    from mlflow import MlflowClient

    client = MlflowClient(tracking_uri=uri)
    rm = client.get_registered_model("resnet-model")
    assert rm.tags["neptune.model_id"] == "PROJ-MOD" and json.loads(rm.tags["neptune.tags"]) == ["prod"]
    (mv,) = _versions(client, "resnet-model")
    assert {a: str(v) for a, v in rm.aliases.items()} == {"production": "1"}
    assert mv.tags["neptune.version_id"] == "PROJ-MOD-1" and mv.tags["neptune.stage"] == "production"
    files = _files(MlflowBackend("sqlite", uri, None, tmp_path / "mlflow.db", tmp_path), mv, tmp_path / "dl")
    (blob,) = (src / "model_files").glob("*/model_versions/my-ws/my-proj/PROJ-MOD-1/model/binary")
    assert list(files.values()) == [blob.read_bytes()]
    client.delete_registered_model_alias("resnet-model", "production")
    tampered = cli("verify", str(dump), "--to", "mlflow", "--tracking-uri", uri, check_rc=1)
    assert "alias:production" in tampered.stdout + tampered.stderr


@pytest.mark.slow
def test_shards_build_each_model_once_and_whole(mlflow_sqlite: MlflowBackend, tmp_path: Path) -> None:
    """With --shard K/N the shard owning a model's key builds it from the versions of every shard."""
    from neptune_migrate.pipeline.shard import parse

    d, name = _dump(tmp_path, mlflow_sqlite, "shards", versions=4)
    dest = _dest(mlflow_sqlite)
    built: dict[str, int] = {}
    # the second round builds what the first deferred (a model whose version runs another shard
    # had not imported yet), and skips the rest
    for k in (1, 2, 1, 2):
        report = import_runs(d.reader, dest, ImportOptions(retry=FAST, shard=parse(f"{k}/2")))
        assert not report.failed, [(r.key, r.status, r.message) for r in [*report.runs, *report.registry]
                                   if r.status not in ("created", "set", "skipped")]
        for r in report.registry:
            if r.key.startswith("model:") and r.status == "created":
                built[r.key] = built.get(r.key, 0) + 1
    assert built == {f"model:{d.project}/REG-CLS": 1, f"model:{d.project}/REG-DUP": 1}
    versions = _versions(_client(mlflow_sqlite), name)
    assert [v.tags["neptune.version_id"] for v in versions] == VERSIONS[:4]
    assert all(v.run_id for v in versions)  # deferred until the runs existed: every version linked
    seen = []
    for k in (1, 2):
        check = verify_runs(d.reader, dest, VerifyOptions(import_options=ImportOptions(retry=FAST,
                                                                                      shard=parse(f"{k}/2"))))
        assert check.findings == []
        seen += [r.key for r in check.runs if r.key.startswith("model:")]
    assert sorted(seen) == [f"model:{d.project}/REG-CLS", f"model:{d.project}/REG-DUP"]


def test_a_stage_left_in_a_reexport_takes_its_alias_away_and_stale_tags_go(
    mlflow_sqlite: MlflowBackend, tmp_path: Path
) -> None:
    """Review #18-dst 1 and 5: version 2 was production, a re-export has it archived (no version in
    production any more) and its versions without Neptune tags: the re-import removes the
    `production` alias (dry run: would_remove), moves `archived` to 2, deletes the stale
    `neptune.tags`, and verify finds nothing; before, `production` stayed on 2 forever."""
    project, name = "ws/stale-sqlite", "clf-stale-sqlite"
    first = build_registry_dump(tmp_path / "d1", project=project, name=name, versions=3)
    dest = _dest(mlflow_sqlite)
    assert not import_runs(first.reader, dest, OPTS).failed
    client = _client(mlflow_sqlite)
    assert {a: str(v) for a, v in client.get_registered_model(name).aliases.items()} == {
        "archived": "1", "production": "2", "staging": "3"}
    again = build_registry_dump(tmp_path / "d2", project=project, name=name, versions=3,
                                stages={2: "archived"}, version_tags=False)
    plan = _statuses(import_runs(again.reader, dest, ImportOptions(retry=FAST, dry_run=True)))
    assert plan[f"alias:{project}/REG-CLS@production"] == "would_remove"
    assert plan[f"alias:{project}/REG-CLS@archived"] == "would_set"
    assert [plan[f"version:{project}/REG-CLS-{n}"] for n in (1, 2, 3)] == ["would_complete"] * 3
    before = verify_runs(again.reader, dest, VerifyOptions(import_options=OPTS))
    found = {(f.kind, f.item) for f in before.findings if f.run.startswith("model:")}
    assert ("extra", "alias:production") in found
    assert ("extra", "version:REG-CLS-1:tag:neptune.tags") in found  # stale tags are findings now
    report = import_runs(again.reader, dest, OPTS)
    st = _statuses(report)
    assert st[f"alias:{project}/REG-CLS@production"] == "removed"
    assert st[f"alias:{project}/REG-CLS@archived"] == "set"
    assert [st[f"version:{project}/REG-CLS-{n}"] for n in (1, 2, 3)] == ["completed"] * 3
    assert {a: str(v) for a, v in client.get_registered_model(name).aliases.items()} == {
        "archived": "2", "staging": "3"}
    versions = _versions(client, name)
    assert [v.tags["neptune.stage"] for v in versions] == ["archived", "archived", "staging"]
    assert [("neptune.tags" in v.tags) for v in versions] == [False, False, False]
    check = verify_runs(again.reader, dest, VerifyOptions(import_options=OPTS))
    assert [str(f) for f in check.findings if f.run.startswith("model:")] == []
    third = _statuses(import_runs(again.reader, dest, OPTS))
    assert {s for k, s in third.items() if k.startswith(("version:", "alias:"))} == {"skipped"}


def _split_project(test: str) -> str:
    """A project whose model REG-CLS and run REG-7 (version 4's source) fall into different shards of 2."""
    from neptune_migrate.model import RunKey, SourceRunId
    from neptune_migrate.pipeline.shard import shard_number

    for i in range(100):
        p = f"ws/{test}{i}"
        if shard_number(RunKey(p, SourceRunId("REG-CLS")), 2) != shard_number(RunKey(p, SourceRunId("REG-7")), 2):
            return p
    raise AssertionError("no project splits the two keys")


def test_a_shard_defers_a_model_whose_source_run_another_shard_imports_then_registry_only_links_it(
    mlflow_sqlite: MlflowBackend, tmp_path: Path
) -> None:
    """Review #18-dst 2 and 3: the shard owning REG-CLS runs first; version 4's source run REG-7
    belongs to the other shard. Before, the model was built at once with version 4 linked to its own
    run (for good: MLflow cannot change it) and the import exited 0. Now it is deferred (exit 1,
    `report merge` names it), and `import --registry-only` after both shards links REG-7."""
    from neptune_migrate.cli import ExitCode, Outcome, _registry_counts, exit_code
    from neptune_migrate.model import RunKey, SourceRunId
    from neptune_migrate.pipeline.shard import parse, shard_number

    project = _split_project("split")
    name = f"clf-{project.split('/')[1]}"
    d = build_registry_dump(tmp_path / "dump", project=project, name=name, versions=4)
    dest = _dest(mlflow_sqlite)
    first = shard_number(RunKey(project, SourceRunId("REG-CLS")), 2)
    report = import_runs(d.reader, dest, ImportOptions(retry=FAST, shard=parse(f"{first}/2")))
    cls = next(r for r in report.registry if r.key == f"model:{project}/REG-CLS")
    assert cls.status == "deferred" and f"{project}/REG-7" in cls.message
    assert _registry_counts(report) == (0, 1)  # failed, deferred models
    assert exit_code(Outcome(deferred_models=1)) == ExitCode.PARTIAL  # not done yet: re-run
    client = _client(mlflow_sqlite)
    assert client.search_registered_models(f"name = '{name}'") == []
    import_runs(d.reader, dest, ImportOptions(retry=FAST, shard=parse(f"{3 - first}/2")))
    done = import_runs(d.reader, dest, ImportOptions(retry=FAST, registry="only"))
    assert done.runs == []  # no run is imported again
    st = _statuses(done)
    assert st[f"model:{project}/REG-CLS"] == "created", [(r.key, r.status, r.message) for r in done.registry]
    assert _registry_counts(done) == (0, 0)
    runs = _run_ids(client, project)
    versions = _versions(client, name)
    assert versions[3].run_id == runs["REG-7"]
    assert [v.run_id for v in versions[:3]] == [runs[f"REG-CLS-{n}"] for n in (1, 2, 3)]
    check = verify_runs(d.reader, dest, VerifyOptions(import_options=OPTS))
    assert check.findings == [], [str(f) for f in check.findings]


def test_a_version_linked_to_its_own_run_before_its_source_run_came_is_a_loss_and_a_finding(
    mlflow_sqlite: MlflowBackend, tmp_path: Path
) -> None:
    """Review #18-dst 2: imported first without REG-7 (not selected), version 4 links its own run;
    once REG-7 is imported, the import reports version_run_link_differs (lost: MLflow cannot change
    it) and verify reports `version:REG-CLS-4:run` as differing (before: nothing, forever)."""
    from neptune_migrate.sources.base import RunSelection

    d, _ = _dump(tmp_path, mlflow_sqlite, "link", versions=4)
    dest = _dest(mlflow_sqlite)
    import_runs(d.reader, dest, ImportOptions(retry=FAST, selection=RunSelection(run_regex="^REG-(CLS|DUP)")))
    report = import_runs(d.reader, dest, OPTS)
    v4 = next(r for r in report.registry if r.key == f"version:{d.project}/REG-CLS-4")
    assert [(lo["kind"], lo["category"]) for lo in v4.losses] == [("version_run_link_differs", "lost")]
    assert report.failed
    runs = _run_ids(_client(mlflow_sqlite), d.project)
    check = verify_runs(d.reader, dest, VerifyOptions(import_options=OPTS))
    assert {(f.kind, f.item, f.expected, f.actual) for f in check.findings} == {
        ("differs", "version:REG-CLS-4:run", runs["REG-7"], runs["REG-CLS-4"])}


def test_a_lost_create_logged_model_answer_is_looked_up_not_created_twice(
    mlflow_sqlite: MlflowBackend, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Review #18-dst 6: the first create_logged_model takes effect but its answer is lost
    (connection reset); the retry finds the logged model by its tag instead of leaving an orphan
    PENDING one next to a second."""
    d, name = _dump(tmp_path, mlflow_sqlite, "lostlm", versions=1)
    dest = _dest(mlflow_sqlite)
    client = dest.client
    real = client.create_logged_model
    made: list[str] = []

    def lossy(*args: Any, **kwargs: Any) -> Any:
        lm = real(*args, **kwargs)
        made.append(lm.model_id)
        if len(made) == 1:
            raise ConnectionResetError("connection reset by peer")
        return lm

    monkeypatch.setattr(client, "create_logged_model", lossy)
    report = import_runs(d.reader, dest, OPTS)
    assert not report.failed, [(r.key, r.status, r.message) for r in report.registry]
    assert len(made) == 2  # REG-CLS-1 once (looked up on the retry) and REG-DUP-1 once
    exp = client.get_experiment_by_name(d.project)
    logged = client.search_logged_models([exp.experiment_id], filter_string="tags.`neptune.version_id` = 'REG-CLS-1'")
    assert [lm.model_id for lm in logged] == [made[0]]
    assert str(logged[0].status).endswith("READY")
    assert _versions(client, name)[0].tags["nm.logged_model_id"] == made[0]


def test_a_file_store_is_refused_by_the_registry_step_and_its_runs_are_still_imported(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Review #18-dst last 1: MLflow's file store (MLflow 3.17 refuses it unless
    MLFLOW_ALLOW_FILE_STORE=true; then its registry works) creates a version and tags it in two
    steps; a kill in between leaves an untagged version that a re-run duplicates and verify cannot
    see. The registry step refuses file stores in one line (the dry run says so too): the models
    fail (exit 1), their runs are imported."""
    pytest.importorskip("mlflow")
    monkeypatch.setenv("MLFLOW_ALLOW_FILE_STORE", "true")
    d = build_registry_dump(tmp_path / "dump", name="clf-file")
    store = tmp_path / "mlruns"
    dest = MlflowDestination(store.as_uri())
    plan = import_runs(d.reader, dest, ImportOptions(retry=FAST, dry_run=True))
    models = [r for r in plan.registry if r.key.startswith("model:")]
    assert [r.status for r in models] == ["would_fail", "would_fail"]
    assert all("file store" in r.message and "--no-registry" in r.message and "\n" not in r.message
               for r in models)
    report = import_runs(d.reader, dest, OPTS)
    assert {r.key: r.status for r in report.registry} == {
        f"model:{d.project}/REG-CLS": "failed", f"model:{d.project}/REG-DUP": "failed"}
    assert report.runs and all(r.status == "created" for r in report.runs), report.to_json()
    client = _client(MlflowBackend("file", store.as_uri(), None, store, store))
    assert client.search_registered_models() == []
    assert len(_run_ids(client, d.project)) == len(report.runs)


def test_changed_files_of_a_migrated_version_are_a_conflict_not_skipped(
    mlflow_sqlite: MlflowBackend, tmp_path: Path
) -> None:
    """Review #18-dst last 3: each version carries `neptune.files_sha256`; a re-export whose version
    2 has other bytes is a `conflict` (lost: the new bytes are not in MLflow, the old ones stay
    untouched), not `skipped`; version 3, new after the migrated ones, is created in order."""
    project, name = "ws/conflict-sqlite", "clf-conflict-sqlite"
    first = build_registry_dump(tmp_path / "d1", project=project, name=name, versions=3, left_out=frozenset({3}))
    dest = _dest(mlflow_sqlite)
    assert not import_runs(first.reader, dest, OPTS).failed
    client = _client(mlflow_sqlite)
    v1, v2 = _versions(client, name)
    assert v2.tags["neptune.files_sha256"] != v1.tags["neptune.files_sha256"]
    first_tag = v2.tags["neptune.files_sha256"]
    second = build_registry_dump(tmp_path / "d2", project=project, name=name, versions=3,
                                 changed=frozenset({2}))
    plan = import_runs(second.reader, dest, ImportOptions(retry=FAST, dry_run=True))
    st = _statuses(plan)
    assert st[f"version:{project}/REG-CLS-2"] == "would_conflict"
    assert st[f"version:{project}/REG-CLS-3"] == "would_create"
    report = import_runs(second.reader, dest, OPTS)
    st = _statuses(report)
    assert [st[f"version:{project}/REG-CLS-{n}"] for n in (1, 2, 3)] == ["skipped", "conflict", "created"]
    v2r = next(r for r in report.registry if r.key == f"version:{project}/REG-CLS-2")
    assert [(lo["kind"], lo["category"]) for lo in v2r.losses] == [("version_files_changed", "lost")]
    assert report.to_json()["categories"]["lost"] >= 1
    after = _versions(client, name)
    assert [int(v.version) for v in after] == [1, 2, 3]
    assert after[1].tags["neptune.files_sha256"] == first_tag  # left as it was: the old bytes
    assert _files(mlflow_sqlite, after[1], tmp_path / "dl2")["model/binary/model.bin"] == version_bytes("REG-CLS", 2)
    check = verify_runs(second.reader, dest, VerifyOptions(import_options=OPTS))
    assert ("differs", "file:REG-CLS-2/model/binary/model.bin") in {(f.kind, f.item) for f in check.findings}


def test_a_version_new_in_the_dump_before_migrated_ones_is_reported_out_of_order(
    mlflow_sqlite: MlflowBackend, tmp_path: Path
) -> None:
    """Review #18-dst last 3: version 2 was not in the first export, 3 was; MLflow appends 2 as
    number 3: planned and reported `version_out_of_order` (changed form), exit status unchanged."""
    project, name = "ws/order-sqlite", "clf-order-sqlite"
    first = build_registry_dump(tmp_path / "d1", project=project, name=name, versions=3, left_out=frozenset({2}))
    dest = _dest(mlflow_sqlite)
    assert not import_runs(first.reader, dest, OPTS).failed
    second = build_registry_dump(tmp_path / "d2", project=project, name=name, versions=3)
    plan = import_runs(second.reader, dest, ImportOptions(retry=FAST, dry_run=True))
    p2 = next(r for r in plan.registry if r.key == f"version:{project}/REG-CLS-2")
    assert (p2.status, [lo["kind"] for lo in p2.losses]) == ("would_create", ["version_out_of_order"])
    report = import_runs(second.reader, dest, OPTS)
    r2 = next(r for r in report.registry if r.key == f"version:{project}/REG-CLS-2")
    assert (r2.status, r2.destination) == ("created", "3")
    assert [(lo["kind"], lo["category"]) for lo in r2.losses] == [("version_out_of_order", "changed_form")]
    client = _client(mlflow_sqlite)
    assert [v.tags["neptune.version_id"] for v in _versions(client, name)] == ["REG-CLS-1", "REG-CLS-3", "REG-CLS-2"]
