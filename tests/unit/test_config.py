"""config.py: the settings file, profiles, environment overrides, secret references (no CLI)."""

from __future__ import annotations

from pathlib import Path

import pytest

from neptune_migrate import config as cfg
from neptune_migrate.errors import ExitCode, UsageError

KNOWN = {"to", "tracking_uri", "workers", "tag", "step_policy", "source", "dump", "from"}

FILE = """\
# neptune-migrate settings
from = "neptune-exporter"
to = "mlflow"
workers = 2

[profiles.prod]
tracking-uri = "http://mlflow.internal:5000"
tag = ["keep", "final"]
api_token = "env:TEST_NM_TOKEN"

[profiles.laptop]
workers = 1
wandb_api_key = "file:{secret}"
"""


def _write(tmp_path: Path, text: str = FILE) -> Path:
    (tmp_path / "key.txt").write_text("wandb-secret-value\nsecond line\n")
    path = tmp_path / "neptune-migrate.toml"
    path.write_text(text.replace("{secret}", str(tmp_path / "key.txt")))
    return path


def test_profile_overrides_top_level_and_records_lines(tmp_path: Path) -> None:
    path = _write(tmp_path)
    c = cfg.load(path, "prod", KNOWN, environ={"TEST_NM_TOKEN": "tok-123"})
    assert c.profile == "prod" and c.profiles == ("laptop", "prod")
    assert c.settings["to"].value == "mlflow" and c.settings["to"].origin == f"file:{path}:3"
    assert c.settings["workers"].value == 2 and c.settings["workers"].origin == f"file:{path}:4"
    assert c.settings["tracking_uri"].origin == f"file:{path}:7"
    assert c.settings["tag"].value == ["keep", "final"]
    assert c.settings["api_token"].value == "tok-123" and c.settings["api_token"].shown() == "*** (env:TEST_NM_TOKEN)"
    assert c.for_verb({"to": "to", "workers": "workers", "tag": "tag"}) == {
        "to": "mlflow", "workers": 2, "tag": ["keep", "final"]}
    laptop = cfg.load(path, "laptop", KNOWN, environ={})
    assert laptop.settings["workers"].value == 1 and laptop.settings["workers"].origin == f"file:{path}:12"
    assert laptop.settings["wandb_api_key"].value == "wandb-secret-value"  # the first line of the file
    assert "wandb-secret-value" not in laptop.settings["wandb_api_key"].shown()


def test_environment_overrides_file(tmp_path: Path) -> None:
    path = _write(tmp_path)
    env = {"TEST_NM_TOKEN": "x", "NEPTUNE_MIGRATE_WORKERS": "7", "NEPTUNE_MIGRATE_TAG": "a, b,",
           "NEPTUNE_MIGRATE_PROFILE": "prod"}
    c = cfg.load(path, None, KNOWN, lists={"tag"}, environ=env)
    assert c.profile == "prod"
    assert (c.settings["workers"].value, c.settings["workers"].origin) == ("7", "env:NEPTUNE_MIGRATE_WORKERS")
    assert c.settings["tag"].value == ["a", "b"]
    assert c.settings["to"].origin.startswith("file:")


def test_unknown_key_names_file_and_line(tmp_path: Path) -> None:
    path = _write(tmp_path, FILE + "\n[profiles.typo]\nworkres = 3\n")
    with pytest.raises(UsageError) as err:
        cfg.load(path, None, KNOWN, environ={})
    assert str(err.value).startswith(f"{path}:16: unknown key 'workres' in [profiles.typo]")
    assert err.value.exit_code == ExitCode.USAGE
    with pytest.raises(UsageError, match=r":2: unknown table 'source'"):
        cfg.load(_write(tmp_path, 'to = "mlflow"\n[source]\npath = "x"\n'), None, KNOWN, environ={})


@pytest.mark.parametrize("line", [
    'api_token = "eyJhcGlfYWRkcmVzcyI6"',
    'tracking_uri = "postgresql://user:hunter2@db:5432/mlflow"',
])
def test_plain_secret_is_refused_without_echoing_it(tmp_path: Path, line: str) -> None:
    path = _write(tmp_path, f'to = "mlflow"\n{line}\n')
    with pytest.raises(UsageError) as err:
        cfg.load(path, None, KNOWN, environ={})
    text = str(err.value)
    assert text.startswith(f"{path}:2: ") and "secret in plain text" in text and 'env:NAME' in text
    assert "hunter2" not in text and "eyJhcGlfYWRkcmVzcyI6" not in text


def test_plain_secret_in_environment_is_refused() -> None:
    with pytest.raises(UsageError, match="NEPTUNE_MIGRATE_API_TOKEN: secrets are referenced"):
        cfg.load(None, None, KNOWN, environ={"NEPTUNE_MIGRATE_API_TOKEN": "abc"})


def test_unresolvable_reference_and_unknown_profile(tmp_path: Path) -> None:
    path = _write(tmp_path)
    with pytest.raises(UsageError, match=rf"{path}:9: api_token: the environment variable TEST_NM_TOKEN is not set"):
        cfg.load(path, "prod", KNOWN, environ={})
    shown = cfg.load(path, "prod", KNOWN, environ={}, resolve=False).settings["api_token"].shown()
    assert shown == "unresolved (env:TEST_NM_TOKEN)"
    with pytest.raises(UsageError, match=r"no profile 'staging' \(profiles: laptop, prod\)"):
        cfg.load(path, "staging", KNOWN, environ={})
    with pytest.raises(UsageError, match="--profile prod: no config file"):
        cfg.load(None, "prod", KNOWN, environ={})


def test_secrets_go_to_their_clients_variables_unless_set(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = _write(tmp_path)
    monkeypatch.delenv("WANDB_API_KEY", raising=False)
    c = cfg.load(path, "laptop", KNOWN, environ={})
    assert c.export_secrets() == ["WANDB_API_KEY"]
    import os

    assert os.environ["WANDB_API_KEY"] == "wandb-secret-value"
    monkeypatch.setenv("WANDB_API_KEY", "from-env")
    assert c.export_secrets() == [] and os.environ["WANDB_API_KEY"] == "from-env"


def test_invalid_toml_names_the_file(tmp_path: Path) -> None:
    path = _write(tmp_path, "to = \n")
    with pytest.raises(UsageError, match=rf"^{path}: not valid TOML"):
        cfg.load(path, None, KNOWN, environ={})


def test_find_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("NEPTUNE_MIGRATE_CONFIG", raising=False)
    assert cfg.find_file(None, tmp_path) is None
    path = _write(tmp_path)
    assert cfg.find_file(None, tmp_path) == path
    with pytest.raises(UsageError, match="no such config file"):
        cfg.find_file(tmp_path / "other.toml")


def test_secret_keys_spelled_out_in_cli_match() -> None:
    from neptune_migrate.cli import _SECRET_KEYS

    assert set(cfg.SECRET_ENV) == _SECRET_KEYS
