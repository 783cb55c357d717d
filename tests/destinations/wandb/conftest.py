"""W&B tests run the real SDK in offline mode only: no network, no user config, no git probing."""

from __future__ import annotations

from pathlib import Path

import pytest

pytest.importorskip("wandb")


@pytest.fixture(autouse=True)
def _offline_wandb(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("WANDB_MODE", "offline")
    monkeypatch.setenv("WANDB_SILENT", "true")
    monkeypatch.setenv("WANDB_DISABLE_GIT", "true")
    monkeypatch.setenv("WANDB_DISABLE_CODE", "true")
    monkeypatch.setenv("WANDB_CONSOLE", "off")
    monkeypatch.setenv("WANDB_CONFIG_DIR", str(tmp_path / "_wandb_config"))
    monkeypatch.setenv("WANDB_CACHE_DIR", str(tmp_path / "_wandb_cache"))
    monkeypatch.setenv("WANDB_DATA_DIR", str(tmp_path / "_wandb_data"))
    monkeypatch.delenv("WANDB_API_KEY", raising=False)
    monkeypatch.delenv("WANDB_BASE_URL", raising=False)
