"""pipeline/run.py: the --verify choice, the deterministic run sample, the default dump path."""

from __future__ import annotations

from pathlib import Path

import pytest

from neptune_migrate.dump.writer import DumpWriter
from neptune_migrate.errors import UsageError
from neptune_migrate.pipeline.run import (
    SampledReader,
    VerifyMode,
    default_dump,
    in_sample,
    sample_point,
    sample_size,
)


def test_verify_mode_parse() -> None:
    assert VerifyMode.parse("full") == VerifyMode("full", 1.0)
    assert VerifyMode.parse("none").kind == "none"
    assert VerifyMode.parse("sample:0.1") == VerifyMode("sample", 0.1)
    assert str(VerifyMode.parse("SAMPLE:0.25")) == "sample:0.25"
    for bad in ("sample:0", "sample:1.5", "sample:x", "half", "sample"):
        with pytest.raises(UsageError, match="expected full, none or sample:FRACTION"):
            VerifyMode.parse(bad)


def test_sample_is_a_stable_hash_of_the_key() -> None:
    # sha256("ws/proj/RUN-1")[:8] as a fraction of 2**64: the same on every machine and every run
    assert sample_point("ws/proj/RUN-1") == pytest.approx(int("2c5adf476932385f", 16) / 2**64, rel=1e-12)
    keys = [f"ws/proj/RUN-{i}" for i in range(20_000)]
    tenth = [k for k in keys if in_sample(k, 0.1)]
    assert 0.09 < len(tenth) / len(keys) < 0.11
    assert set(tenth) <= {k for k in keys if in_sample(k, 0.3)}  # a larger sample holds the smaller
    assert tenth == [k for k in keys if in_sample(k, 0.1)]
    assert all(in_sample(k, 1.0) for k in keys[:10])
    assert sample_size(keys[:3], 1e-9) == 1 and sample_size([], 0.5) == 0


def _dump(root: Path, n: int) -> Path:
    from tests.factories import key, make_record

    with DumpWriter(root) as dump:
        for i in range(n):
            k = key(f"R-{i}")
            with dump.begin_run(k) as run:
                run.commit(make_record(k))
    return root


def test_default_dump_is_beside_the_source(tmp_path: Path) -> None:
    src = tmp_path / "exports" / "data"
    src.mkdir(parents=True)
    assert default_dump(src) == tmp_path / "exports" / "data.neptune-migrate-dump"


def test_sampled_reader_yields_the_sample_and_never_nothing(tmp_path: Path) -> None:
    root = _dump(tmp_path / "dump", 5)
    keys = sorted(str(r.key) for r in SampledReader(root, 1.0).scan())  # type: ignore[union-attr]
    assert len(keys) == 5
    reader = SampledReader(root, 1e-9)
    one = list(reader.scan())
    assert len(one) == 1 and reader.left_out == 4
    assert str(one[0].key) == min(keys, key=sample_point)  # type: ignore[union-attr]
    half = SampledReader(root, 0.5)
    chosen = [str(r.key) for r in half.scan()]  # type: ignore[union-attr]
    expected = [k for k in keys if in_sample(k, 0.5)] or [min(keys, key=sample_point)]
    assert sorted(chosen) == sorted(expected) and half.left_out == 5 - len(chosen)
