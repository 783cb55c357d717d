"""Registry facts in the neutral model: derived from Neptune's `sys/*` fields, kept by the dump (1.3)."""

from __future__ import annotations

from dataclasses import replace
from datetime import datetime, timezone

import pytest

from neptune_migrate.dump.schema import record_from_json, record_to_json
from neptune_migrate.errors import DumpFormatError
from neptune_migrate.model import (
    Field,
    Provenance,
    RegistryInfo,
    RunKey,
    RunRecord,
    SourceRunId,
    StageChange,
    SystemInfo,
)
from neptune_migrate.registry import annotate, derive_registry, group_models, version_number


def _record(run_id: str, kind: str = "model_version", fields: dict[str, Field] | None = None,
            created: int = 1) -> RunRecord:
    return RunRecord(key=RunKey("ws/proj", SourceRunId(run_id)),
                     system=SystemInfo(created_at=datetime(2025, 1, created, tzinfo=timezone.utc)),
                     fields=fields or {}, provenance=Provenance("test", "here"), kind=kind)  # type: ignore[arg-type]


def test_version_number_is_the_numeric_suffix_of_the_id() -> None:
    assert version_number("PROJ-MOD-3") == 3
    assert version_number("PROJ-MOD-12") == 12
    assert version_number("PROJ-MOD") is None


def test_a_version_takes_its_model_and_stage_from_sys_fields() -> None:
    rec = _record("PROJ-MOD-3", fields={"sys/model_id": Field("string", "PROJ-MOD"),
                                        "sys/stage": Field("string", "production")})
    assert derive_registry(rec) == RegistryInfo(model_id="PROJ-MOD", version_id="PROJ-MOD-3", version=3,
                                                stage="production")


def test_a_version_without_sys_model_id_falls_back_to_its_id_and_an_unknown_stage_is_not_invented() -> None:
    rec = _record("PROJ-MOD-2", fields={"sys/stage": Field("string", "shipping")})
    info = derive_registry(rec)
    assert info is not None and info.model_id == "PROJ-MOD" and info.stage is None


def test_runs_get_no_registry_facts_and_models_their_own_id() -> None:
    assert annotate(_record("PROJ-1", kind="run")).registry is None
    assert derive_registry(_record("PROJ-MOD", kind="model")) == RegistryInfo(model_id="PROJ-MOD")


def test_registry_facts_survive_the_dump_round_trip() -> None:
    info = RegistryInfo(model_id="PROJ-MOD", version_id="PROJ-MOD-3", version=3, stage="staging",
                        stage_history=(StageChange("none", datetime(2025, 1, 1, tzinfo=timezone.utc)),
                                       StageChange("staging", None)),
                        source_run=RunKey("ws/proj", SourceRunId("PROJ-7")), origin="model_to_run")
    rec = replace(_record("PROJ-99"), registry=info)
    doc = record_to_json(rec)
    assert doc["registry"]["stage_history"][0] == {"stage": "none", "at": "2025-01-01T00:00:00+00:00"}
    assert record_from_json(doc) == rec


def test_a_run_document_has_no_registry_key_so_older_digests_stay_equal() -> None:
    assert "registry" not in record_to_json(_record("PROJ-1", kind="run"))


def test_an_unknown_stage_in_a_dump_is_a_format_error() -> None:
    doc = record_to_json(annotate(_record("PROJ-MOD-1")))
    doc["registry"]["stage"] = "shipping"
    with pytest.raises(DumpFormatError, match="shipping"):
        record_from_json(doc)


def test_versions_group_under_their_model_in_neptunes_order_and_the_newest_of_a_stage_holds_it() -> None:
    def version(n: int, stage: str, created: int) -> RunRecord:
        return _record(f"PROJ-MOD-{n}", created=created, fields={"sys/model_id": Field("string", "PROJ-MOD"),
                                                                  "sys/stage": Field("string", stage)})
    records = [version(10, "production", 3), version(2, "production", 9), version(1, "staging", 1),
               _record("PROJ-MOD", kind="model"), _record("PROJ-1", kind="run"),
               _record("PROJ-OTHER-1")]
    groups = group_models(records)
    assert [(g.model_id, g.model is not None) for g in groups] == [("PROJ-MOD", True), ("PROJ-OTHER", False)]
    mod = groups[0]
    assert [v.key.run_id for v in mod.versions] == ["PROJ-MOD-1", "PROJ-MOD-2", "PROJ-MOD-10"]
    assert {s: r.key.run_id for s, r in mod.stage_holders().items()} == {"staging": "PROJ-MOD-1",
                                                                         "production": "PROJ-MOD-10"}
