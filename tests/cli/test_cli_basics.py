"""The console script: help is fast and vendor-free, exit codes follow the contract, inspect works."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from neptune_migrate.dump.schema import FORMAT_VERSION
from tests.conftest import REPO
from tests.factories import build_dump

VENDORS = ("mlflow", "wandb", "aim", "neptune", "neptune_scale", "neptune_query", "neptune_api")


def test_help_lists_commands_and_exit_codes(cli) -> None:  # type: ignore[no-untyped-def]
    proc = cli("--help", check_rc=0)
    for word in ("export", "import", "verify", "inspect", "Exit codes", "0 success", "4 dry run"):
        assert word in proc.stdout


def test_help_imports_no_vendor_sdk(cli_env: dict[str, str]) -> None:
    code = (
        "import sys\n"
        "from neptune_migrate.cli import app\n"
        "try:\n    app(['--help'], standalone_mode=False)\nexcept SystemExit:\n    pass\n"
        f"print(sorted(m for m in sys.modules if m.split('.')[0] in {VENDORS!r}))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         env=cli_env, check=True, cwd=REPO).stdout
    assert out.strip().splitlines()[-1] == "[]"


def test_inspect_reports_counts(cli, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    build_dump(tmp_path / "dump", tmp_path, run_ids=("PROJ-1", "PROJ-2"))
    proc = cli("inspect", str(tmp_path / "dump"), "--json", check_rc=0)
    doc = json.loads(proc.stdout)
    assert doc["runs"] == 2
    assert doc["points"] == {"float": 206, "string": 4, "histogram": 2, "file": 2}
    assert doc["series"]["float"] == 6  # train/loss, train/special, train/empty per run
    assert doc["files"] == 2 and doc["missing_files"] == 2
    assert doc["losses"] == {"missing_file": 2}
    assert doc["problems"] == []
    proc = cli("inspect", str(tmp_path / "dump"), check_rc=0)
    assert proc.stdout == ""  # the table goes where every verb prints its human output: stderr
    assert "0 problem(s)" in proc.stderr and "missing_file=2" in proc.stderr


def test_inspect_names_the_corrupt_file_and_exits_1(cli, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    build_dump(tmp_path / "dump", tmp_path)
    [part] = (tmp_path / "dump" / "runs").glob("*/series/string-*.parquet")
    part.write_bytes(part.read_bytes()[:-20])
    proc = cli("inspect", str(tmp_path / "dump"), check_rc=1)
    assert "my-ws/my-proj/PROJ-1: series/string-00000.parquet: sha256 does not match" in proc.stderr


def test_unknown_dump_version_is_a_usage_error(cli, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    build_dump(tmp_path / "dump", tmp_path)
    manifest = tmp_path / "dump" / "manifest.json"
    text = manifest.read_text().replace(f'"format_version": "{FORMAT_VERSION}"', '"format_version": "7.1"')
    manifest.write_text(text)
    proc = cli("inspect", str(tmp_path / "dump"), check_rc=2)
    assert "format version 7.1 is not supported" in proc.stderr
    assert proc.stderr.count("\n") <= 3  # one clear line, no traceback


def test_usage_errors_exit_2(cli, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    assert cli("inspect", str(tmp_path / "nope")).returncode == 2
    assert cli("export", str(tmp_path), "--from", "nonsense", "--out", str(tmp_path / "d")).returncode == 2
    assert cli("frobnicate").returncode == 2
    proc = cli("export", str(tmp_path), "--from", "nonsense", "--out", str(tmp_path / "d"))
    assert "Invalid value for '--from': 'nonsense' is not one of: neptune-exporter, neptune-offline, neptune-scale" \
        in proc.stderr


def test_migrate_alias_is_installed() -> None:
    from importlib.metadata import entry_points

    scripts = {ep.name: ep.value for ep in entry_points(group="console_scripts")}
    assert scripts.get("migrate") == scripts.get("neptune-migrate") == "neptune_migrate.cli:main"
