"""pytest fixtures for tests that run the real neptune 1.x client against the fake 2.x server.

Import both into a test module: `from tests.support.fake_neptune.v2_fixtures import insecure_oauth, server`.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.support.fake_neptune.v2 import FakeNeptune2


@pytest.fixture(autouse=True)
def insecure_oauth(monkeypatch: pytest.MonkeyPatch) -> None:
    """The fake speaks plain http on 127.0.0.1: oauthlib refuses that unless told (tests only). No token
    from the environment: each test gives the fake's own."""
    monkeypatch.setenv("OAUTHLIB_INSECURE_TRANSPORT", "1")
    monkeypatch.delenv("NEPTUNE_API_TOKEN", raising=False)


@pytest.fixture
def server() -> Iterator[FakeNeptune2]:
    """A fake 2.x server on 127.0.0.1, stopped after the test."""
    fake = FakeNeptune2().start()
    try:
        yield fake
    finally:
        fake.stop()
