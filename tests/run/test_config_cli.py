"""`neptune-migrate.toml` through the real entry point: precedence file < env < flag on a verb,
`config show` origins and masking, unknown keys and plain secrets refused with exit 2."""

from __future__ import annotations

import json
from pathlib import Path

from tests.conftest import FIXTURES
from tests.run.conftest import Runner

SAMPLE = FIXTURES / "neptune-exporter" / "neptune3" / "data"

CONFIG = f"""\
from = "neptune-exporter"
to = "mlflow"
step_policy = "scale"
workers = 2

[profiles.sample]
source = "{SAMPLE}"
dump = "from-file-dump"
tracking-uri = "sqlite:///from-file.db"
run-regex = "parent"
api_token = "env:TEST_NM_SECRET"
wandb_api_key = "file:secret.txt"
"""


def _setup(tmp_path: Path, text: str = CONFIG) -> None:
    (tmp_path / "neptune-migrate.toml").write_text(text)
    (tmp_path / "secret.txt").write_text("very-secret-wandb-key\n")


def test_export_takes_its_settings_from_the_profile_and_flags_win(nm: Runner, tmp_path: Path) -> None:
    _setup(tmp_path)
    env = {"TEST_NM_SECRET": "very-secret-token"}
    proc = nm("export", "--profile", "sample", env=env, rc=0)  # SOURCE, --from, --out, --run-regex: all from the file
    assert "settings from " in proc.stderr and "[profile sample]" in proc.stderr
    runs = sorted(p.name for p in (tmp_path / "from-file-dump" / "runs").iterdir())
    assert len(runs) == 1 and "parent" in runs[0]  # run-regex = "parent" applied: the child run filtered out
    # env overrides the file, a flag overrides both (config show below checks each origin)
    flags = nm("export", "--profile", "sample", "--out", "flag-dump", "--run-regex", "child",
               env={**env, "NEPTUNE_MIGRATE_RUN_REGEX": "no-such-run"}, rc=0)
    runs = sorted(p.name for p in (tmp_path / "flag-dump" / "runs").iterdir())
    assert len(runs) == 1 and "child" in runs[0]
    for p in (proc.stdout, proc.stderr, flags.stdout, flags.stderr):
        assert "very-secret" not in p


def test_config_show_merges_with_origins_and_masks_secrets(nm: Runner, tmp_path: Path) -> None:
    _setup(tmp_path)
    env = {"TEST_NM_SECRET": "very-secret-token", "NEPTUNE_MIGRATE_WORKERS": "5", "MLFLOW_TRACKING_URI": ""}
    proc = nm("config", "show", "--profile", "sample", "--json", "run", "--step-policy", "rank", env=env, rc=0)
    doc = json.loads(proc.stdout)
    rows = {r["key"]: (r["value"], r["origin"]) for r in doc["settings"]}
    cfg = str(tmp_path / "neptune-migrate.toml")
    assert doc["profile"] == "sample" and doc["profiles"] == ["sample"] and doc["file"] == cfg
    assert rows["to"] == ("mlflow", f"file:{cfg}:2")
    assert rows["workers"] == ("5", "env:NEPTUNE_MIGRATE_WORKERS")
    assert rows["step_policy"] == ("rank", "flag")
    assert rows["dump"] == ("from-file-dump", f"file:{cfg}:8")
    assert rows["on_conflict"] == ("fail", "default")
    assert rows["api_token"] == ("*** (env:TEST_NM_SECRET)", f"file:{cfg}:11 -> NEPTUNE_API_TOKEN")
    assert rows["wandb_api_key"] == ("*** (file:secret.txt)", f"file:{cfg}:12 -> WANDB_API_KEY")
    assert "very-secret" not in proc.stdout + proc.stderr
    human = nm("config", "show", "--profile", "sample", env=env, rc=0)
    assert "env:NEPTUNE_MIGRATE_WORKERS" in human.stderr and "very-secret" not in human.stderr + human.stdout


def test_unknown_key_is_exit_2_with_file_and_line(nm: Runner, tmp_path: Path) -> None:
    _setup(tmp_path, CONFIG + "trackin_uri = \"sqlite:///x.db\"\n")
    proc = nm("import", "some-dump", "--profile", "sample", env={"TEST_NM_SECRET": "x"}, rc=2)
    cfg = tmp_path / "neptune-migrate.toml"
    assert proc.stderr.strip().splitlines()[-1].startswith(f"error: {cfg}:13: unknown key 'trackin_uri' in "
                                                           "[profiles.sample]")
    show = nm("config", "show", rc=2)
    assert f"{cfg}:13: unknown key 'trackin_uri'" in show.stderr


def test_plain_secret_and_bad_value_are_refused(nm: Runner, tmp_path: Path) -> None:
    _setup(tmp_path, 'to = "mlflow"\napi_token = "plain-token-value"\n')
    proc = nm("verify", "d", rc=2)
    assert "neptune-migrate.toml:2: api_token holds a secret in plain text" in proc.stderr
    assert "plain-token-value" not in proc.stderr + proc.stdout
    _setup(tmp_path, 'to = "mflow"\nworkers = "many"\n')
    proc = nm("import", "d", rc=2)
    assert "neptune-migrate.toml:1: to: Invalid value: 'mflow' is not one of: mlflow, wandb, aim" in proc.stderr
