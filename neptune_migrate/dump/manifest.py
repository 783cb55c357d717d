"""The dump's manifest.json: format name and version, who wrote it, and which exports ran."""

from __future__ import annotations

import hashlib
import json
import re
import uuid
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from neptune_migrate import __version__
from neptune_migrate.dump.layout import DumpLayout, write_atomic
from neptune_migrate.dump.schema import FORMAT_NAME, FORMAT_VERSION
from neptune_migrate.errors import DumpFormatError, redact_obj


@dataclass
class Manifest:
    """Dump-level facts. Runs are not listed here: each run's `run.json` is its own commit."""

    format_version: str = FORMAT_VERSION
    created_at: str = field(default_factory=lambda: datetime.now(timezone.utc).isoformat())
    created_by: dict[str, str] = field(
        default_factory=lambda: {"tool": "neptune-migrate", "version": __version__}
    )
    exports: list[dict[str, Any]] = field(default_factory=list)
    extra: dict[str, Any] = field(default_factory=dict)
    """Keys written by a newer minor version; kept as they are when the manifest is rewritten."""
    dump_id: str | None = None
    """A random id given to the dump when its folder is created (absent in older dumps)."""

    @classmethod
    def new(cls) -> Manifest:
        """The manifest of a dump folder being created now (with a fresh `dump_id`)."""
        return cls(dump_id=uuid.uuid4().hex)

    @property
    def origin(self) -> str:
        """The dump's identity in destinations: `dump_id`, or for a dump written before ids
        existed one derived from its creation time (stable: never rewritten)."""
        if self.dump_id:
            return self.dump_id
        return "created-" + hashlib.sha256(self.created_at.encode()).hexdigest()[:32]

    def to_json(self) -> dict[str, Any]:
        return {
            **self.extra,
            "format": FORMAT_NAME,
            "format_version": self.format_version,
            **({"dump_id": self.dump_id} if self.dump_id else {}),
            "created_at": self.created_at,
            "created_by": self.created_by,
            "exports": self.exports,
        }


def check_version(version: object, where: Path) -> None:
    """Refuse a dump whose major version this tool does not know."""
    if not isinstance(version, str) or not re.fullmatch(r"\d+\.\d+", version):
        msg = f"{where}: format_version {version!r} is not MAJOR.MINOR"
        raise DumpFormatError(msg)
    major = version.split(".")[0]
    ours = FORMAT_VERSION.split(".")[0]
    if major != ours:
        msg = (
            f"{where}: dump format version {version} is not supported by neptune-migrate "
            f"{__version__} (it reads {ours}.x); use a neptune-migrate release that writes {major}.x"
        )
        raise DumpFormatError(msg)


def read_manifest(layout: DumpLayout) -> Manifest:
    """Read and validate manifest.json."""
    path = layout.manifest
    if not path.is_file():
        msg = f"{layout.root}: not a neptune-migrate dump (no manifest.json)"
        raise DumpFormatError(msg)
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        msg = f"{path}: unreadable manifest ({exc})"
        raise DumpFormatError(msg) from exc
    if not isinstance(data, dict) or data.get("format") != FORMAT_NAME:
        found = data.get("format") if isinstance(data, dict) else type(data).__name__
        msg = f"{path}: not a neptune-migrate manifest (format is {found!r})"
        raise DumpFormatError(msg)
    check_version(data.get("format_version"), path)
    return Manifest(
        format_version=data["format_version"],
        created_at=data.get("created_at", ""),
        created_by=data.get("created_by", {}),
        exports=list(data.get("exports", [])),
        extra={k: v for k, v in data.items()
               if k not in ("format", "format_version", "dump_id", "created_at", "created_by", "exports")},
        dump_id=str(data["dump_id"]) if isinstance(data.get("dump_id"), str) and data["dump_id"] else None,
    )


def write_manifest(layout: DumpLayout, manifest: Manifest) -> None:
    """Atomically replace manifest.json."""
    text = json.dumps(redact_obj(manifest.to_json()), indent=2, ensure_ascii=False) + "\n"
    write_atomic(layout.manifest, text.encode("utf-8"))
