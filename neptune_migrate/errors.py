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
    INTERRUPTED = 130
    """Interrupted (Ctrl-C); what was done is kept and the same command resumes."""


class MigrateError(Exception):
    """Base of every error this tool raises on purpose. The message is one line for the user."""

    exit_code: ExitCode = ExitCode.PARTIAL
    shows_cause: bool = True
    """False when the message already says all the user needs (`one_line` then adds no cause)."""


class UsageError(MigrateError):
    """The user asked for something that cannot work as given."""

    exit_code = ExitCode.USAGE


class MissingDependencyError(UsageError):
    """An optional SDK is not installed."""

    shows_cause = False

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

CHAIN_LIMIT = 20
"""Exceptions followed in one chain (`__cause__`, else `__context__`)."""


def error_chain(exc: BaseException) -> list[BaseException]:
    """`exc`, then its cause (or else its context), and so on: no repeats, at most `CHAIN_LIMIT`."""
    chain: list[BaseException] = []
    current: BaseException | None = exc
    while current is not None and current not in chain and len(chain) < CHAIN_LIMIT:
        chain.append(current)
        nxt = current.__cause__
        if nxt is None and not current.__suppress_context__:
            nxt = current.__context__
        current = nxt
    return chain


def _describe(exc: BaseException) -> str:
    text = " ".join(str(exc).split())
    if isinstance(exc, MigrateError):
        return text or type(exc).__name__
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


def one_line(exc: BaseException, limit: int = 400) -> str:
    """One line for the user that always ends with the root cause (the innermost exception's own message).

    The outer message is shortened (never the cause) when the whole would exceed `limit`;
    `chain_text` gives every link in full for the JSON report.
    """
    chain = error_chain(exc)
    outer = _describe(chain[0])
    if len(chain) == 1 or not getattr(exc, "shows_cause", True):
        return outer if len(outer) <= limit else outer[: limit - 3] + "..."
    root = _describe(chain[-1])
    root_text = " ".join(str(chain[-1]).split())
    if root_text and root_text in outer:
        return outer if len(outer) <= limit else outer[: limit - 3] + "..."
    room = max(40, limit - len(root) - len(" (cause: )"))
    if len(outer) > room:
        outer = outer[: room - 3] + "..."
    return f"{outer} (cause: {root})"


def chain_text(exc: BaseException) -> list[str]:
    """Every exception of the chain, outermost first, each as `Type: full message` (for reports)."""
    return [f"{type(e).__name__}: {e}" for e in error_chain(exc)]


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
