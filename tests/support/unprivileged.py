"""Run a command as `nobody`, so that file permissions bite (root reads everything)."""

from __future__ import annotations

import os
import shutil


def unprivileged() -> list[str] | None:
    """The prefix that runs a command as uid/gid 65534, or None when this process cannot (not root,
    or no `setpriv`)."""
    if os.geteuid() != 0 or shutil.which("setpriv") is None:
        return None
    return ["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups", "--"]
