"""`neptune-migrate.toml`: settings for every verb, in named profiles, with their origins.

Precedence, lowest first: the verb's own default < the file (top-level keys, then the chosen
profile's) < environment variables `NEPTUNE_MIGRATE_<KEY>` < command-line flags. The CLI turns the
merged settings into click's `default_map`, so a value from here reaches a verb exactly as the
same flag would (same conversion, same checks).

A key is a flag's long name without the dashes (`tracking-uri` or `tracking_uri`), plus `source`
(the SOURCE argument of `export`/`run`) and `dump` (`--out` of `export`, the DUMP argument of
`import`/`verify`, `--dump` of `run`). Secrets are references, never values: `env:NAME` or
`file:/path` (the first line of the file). A plain secret in the file is refused; a resolved secret
is handed to the clients through their usual environment variable and never printed.

This module knows no verb: the CLI passes the keys each verb takes (`known`).
"""

from __future__ import annotations

import os
import re
import sys
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from neptune_migrate.errors import UsageError

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - exercised on 3.10 only
    import tomli as tomllib

DEFAULT_FILE = "neptune-migrate.toml"
"""Read from the current directory when `--config` is not given."""
ENV_PREFIX = "NEPTUNE_MIGRATE_"
CONFIG_ENV = ENV_PREFIX + "CONFIG"
PROFILE_ENV = ENV_PREFIX + "PROFILE"
PROFILES_TABLE = "profiles"
DEFAULT_PROFILE_KEY = "default_profile"

SECRET_ENV: Mapping[str, str] = {
    "api_token": "NEPTUNE_API_TOKEN",
    "wandb_api_key": "WANDB_API_KEY",
    "mlflow_tracking_token": "MLFLOW_TRACKING_TOKEN",
    "mlflow_tracking_password": "MLFLOW_TRACKING_PASSWORD",
}
"""Secret keys and the environment variable each one is handed to (the one its client reads)."""

_REFERENCE = re.compile(r"^(env|file):(.+)$")
_URI_PASSWORD = re.compile(r"://[^/@:\s]+:[^/@\s]+@")
_TABLE = re.compile(r"^\[\s*([^\[\]]+?)\s*\]\s*(#.*)?$")
_KEY = re.compile(r"""^\s*("[^"]+"|'[^']+'|[A-Za-z0-9_-]+)\s*=""")

MASK = "***"


def normalise_key(key: str) -> str:
    """`tracking-uri` and `tracking_uri` are the same key."""
    return key.strip().replace("-", "_").lower()


@dataclass(frozen=True)
class Setting:
    """One effective value and where it came from."""

    key: str
    value: Any
    origin: str
    """`file:PATH:LINE`, `env:NEPTUNE_MIGRATE_X` (or the secret's own variable)."""
    secret: bool = False
    reference: str | None = None
    """`env:NAME` / `file:/path` when the value was referenced (shown instead of a secret value)."""

    def shown(self) -> str:
        """The value as `config show` prints it: secrets masked, references named."""
        if self.reference and self.value is None:
            return f"unresolved ({self.reference})"
        if self.secret:
            return f"{MASK} ({self.reference})" if self.reference else MASK
        from neptune_migrate.errors import redact

        text = " ".join(str(v) for v in self.value) if isinstance(self.value, list) else str(self.value)
        shown = redact(text)
        return f"{shown} ({self.reference})" if self.reference else shown


@dataclass
class Config:
    """The settings a file and the environment give, before flags."""

    path: Path | None
    """The file read (None: no file)."""
    profile: str | None
    settings: dict[str, Setting] = field(default_factory=dict)
    """Normalised key -> setting (file values overridden by environment values)."""
    profiles: tuple[str, ...] = ()

    def for_verb(self, params: Mapping[str, str]) -> dict[str, Any]:
        """click `default_map` of one verb: `params` maps each key the verb takes to its param name."""
        out: dict[str, Any] = {}
        for key, setting in self.settings.items():
            name = params.get(key)
            if name is not None and setting.value is not None:
                out[name] = setting.value
        return out

    def export_secrets(self) -> list[str]:
        """Hand resolved secrets to their clients' environment variables (unless already set there,
        since the environment wins over the file); return the variables set."""
        done: list[str] = []
        for key, var in SECRET_ENV.items():
            setting = self.settings.get(key)
            if setting is None or setting.value is None or var in os.environ:
                continue
            os.environ[var] = str(setting.value)
            done.append(var)
        return done


def key_lines(text: str) -> dict[tuple[str, ...], int]:
    """(table path..., key) -> line number, for `key = value` lines (dotted keys and inline tables
    are attributed to their first line)."""
    out: dict[tuple[str, ...], int] = {}
    table: tuple[str, ...] = ()
    for number, raw in enumerate(text.splitlines(), start=1):
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        m = _TABLE.match(line)
        if m and not line.startswith("[["):
            table = tuple(p.strip().strip("\"'") for p in m.group(1).split("."))
            out.setdefault(table, number)
            continue
        k = _KEY.match(line)
        if k:
            out.setdefault((*table, k.group(1).strip("\"'")), number)
    return out


def resolve_reference(reference: str, where: str, environ: Mapping[str, str] | None = None) -> str:
    """The value behind `env:NAME` or `file:/path`; a clear error (never the value) when it is missing."""
    m = _REFERENCE.match(reference)
    if m is None:
        msg = f"{where}: not a reference (write env:NAME or file:/path)"
        raise UsageError(msg)
    kind, target = m.group(1), m.group(2).strip()
    if kind == "env":
        value = (os.environ if environ is None else environ).get(target)
        if value is None:
            msg = f"{where}: the environment variable {target} is not set"
            raise UsageError(msg)
        return value
    try:
        lines = Path(target).expanduser().read_text(encoding="utf-8").splitlines()
    except OSError as exc:
        msg = f"{where}: cannot read {target} ({exc.strerror or type(exc).__name__})"
        raise UsageError(msg) from None
    return lines[0].strip() if lines else ""


def find_file(explicit: str | Path | None, cwd: Path | None = None) -> Path | None:
    """`--config FILE` (or `NEPTUNE_MIGRATE_CONFIG`), else `./neptune-migrate.toml` when present."""
    chosen = explicit if explicit is not None else os.environ.get(CONFIG_ENV) or None
    if chosen is not None:
        path = Path(chosen).expanduser()
        if not path.is_file():
            msg = f"{path}: no such config file"
            raise UsageError(msg)
        return path
    default = (cwd or Path.cwd()) / DEFAULT_FILE
    return default if default.is_file() else None


def load(
    path: Path | None,
    profile: str | None,
    known: set[str],
    *,
    lists: frozenset[str] | set[str] = frozenset(),
    environ: Mapping[str, str] | None = None,
    resolve: bool = True,
) -> Config:
    """Read the file (if any) and the environment into one `Config`.

    `known` is every key some verb takes, `lists` those that take several values (an environment
    variable gives them comma-separated). An unknown key is an error naming the file and line (exit 2);
    so are a plain secret, an unknown profile and a reference that cannot be resolved (with `resolve`;
    `config show` passes False and shows the reference as unresolved instead).
    """
    env = os.environ if environ is None else environ
    profile = profile or env.get(PROFILE_ENV) or None
    config = Config(path=path, profile=profile)
    allowed = known | set(SECRET_ENV)
    if path is not None:
        text = _read(path)
        try:
            data = tomllib.loads(text)
        except tomllib.TOMLDecodeError as exc:
            msg = f"{path}: not valid TOML: {exc}"
            raise UsageError(msg) from None
        lines = key_lines(text)
        raw_profiles = data.pop(PROFILES_TABLE, {})
        default_profile = data.pop(DEFAULT_PROFILE_KEY, None)
        where_default = f"{path}:{lines.get((DEFAULT_PROFILE_KEY,), 1)}"
        if default_profile is not None and not isinstance(default_profile, str):
            msg = f"{where_default}: {DEFAULT_PROFILE_KEY} must be a profile name"
            raise UsageError(msg)
        if not isinstance(raw_profiles, dict):
            msg = f"{path}:{lines.get((PROFILES_TABLE,), 1)}: [{PROFILES_TABLE}] must be a table of profiles"
            raise UsageError(msg)
        config.profiles = tuple(sorted(raw_profiles))
        for name, table in raw_profiles.items():
            if not isinstance(table, dict):
                msg = f"{path}:{lines.get((PROFILES_TABLE, name), 1)}: profile {name!r} must be a table"
                raise UsageError(msg)
        for name, table in raw_profiles.items():  # a typo in any profile is an error, not only the chosen one
            _check_keys(table, (PROFILES_TABLE, name), path, lines, allowed)
        _take(config, data, (), path, lines, allowed, resolve=resolve, environ=env)
        config.profile = profile or default_profile
        if config.profile is not None:
            if config.profile not in raw_profiles:
                listed = ", ".join(config.profiles) or "none"
                msg = f"{path}: no profile {config.profile!r} (profiles: {listed})"
                raise UsageError(msg)
            _take(config, raw_profiles[config.profile], (PROFILES_TABLE, config.profile), path, lines, allowed,
                  resolve=resolve, environ=env)
    elif profile is not None:
        msg = f"--profile {profile}: no config file ({DEFAULT_FILE} in the current folder, or --config FILE)"
        raise UsageError(msg)
    for key in sorted(allowed):
        var = ENV_PREFIX + key.upper()
        if var in env:
            raw = env[var]
            value: Any = [v.strip() for v in raw.split(",") if v.strip()] if key in lists else raw
            secret = key in SECRET_ENV
            if secret and not _REFERENCE.match(raw):
                msg = f"{var}: secrets are referenced, never given in plain text: write env:NAME or file:/path"
                raise UsageError(msg)
            config.settings[key] = _setting(key, value, f"env:{var}", secret=secret, resolve=resolve, environ=env)
    return config


def _read(path: Path) -> str:
    try:
        return path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        msg = f"{path}: cannot read the config file ({exc})"
        raise UsageError(msg) from None


def _where(path: Path, lines: Mapping[tuple[str, ...], int], prefix: tuple[str, ...], raw_key: str) -> str:
    return f"{path}:{lines.get((*prefix, raw_key), lines.get(prefix, 1) if prefix else 1)}"


def _check_keys(
    table: Mapping[str, Any], prefix: tuple[str, ...], path: Path, lines: Mapping[tuple[str, ...], int],
    allowed: set[str],
) -> None:
    for raw_key, value in table.items():
        if normalise_key(raw_key) not in allowed or isinstance(value, dict):
            section = f" in [{'.'.join(prefix)}]" if prefix else ""
            what = "table" if isinstance(value, dict) else "key"
            msg = (f"{_where(path, lines, prefix, raw_key)}: unknown {what} {raw_key!r}{section} (keys are flag names "
                   f"such as tracking_uri, workers, tag; see `neptune-migrate config show`)")
            raise UsageError(msg)


def _take(
    config: Config, table: Mapping[str, Any], prefix: tuple[str, ...], path: Path, lines: Mapping[tuple[str, ...], int],
    allowed: set[str], *, resolve: bool, environ: Mapping[str, str],
) -> None:
    _check_keys(table, prefix, path, lines, allowed)
    for raw_key, value in table.items():
        where = _where(path, lines, prefix, raw_key)
        key = normalise_key(raw_key)
        secret = key in SECRET_ENV
        if isinstance(value, str) and not _REFERENCE.match(value) and (secret or _URI_PASSWORD.search(value)):
            msg = (f"{where}: {raw_key} holds a secret in plain text; secrets are referenced, never stored: "
                   f"write {raw_key} = \"env:NAME\" or \"file:/run/secrets/NAME\"")
            raise UsageError(msg)
        if isinstance(value, list):
            value = [str(v) for v in value]
        config.settings[key] = _setting(key, value, f"file:{where}", secret=secret, resolve=resolve, environ=environ)


def _setting(
    key: str, value: Any, origin: str, *, secret: bool, resolve: bool, environ: Mapping[str, str] | None = None,
) -> Setting:
    if isinstance(value, str) and _REFERENCE.match(value):
        where = origin.removeprefix("file:").removeprefix("env:") + f": {key}"
        resolved: Any = None
        try:
            resolved = resolve_reference(value, where, environ)
        except UsageError:
            if resolve:
                raise
        return Setting(key, resolved, origin, secret=secret, reference=value)
    return Setting(key, value, origin, secret=secret)
