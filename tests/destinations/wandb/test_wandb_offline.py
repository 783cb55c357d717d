"""End to end with the real wandb SDK in offline mode: import, read the `.wandb` files back, verify."""

from __future__ import annotations

import io
import itertools
import subprocess
import sys
import time
from datetime import timedelta
from pathlib import Path

import pyarrow as pa
import pytest

from neptune_migrate.destinations import DestinationOptions, load_destination
from neptune_migrate.destinations.wandb import mapping as m
from neptune_migrate.destinations.wandb.destination import WandbDestination
from neptune_migrate.destinations.wandb.records import read_run
from neptune_migrate.dump.reader import DumpReader
from neptune_migrate.dump.writer import DumpWriter
from neptune_migrate.errors import UsageError
from neptune_migrate.model import Field, SystemInfo
from neptune_migrate.pipeline.import_ import ImportOptions, RunResult, import_runs
from neptune_migrate.retry import FAST
from neptune_migrate.verify.findings import Finding
from neptune_migrate.verify.verifier import VerifyOptions, verify_runs
from tests.factories import T0, build_dump, float_points, key, make_record

OPTS = ImportOptions(retry=FAST)
TS = pa.timestamp("us", tz="UTC")


def _png(rgb: tuple[int, int, int]) -> bytes:
    from PIL import Image

    buf = io.BytesIO()
    Image.new("RGB", (3, 2), rgb).save(buf, format="PNG")
    return buf.getvalue()


def build_cadence_dump(root: Path) -> None:
    """One run whose series have different cadences, fractional steps, timestamps and kinds."""
    k = key("CAD-1")
    with DumpWriter(root) as dump, dump.begin_run(k) as run:
        # every step, 1 s apart
        run.add_points("float", float_points("train/loss", list(range(200)), [1 / (i + 1) for i in range(200)]))
        # every 10 steps, with its own timestamps (not those of train/loss at the same step)
        evals = list(range(0, 200, 10))
        run.add_points("float", float_points("eval/acc", [float(e) for e in evals], [i / 200 for i in evals],
                                             t0=T0 + timedelta(milliseconds=333)))
        # half steps: scaled by 10 onto the W&B axis, original step kept as a companion metric
        half = [i / 2 for i in range(200)]
        run.add_points("float", float_points("train/lr", half, [0.1 * (1 - s / 100) for s in half]))
        # its own short axis; a NaN, an inf; a point without a timestamp
        run.add_points("float", pa.table({
            "path": ["epoch/score"] * 4, "step": [0.0, 1.0, 2.0, 3.0],
            "timestamp": pa.array([T0, None, T0 + timedelta(hours=1), T0 + timedelta(hours=2)], TS),
            "value": [float("nan"), float("inf"), -1.5, 2**60 + 0.0],
        }))
        run.add_points("string", pa.table({
            "path": ["logs/stdout"] * 3, "step": [0.0, 5.0, 250.0],
            "timestamp": pa.array([T0, T0 + timedelta(seconds=5), T0 + timedelta(seconds=250)], TS),
            "value": ["start", "épоch ✓", ""],
        }))
        big_edges = [float(i) for i in range(601)]
        run.add_points("histogram", pa.table({
            "path": ["hist/w", "hist/w", "hist/big"], "step": [0.0, 7.0, 3.0],
            "timestamp": pa.array([T0, T0 + timedelta(seconds=7), T0 + timedelta(seconds=3)], TS),
            "type": ["COUNTING"] * 3,
            "edges": [[0.0, 0.1, 1.0, 10.0], [-1.0, 0.0, 1.0, 2.0], big_edges],
            "values": [[1.5, 2.0, 3.0], [4.0, 5.0, 6.0], [float(i % 7) for i in range(600)]],
        }))
        images = [run.store_bytes(_png((255, 0, 0))), run.store_bytes(_png((0, 0, 255)))]
        blob = run.store_bytes(b"checkpoint bytes")
        run.add_points("file", pa.table({
            "path": ["images/pred", "images/pred", "ckpt/series"], "step": [0.0, 100.0, 2.0],
            "timestamp": pa.array([T0, T0 + timedelta(seconds=100), T0 + timedelta(seconds=2)], TS),
            "sha256": [images[0][0], images[1][0], blob[0]], "size": [images[0][1], images[1][1], blob[1]],
            "name": ["red.png", "blue.png", "ckpt.bin"], "mime_type": ["image/png", "image/png", None],
            "title": ["red", None, None], "description": [None, None, None],
        }))
        run.commit(make_record(
            k,
            system=SystemInfo(name="cadence", description="steps of every kind", failed=True,
                              tags=frozenset({"short", "t" * 80}), group_tags=frozenset({"sweep-1"})),
            fields={"params/lr": Field("float", 0.1), "params/nested/depth": Field("int", 3),
                    "params/when": Field("datetime", T0), "params/nan": Field("float", float("nan")),
                    "params/labels": Field("string_set", frozenset({"b", "a"})), "top": Field("bool", True)},
        ))


def _dest(root: Path) -> WandbDestination:
    dest = load_destination("wandb", DestinationOptions(wandb_mode="offline", wandb_dir=root))
    assert isinstance(dest, WandbDestination)
    return dest


def _verify(reader: DumpReader, dest: WandbDestination) -> list[Finding]:
    return verify_runs(reader, dest, VerifyOptions(import_options=OPTS)).findings


@pytest.fixture(scope="module")
def imported(tmp_path_factory: pytest.TempPathFactory) -> tuple[DumpReader, Path, list[RunResult]]:
    """The cadence run and two factory runs imported once (the SDK costs ~0.5 s per run)."""
    tmp = tmp_path_factory.mktemp("wandb")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("WANDB_MODE", "offline")
        mp.setenv("WANDB_SILENT", "true")
        mp.setenv("WANDB_CONFIG_DIR", str(tmp / "_config"))
        mp.setenv("WANDB_DATA_DIR", str(tmp / "_data"))
        mp.setenv("WANDB_CACHE_DIR", str(tmp / "_cache"))
        build_dump(tmp / "dump", tmp, run_ids=("PROJ-0", "PROJ-1"))
        build_cadence_dump(tmp / "dump")
        reader = DumpReader(tmp / "dump")
        dest = _dest(tmp / "out")
        report = import_runs(reader, dest, OPTS)
        dest.close()
    return reader, tmp / "out", report.runs


def test_every_run_is_created_and_verifies_with_zero_findings(imported) -> None:  # type: ignore[no-untyped-def]
    reader, out, runs = imported
    assert [r.status for r in runs] == ["created"] * 3, [r.message for r in runs]
    dest = _dest(out)
    assert _verify(reader, dest) == []
    dest.close()


def test_cadences_and_fractional_steps_are_all_kept(imported) -> None:  # type: ignore[no-untyped-def]
    _, out, runs = imported
    [cad] = [r for r in runs if r.key.endswith("CAD-1")]
    assert any(c["path"] == "train/lr" and c["scale"] == 10 for c in cad.step_changes)
    kinds = {lo["kind"] for lo in cad.losses}
    assert {"histogram_rebinned", "tag_shortened", "fork_as_link"} - kinds == {"fork_as_link"}
    assert not any(lo["error"] for lo in cad.losses), cad.losses
    [run_dir] = (out / "wandb").glob(f"offline-run-*-{cad.destination_run_id}")
    logged = read_run(run_dir / f"run-{cad.destination_run_id}.wandb")
    # nothing dropped: every point of every float series is in the history
    assert len(logged.history["train/loss"]) == 200
    assert len(logged.history["eval/acc"]) == 20
    assert [s for s, _, _ in logged.history["train/lr"]] == [i * 5 for i in range(200)]
    # the original half steps ride along as the companion x-axis of train/lr
    assert [v for _, _, v in logged.history[m.step_key("train/lr")]] == [i / 2 for i in range(200)]
    # eval/acc keeps its own timestamps where train/loss shares its row
    # (one step scale per run: train/lr needs 10, so every series of the run is multiplied by 10)
    assert [s for s, _, _ in logged.history["train/loss"]] == [i * 10 for i in range(200)]
    eval_ts = {s: v for s, _, v in logged.history[m.timestamp_key("eval/acc")]}
    assert eval_ts[100] == pytest.approx((T0 + timedelta(seconds=1, milliseconds=333)).timestamp())
    # rows are strictly increasing in step (W&B would drop anything else)
    steps = sorted({s for series in logged.history.values() for s, _, _ in series})
    assert steps[0] == 0
    assert steps[-1] == 2500  # logs/stdout's step 250
    assert logged.summary[m.STATUS_KEY] == "complete"
    assert logged.exit_code == 1  # the Neptune run failed
    assert logged.config["params"]["nested"]["depth"] == 3
    assert logged.group == "sweep-1"
    assert "short" in logged.tags
    assert all(len(t) <= 64 for t in logged.tags)


def test_images_are_wandb_images_and_other_files_run_files(imported) -> None:  # type: ignore[no-untyped-def]
    _, out, runs = imported
    [cad] = [r for r in runs if r.key.endswith("CAD-1")]
    [run_dir] = (out / "wandb").glob(f"offline-run-*-{cad.destination_run_id}")
    logged = read_run(run_dir / f"run-{cad.destination_run_id}.wandb")
    [(step, _, first), _] = logged.history["images/pred"]
    assert step == 0
    assert first["_type"] == "image-file"
    assert (run_dir / "files" / first["path"]).read_bytes() == _png((255, 0, 0))
    assert (run_dir / "files" / m.file_series_index("ckpt/series")).is_file()
    [proj1] = [r for r in runs if r.key.endswith("PROJ-1")]
    [proj1_dir] = (out / "wandb").glob(f"offline-run-*-{proj1.destination_run_id}")
    weights = proj1_dir / "files/neptune/files/model/weights/weights.bin"
    assert weights.read_bytes() == b"\x00\x01weights" * 100
    # the factory's "image" is not a decodable PNG: that series is kept as run files
    assert (proj1_dir / "files" / m.file_series_index("images/preds")).is_file()


def test_reimport_skips_with_the_same_run_ids_and_no_new_folders(imported) -> None:  # type: ignore[no-untyped-def]
    reader, out, runs = imported
    before = sorted(p.name for p in (out / "wandb").glob("offline-run-*"))
    dest = _dest(out)
    again = import_runs(reader, dest, OPTS)
    dest.close()
    assert [r.status for r in again.runs] == ["skipped"] * 3
    assert [r.destination_run_id for r in again.runs] == [r.destination_run_id for r in runs]
    assert sorted(p.name for p in (out / "wandb").glob("offline-run-*")) == before
    assert len(before) == 3


def test_wandb_sync_dry_run_lists_every_imported_run(imported, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    _, out, runs = imported
    env = {"HOME": str(tmp_path), "PATH": "/usr/bin:/bin", "WANDB_SILENT": "false",
           "WANDB_CONFIG_DIR": str(tmp_path / "cfg")}
    proc = subprocess.run([str(Path(sys.executable).parent / "wandb"), "sync", "--dry-run",
                           *map(str, sorted((out / "wandb").glob("offline-run-*")))],
                          capture_output=True, text=True, env=env, timeout=60, check=False)
    text = proc.stdout + proc.stderr
    assert proc.returncode == 0, text
    assert f"Would sync {len(runs)} run(s)" in text
    for r in runs:
        assert f"run-{r.destination_run_id}.wandb" in text


def test_truncated_run_file_is_repaired(tmp_path: Path) -> None:
    build_dump(tmp_path / "dump", tmp_path, run_ids=("PROJ-1",), points=50)
    reader = DumpReader(tmp_path / "dump")
    dest = _dest(tmp_path / "out")
    [first] = import_runs(reader, dest, OPTS).runs
    [run_dir] = (tmp_path / "out/wandb").glob("offline-run-*")
    log_file = run_dir / f"run-{first.destination_run_id}.wandb"
    log_file.write_bytes(log_file.read_bytes()[: log_file.stat().st_size // 2])
    [again] = import_runs(reader, dest, OPTS).runs
    assert again.status == "repaired", again.message
    assert again.destination_run_id == first.destination_run_id
    assert len(list((tmp_path / "out/wandb").glob("offline-run-*"))) == 1
    assert _verify(reader, dest) == []
    dest.close()


def test_duplicate_steps_are_reported_as_lost_and_verify_sees_them(tmp_path: Path) -> None:
    with DumpWriter(tmp_path / "dump") as dump, dump.begin_run(key()) as run:
        run.add_points("float", float_points("loss", [0, 1, 1, 2], [1.0, 2.0, 3.0, 4.0]))
        run.commit(make_record(key(), fields={}))
    reader = DumpReader(tmp_path / "dump")
    dest = _dest(tmp_path / "out")
    [res] = import_runs(reader, dest, OPTS).runs
    assert [(lo["kind"], lo["count"], lo["error"]) for lo in res.losses if lo["kind"] == "duplicate_step"] == [
        ("duplicate_step", 1, True)]
    series = dest.read_series(res.destination_run_id, "float", "loss")  # type: ignore[arg-type]
    assert series.column("value").to_pylist() == [1.0, 3.0, 4.0]  # the later point of step 1 wins
    findings = _verify(reader, dest)
    assert findings
    assert all(f.item == "series:float:loss" for f in findings)
    dest.close()


def test_online_without_credentials_fails_fast_naming_the_variable(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("HOME", str(tmp_path))
    monkeypatch.delenv("NETRC", raising=False)
    monkeypatch.delenv("WANDB_IDENTITY_TOKEN_FILE", raising=False)
    started = time.monotonic()
    with pytest.raises(UsageError, match="WANDB_API_KEY") as err:
        load_destination("wandb", DestinationOptions(wandb_mode="online", entity="e"))
    assert time.monotonic() - started < 2
    assert "\n" not in str(err.value)
    assert not (tmp_path / "wandb").exists()


def test_online_with_a_netrc_login_passes_the_check(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    netrc = tmp_path / ".netrc"
    netrc.write_text("machine api.wandb.ai\n  login user\n  password " + "x" * 40 + "\n")
    netrc.chmod(0o600)
    monkeypatch.setenv("NETRC", str(netrc))
    dest = load_destination("wandb", DestinationOptions(wandb_mode="online", entity="e"))
    assert "x" * 40 not in dest.describe()
    dest.close()


def test_offline_needs_a_directory_and_a_known_mode() -> None:
    with pytest.raises(UsageError, match="--wandb-dir"):
        load_destination("wandb", DestinationOptions(wandb_mode="offline"))
    with pytest.raises(UsageError, match="online or offline"):
        load_destination("wandb", DestinationOptions(wandb_mode="sideways"))


def test_small_buckets_and_spills_give_the_same_stream(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Many step buckets and spill files (bounded memory) still write one ordered stream."""
    from neptune_migrate.destinations.wandb import destination as d

    monkeypatch.setattr(d, "BUCKET_POINTS", 40)
    monkeypatch.setattr(d, "SPILL_ROWS", 25)
    build_cadence_dump(tmp_path / "dump")
    reader = DumpReader(tmp_path / "dump")
    dest = _dest(tmp_path / "out")
    [res] = import_runs(reader, dest, OPTS).runs
    assert res.status == "created", res.message
    assert _verify(reader, dest) == []
    dest.close()


def _page_all(dest: WandbDestination, run_id: str, kind: str, key_: str) -> list[pa.Table]:
    pages, token = [], None
    while True:
        table, token = dest.read_series_page(run_id, kind, key_, token)  # type: ignore[arg-type]
        pages.append(table)
        if token is None:
            return pages


def test_offline_series_are_read_in_step_ordered_pages_with_the_findings_of_a_whole_read(
    imported, monkeypatch: pytest.MonkeyPatch  # type: ignore[no-untyped-def]
) -> None:
    """Pages of 64 rows streamed from the run file equal the whole series, in step order; a
    comparison page by page finds exactly what a whole comparison finds, with a value changed in
    the middle of a page and on both sides of a page boundary."""
    from neptune_migrate.destinations.wandb import destination as wd
    from neptune_migrate.verify.compare import compare_series, compare_series_chunks

    reader, out, runs = imported
    [cad] = [r for r in runs if r.key.endswith("CAD-1")]
    monkeypatch.setattr(wd, "HISTORY_PAGE", 64)
    monkeypatch.setattr(wd, "STREAM_ABOVE", 0)  # stream this small file as a large one would be
    dest = _dest(out)
    run_id = cad.destination_run_id
    series = (("float", "train/loss"), ("float", "eval/acc"), ("float", "train/lr"), ("string", "logs/stdout"))
    for kind, key_ in series:
        whole = dest.read_series(run_id, kind, key_)  # type: ignore[arg-type]
        pages = _page_all(dest, run_id, kind, key_)
        assert pa.concat_tables(pages).equals(whole), key_
        steps = [p.column("step").to_pylist() for p in pages if p.num_rows]
        assert all(a[-1] <= b[0] for a, b in itertools.pairwise(steps)), key_
    pages = _page_all(dest, run_id, "float", "train/loss")
    assert [p.num_rows for p in pages] == [64, 64, 64, 8]  # 200 rows, the last page short
    whole = pa.concat_tables(pages)
    values = whole.column("value").to_pylist()
    for i in (100, 63, 64):  # the middle of a page, the last row of one and the first of the next
        values[i] += 1.0
    expected = whole.set_column(whole.column_names.index("value"), "value", pa.array(values, pa.float64()))
    chunked = compare_series_chunks("r", "series:float:train/loss", [expected.slice(0, 150), expected.slice(150)],
                                    iter(pages))
    single = compare_series("r", "series:float:train/loss", expected, whole)
    assert chunked == single
    assert sorted(f.step for f in single[0]) == [whole.column("step")[i].as_py() for i in (63, 64, 100)]
    assert _verify(reader, dest) == []  # verify page by page: no findings
    dest.close()
    # The snapshot's reading keeps counts and first values only: the same as the full history's.
    [run_dir] = (out / "wandb").glob(f"offline-run-*-{run_id}")
    full = read_run(run_dir / f"run-{run_id}.wandb")
    light = read_run(run_dir / f"run-{run_id}.wandb", history=False)
    assert light.history == {}
    assert light.counts == {k: len(v) for k, v in full.history.items()} == full.counts
    assert light.first == {k: v[0][2] for k, v in full.history.items()}
    assert (light.summary, light.config, light.rows) == (full.summary, full.config, full.rows)
