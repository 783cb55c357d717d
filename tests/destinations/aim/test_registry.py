"""Neptune's model registry into Aim (issue 18): no registry there, so each version's run gets the
`neptune_registry` param (model, version, order, stage, the alias it would hold), read back through
Aim's own `Repo`; runs keep their end time and still verify; a re-run writes nothing new."""

from __future__ import annotations

from datetime import datetime, timezone
from pathlib import Path

from neptune_migrate.destinations.aim import AimDestination
from neptune_migrate.destinations.aim import mapping as m
from neptune_migrate.pipeline.import_ import ImportOptions, import_runs
from neptune_migrate.retry import FAST
from neptune_migrate.verify.verifier import VerifyOptions, verify_runs
from tests.destinations.registry_dump import STAGES, build_registry_dump

OPTS = ImportOptions(retry=FAST)


def test_registry_facts_become_params_of_each_version_run_and_verify(tmp_path: Path) -> None:
    d = build_registry_dump(tmp_path / "dump", versions=3)
    dest = AimDestination(str(tmp_path / "repo"))
    report = import_runs(d.reader, dest, OPTS)
    assert not report.failed, report.to_json()
    model = next(r for r in report.registry if r.key == f"model:{d.project}/REG-CLS")
    assert [(lo["kind"], lo["category"], lo["count"]) for lo in model.losses] == [
        ("registry_as_params", "changed_form", 4)]
    ends = {}
    from aim import Repo

    repo = Repo.from_path(str(tmp_path / "repo"))
    by_key = {}
    for run in repo.iter_runs():
        attrs = run[...]
        by_key[attrs[m.NEPTUNE]["run_id"]] = attrs.get(m.REGISTRY)
        ends[attrs[m.NEPTUNE]["run_id"]] = run.end_time
    assert by_key["REG-7"] is None  # a plain run gets nothing
    assert by_key["REG-CLS"] == {"kind": "model", "model_id": "REG-CLS", "name": "classifier",
                                 "versions": ["REG-CLS-1", "REG-CLS-2", "REG-CLS-3"],
                                 "aliases": {"archived": "REG-CLS-1", "production": "REG-CLS-2",
                                             "staging": "REG-CLS-3"}}
    for n in (1, 2, 3):
        doc = by_key[f"REG-CLS-{n}"]
        assert doc["version_id"] == f"REG-CLS-{n}" and doc["position"] == n and doc["version"] == n
        assert doc["stage"] == STAGES[n] and doc["alias"] == STAGES[n]
        assert doc["model_name"] == "classifier"
        assert [c["stage"] for c in doc["stage_history"]] == ["none", STAGES[n]]
    assert by_key["REG-DUP-1"]["model_name"] == "classifier-REG-DUP"
    # reopening a run to add the param keeps the end time the import gave it (sys/modification_time)
    assert ends["REG-CLS-1"] == datetime(2025, 3, 1, 14, 5, tzinfo=timezone.utc).timestamp()
    again = import_runs(d.reader, dest, OPTS)
    assert {r.status for r in again.registry} == {"skipped"}
    check = verify_runs(d.reader, dest, VerifyOptions(import_options=OPTS))
    assert check.findings == [], [str(f) for f in check.findings]
    assert {r.key for r in check.runs if r.key.startswith("model:")} == {
        f"model:{d.project}/REG-CLS", f"model:{d.project}/REG-DUP"}

    # tamper through Aim's run API: version 2 no longer holds the production alias
    from neptune_migrate.model import RunKey, SourceRunId

    run_hash = m.run_hash(RunKey(d.project, SourceRunId("REG-CLS-2")))
    doc = dict(by_key["REG-CLS-2"])
    doc.pop("alias")
    dest.set_top_param(run_hash, m.REGISTRY, doc)  # type: ignore[arg-type]
    tampered = verify_runs(d.reader, dest, VerifyOptions(import_options=OPTS))
    assert {(f.run, f.kind, f.item) for f in tampered.findings} == {
        (f"model:{d.project}/REG-CLS", "missing", "alias:production"),
        (f"model:{d.project}/REG-CLS", "missing", "version:REG-CLS-2:tag:alias"),
    }
    assert not tampered.ok


def test_an_older_version_loses_its_alias_param_when_a_newer_one_takes_the_stage(tmp_path: Path) -> None:
    """Review #18-dst 1 and 5: version 3 held `staging`; a re-export adds version 4 in staging. The
    re-import rewrites version 3's param without `alias` (before, only the expected keys were
    compared, so the stale `alias: staging` stayed and verify did not see it)."""
    from aim import Repo

    first = build_registry_dump(tmp_path / "d1", versions=3)
    dest = AimDestination(str(tmp_path / "repo"))
    assert not import_runs(first.reader, dest, OPTS).failed
    again = build_registry_dump(tmp_path / "d2", versions=4, stages={4: "staging"})
    before = verify_runs(again.reader, dest, VerifyOptions(import_options=OPTS))
    assert (f"model:{again.project}/REG-CLS", "extra", "version:REG-CLS-3:tag:alias") in {
        (f.run, f.kind, f.item) for f in before.findings}
    report = import_runs(again.reader, dest, OPTS)
    st = {r.key: r.status for r in report.registry}
    assert st[f"version:{again.project}/REG-CLS-3"] == "completed"
    assert st[f"version:{again.project}/REG-CLS-4"] == "created"
    docs = {}
    for run in Repo.from_path(str(tmp_path / "repo")).iter_runs():
        attrs = run[...]
        docs[attrs[m.NEPTUNE]["run_id"]] = attrs.get(m.REGISTRY)
    assert "alias" not in docs["REG-CLS-3"] and docs["REG-CLS-3"]["stage"] == "staging"
    assert docs["REG-CLS-4"]["alias"] == "staging"
    assert [docs[f"REG-CLS-{n}"].get("alias") for n in (1, 2)] == ["archived", "production"]
    check = verify_runs(again.reader, dest, VerifyOptions(import_options=OPTS))
    assert check.findings == [], [str(f) for f in check.findings]
