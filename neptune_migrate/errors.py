"""The one exception tree and the one map from errors to exit codes."""

from __future__ import annotations

import re
from enum import IntEnum
from typing import Any


class ExitCode(IntEnum):
    """Process exit codes; listed in `--help` and in the README."""

    OK = 0
    """Everything done; verify found no mismatch."""
    PARTIAL = 1
    """Some runs failed, something was lost on the way, or verify found mismatches."""
    USAGE = 2
    """Bad command line, configuration or input that cannot be read at all."""
    UNREACHABLE = 3
    """A source or destination could not be reached."""
    BLOCKED = 4
    """A dry run found problems that would block the import."""


class MigrateError(Exception):
    """Base of every error this tool raises on purpose. The message is one line for the user."""

    exit_code: ExitCode = ExitCode.PARTIAL


class UsageError(MigrateError):
    """The user asked for something that cannot work as given."""

    exit_code = ExitCode.USAGE


class MissingDependencyError(UsageError):
    """An optional SDK is not installed."""

    def __init__(self, package: str, extra: str) -> None:
        """Build the one-line install hint."""
        super().__init__(
            f"{package} is not installed; install it with: pip install \"neptune-migrate[{extra}]\""
        )


class DumpFormatError(MigrateError):
    """A dump is missing, corrupt, or of a format version this tool does not know."""

    exit_code = ExitCode.USAGE


class SourceFormatError(MigrateError):
    """A Neptune source could not be recognised or parsed."""

    exit_code = ExitCode.USAGE


class UnreachableError(MigrateError):
    """A source or destination did not answer."""

    exit_code = ExitCode.UNREACHABLE


class LockTimeoutError(MigrateError):
    """Another neptune-migrate process held a lock (import into the same destination) too long."""

    exit_code = ExitCode.UNREACHABLE


class TransientError(MigrateError):
    """An error worth retrying (timeouts, resets, 429, 5xx)."""

    exit_code = ExitCode.UNREACHABLE


class PermanentError(MigrateError):
    """An error that retrying will not fix; it fails one run, not the whole import."""

    exit_code = ExitCode.PARTIAL


class ClaimLostError(MigrateError):
    """Another import (another dump or machine) claimed the same source key in the destination
    first; this import discarded its own copy and leaves the run to the other one. Not a failure."""

    exit_code = ExitCode.OK


_SECRET_ENV = ("WANDB_API_KEY", "NEPTUNE_API_TOKEN", "MLFLOW_TRACKING_PASSWORD", "MLFLOW_TRACKING_TOKEN",
               "DATABRICKS_TOKEN", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN", "AIM_ACCESS_TOKEN")

_USERINFO = re.compile(r"(\b[a-zA-Z][\w+.-]*://)[^/?#\s\"'<>]*@")
"""`scheme://user:password@` (the password may itself hold `@`): everything up to the last `@`."""
_SECRET_PARAM_WORDS = ("token", "key", "password", "passwd", "pwd", "secret", "sig", "signature",
                       "credential", "auth", "session")
_SECRET_PARAM = re.compile(
    r"((?:[?&;]|&amp;)[\w.\-]*(?:" + "|".join(_SECRET_PARAM_WORDS) + r")[\w.\-]*=)[^&;\s\"'<>#]+",
    re.IGNORECASE,
)
"""A query parameter whose name holds a secret word: `?token=`, `&access_token=`, `api_key=`,
`password=`, `X-Amz-Signature=`, `X-Amz-Credential=`, `sig=` (SAS), ... (also HTML-escaped `&amp;`)."""
_AUTH_HEADER = re.compile(r"(\bauthorization[\"']?\s*[:=]\s*[\"']?(?:bearer|basic|token)?\s*)[^\s\"',}]+",
                          re.IGNORECASE)


def redact(text: str) -> str:
    """Remove secrets from text bound for a log, report, ledger, dump or terminal.

    The one redaction function. Masked: credentials in URLs (`scheme://user:password@host` ->
    `scheme://***@host`), query parameters that carry secrets (`?token=...`, `access_token`,
    `api_key`, `password`, `secret`, `sig`, `X-Amz-Signature`, `X-Amz-Credential`, ... ->
    `?token=***`), `Authorization:` header values, and the values of the usual token variables
    (WANDB_API_KEY, NEPTUNE_API_TOKEN, MLFLOW_TRACKING_PASSWORD/TOKEN, ... -> `<NAME>`).
    """
    import os

    text = _USERINFO.sub(r"\1***@", text)
    text = _SECRET_PARAM.sub(r"\1***", text)
    text = _AUTH_HEADER.sub(r"\1***", text)
    for name in _SECRET_ENV:
        value = os.environ.get(name)
        if value and len(value) >= 6:
            text = text.replace(value, f"<{name}>")
    return text


def redact_obj(value: Any) -> Any:
    """`redact` applied to every string (keys included) of a JSON-like value, before it is written."""
    if isinstance(value, str):
        return redact(value)
    if isinstance(value, dict):
        return {redact_obj(k): redact_obj(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [redact_obj(v) for v in value]
    return value
