"""Hostile and damaged dumps (issue 13): one bad run is refused with one line, the others go through.

Each case builds a dump of three good runs and one victim run (`BAD-1`), damages the victim the way
a corrupt disk or a hostile archive would (path traversal, symlinks out of the dump, truncated
records, flipped bytes, wrong hashes, ...), then runs the real CLI: `import` into a real MLflow
SQLite store, `verify` and `inspect`. Every case asserts:

- the exit code (1 for a damaged run, 2 for a damaged dump);
- one line on stderr naming the victim run and the file, and the same message in the JSON report;
- the three good runs imported and verified, their values read back from MLflow;
- nothing outside the dump was read: the atime of every file planted outside stays at 0 and their
  content appears nowhere in MLflow, the reports or the ledger.

The whole set takes minutes (three CLI processes per case): it is `slow`. By default six of the
cases run together, one victim each, in one dump (`MIXED`).
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from neptune_migrate.dump.layout import run_dir_name
from neptune_migrate.dump.schema import conform
from neptune_migrate.dump.writer import record_digest
from tests.conftest import REPO
from tests.factories import T0, build_dump, key

GOOD = ("GOOD-1", "GOOD-2", "GOOD-3")
VICTIM = "BAD-1"
VICTIM_KEY = f"my-ws/my-proj/{VICTIM}"
SECRET = b"TOP-SECRET-MARKER-4f1c"
"""Content of the files planted outside the dump: must never reach MLflow or a report."""
STOLEN_METRIC = "stolen/metric-9d2e"


@dataclass
class Ctx:
    """The damaged dump, the victim's folder and the folder outside the dump."""

    root: Path
    run_dir: Path
    outside: Path

    @property
    def doc_path(self) -> Path:
        return self.run_dir / "run.json"

    def doc(self) -> dict[str, Any]:
        doc: dict[str, Any] = json.loads(self.doc_path.read_text(encoding="utf-8"))
        return doc

    def save(self, doc: dict[str, Any]) -> None:
        """Write the edited record with a valid digest, as a hostile author would."""
        doc["digest"] = record_digest(doc)
        self.doc_path.write_text(json.dumps(doc, indent=1), encoding="utf-8")

    def part(self, kind: str) -> Path:
        [part] = [self.run_dir / p["file"] for p in self.doc()["parts"] if p["kind"] == kind]
        return part

    def blob(self, attribute: str = "model/weights") -> Path:
        [sha] = [f["sha256"] for f in self.doc()["files"] if f["attribute_path"] == attribute]
        return self.root / "files" / "sha256" / sha[:2] / sha

    def image_blob(self) -> Path:
        [sha] = pq.read_table(self.part("file"), columns=["sha256"]).column("sha256").to_pylist()
        return self.root / "files" / "sha256" / sha[:2] / sha


def _sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _flip(path: Path, offset: int | None = None) -> None:
    os.chmod(path, 0o644)
    data = bytearray(path.read_bytes())
    at = len(data) // 2 if offset is None else offset
    data[at] ^= 0xFF
    path.write_bytes(bytes(data))


def _repoint_part(ctx: Ctx, kind: str, file: str, target: Path | None = None) -> None:
    """Make the victim's `kind` part entry name `file`, with the target's true checksum and rows."""
    doc = ctx.doc()
    for p in doc["parts"]:
        if p["kind"] == kind:
            p["file"] = file
            if target is not None:
                p["sha256"] = _sha(target)
                p["rows"] = pq.ParquetFile(target).metadata.num_rows
                p["bytes"] = target.stat().st_size
    ctx.save(doc)


def _set_file_sha(ctx: Ctx, value: str) -> None:
    doc = ctx.doc()
    doc["files"][0]["sha256"] = value
    ctx.save(doc)


# -- the damage -------------------------------------------------------------------------------


def part_traversal(ctx: Ctx) -> None:
    _repoint_part(ctx, "float", "../../../outside/stolen.parquet", ctx.outside / "stolen.parquet")


def part_absolute(ctx: Ctx) -> None:
    target = ctx.outside / "stolen.parquet"
    _repoint_part(ctx, "float", str(target), target)


def part_symlink_escape(ctx: Ctx) -> None:
    part = ctx.part("float")
    target = ctx.outside / "stolen.parquet"
    part.unlink()
    part.symlink_to(target)
    _repoint_part(ctx, "float", "series/float-00000.parquet", target)


def files_sha_traversal(ctx: Ctx) -> None:
    _set_file_sha(ctx, "../../../outside/secret.txt")


def files_sha_absolute(ctx: Ctx) -> None:
    _set_file_sha(ctx, str(ctx.outside / "secret.txt"))


def files_sha_not_hex(ctx: Ctx) -> None:
    _set_file_sha(ctx, "Z" * 64)


def blob_symlink_escape(ctx: Ctx) -> None:
    blob = ctx.blob()
    blob.unlink()
    blob.symlink_to(ctx.outside / "secret.txt")


def file_series_sha_traversal(ctx: Ctx) -> None:
    part = ctx.part("file")
    table = pq.read_table(part)
    hostile = pa.array(["../../../../outside/secret.txt"] * table.num_rows, pa.string())
    table = table.set_column(table.schema.get_field_index("sha256"), "sha256", hostile)
    os.chmod(part, 0o644)
    pq.write_table(table, part)
    _repoint_part(ctx, "file", "series/file-00000.parquet", part)


def run_dir_symlink_escape(ctx: Ctx) -> None:
    copy = ctx.outside / "run-copy"
    shutil.copytree(ctx.run_dir, copy)
    _plant_markers(copy)
    shutil.rmtree(ctx.run_dir)
    ctx.run_dir.symlink_to(copy)


def run_json_symlink_escape(ctx: Ctx) -> None:
    target = ctx.outside / "run.json"
    shutil.copyfile(ctx.doc_path, target)
    ctx.doc_path.unlink()
    ctx.doc_path.symlink_to(target)


def truncated_run_json(ctx: Ctx) -> None:
    text = ctx.doc_path.read_bytes()
    ctx.doc_path.write_bytes(text[: len(text) // 2])


def empty_run_json(ctx: Ctx) -> None:
    ctx.doc_path.write_bytes(b"")


def run_json_not_an_object(ctx: Ctx) -> None:
    ctx.doc_path.write_text("[1, 2, 3]\n", encoding="utf-8")


def unknown_run_format_version(ctx: Ctx) -> None:
    doc = ctx.doc()
    doc["format_version"] = "7.0"
    ctx.save(doc)


def record_without_key(ctx: Ctx) -> None:
    doc = ctx.doc()
    del doc["key"]
    ctx.save(doc)


def unknown_part_kind(ctx: Ctx) -> None:
    doc = ctx.doc()
    doc["parts"][0]["kind"] = "video"
    ctx.save(doc)


def flipped_byte_in_part(ctx: Ctx) -> None:
    _flip(ctx.part("float"))


def truncated_parquet(ctx: Ctx) -> None:
    part = ctx.part("float")
    os.chmod(part, 0o644)
    data = part.read_bytes()
    part.write_bytes(data[: len(data) // 2])
    doc = ctx.doc()
    for p in doc["parts"]:
        if p["kind"] == "float":
            p["sha256"] = _sha(part)  # a consistent record: only the Parquet reader can tell
    ctx.save(doc)


def missing_part(ctx: Ctx) -> None:
    ctx.part("float").unlink()


def missing_blob(ctx: Ctx) -> None:
    ctx.blob().unlink()


def blob_with_wrong_hash(ctx: Ctx) -> None:
    _flip(ctx.blob())


def file_series_blob_with_wrong_hash(ctx: Ctx) -> None:
    _flip(ctx.image_blob(), offset=0)


def manifest_garbage(ctx: Ctx) -> None:
    (ctx.root / "manifest.json").write_bytes(b"\x00\xffnot json{{")


def manifest_unknown_major(ctx: Ctx) -> None:
    path = ctx.root / "manifest.json"
    doc = json.loads(path.read_text(encoding="utf-8"))
    doc["format_version"] = "2.0"
    path.write_text(json.dumps(doc), encoding="utf-8")


@dataclass(frozen=True)
class Case:
    damage: Callable[[Ctx], None]
    file: str
    """What the one-line message must name (besides the run)."""
    words: str
    """A phrase of the reason."""
    victim_status: str = "failed"
    """The victim's status in the import report (a missing blob is imported with an error loss)."""
    dump_level: bool = False
    by_folder: bool = False
    """The record cannot be read: the run is named by its folder."""


CASES: dict[str, Case] = {
    "part_traversal": Case(part_traversal, "../../../outside/stolen.parquet", "contains '..'"),
    "part_absolute": Case(part_absolute, "stolen.parquet", "is an absolute path"),
    "part_symlink_escape": Case(part_symlink_escape, "series/float-00000.parquet", "resolves outside"),
    "files_sha_traversal": Case(files_sha_traversal, "files[model/weights].sha256", "not 64 lower-case hex"),
    "files_sha_absolute": Case(files_sha_absolute, "files[model/weights].sha256", "not 64 lower-case hex"),
    "files_sha_not_hex": Case(files_sha_not_hex, "files[model/weights].sha256", "not 64 lower-case hex"),
    "blob_symlink_escape": Case(blob_symlink_escape, "sha256/", "resolves outside"),
    "file_series_sha_traversal": Case(file_series_sha_traversal, "series/file-00000.parquet",
                                      "not 64 lower-case hex"),
    "run_dir_symlink_escape": Case(run_dir_symlink_escape, "run folder", "resolves outside", by_folder=True),
    "run_json_symlink_escape": Case(run_json_symlink_escape, "run.json", "resolves outside", by_folder=True),
    "truncated_run_json": Case(truncated_run_json, "run.json", "unreadable run record", by_folder=True),
    "empty_run_json": Case(empty_run_json, "run.json", "unreadable run record", by_folder=True),
    "run_json_not_an_object": Case(run_json_not_an_object, "run.json", "not a JSON object", by_folder=True),
    "unknown_run_format_version": Case(unknown_run_format_version, "run.json", "run format version 7.0"),
    "record_without_key": Case(record_without_key, "run.json", "malformed run record", by_folder=True),
    "unknown_part_kind": Case(unknown_part_kind, "run.json", "unknown series kind 'video'"),
    "flipped_byte_in_part": Case(flipped_byte_in_part, "series/float-00000.parquet", "sha256 does not match"),
    "truncated_parquet": Case(truncated_parquet, "series/float-00000.parquet", "unreadable Parquet"),
    "missing_part": Case(missing_part, "series/float-00000.parquet", "part file is missing"),
    "missing_blob": Case(missing_blob, "model/weights", "missing from the dump", victim_status="created"),
    "blob_with_wrong_hash": Case(blob_with_wrong_hash, "model/weights", "does not match its sha256"),
    "file_series_blob_with_wrong_hash": Case(file_series_blob_with_wrong_hash, "file series images/preds",
                                             "does not match its sha256"),
    "manifest_garbage": Case(manifest_garbage, "manifest.json", "unreadable manifest", dump_level=True),
    "manifest_unknown_major": Case(manifest_unknown_major, "manifest.json", "format version 2.0 is not supported",
                                   dump_level=True),
}
MIXED = ("part_traversal", "part_symlink_escape", "files_sha_traversal", "truncated_run_json",
         "unknown_run_format_version", "blob_with_wrong_hash")
"""Cases the default run puts together in one dump (one victim each, one CLI call per verb);
each case alone, with every assertion, is `slow` (about 15 s each)."""


# -- planting and checking the outside --------------------------------------------------------


def _plant_markers(folder: Path) -> None:
    """Every file in `folder` gets atime 0: any read of its content moves it (checked at the end)."""
    for path in folder.rglob("*"):
        if path.is_file() and not path.is_symlink():
            st = path.stat()
            os.utime(path, ns=(0, st.st_mtime_ns))


def _outside(tmp_path: Path) -> Path:
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "secret.txt").write_bytes(SECRET)
    pq.write_table(conform("float", pa.table({
        "path": [STOLEN_METRIC] * 3,
        "step": pa.array([0.0, 1.0, 2.0]),
        "timestamp": pa.array([T0] * 3, pa.timestamp("us", tz="UTC")),
        "value": pa.array([666.0, 666.0, 666.0]),
    })), outside / "stolen.parquet")
    return outside


def _atime_works(tmp_path: Path) -> bool:
    probe = tmp_path / "atime-probe"
    probe.write_bytes(b"x")
    os.utime(probe, ns=(0, probe.stat().st_mtime_ns))
    probe.read_bytes()
    return probe.stat().st_atime_ns != 0


def _read_anything(folder: Path) -> bytes:
    return b"".join(p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file() and not p.is_symlink())


@pytest.fixture(scope="module")
def empty_mlflow_db(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """An MLflow SQLite store with its schema made once; each case starts from a copy of it."""
    from mlflow import MlflowClient

    db = tmp_path_factory.mktemp("mlflow-template") / "mlflow.db"
    MlflowClient(tracking_uri=f"sqlite:///{db}").search_experiments()
    return db


@pytest.fixture
def hostile_env(cli_env: dict[str, str]) -> dict[str, str]:
    return dict(cli_env, COLUMNS="4000")  # one message, one terminal line


def _cli(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "neptune_migrate", *args], capture_output=True, text=True,
                          env=env, timeout=600, check=False, cwd=REPO)


def _lines_naming(text: str, *needles: str) -> list[str]:
    return [line for line in text.splitlines() if all(n in line for n in needles)]


@pytest.mark.slow
@pytest.mark.parametrize("name", list(CASES))
def test_a_damaged_run_is_refused_alone(
    name: str, tmp_path: Path, hostile_env: dict[str, str], empty_mlflow_db: Path
) -> None:
    case = CASES[name]
    root = tmp_path / "dump"
    build_dump(root, tmp_path, run_ids=(*GOOD, VICTIM), points=20, lost_file=False, own_blobs=True)
    outside = _outside(tmp_path)
    ctx = Ctx(root, root / "runs" / run_dir_name(key(VICTIM)), outside)
    case.damage(ctx)
    _plant_markers(outside)
    victim = ctx.run_dir.name if case.by_folder else VICTIM_KEY
    db = tmp_path / "mlflow.db"
    shutil.copyfile(empty_mlflow_db, db)
    uri = f"sqlite:///{db}"
    template = "hostile-{project}"
    dest_args = ("--to", "mlflow", "--tracking-uri", uri, "--experiment-template", template)

    done = _cli(hostile_env, "import", str(root), *dest_args, "--report", str(tmp_path / "import.json"))
    checked = _cli(hostile_env, "verify", str(root), *dest_args, "--report", str(tmp_path / "verify.json"),
                   "--html", str(tmp_path / "verify.html"))
    inspected = _cli(hostile_env, "inspect", str(root), "--json")

    if case.dump_level:
        for proc in (done, checked, inspected):
            assert proc.returncode == 2, (proc.returncode, proc.stderr)
            [line] = _lines_naming(proc.stderr, "error:", case.file)
            assert case.words in line
        assert not (tmp_path / "import.json").exists()
        assert b"GOOD-1" not in db.read_bytes()  # nothing imported at all
        return

    # import: exit 1, one line naming the run and the file, the good runs created
    assert done.returncode == 1, done.stderr
    lines = _lines_naming(done.stderr, victim, case.file)
    assert lines, done.stderr
    assert any(case.words in line for line in lines), lines
    report = json.loads((tmp_path / "import.json").read_text(encoding="utf-8"))
    statuses = {r["key"]: r["status"] for r in report["runs"]}
    assert statuses == {**{f"my-ws/my-proj/{g}": "created" for g in GOOD}, victim: case.victim_status}
    [bad] = [r for r in report["runs"] if r["key"] == victim]
    reason = bad["message"] + json.dumps(bad["losses"])
    assert case.file in reason
    assert case.words in reason

    # verify: exit 1; the good runs match, the victim is reported
    assert checked.returncode == 1, checked.stderr
    verification = json.loads((tmp_path / "verify.json").read_text(encoding="utf-8"))
    by_key = {r["key"]: r for r in verification["runs"]}
    assert {g: by_key[f"my-ws/my-proj/{g}"]["status"] for g in GOOD} == dict.fromkeys(GOOD, "match")
    assert by_key[victim]["status"] != "match"

    # inspect: exit 1, the victim is a problem, the good runs are not
    assert inspected.returncode == 1, inspected.stderr
    problems = json.loads(inspected.stdout)["problems"]
    assert problems
    assert {p["run"] for p in problems} == {victim}

    # the good runs' values, read back from MLflow itself
    from mlflow import MlflowClient

    client = MlflowClient(tracking_uri=uri)
    exp = client.get_experiment_by_name("hostile-my-ws/my-proj")
    runs = {r.data.tags["neptune.run_id"]: r for r in client.search_runs([exp.experiment_id])}
    for g in GOOD:
        history = client.get_metric_history(runs[g].info.run_id, "train/loss")
        # MLflow steps are Neptune steps x 10: train/special's half steps give the run one scale of 10
        assert sorted((h.step, h.value) for h in history) == [(10 * i, 1.0 / (i + 1)) for i in range(20)]
        assert runs[g].data.params["parameters/optimizer"] == "adam"
    if case.victim_status == "failed" and VICTIM in runs:  # begun, never marked complete
        assert runs[VICTIM].data.tags.get("nm.status") != "complete"

    # nothing outside the dump was read or uploaded
    if _atime_works(tmp_path):
        read = [str(p) for p in outside.rglob("*")
                if p.is_file() and not p.is_symlink() and p.stat().st_atime_ns != 0]
        assert read == []
    stored = db.read_bytes() + _read_anything(tmp_path / "mlartifacts")
    produced = (done.stderr + checked.stderr + inspected.stdout + inspected.stderr).encode()
    produced += _read_anything(root / "_reports") + _read_anything(root / "_ledger")
    for marker in (SECRET, STOLEN_METRIC.encode()):
        assert marker not in stored
        assert marker not in produced


def test_several_damaged_runs_in_one_dump_are_each_refused_alone(
    tmp_path: Path, hostile_env: dict[str, str], empty_mlflow_db: Path
) -> None:
    """The default-run sample: six victims, each damaged differently, beside three good runs."""
    root = tmp_path / "dump"
    victims = {name: f"BAD-{i}" for i, name in enumerate(MIXED)}
    build_dump(root, tmp_path, run_ids=(*GOOD, *victims.values()), points=20, lost_file=False, own_blobs=True)
    outside = _outside(tmp_path)
    for name, rid in victims.items():
        CASES[name].damage(Ctx(root, root / "runs" / run_dir_name(key(rid)), outside))
    _plant_markers(outside)
    db = tmp_path / "mlflow.db"
    shutil.copyfile(empty_mlflow_db, db)
    dest_args = ("--to", "mlflow", "--tracking-uri", f"sqlite:///{db}")
    done = _cli(hostile_env, "import", str(root), *dest_args, "--report", str(tmp_path / "import.json"))
    checked = _cli(hostile_env, "verify", str(root), *dest_args, "--report", str(tmp_path / "verify.json"))
    inspected = _cli(hostile_env, "inspect", str(root), "--json")
    assert (done.returncode, checked.returncode, inspected.returncode) == (1, 1, 1), done.stderr
    names = {name: (run_dir_name(key(rid)) if CASES[name].by_folder else f"my-ws/my-proj/{rid}")
             for name, rid in victims.items()}
    statuses = {r["key"]: r["status"] for r in json.loads((tmp_path / "import.json").read_text())["runs"]}
    assert statuses == {**{f"my-ws/my-proj/{g}": "created" for g in GOOD}, **dict.fromkeys(names.values(), "failed")}
    for name, victim in names.items():
        [line] = _lines_naming(done.stderr, victim, CASES[name].file)
        assert CASES[name].words in line
    verify_doc = json.loads((tmp_path / "verify.json").read_text())
    jsonschema = pytest.importorskip("jsonschema")
    jsonschema.validate(verify_doc, json.loads((REPO / "docs/schemas/verify-report.schema.json").read_text()))
    verification = {r["key"]: r["status"] for r in verify_doc["runs"]}
    assert {verification[f"my-ws/my-proj/{g}"] for g in GOOD} == {"match"}
    dump_findings = {(f["run"], f["item"]) for r in verify_doc["runs"] for f in r["findings"]
                     if f["item"].startswith("dump:")}
    assert {run for run, _ in dump_findings} == set(names.values())
    assert all(verification[v] != "match" for v in names.values())
    problems = json.loads(inspected.stdout)["problems"]
    assert {p["run"] for p in problems} == set(names.values())
    assert b"GOOD-1" in db.read_bytes()
    assert SECRET not in db.read_bytes() + _read_anything(tmp_path / "mlartifacts")
    assert STOLEN_METRIC.encode() not in db.read_bytes()
    if _atime_works(tmp_path):
        assert [p for p in outside.rglob("*") if p.is_file() and p.stat().st_atime_ns != 0] == []


@pytest.mark.parametrize("name", ["blob_with_wrong_hash", "file_series_blob_with_wrong_hash"])
def test_a_corrupt_blob_is_never_uploaded(name: str, tmp_path: Path, empty_mlflow_db: Path) -> None:
    """In process, against the SQLite store: the bad bytes reach no artifact, the good bytes do."""
    from neptune_migrate.destinations.mlflow.destination import MlflowDestination
    from neptune_migrate.dump.reader import DumpReader
    from neptune_migrate.pipeline.import_ import ImportOptions, import_runs
    from neptune_migrate.retry import FAST

    root = tmp_path / "dump"
    build_dump(root, tmp_path, run_ids=("GOOD-1", VICTIM), points=5, lost_file=False, own_blobs=True)
    ctx = Ctx(root, root / "runs" / run_dir_name(key(VICTIM)), tmp_path)
    blob = ctx.blob() if name == "blob_with_wrong_hash" else ctx.image_blob()
    good_bytes = blob.read_bytes()
    CASES[name].damage(ctx)
    bad_bytes = blob.read_bytes()
    assert bad_bytes != good_bytes
    shutil.copyfile(empty_mlflow_db, tmp_path / "mlflow.db")
    dest = MlflowDestination(f"sqlite:///{tmp_path}/mlflow.db", "{project}",
                             artifact_location=(tmp_path / "art").as_uri())
    report = import_runs(DumpReader(root), dest, ImportOptions(retry=FAST))
    status = {r.key: (r.status, r.message) for r in report.runs}
    assert status["my-ws/my-proj/GOOD-1"] == ("created", "")
    assert status[VICTIM_KEY][0] == "failed"
    assert f"files/sha256/{blob.name[:2]}/{blob.name}: blob content does not match its sha256" in status[VICTIM_KEY][1]
    uploaded = [p.read_bytes() for p in (tmp_path / "art").rglob("*") if p.is_file()]
    assert bad_bytes not in uploaded
    assert good_bytes not in uploaded  # (never was in the dump any more)
    good_run = Ctx(root, root / "runs" / run_dir_name(key("GOOD-1")), tmp_path)
    good_blob = good_run.blob() if name == "blob_with_wrong_hash" else good_run.image_blob()
    assert good_blob.read_bytes() in uploaded
