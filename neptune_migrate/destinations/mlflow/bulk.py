"""The MLflow bulk path: float points written straight into the tracking database.

Everything MLflow owns besides points (experiments, runs, params, tags, artifacts) is still made
through MLflow's API by `destination.py`. Only the `metrics` rows and the `latest_metrics` rows
they imply are written here, with the same values MLflow's `log_batch` would store:

- NaN is stored as value 0 with `is_nan` true, +-inf as +-1.7976931348623157e308 (the caller
  clamps, as on the API path); exact duplicates (the table's primary key) are stored once;
- `latest_metrics` follows MLflow's own rule (`SqlAlchemyStore._update_latest_metrics_if_necessary`):
  a point replaces the latest one when its (step, timestamp, stored value) is strictly greater, so
  on a tie the point seen first stays.

One transaction per chunk: a crash mid-chunk leaves none of it (the run stays incomplete and the
pipeline discards and redoes it). Rows are built column-wise from the Arrow chunk (`Rows`), the
chunk's `latest_metrics` candidates by one sort (`latest_of`). SQLite: `executemany` of
`INSERT OR IGNORE` fed by `zip` over the columns (no PRAGMA is changed: the user's durability
settings and journal mode stay as they are). PostgreSQL (psycopg 3): `COPY metrics FROM STDIN
(FORMAT csv)` of a buffer Arrow writes in one call, in a savepoint; a chunk meeting a row the table
already holds goes through a temporary table and `INSERT ... ON CONFLICT DO NOTHING` instead; the
foreign key to `runs` is checked by one run lock per chunk where allowed
(`_lock_run_instead_of_row_checks`).

Safety: the path is used only on a database whose MLflow schema revision (`alembic_version`) is in
`TESTED_REVISIONS` and whose dialect is in `DIALECTS`; anything else falls back to the API path
(`--bulk auto`) or is refused (`--bulk always`). SQLAlchemy (which MLflow brings) is imported lazily.
"""

from __future__ import annotations

import itertools
import json
import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from neptune_migrate.destinations.mlflow import mapping as m
from neptune_migrate.errors import PermanentError, UsageError

BulkMode = Literal["never", "auto", "always"]
BULK_MODES: tuple[BulkMode, ...] = ("never", "auto", "always")
ReadMode = Literal["api", "sql"]

TESTED_REVISIONS: dict[str, str] = {
    "dc11669786a5": "mlflow 3.10-3.17",
}
"""MLflow schema revisions (`alembic_version.version_num`) the bulk path was tested on -> the MLflow
versions that create them. The `metrics`/`latest_metrics` columns and keys are the same in all."""
DIALECTS = ("sqlite", "postgresql")
"""Databases the bulk path was tested on (MySQL would work through multi-row INSERT IGNORE, but is
not in the tests yet: it falls back to the API path)."""
POINTS_PER_TRANSACTION = 65_536
"""Points per chunk handed to the bulk writer: one transaction each."""
_KEY_BATCH = 500

_COLUMNS = ("key", "value", "timestamp", "run_uuid", "step", "is_nan")


@dataclass(frozen=True, slots=True)
class Rows:
    """One chunk's metric rows as MLflow stores them, column-wise (NaN already sanitised): no
    Python object per point until a driver needs one (SQLite's `executemany`)."""

    keys: pa.Array
    """The metric key of every row (string)."""
    names: list[str]
    """The distinct keys, in order of first appearance; `codes` index into it."""
    codes: np.ndarray
    values: np.ndarray
    """float64, NaN stored as 0.0 (see `is_nan`), +-inf clamped to +-`FLOAT_MAX`."""
    timestamps: np.ndarray
    """int64 epoch ms."""
    steps: np.ndarray
    """int64."""
    is_nan: np.ndarray
    """bool."""

    def __len__(self) -> int:
        return len(self.codes)


def rows_of(chunk: pa.Table) -> Rows:
    """The chunk's float points as stored, column-wise: what `mapping.metric_columns` gives
    `log_batch` (nulls dropped, inf clamped, ms timestamps floored), then NaN -> (0.0, is_nan) as
    MLflow's `sanitize_metric_value` does."""
    if chunk.column("value").null_count:
        chunk = chunk.filter(pc.is_valid(chunk.column("value")))
    keys = chunk.column("key").combine_chunks()
    encoded = keys.dictionary_encode()
    values = chunk.column("value").to_numpy()
    if np.isinf(values).any():
        values = np.clip(values, -m.FLOAT_MAX, m.FLOAT_MAX)  # finite values and NaN pass unchanged
    nan = np.isnan(values)
    if nan.any():
        values = np.where(nan, 0.0, values)
    micros = pc.fill_null(pc.cast(chunk.column("timestamp"), pa.int64()), 0).to_numpy()
    steps = chunk.column("dest_step")
    if pa.types.is_integer(steps.type) and not steps.null_count:
        step_arr = np.asarray(steps.to_numpy(), dtype=np.int64)
    else:
        step_arr = np.array([int(s) for s in steps.to_pylist()], dtype=np.int64)
    return Rows(keys.cast(pa.string()), encoded.dictionary.to_pylist(),
                encoded.indices.to_numpy(zero_copy_only=False), np.ascontiguousarray(values, dtype=np.float64),
                np.floor_divide(micros, 1000), step_arr, nan)


def latest_of(rows: Rows) -> dict[str, tuple[int, int, float, bool]]:
    """Per key, the point MLflow keeps as latest among `rows`: the greatest (step, timestamp,
    stored value), the first one on a tie. -> key: (step, timestamp, value, is_nan).

    Column-wise: one stable lexicographic sort by (key, step, timestamp, value, -position); the
    last row of each key's run is its latest (ties: the smallest position, the first seen)."""
    if not len(rows):
        return {}
    position = np.arange(len(rows), dtype=np.int64)
    order = np.lexsort((-position, rows.values, rows.timestamps, rows.steps, rows.codes))
    codes = rows.codes[order]
    last = order[np.flatnonzero(np.r_[codes[1:] != codes[:-1], True])]
    return {rows.names[c]: (s, t, v, n) for c, s, t, v, n in zip(
        rows.codes[last].tolist(), rows.steps[last].tolist(), rows.timestamps[last].tolist(),
        rows.values[last].tolist(), rows.is_nan[last].tolist(), strict=True)}


def sqlalchemy_url(uri: str) -> str:
    """A database URI as SQLAlchemy should open it: plain `postgresql://` uses psycopg 3 when
    psycopg2 is absent (MLflow would pick psycopg2)."""
    import importlib.util

    if uri.startswith(("postgresql://", "postgres://")) and importlib.util.find_spec("psycopg2") is None:
        return "postgresql+psycopg://" + uri.partition("://")[2]
    return uri


def is_database_uri(uri: str) -> bool:
    scheme = uri.partition("://")[0].lower().partition("+")[0]
    return "://" in uri and scheme in ("sqlite", "postgresql", "postgres", "mysql", "mssql")


class BulkStore:
    """Writes and reads float points in one MLflow tracking database (an SQLAlchemy engine)."""

    def __init__(self, engine: Any, *, owned: bool) -> None:
        self.engine = engine
        self.dialect: str = engine.dialect.name
        self.driver: str = engine.dialect.driver
        self._owned = owned
        self._known_runs: set[str] = set()
        self._run_lock: bool | None = None
        self.fk_checks: str = "per row"
        """How `metrics.run_uuid -> runs` is enforced on PostgreSQL (the bulk notice and the
        benchmark say it): "per row" (the foreign key's own trigger) or "one run lock per chunk"."""

    @classmethod
    def open(cls, uri: str) -> BulkStore:
        from sqlalchemy import create_engine

        return cls(create_engine(sqlalchemy_url(uri)), owned=True)

    def close(self) -> None:
        if self._owned:
            self.engine.dispose()

    # -- safety -----------------------------------------------------------------------------

    def revision(self) -> str | None:
        """The store's `alembic_version`, None when the table is absent or empty."""
        from sqlalchemy import text
        from sqlalchemy.exc import SQLAlchemyError

        try:
            with self.engine.connect() as conn:
                row = conn.execute(text("SELECT version_num FROM alembic_version")).first()
        except SQLAlchemyError:
            return None
        return None if row is None else str(row[0])

    def refusal(self) -> str | None:
        """Why the bulk path must not write here (None: it may)."""
        if self.dialect not in DIALECTS:
            return f"the bulk path is not tested on {self.dialect} databases"
        rev = self.revision()
        if rev is None:
            return "the database holds no MLflow schema revision (alembic_version)"
        if rev not in TESTED_REVISIONS:
            known = ", ".join(f"{r} ({v})" for r, v in TESTED_REVISIONS.items())
            return f"MLflow schema revision {rev} is not one the bulk path was tested with ({known})"
        return None

    def check_run(self, conn: Any, run_id: str) -> None:
        """The run exists in this database (else `--mlflow-db` is not the tracking server's backend)."""
        if run_id in self._known_runs:
            return
        from sqlalchemy import text

        found = conn.execute(text("SELECT lifecycle_stage FROM runs WHERE run_uuid = :r"), {"r": run_id}).first()
        if found is None:
            msg = (f"MLflow run {run_id} is not in the bulk database: --mlflow-db must be the database "
                   "behind --tracking-uri")
            raise UsageError(msg)
        if found[0] != "active":  # MLflow's own log_batch refuses a deleted run the same way
            msg = f"MLflow run {run_id} is {found[0]}: points are not written into it"
            raise PermanentError(msg)
        self._known_runs.add(run_id)

    # -- writing ----------------------------------------------------------------------------

    def write(self, run_id: str, chunk: pa.Table) -> int:
        """Write one chunk of float points (columns as `write_series` gets them) and its
        `latest_metrics` in one transaction; returns the rows handed to the database."""
        rows = rows_of(chunk)
        if not len(rows):
            return 0
        with self.engine.begin() as conn:
            self.check_run(conn, run_id)
            raw = conn.connection.driver_connection
            if self.dialect == "postgresql" and self.driver == "psycopg":
                self._copy_pg(raw, run_id, rows)
                if self._run_lock:  # replica mode covered the metrics rows only: latest_metrics' triggers run
                    with raw.cursor() as cur:
                        cur.execute("SET LOCAL session_replication_role = origin")
            elif self.dialect == "sqlite":
                self._insert_sqlite(raw, run_id, rows)
            else:
                self._insert_multirow(raw, run_id, rows)
            self._update_latest(conn, run_id, latest_of(rows))
        return len(rows)

    def _insert_sqlite(self, raw: Any, run_id: str, rows: Rows) -> None:
        """`executemany` straight from the columns: `zip` builds each row's tuple in C, the keys
        are the chunk's few distinct strings repeated (numpy take), not one new str per point."""
        sql = "INSERT OR IGNORE INTO metrics (key, value, timestamp, run_uuid, step, is_nan) VALUES (?, ?, ?, ?, ?, ?)"
        keys = np.array(rows.names, dtype=object)[rows.codes].tolist()
        nan: Iterable[bool] = rows.is_nan.tolist() if rows.is_nan.any() else itertools.repeat(False)
        cur = raw.cursor()
        try:
            cur.executemany(sql, zip(keys, rows.values.tolist(), rows.timestamps.tolist(), itertools.repeat(run_id),
                                     rows.steps.tolist(), nan))
        finally:
            cur.close()

    def _copy_pg(self, raw: Any, run_id: str, rows: Rows) -> None:
        """`COPY metrics FROM STDIN (FORMAT csv)` of a buffer Arrow writes in one call (strings
        quoted, doubles in their shortest exact form), inside a savepoint; a chunk holding a row
        the table already has (an exact duplicate point, or a retried chunk whose commit got
        through) fails the COPY and goes again through a temporary table and
        `INSERT ... ON CONFLICT DO NOTHING`."""
        import psycopg

        data = _csv(run_id, rows)
        self._lock_run_instead_of_row_checks(raw, run_id)
        payload: Any = memoryview(data) if raw.info.encoding == "utf-8" else data.to_pybytes().decode("utf-8")
        cols = "(key, value, timestamp, run_uuid, step, is_nan)"
        with raw.cursor() as cur:
            cur.execute("SAVEPOINT neptune_migrate_copy")
            try:
                with cur.copy(f"COPY metrics {cols} FROM STDIN (FORMAT csv)") as copy:
                    copy.write(payload)
            except psycopg.errors.UniqueViolation:
                cur.execute("ROLLBACK TO SAVEPOINT neptune_migrate_copy")
            else:
                cur.execute("RELEASE SAVEPOINT neptune_migrate_copy")
                return
            cur.execute(
                "CREATE TEMP TABLE IF NOT EXISTS _neptune_migrate_metrics "
                "(key VARCHAR(250), value DOUBLE PRECISION, timestamp BIGINT, run_uuid VARCHAR(32), "
                "step BIGINT, is_nan BOOLEAN) ON COMMIT DELETE ROWS"
            )
            with cur.copy(f"COPY _neptune_migrate_metrics {cols} FROM STDIN (FORMAT csv)") as copy:
                copy.write(payload)
            cur.execute(
                f"INSERT INTO metrics {cols} SELECT key, value, timestamp, run_uuid, step, is_nan "
                "FROM _neptune_migrate_metrics ON CONFLICT DO NOTHING"
            )

    def _lock_run_instead_of_row_checks(self, raw: Any, run_id: str) -> None:
        """On PostgreSQL the foreign key `metrics.run_uuid -> runs` is a trigger that locks the
        run's row once per inserted point (FOR KEY SHARE): more than half of the server's work in a
        COPY. When the role may (superuser, or `GRANT SET ON PARAMETER session_replication_role`)
        and `metrics` has no trigger or rule of its own, the chunk's transaction takes that same
        lock once (`SELECT ... FOR KEY SHARE`) and sets `session_replication_role = replica` for
        itself only (`SET LOCAL`), which skips the per-row checks: the rows still reference a run
        that exists and cannot be deleted before they are committed. Otherwise the per-row checks
        run as usual. Decided on the first chunk, kept for the store."""
        import psycopg

        if self._run_lock is False:
            return
        with raw.cursor() as cur:
            if self._run_lock is None:
                cur.execute("SELECT (SELECT count(*) FROM pg_trigger WHERE tgrelid = 'metrics'::regclass "
                            "AND NOT tgisinternal) + (SELECT count(*) FROM pg_rewrite "
                            "WHERE ev_class = 'metrics'::regclass)")
                own = cur.fetchone()
                if own is None or own[0]:
                    self._run_lock = False
                    return
            cur.execute("SAVEPOINT neptune_migrate_role")
            try:
                cur.execute("SET LOCAL session_replication_role = replica")
            except psycopg.errors.InsufficientPrivilege:
                cur.execute("ROLLBACK TO SAVEPOINT neptune_migrate_role")
                self._run_lock = False
                return
            cur.execute("RELEASE SAVEPOINT neptune_migrate_role")
            cur.execute("SELECT 1 FROM runs WHERE run_uuid = %s FOR KEY SHARE", (run_id,))
            if cur.fetchone() is None:
                msg = f"MLflow run {run_id} is no longer in the bulk database"
                raise PermanentError(msg)
        self._run_lock = True
        self.fk_checks = "one run lock per chunk"

    def _insert_multirow(self, raw: Any, run_id: str, rows: Rows, per_statement: int = 1000) -> None:
        """Batched multi-row INSERT for other drivers (pyformat/format paramstyles)."""
        ignore = "INSERT IGNORE" if self.dialect == "mysql" else "INSERT"
        tail = " ON CONFLICT DO NOTHING" if self.dialect == "postgresql" else ""
        keys = np.array(rows.names, dtype=object)[rows.codes].tolist()
        data = list(zip(keys, rows.values.tolist(), rows.timestamps.tolist(), itertools.repeat(run_id),
                        rows.steps.tolist(), rows.is_nan.tolist()))
        cur = raw.cursor()
        try:
            for start in range(0, len(data), per_statement):
                part = data[start:start + per_statement]
                values = ", ".join(["(%s, %s, %s, %s, %s, %s)"] * len(part))
                flat = [x for row in part for x in row]
                cur.execute(f"{ignore} INTO metrics ({', '.join(_COLUMNS)}) VALUES {values}{tail}", flat)
        finally:
            cur.close()

    def _update_latest(self, conn: Any, run_id: str, best: dict[str, tuple[int, int, float, bool]]) -> None:
        from sqlalchemy import bindparam, text

        keys = sorted(best)
        lock = " FOR UPDATE" if self.dialect == "postgresql" else ""
        select = text("SELECT key, step, timestamp, value FROM latest_metrics "
                      f"WHERE run_uuid = :r AND key IN :keys ORDER BY key{lock}").bindparams(
                          bindparam("keys", expanding=True))
        current: dict[str, tuple[int, int, float]] = {}
        for i in range(0, len(keys), _KEY_BATCH):
            for k, s, t, v in conn.execute(select, {"r": run_id, "keys": keys[i:i + _KEY_BATCH]}):
                current[k] = (int(s), int(t if t is not None else 0), float(v))
        inserts = [{"k": k, "v": v, "t": t, "s": s, "n": n, "r": run_id}
                   for k, (s, t, v, n) in best.items() if k not in current]
        updates = [{"k": k, "v": v, "t": t, "s": s, "n": n, "r": run_id}
                   for k, (s, t, v, n) in best.items() if k in current and (s, t, v) > current[k]]
        if inserts:
            conn.execute(text("INSERT INTO latest_metrics (key, value, timestamp, step, is_nan, run_uuid) "
                              "VALUES (:k, :v, :t, :s, :n, :r)"), inserts)
        if updates:
            conn.execute(text("UPDATE latest_metrics SET value = :v, timestamp = :t, step = :s, is_nan = :n "
                              "WHERE run_uuid = :r AND key = :k"), updates)

    # -- reading ----------------------------------------------------------------------------

    def counts(self, run_id: str) -> dict[str, int]:
        """Points per metric key of a run."""
        from sqlalchemy import text

        with self.engine.connect() as conn:
            result = conn.execute(text("SELECT key, COUNT(*) FROM metrics WHERE run_uuid = :r GROUP BY key"),
                                  {"r": run_id})
            return {str(k): int(c) for k, c in result}

    def read_series(self, run_id: str, key: str) -> pa.Table:
        """A whole float series as `MlflowDestination.read_series` returns it (is_nan -> NaN)."""
        from sqlalchemy import text

        steps: list[int] = []
        stamps: list[int] = []
        values: list[float] = []
        with self.engine.connect() as conn:
            result = conn.execute(text("SELECT step, timestamp, value, is_nan FROM metrics "
                                       "WHERE run_uuid = :r AND key = :k"), {"r": run_id, "k": key})
            for s, t, v, n in result:
                steps.append(s)
                stamps.append(t)
                values.append(math.nan if n else v)
        return m.float_table(steps, stamps, values)

    def read_page(self, run_id: str, key: str, after: str | None, limit: int) -> tuple[pa.Table, str | None]:
        """One page of a float series in step order, keyset-paged on the metrics table's own key
        (step, timestamp, value, is_nan): no OFFSET rescans, memory of one page. The token is the
        page's last row (JSON); None after the last page."""
        from sqlalchemy import text

        params: dict[str, Any] = {"r": run_id, "k": key, "n": limit}
        after_sql = ""
        if after is not None:
            params["s"], params["t"], params["v"], params["isn"] = json.loads(after)
            after_sql = " AND (step, timestamp, value, is_nan) > (:s, :t, :v, :isn)"
        rows: list[tuple[int, int, float, bool]] = []
        with self.engine.connect() as conn:
            result = conn.execute(text("SELECT step, timestamp, value, is_nan FROM metrics WHERE run_uuid = :r "
                                       f"AND key = :k{after_sql} ORDER BY step, timestamp, value, is_nan LIMIT :n"),
                                  params)
            rows = [(int(st), int(ts), float(v), bool(n)) for st, ts, v, n in result]
        table = m.float_table([r[0] for r in rows], [r[1] for r in rows],
                              [math.nan if r[3] else r[2] for r in rows])
        token = json.dumps(list(rows[-1])) if len(rows) == limit else None
        return table, token

    def metric_rows(self, run_id: str) -> list[tuple[str, int, int, float, bool]]:
        """Every metrics row of a run, sorted (tests and benchmarks compare stores with it)."""
        from sqlalchemy import text

        with self.engine.connect() as conn:
            result = conn.execute(text("SELECT key, step, timestamp, value, is_nan FROM metrics WHERE run_uuid = :r"),
                                  {"r": run_id})
            return sorted((str(k), int(s), int(t), float(v), bool(n)) for k, s, t, v, n in result)


def _csv(run_id: str, rows: Rows) -> pa.Buffer:
    """The rows in CSV as PostgreSQL's `COPY (FORMAT csv)` reads them, written by Arrow in one call:
    strings always quoted (an empty key stays an empty string, not NULL), doubles in their
    shortest exact form, booleans as true/false."""
    import pyarrow.csv as pacsv

    table = pa.table({
        "key": rows.keys, "value": rows.values, "timestamp": rows.timestamps,
        "run_uuid": pa.repeat(run_id, len(rows)), "step": rows.steps, "is_nan": rows.is_nan,
    })
    sink = pa.BufferOutputStream()
    pacsv.write_csv(table, sink, pacsv.WriteOptions(include_header=False, quoting_style="needed"))
    return sink.getvalue()


def check_mode(bulk: str, read: str) -> tuple[BulkMode, ReadMode]:
    """Validate `--bulk` and `--read` (usage errors name the valid values)."""
    if bulk not in BULK_MODES:
        msg = f"--bulk {bulk!r}: expected one of never, auto, always"
        raise UsageError(msg)
    if read not in ("api", "sql"):
        msg = f"--read {read!r}: expected api or sql"
        raise UsageError(msg)
    return bulk, read  # type: ignore[return-value]


def refuse(reason: str) -> PermanentError:
    """`--bulk always` on a store the bulk path will not write to."""
    return PermanentError(f"--bulk always: {reason}")


__all__: Sequence[str] = ("BULK_MODES", "TESTED_REVISIONS", "BulkStore", "check_mode", "latest_of", "rows_of")
