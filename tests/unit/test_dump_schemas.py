"""docs/schemas/*.schema.json describe exactly what the dump writer produces."""

from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import Any

import pytest

from neptune_migrate.dump.writer import DumpWriter
from neptune_migrate.model import Provenance, SystemInfo
from tests.factories import build_dump, key, make_record

jsonschema = pytest.importorskip("jsonschema")

SCHEMAS = Path(__file__).resolve().parents[2] / "docs" / "schemas"


def validator(name: str) -> Any:
    schema = json.loads((SCHEMAS / name).read_text(encoding="utf-8"))
    cls = jsonschema.Draft202012Validator
    cls.check_schema(schema)
    return cls(schema, format_checker=cls.FORMAT_CHECKER)


def load(path: Path) -> dict[str, Any]:
    doc: dict[str, Any] = json.loads(path.read_text(encoding="utf-8"))
    return doc


def errors(v: Any, doc: dict[str, Any]) -> list[str]:
    return [f"{'/'.join(map(str, e.absolute_path))}: {e.message}" for e in v.iter_errors(doc)]


def build_with_empty_run(root: Path, tmp: Path) -> None:
    """The factory's full runs plus a run with nothing: no fields, series, files or fork."""
    build_dump(root, tmp, run_ids=("PROJ-1", "PROJ-2"))
    with DumpWriter(root) as dump:
        dump.record_export({
            "source": "test", "location": "/nowhere", "started_at": "2025-03-01T12:00:00+00:00",
            "finished_at": "2025-03-01T12:00:01.500000+00:00",
            "counts": {"exported": 3, "skipped": 0, "filtered": 0, "failed": 0},
        })
        k = key("EMPTY-1")
        with dump.begin_run(k) as run:
            run.commit(make_record(k, system=SystemInfo(), fields={}, files=(), fork=None,
                                   provenance=Provenance("test", "/nowhere")))


@pytest.fixture
def dump_root(tmp_path: Path) -> Path:
    root = tmp_path / "dump"
    build_with_empty_run(root, tmp_path)
    return root


def test_manifest_matches_its_schema(dump_root: Path) -> None:
    doc = load(dump_root / "manifest.json")
    assert len(doc["exports"]) == 1
    assert errors(validator("manifest.schema.json"), doc) == []


def test_every_run_json_matches_its_schema(dump_root: Path) -> None:
    v = validator("run.schema.json")
    docs = {d["key"]["run_id"]: d for d in map(load, sorted(dump_root.glob("runs/*/run.json")))}
    assert set(docs) == {"PROJ-1", "PROJ-2", "EMPTY-1"}
    for run_id, doc in docs.items():
        assert errors(v, doc) == [], run_id
    empty = docs["EMPTY-1"]
    assert (empty["fields"], empty["series"], empty["files"], empty["parts"], empty["fork"]) == (
        {}, [], [], [], None)
    assert empty["system"]["created_at"] is None and empty["system"]["tags"] == []
    # every field type, both file entry forms and every series kind were exercised
    full = docs["PROJ-1"]
    assert {f["type"] for f in full["fields"].values()} == {
        "float", "int", "bool", "string", "datetime", "string_set"}
    assert {p["kind"] for p in full["parts"]} == {"float", "string", "histogram", "file"}
    assert {f["sha256"] is None for f in full["files"]} == {True, False}


def run_doc(dump_root: Path, run_id: str = "PROJ-1") -> dict[str, Any]:
    return next(d for d in map(load, dump_root.glob("runs/*/run.json")) if d["key"]["run_id"] == run_id)


@pytest.mark.parametrize(
    ("change", "why"),
    [
        (lambda d: d["fields"].__setitem__("p/x", {"type": "complex", "value": [1, 2]}), "unknown field type"),
        (lambda d: d["fields"].__setitem__("p/x", {"type": "float", "value": "nan"}), "bad non-finite"),
        (lambda d: d["fields"].__setitem__("p/x", {"type": "int", "value": "3"}), "int as string"),
        (lambda d: d["fields"].__setitem__("p/x", {"type": "datetime", "value": "2025-03-01T12:00:00"}),
         "datetime without offset"),
        (lambda d: d["fields"]["info/labels"].__setitem__("value", ["a", "a"]), "set with duplicates"),
        (lambda d: d["series"][0].__setitem__("kind", "image"), "unknown series kind"),
        (lambda d: d["parts"][0].__setitem__("sha256", "ABC"), "bad part checksum"),
        (lambda d: d.pop("digest"), "no digest"),
        (lambda d: d.__setitem__("format_version", "2.0"), "another major"),
        (lambda d: d["system"].__setitem__("tags", "baseline"), "tags not a list"),
    ],
)
def test_malformed_run_json_fails(dump_root: Path, change: Any, why: str) -> None:
    v = validator("run.schema.json")
    doc = copy.deepcopy(run_doc(dump_root))
    assert errors(v, doc) == []
    change(doc)
    assert errors(v, doc), why


def test_malformed_manifest_fails(dump_root: Path) -> None:
    v = validator("manifest.schema.json")
    doc = load(dump_root / "manifest.json")
    assert not errors(v, doc)
    for bad in ({"format": "something-else"}, {"format_version": "1"}, {"created_by": {"tool": "x"}}):
        assert errors(v, {**doc, **bad}), bad
