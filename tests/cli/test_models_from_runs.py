"""`export --models-from-runs`: runs that Neptune's `model_to_run.py` made become model registry records again.

Fixtures: `fixtures/neptune1/model_to_run/` (the real neptune 1.x client, offline, making the script's calls)
and `fixtures/neptune-exporter/generated/model_to_run/` (the same content in exporter form); what they
encode is `CONTENT` of `fixtures/scripts/make_model_to_run_fixtures.py`.
"""

from __future__ import annotations

import hashlib
import importlib.util
import json
from dataclasses import replace
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import pytest

from neptune_migrate.dump.reader import DumpReader
from neptune_migrate.model import Field, LossCategory, RunRecord
from neptune_migrate.registry import from_model_to_run, group_models, model_to_run_kind
from tests.conftest import FIXTURES
from tests.support.inprocess import run_cli

_spec = importlib.util.spec_from_file_location(
    "m2r", FIXTURES / "scripts" / "make_model_to_run_fixtures.py")
assert _spec is not None and _spec.loader is not None
_m2r = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(_m2r)
CONTENT: dict[str, Any] = _m2r.CONTENT

EXPORTER = FIXTURES / "neptune-exporter" / "generated" / "model_to_run" / "data"
SOURCES = {
    "offline": ["--from", "neptune-offline", str(FIXTURES / "neptune1" / "model_to_run"), "--project", "ws/proj"],
    "exporter": ["--from", "neptune-exporter", str(EXPORTER)],
}


def records(dump: Path) -> list[RunRecord]:
    return [run.record for run in DumpReader(dump).runs()]


def by_old_id(recs: list[RunRecord]) -> dict[str, RunRecord]:
    return {str(r.fields["old_sys/id"].value): r for r in recs if "old_sys/id" in r.fields}


def when(t: float) -> datetime:
    return datetime.fromtimestamp(t, tz=timezone.utc)


@pytest.mark.parametrize("source", sorted(SOURCES))
def test_models_from_runs_gives_the_registry_the_script_encoded(source: str, capsys, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    dump = tmp_path / "dump"
    rc, _out, err = run_cli(capsys, "export", *SOURCES[source], "--out", str(dump), "--models-from-runs")
    assert rc == 0, err
    assert "model_to_run.py" not in err  # no hint when the flag is given
    recs = records(dump)
    reader = DumpReader(dump)
    olds = by_old_id(recs)
    for m in CONTENT["models"]:
        rec = olds[m["id"]]
        assert rec.kind == "model"
        assert rec.registry is not None
        assert (rec.registry.model_id, rec.registry.version_id, rec.registry.origin) == (m["id"], None, "model_to_run")
        # the script's marks are gone (its type tag and model-id group tag), each reported
        assert rec.system.name == m["name"] and rec.system.tags == set(m["tags"])
        assert rec.system.group_tags == set()
        assert {lo.path for lo in rec.losses if lo.kind == "registry_script_mark"} == {"sys/tags", "sys/group_tags"}
        # creation time and owner are the old model's; the migration run's own stay in the provenance
        assert rec.system.created_at == when(m["created"]) and rec.system.owner == "alice"
        if source == "offline":
            run_created = datetime.fromisoformat(rec.provenance.details["model_to_run_created_at"])
            assert run_created > when(m["created"]) + timedelta(days=300)  # the fixture was made in 2026
        assert {k: rec.fields[k].value for k in m["fields"]} == m["fields"]
    for v in CONTENT["versions"]:
        rec = olds[v["id"]]
        assert rec.kind == "model_version" and rec.registry is not None
        info = rec.registry
        assert (info.model_id, info.version_id, info.version, info.stage, info.origin, info.stage_history) == (
            v["model"], v["id"], int(v["id"].rsplit("-", 1)[1]), v["stage"], "model_to_run", ())
        assert rec.system.name == v["name"] and rec.system.tags == set(v["tags"]) and rec.system.group_tags == set()
        assert rec.system.created_at == when(v["created"]) and rec.system.owner == "alice"
        assert rec.fields["old_sys/stage"].value == v["stage"]  # kept as a field too
        assert rec.fields["old_sys/creation_time"].value == when(v["created"])
        assert {(lo.kind, lo.path, lo.category) for lo in rec.losses if lo.kind == "registry_from_run"} == {
            ("registry_from_run", p, LossCategory.CHANGED_FORM)
            for p in ("old_sys/id", "old_sys/model_id", "old_sys/stage", "old_sys/creation_time", "old_sys/owner")}
        run = reader.get_run(rec.key)
        assert run is not None
        t = reader.read_series(run, "float", "val/acc")
        assert list(zip(t["step"].to_pylist(), t["value"].to_pylist(), t["timestamp"].to_pylist(), strict=True)) == [
            (s, val, when(ts)) for s, val, ts in v["series"]]
    for item in [*CONTENT["models"], *CONTENT["versions"]]:
        path, blob, _ext = item["file"]
        [entry] = [f for f in olds[item["id"]].files if f.attribute_path == path]
        assert entry.sha256 == hashlib.sha256(blob).hexdigest() and entry.size == len(blob)
    [plain] = [r for r in recs if r.system.name == CONTENT["plain_run"]["name"]]
    assert plain.kind == "run" and plain.registry is None  # a tag `model` alone is not a model
    [group] = group_models(recs)
    assert group.model is not None and group.model.key == olds["PROJ-CLF"].key  # the record keeps its own key
    assert [r.registry.version_id for r in group.versions if r.registry] == [v["id"] for v in CONTENT["versions"]]
    assert {s: r.registry.version_id for s, r in group.stage_holders().items() if r.registry} == {
        "archived": "PROJ-CLF-1", "production": "PROJ-CLF-2", "staging": "PROJ-CLF-3"}


@pytest.mark.parametrize("source", sorted(SOURCES))
def test_without_the_flag_they_stay_runs_with_one_warning(source: str, capsys, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    dump = tmp_path / "dump"
    rc, _out, err = run_cli(capsys, "export", *SOURCES[source], "--out", str(dump))
    assert rc == 0, err  # advice, not a problem with the data
    n = len(CONTENT["models"]) + len(CONTENT["versions"])
    hint = f"warning: {n} run(s) look like models / model versions that Neptune's model_to_run.py"
    assert " ".join(err.split()).count(hint) == 1
    assert "pass --models-from-runs" in " ".join(err.split())
    recs = records(dump)
    assert {r.kind for r in recs} == {"run"} and all(r.registry is None for r in recs)
    [report] = (dump / "_reports").glob("export*.json")
    assert len(json.loads(report.read_text())["notices"]) == 1
    # the same dump exported again with the flag: the runs become registry records (not skipped as done)
    rc, _out, err = run_cli(capsys, "export", *SOURCES[source], "--out", str(dump), "--models-from-runs")
    assert rc == 0, err
    kinds = sorted(r.kind for r in records(dump))
    assert kinds == sorted(["model"] * len(CONTENT["models"]) + ["model_version"] * len(CONTENT["versions"]) + ["run"])


def test_recognition_needs_the_scripts_marks(tmp_path: Path, capsys) -> None:  # type: ignore[no-untyped-def]
    rc, _, err = run_cli(capsys, "export", *SOURCES["exporter"], "--out", str(tmp_path / "d"))
    assert rc == 0, err
    olds = by_old_id(records(tmp_path / "d"))
    version, model = olds["PROJ-CLF-2"], olds["PROJ-CLF"]
    assert model_to_run_kind(version) == "model_version" and model_to_run_kind(model) == "model"
    # the script adds its type tag, then the old container's own tags: a version the user had tagged
    # `model` carries both, and old_sys/model_id decides
    both = replace(version, system=replace(version.system, tags=version.system.tags | {"model"}))
    assert model_to_run_kind(both) == "model_version"
    converted = from_model_to_run(both)
    assert converted is not None and converted.system.tags == {"v2", "model"}  # the user's `model` tag stays
    model_both = replace(model, system=replace(model.system, tags=model.system.tags | {"model_version"}))
    assert model_to_run_kind(model_both) == "model"
    other = replace(version, system=replace(version.system, custom_run_id="something-else"))
    assert from_model_to_run(other) is None  # the script sets custom_run_id = the old id
    fields = {k: f for k, f in version.fields.items() if k != "old_sys/id"}
    assert model_to_run_kind(replace(version, fields=fields)) is None
    no_group = replace(version, system=replace(version.system, group_tags=frozenset()))
    assert model_to_run_kind(no_group) is None  # the script always adds the model id as a group tag
    other_model = {**version.fields, "old_sys/id": replace(version.fields["old_sys/id"], value="PROJ-DET-2")}
    assert model_to_run_kind(replace(version, fields=other_model)) is None  # old_sys/id must be <model_id>-<N>
    no_stage = {k: f for k, f in version.fields.items() if k != "old_sys/stage"}
    converted = from_model_to_run(replace(version, fields=no_stage))
    assert converted is not None and converted.registry is not None and converted.registry.stage is None
    assert [lo.path for lo in converted.losses if lo.kind == "registry_from_run"] == [
        "old_sys/id", "old_sys/model_id", "old_sys/creation_time", "old_sys/owner"]


def test_runs_copied_by_runs_migrator_stay_runs(tmp_path: Path, capsys) -> None:  # type: ignore[no-untyped-def]
    """Neptune's runs_migrator.py also writes old_sys/id (the copied run's id) and copies tags: a run the
    user tagged `model` or `model_version` is not taken for a model, nor for a version of a made-up model."""
    rc, _, err = run_cli(capsys, "export", *SOURCES["exporter"], "--out", str(tmp_path / "d"))
    assert rc == 0, err
    [plain] = [r for r in records(tmp_path / "d") if r.system.name == CONTENT["plain_run"]["name"]]
    old_id = Field("string", "PROJ-7")  # runs_migrator.py: the source run's sys/id
    copied = replace(plain, fields={**plain.fields, "old_sys/id": old_id,
                                    "old_sys/owner": Field("string", "bob")},
                     system=replace(plain.system, group_tags=frozenset({"baseline"})))
    assert model_to_run_kind(copied) is None and from_model_to_run(copied) is None
    as_version = replace(copied, system=replace(copied.system, tags=frozenset({"model_version"})))
    assert model_to_run_kind(as_version) is None  # before: a version "PROJ" of model "PROJ" via the -N id
    assert group_models([as_version]) == []


def test_a_conversion_sticks_when_the_flag_is_left_out(tmp_path: Path, capsys) -> None:  # type: ignore[no-untyped-def]
    """The registry in the dump follows what was converted, not the flags of the last export: a run read
    again without --models-from-runs (here every run, with --force) stays the registry record it became."""
    dump = tmp_path / "dump"
    rc, _, err = run_cli(capsys, "export", *SOURCES["offline"], "--out", str(dump), "--models-from-runs")
    assert rc == 0, err
    before = {r.key.run_id: (r.kind, r.registry) for r in records(dump)}
    rc, _, err = run_cli(capsys, "export", *SOURCES["offline"], "--out", str(dump), "--force")
    assert rc == 0, err
    after = {r.key.run_id: (r.kind, r.registry) for r in records(dump)}
    assert after == before
    assert sorted(k for k, _ in after.values()) == ["model", "model_version", "model_version", "model_version", "run"]
    [group] = group_models(records(dump))
    assert [v.registry.version_id for v in group.versions if v.registry] == ["PROJ-CLF-1", "PROJ-CLF-2", "PROJ-CLF-3"]


def test_runs_already_in_the_dump_are_converted_in_place(tmp_path: Path, capsys) -> None:  # type: ignore[no-untyped-def]
    """--models-from-runs on a dump that holds the runs: each committed run's record is rewritten, its series
    and files are the dump's (the source is not read again), and the outcome says so."""
    dump = tmp_path / "dump"
    rc, _, err = run_cli(capsys, "export", *SOURCES["exporter"], "--out", str(dump))
    assert rc == 0, err
    series_before = {r.key.run_id: r.series for r in records(dump)}
    rc, out, err = run_cli(capsys, "export", *SOURCES["exporter"], "--out", str(dump), "--models-from-runs")
    assert rc == 0, err
    text = " ".join((out + err).split())
    assert text.count("the dump held it as a run: turned it into a registry record") == 4
    recs = records(dump)  # DumpReader checks every run.json digest and part checksum
    assert {r.key.run_id: r.series for r in recs} == series_before
    olds = by_old_id(recs)
    assert {k: r.kind for k, r in olds.items()} == {"PROJ-CLF": "model", "PROJ-CLF-1": "model_version",
                                                     "PROJ-CLF-2": "model_version", "PROJ-CLF-3": "model_version"}
    assert all(any(lo.kind == "kind_changed" for lo in r.losses) for r in olds.values())
    reader = DumpReader(dump)
    run = reader.get_run(olds["PROJ-CLF-2"].key)
    assert run is not None
    v = CONTENT["versions"][1]
    t = reader.read_series(run, "float", "val/acc")
    got = list(zip(t["step"].to_pylist(), t["value"].to_pylist(), t["timestamp"].to_pylist(), strict=True))
    assert got == [(s, val, when(ts)) for s, val, ts in v["series"]]


@pytest.mark.parametrize("source", sorted(SOURCES))
def test_run_filters_select_runs_and_no_models_drops_the_registry(source: str, tmp_path: Path, capsys) -> None:  # type: ignore[no-untyped-def]
    """One rule for every source: --tag / --created-* select runs; registry records go by project, or not at
    all with --no-models (before: --tag vision kept the model and dropped its versions)."""
    dump = tmp_path / "tag"
    rc, _, err = run_cli(capsys, "export", *SOURCES[source], "--out", str(dump), "--models-from-runs",
                         "--tag", "vision", "--created-after", "2030-01-01T00:00:00+00:00")
    assert rc == 0, err
    kinds = sorted(r.kind for r in records(dump))
    assert kinds == ["model", "model_version", "model_version", "model_version"]  # the plain run is filtered
    dump = tmp_path / "none"
    rc, _, err = run_cli(capsys, "export", *SOURCES[source], "--out", str(dump), "--models-from-runs", "--no-models")
    assert rc == 0, err
    assert [r.system.name for r in records(dump)] == [CONTENT["plain_run"]["name"]]


def test_no_models_leaves_out_exporter_model_data(tmp_path: Path, capsys) -> None:  # type: ignore[no-untyped-def]
    data = FIXTURES / "neptune-exporter" / "generated" / "model_registry" / "model_data"
    rc, _, err = run_cli(capsys, "export", "--from", "neptune-exporter", str(data), "--out", str(tmp_path / "a"))
    assert rc == 0, err
    assert {r.kind for r in records(tmp_path / "a")} >= {"model", "model_version"}
    rc, _, err = run_cli(capsys, "export", "--from", "neptune-exporter", str(data), "--out", str(tmp_path / "b"),
                         "--no-models")
    assert rc == 0, err
    assert not (tmp_path / "b" / "runs").exists() or all(r.kind == "run" for r in records(tmp_path / "b"))
