"""The store's DuckDB connection: opening (schema version, migration), cursors, transactions, queries, export.

One DuckDB file holds every key and every small result; neuron values live in .npy blocks in the folder beside it
(``<file>.values/``), which only :mod:`neurolab.store.values` touches. All SQL of neurolab lives in this package.
"""

from __future__ import annotations

import atexit
import os
import re
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import duckdb
import pandas as pd
import pyarrow as pa

from ..errors import StoreError
from .migrations import migrate
from .schema import ACTIVATIONS_VIEW, SCHEMA_VERSION, TABLES, TABLES_V2, VIEWS

_STREAMED = re.compile(r"\b(neuron_values|activations)\b", re.IGNORECASE)


def default_store_path() -> Path:
    """``$NEUROLAB_STORE``, else ``neurolab.duckdb`` in the user cache directory (XDG)."""
    if os.environ.get("NEUROLAB_STORE"):
        return Path(os.environ["NEUROLAB_STORE"]).expanduser()
    cache = Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache"))
    return cache / "neurolab" / "neurolab.duckdb"


class StoreConnection:
    """One DuckDB file; one connection per process (opening costs tens of ms, a query on an open one ~1 ms)."""

    def __init__(self, path: str | Path | None = None, lock_timeout: float = 10.0) -> None:
        self.path = Path(path).expanduser() if path else default_store_path()
        self.values_dir = self.path.with_name(self.path.name + ".values")
        self.lock_timeout = lock_timeout
        self._con: duckdb.DuckDBPyConnection | None = None
        self._lock = threading.RLock()
        atexit.register(self.close)  # a connection left open at exit makes DuckDB's bindings report leaks

    def _connect(self) -> duckdb.DuckDBPyConnection:
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
        except OSError as error:
            raise StoreError(f"cannot create the store folder {self.path.parent}: {error}") from None
        deadline = time.monotonic() + self.lock_timeout
        while True:
            try:
                return duckdb.connect(str(self.path))
            except duckdb.IOException as error:
                if "lock" in str(error).lower() and time.monotonic() < deadline:
                    time.sleep(0.25)
                    continue
                if "lock" in str(error).lower():
                    raise StoreError(
                        f"the store {self.path} is in use by another process (DuckDB allows one writer). Stop it, "
                        "or give this run its own file with --store."
                    ) from None
                raise self._unreadable(error) from None
            except (duckdb.Error, RuntimeError) as error:
                raise self._unreadable(error) from None

    def _open(self) -> duckdb.DuckDBPyConnection:
        con = self._connect()
        try:
            version = schema_version(con)
            if version > SCHEMA_VERSION:
                raise StoreError(f"the store {self.path} was written by a newer neurolab (schema {version}, this "
                                 f"release reads up to {SCHEMA_VERSION}); upgrade neurolab or use another --store")
            if 0 < version < SCHEMA_VERSION:
                migrate(con, self.path, self.values_dir, version)
            else:
                con.execute(TABLES_V2)
                con.execute("INSERT INTO meta VALUES ('schema_version', ?) ON CONFLICT DO NOTHING",
                            [str(SCHEMA_VERSION)])
            con.execute(VIEWS)
        except StoreError:
            con.close()
            raise
        except duckdb.Error as error:
            con.close()
            raise self._unreadable(error) from None
        return con

    def _unreadable(self, error: Exception) -> StoreError:
        return StoreError(
            f"the store {self.path} cannot be opened as a DuckDB database ({str(error).splitlines()[0]}). "
            f"It was left untouched: move it aside (e.g. to {self.path.name}.bad) or pass another path with --store."
        )

    @property
    def schema_version(self) -> int:
        with self.cursor() as con:
            return schema_version(con)

    @contextmanager
    def cursor(self) -> Iterator[duckdb.DuckDBPyConnection]:
        """A fresh cursor on the shared database, closed afterwards, so a half-read result never blocks the next
        call; under the store's lock, so writes from several threads cannot interleave."""
        with self._lock:
            if self._con is None:
                self._con = self._open()
            cursor = self._con.cursor()
            try:
                yield cursor
            finally:
                cursor.close()

    @contextmanager
    def transaction(self, **relations: pd.DataFrame | pa.Table) -> Iterator[duckdb.DuckDBPyConnection]:
        """All-or-nothing writes, with ``relations`` registered as named views for ``INSERT ... SELECT``."""
        with self.cursor() as con:
            con.execute("BEGIN TRANSACTION")
            try:
                for name, relation in relations.items():
                    con.register(name, relation)
                yield con
                con.execute("COMMIT")
            except BaseException:
                con.execute("ROLLBACK")
                raise
            finally:
                for name in relations:
                    con.unregister(name)

    def close(self) -> None:
        with self._lock:
            if self._con is not None:
                self._con.close()
                self._con = None

    @contextmanager
    def _reading(self, sql: str) -> Iterator[duckdb.DuckDBPyConnection]:
        """A cursor on which ``neuron_values`` (streamed from the .npy blocks) and the ``activations`` view exist
        when ``sql`` names them."""
        with self.cursor() as con:
            streamed = bool(_STREAMED.search(sql))
            if streamed:
                con.register("neuron_values", self.value_batches())  # from ValueBlocks
                con.execute(ACTIVATIONS_VIEW)
            try:
                yield con
            finally:
                if streamed:
                    con.unregister("neuron_values")

    def query(self, sql: str, params: list | None = None) -> pd.DataFrame:
        """Any read-only SQL over the store (tables and views as documented in the README). ``neuron_values`` and
        ``activations`` are streamed from the value blocks: a query over them reads every stored value."""
        with self._reading(sql) as con:
            return con.execute(sql, params or []).df()

    def export(self, table_or_query: str, path: str | Path) -> Path:
        """Write a table (one of :data:`TABLES`) or a SELECT query to ``.parquet`` or ``.csv``."""
        path = Path(path)
        fmt = {".parquet": "PARQUET", ".csv": "CSV"}.get(path.suffix.lower())
        if fmt is None:
            raise StoreError(f"export to .parquet or .csv, not {path.suffix or 'no extension'}")
        if table_or_query not in TABLES and not table_or_query.lstrip().lower().startswith(("select", "with")):
            raise StoreError(f"export a table ({', '.join(TABLES)}) or a SELECT query")
        source = table_or_query if table_or_query in TABLES else f"({table_or_query})"
        with self._reading(table_or_query) as con:
            try:
                con.execute(f"COPY {source} TO '{path}' (FORMAT {fmt})")
            except duckdb.Error as error:
                raise StoreError(f"export failed: {str(error).splitlines()[0]}") from None
        return path

    def export_sweep_values(self, sweep_id: int, path: str | Path) -> Path:
        """One sweep's stored neuron values with their prompts (layer, neuron, op1, op2, answer, correct, k, kv)."""
        return self.export(f"SELECT layer, neuron, op1, op2, answer, correct, k, kv FROM activations WHERE sweep_id = "
                           f"{int(sweep_id)} ORDER BY layer, neuron, op1, op2", path)


def schema_version(con: duckdb.DuckDBPyConnection) -> int:
    """0 for an empty file, 1 for neurolab 0.1's layout (no ``meta`` table), else the recorded version."""
    tables = {row[0] for row in con.execute(
        "SELECT table_name FROM information_schema.tables WHERE table_schema = 'main'").fetchall()}
    if "meta" in tables:
        return int(con.execute("SELECT value FROM meta WHERE key = 'schema_version'").fetchone()[0])
    return 1 if "sweeps" in tables else 0
