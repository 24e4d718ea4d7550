"""The one DuckDB store every result lives in, keyed by model fingerprint, operator, template and grid size.

Layout (documented for SQL users in the README): ``models``, ``sweeps`` (one row per model x operator x template
x max_op), ``prompts`` (one row per grid prompt: the model's answer), ``neuron_values`` (one row per layer,
neuron and prompt: K and KV) and ``sweep_progress`` (which (layer, chunk) pieces are complete). Each chunk's values
are appended neuron-major, so a neuron's rows of one chunk sit together and DuckDB's per-row-group min/max
statistics let a one-neuron read skip almost everything: tens of milliseconds for a 300x300 grid. (A FLOAT[] list
per neuron and chunk was tried first: DuckDB then decodes every list of a row group to return one, 10x slower.) Each chunk is written in one transaction together
with its progress marker, so a sweep killed midway resumes with no duplicate or missing rows.
"""

from __future__ import annotations

import atexit
import os
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import duckdb
import numpy as np
import pandas as pd
import pyarrow as pa

from ..errors import NeurolabError

SCHEMA = """
CREATE TABLE IF NOT EXISTS models (
    fingerprint VARCHAR PRIMARY KEY, name VARCHAR, source VARCHAR, family VARCHAR,
    n_layers INTEGER, d_mlp INTEGER, max_single_token INTEGER, registered TIMESTAMP DEFAULT current_timestamp);
CREATE SEQUENCE IF NOT EXISTS sweep_ids START 1;
CREATE TABLE IF NOT EXISTS sweeps (
    sweep_id INTEGER PRIMARY KEY DEFAULT nextval('sweep_ids'), fingerprint VARCHAR NOT NULL, op VARCHAR NOT NULL,
    template VARCHAR NOT NULL, max_op INTEGER NOT NULL, n_prompts INTEGER NOT NULL, chunk_size INTEGER NOT NULL,
    op1_from INTEGER NOT NULL, created TIMESTAMP DEFAULT current_timestamp,
    UNIQUE (fingerprint, op, template, max_op));
CREATE TABLE IF NOT EXISTS prompts (
    sweep_id INTEGER, idx INTEGER, op1 INTEGER, op2 INTEGER, answer INTEGER, prompt VARCHAR,
    top1 VARCHAR, top1_prob FLOAT, answer_prob FLOAT, correct BOOLEAN, PRIMARY KEY (sweep_id, idx));
CREATE TABLE IF NOT EXISTS neuron_values (
    sweep_id INTEGER, layer INTEGER, neuron INTEGER, idx INTEGER, k FLOAT, kv FLOAT);
CREATE TABLE IF NOT EXISTS sweep_progress (
    sweep_id INTEGER, layer INTEGER, chunk INTEGER, PRIMARY KEY (sweep_id, layer, chunk));
CREATE TABLE IF NOT EXISTS importance (
    sweep_id INTEGER, method VARCHAR, n_prompts INTEGER, seed INTEGER, layer INTEGER, neuron INTEGER,
    mean DOUBLE, std DOUBLE, score DOUBLE, rank INTEGER,
    PRIMARY KEY (sweep_id, method, n_prompts, seed, layer, neuron));
CREATE TABLE IF NOT EXISTS heuristic_scores (
    sweep_id INTEGER, maps VARCHAR, top_n INTEGER, threshold DOUBLE, layer INTEGER, neuron INTEGER,
    importance_rank INTEGER, heuristic VARCHAR, family VARCHAR, grp VARCHAR, direct BOOLEAN, params VARCHAR,
    score DOUBLE, k INTEGER, base_rate DOUBLE, lift DOUBLE, side VARCHAR, matched BOOLEAN);
CREATE TABLE IF NOT EXISTS classification_runs (
    sweep_id INTEGER, maps VARCHAR, top_n INTEGER, threshold DOUBLE, layer INTEGER,
    created TIMESTAMP DEFAULT current_timestamp, PRIMARY KEY (sweep_id, maps, top_n, threshold, layer));
CREATE OR REPLACE VIEW neuron_heuristics AS
    SELECT s.fingerprint, s.op, s.template, s.max_op, h.* EXCLUDE (sweep_id)
    FROM heuristic_scores h JOIN sweeps s USING (sweep_id);
CREATE OR REPLACE VIEW activations AS
    SELECT s.fingerprint, s.op, s.template, s.max_op, v.layer, v.neuron, p.idx, p.op1, p.op2, p.answer, p.correct,
           v.k, v.kv
    FROM neuron_values v
    JOIN sweeps s USING (sweep_id)
    JOIN prompts p ON p.sweep_id = v.sweep_id AND p.idx = v.idx;
"""

TABLES = ("models", "sweeps", "prompts", "neuron_values", "sweep_progress", "importance", "heuristic_scores",
          "classification_runs", "activations", "neuron_heuristics")


class StoreError(NeurolabError):
    """The store file cannot be used (corrupt, locked by another process, unwritable); nothing was changed."""


def default_store_path() -> Path:
    """``$NEUROLAB_STORE``, else ``neurolab.duckdb`` in the user cache directory (XDG)."""
    if os.environ.get("NEUROLAB_STORE"):
        return Path(os.environ["NEUROLAB_STORE"]).expanduser()
    cache = Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache"))
    return cache / "neurolab" / "neurolab.duckdb"


@dataclass(frozen=True)
class SweepKey:
    """What a sweep's results are keyed by, so different models, operators or templates never mix."""

    fingerprint: str
    op: str
    template: str
    max_op: int


class Store:
    """One DuckDB file; one connection per process (opening costs tens of ms, a query on an open one ~1 ms)."""

    def __init__(self, path: str | Path | None = None, lock_timeout: float = 10.0) -> None:
        self.path = Path(path).expanduser() if path else default_store_path()
        self.lock_timeout = lock_timeout
        self._con: duckdb.DuckDBPyConnection | None = None
        self._lock = threading.RLock()
        atexit.register(self.close)  # a connection left open at exit makes DuckDB's bindings report leaks

    # --- connection ----------------------------------------------------------------------------------------------

    def _open(self) -> duckdb.DuckDBPyConnection:
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
        except OSError as error:
            raise StoreError(f"cannot create the store folder {self.path.parent}: {error}") from None
        deadline = time.monotonic() + self.lock_timeout
        while True:
            try:
                con = duckdb.connect(str(self.path))
                break
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
        try:
            con.execute(SCHEMA)
        except duckdb.Error as error:
            con.close()
            raise self._unreadable(error) from None
        return con

    def _unreadable(self, error: Exception) -> StoreError:
        return StoreError(
            f"the store {self.path} cannot be opened as a DuckDB database ({str(error).splitlines()[0]}). "
            f"It was left untouched: move it aside (e.g. to {self.path.name}.bad) or pass another path with --store."
        )

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

    # --- writes --------------------------------------------------------------------------------------------------

    def register_model(self, fingerprint: str, name: str, source: str, family: str, n_layers: int, d_mlp: int,
                       max_single_token: int) -> None:
        with self.cursor() as con:
            con.execute(
                "INSERT INTO models (fingerprint, name, source, family, n_layers, d_mlp, max_single_token) "
                "VALUES (?, ?, ?, ?, ?, ?, ?) ON CONFLICT DO NOTHING",
                [fingerprint, name, source, family, n_layers, d_mlp, max_single_token],
            )

    def sweep_id(self, key: SweepKey, n_prompts: int, chunk_size: int, op1_from: int = 0,
                 create: bool = True) -> int | None:
        """The id of the sweep with this key; created (with its chunking fixed for good) when asked and absent."""
        with self.cursor() as con:
            row = con.execute(
                "SELECT sweep_id, n_prompts FROM sweeps WHERE fingerprint=? AND op=? AND template=? AND max_op=?",
                [key.fingerprint, key.op, key.template, key.max_op],
            ).fetchone()
            if row is not None:
                if row[1] != n_prompts:
                    raise StoreError(f"sweep {row[0]} in {self.path} has {row[1]} prompts, expected {n_prompts}")
                return row[0]
            if not create:
                return None
            return con.execute(
                "INSERT INTO sweeps (fingerprint, op, template, max_op, n_prompts, chunk_size, op1_from) "
                "VALUES (?, ?, ?, ?, ?, ?, ?) RETURNING sweep_id",
                [key.fingerprint, key.op, key.template, key.max_op, n_prompts, chunk_size, op1_from],
            ).fetchone()[0]

    def write_chunk(self, sweep_id: int, chunk: int, prompts: pd.DataFrame,
                    maps: dict[int, tuple[np.ndarray, np.ndarray]]) -> None:
        """One chunk in one transaction: its prompt rows (once), per layer its K/KV values and progress marker.

        ``maps[layer] = (k, kv)``, each ``[n_prompts_in_chunk, d_mlp]``, rows in prompt order from ``prompts.idx``.
        """
        idx = prompts["idx"].to_numpy(np.int32)
        tables = [_values_table(sweep_id, layer, idx, k, kv) for layer, (k, kv) in maps.items()]
        progress = pd.DataFrame({"sweep_id": sweep_id, "layer": list(maps), "chunk": chunk})
        rows = prompts.assign(sweep_id=sweep_id)[
            ["sweep_id", "idx", "op1", "op2", "answer", "prompt", "top1", "top1_prob", "answer_prob", "correct"]
        ]
        maps_table = pa.concat_tables(tables)
        with self.transaction(chunk_prompts=rows, chunk_maps=maps_table, chunk_progress=progress) as con:
            con.execute("INSERT INTO prompts SELECT * FROM chunk_prompts ON CONFLICT DO NOTHING")
            con.execute("INSERT INTO neuron_values SELECT * FROM chunk_maps")
            con.execute("INSERT INTO sweep_progress SELECT * FROM chunk_progress")

    def write_importance(self, sweep_id: int, n_prompts: int, seed: int, frame: pd.DataFrame) -> None:
        """Replace one importance run (``frame``: method, layer, neuron, mean, std, score, rank)."""
        rows = frame.assign(sweep_id=sweep_id, n_prompts=n_prompts, seed=seed)[
            ["sweep_id", "method", "n_prompts", "seed", "layer", "neuron", "mean", "std", "score", "rank"]]
        methods = sorted(set(rows["method"]))
        layers = sorted(set(int(x) for x in rows["layer"]))
        with self.transaction(importance_rows=rows) as con:
            con.execute(
                f"DELETE FROM importance WHERE sweep_id=? AND n_prompts=? AND seed=? AND method IN "
                f"({','.join('?' * len(methods))}) AND layer IN ({','.join(map(str, layers))})",
                [sweep_id, n_prompts, seed, *methods])
            con.execute("INSERT INTO importance SELECT * FROM importance_rows")

    def write_classification(self, sweep_id: int, maps: str, top_n: int, threshold: float, layer: int,
                             frame: pd.DataFrame) -> None:
        """Replace one layer's heuristic scores of one classification run, and mark the run complete."""
        columns = ["layer", "neuron", "importance_rank", "heuristic", "family", "grp", "direct", "params", "score",
                   "k", "base_rate", "lift", "side", "matched"]
        rows = frame.rename(columns={"group": "grp"}).assign(sweep_id=sweep_id, maps=maps, top_n=top_n,
                                                              threshold=threshold, layer=layer)
        rows = rows[["sweep_id", "maps", "top_n", "threshold", *columns]]
        key = [sweep_id, maps, top_n, threshold, layer]
        where = "sweep_id=? AND maps=? AND top_n=? AND threshold=? AND layer=?"
        with self.transaction(score_rows=rows) as con:
            con.execute(f"DELETE FROM heuristic_scores WHERE {where}", key)
            con.execute(f"DELETE FROM classification_runs WHERE {where}", key)
            con.execute("INSERT INTO heuristic_scores SELECT * FROM score_rows")
            con.execute("INSERT INTO classification_runs (sweep_id, maps, top_n, threshold, layer) "
                        "VALUES (?, ?, ?, ?, ?)", key)

    # --- reads ---------------------------------------------------------------------------------------------------

    def importance(self, sweep_id: int, method: str, n_prompts: int, seed: int) -> pd.DataFrame:
        """A stored importance run (empty when absent)."""
        with self.cursor() as con:
            return con.execute(
                "SELECT * EXCLUDE (sweep_id) FROM importance WHERE sweep_id=? AND method=? AND n_prompts=? "
                "AND seed=? ORDER BY layer, neuron", [sweep_id, method, n_prompts, seed]).df()

    def classified_layers(self, sweep_id: int, maps: str, top_n: int, threshold: float) -> list[int]:
        with self.cursor() as con:
            rows = con.execute("SELECT layer FROM classification_runs WHERE sweep_id=? AND maps=? AND top_n=? "
                               "AND threshold=? ORDER BY layer", [sweep_id, maps, top_n, threshold]).fetchall()
        return [r[0] for r in rows]

    def query(self, sql: str, params: list | None = None) -> pd.DataFrame:
        """Any read-only SQL over the store (tables and views as documented in the README)."""
        with self.cursor() as con:
            return con.execute(sql, params or []).df()

    def layer_maps(self, sweep_id: int, layer: int, neurons: list[int]) -> tuple[np.ndarray, np.ndarray]:
        """K and KV maps of several neurons of one layer in one query: ``[len(neurons), n_prompts]`` each."""
        n_prompts = int(self.sweep_info(sweep_id)["n_prompts"])
        k = np.full((len(neurons), n_prompts), np.nan, np.float32)
        kv = k.copy()
        if not neurons:
            return k, kv
        with self.cursor() as con:
            got = con.sql(
                f"SELECT neuron, idx, k, kv FROM neuron_values WHERE sweep_id={int(sweep_id)} AND layer={int(layer)} "
                f"AND neuron IN ({','.join(str(int(n)) for n in neurons)})").fetchnumpy()
        row = {int(n): i for i, n in enumerate(neurons)}
        rows = np.array([row[int(n)] for n in got["neuron"]], dtype=np.int64)
        k[rows, got["idx"]], kv[rows, got["idx"]] = got["k"], got["kv"]
        if np.isnan(k).any():
            raise StoreError(f"layer {layer} of sweep {sweep_id} is not fully stored for the requested neurons")
        return k, kv

    def done(self, sweep_id: int) -> set[tuple[int, int]]:
        """The completed (layer, chunk) pieces of a sweep."""
        with self.cursor() as con:
            rows = con.execute("SELECT layer, chunk FROM sweep_progress WHERE sweep_id=?", [sweep_id]).fetchall()
        return {(layer, chunk) for layer, chunk in rows}

    def sweeps(self, fingerprint: str | None = None) -> pd.DataFrame:
        """Every sweep (optionally of one model) with ``complete_layers``: the layers whose every chunk is stored."""
        query = """
            WITH per_layer AS (SELECT sweep_id, layer, count(*) AS chunks FROM sweep_progress GROUP BY ALL)
            SELECT s.*, coalesce(list(l.layer ORDER BY l.layer) FILTER (
                       WHERE l.chunks = (s.n_prompts + s.chunk_size - 1) // s.chunk_size), []) AS complete_layers
            FROM sweeps s LEFT JOIN per_layer l USING (sweep_id)
            WHERE ?::VARCHAR IS NULL OR s.fingerprint = ?
            GROUP BY ALL ORDER BY s.sweep_id"""
        with self.cursor() as con:
            return con.execute(query, [fingerprint, fingerprint]).df()

    def sweep_info(self, sweep_id: int) -> dict:
        """One sweep's row (key, size, chunking, ``complete_layers``); a StoreError if there is none."""
        frame = self.sweeps()
        row = frame[frame["sweep_id"] == sweep_id]
        if row.empty:
            raise StoreError(f"no sweep {sweep_id} in {self.path}")
        info = row.iloc[0].to_dict()
        info["complete_layers"] = [int(x) for x in info["complete_layers"]]
        return info

    def prompts(self, sweep_id: int) -> pd.DataFrame:
        """Every stored prompt row of a sweep, in grid order."""
        with self.cursor() as con:
            return con.execute("SELECT * EXCLUDE (sweep_id) FROM prompts WHERE sweep_id=? ORDER BY idx",
                               [sweep_id]).df()

    def neuron_map(self, sweep_id: int, layer: int, neuron: int) -> tuple[np.ndarray, np.ndarray]:
        """One neuron's K and KV values over the whole grid, in prompt order (``[n_prompts]`` each; empty when the
        neuron is not stored)."""
        with self.cursor() as con:
            got = con.sql(
                f"SELECT idx, k, kv FROM neuron_values WHERE sweep_id={int(sweep_id)} AND layer={int(layer)} "
                f"AND neuron={int(neuron)}").fetchnumpy()
        n = len(got["idx"])
        k, kv = np.empty(n, np.float32), np.empty(n, np.float32)
        k[got["idx"]], kv[got["idx"]] = got["k"], got["kv"]  # scatter into grid order, whatever the scan order
        return k, kv

    def layer_summary(self, sweep_id: int, layer: int) -> pd.DataFrame:
        """Per neuron of a layer: mean, max and standard deviation of K over the grid (for picking neurons)."""
        with self.cursor() as con:
            return con.execute(
                """SELECT neuron, avg(k) AS mean_k, max(k) AS max_k, min(k) AS min_k, stddev_pop(k) AS std_k
                   FROM neuron_values WHERE sweep_id=? AND layer=? GROUP BY neuron ORDER BY neuron""",
                [sweep_id, layer],
            ).df()

    def export(self, table_or_query: str, path: str | Path) -> Path:
        """Write a table (one of :data:`TABLES`) or a SELECT query to ``.parquet`` or ``.csv``."""
        path = Path(path)
        fmt = {".parquet": "PARQUET", ".csv": "CSV"}.get(path.suffix.lower())
        if fmt is None:
            raise StoreError(f"export to .parquet or .csv, not {path.suffix or 'no extension'}")
        source = table_or_query if table_or_query in TABLES else f"({table_or_query})"
        if table_or_query not in TABLES and not table_or_query.lstrip().lower().startswith(("select", "with")):
            raise StoreError(f"export a table ({', '.join(TABLES)}) or a SELECT query")
        with self.cursor() as con:
            con.execute(f"COPY {source} TO '{path}' (FORMAT {fmt})")
        return path


def _values_table(sweep_id: int, layer: int, idx: np.ndarray, k: np.ndarray, kv: np.ndarray) -> pa.Table:
    """Long rows, neuron-major: all of neuron 0's prompts of the chunk, then neuron 1's ... (see the module doc)."""
    n_prompts, d_mlp = k.shape
    size = n_prompts * d_mlp
    return pa.table({
        "sweep_id": pa.array(np.full(size, sweep_id, np.int32)),
        "layer": pa.array(np.full(size, layer, np.int32)),
        "neuron": pa.array(np.repeat(np.arange(d_mlp, dtype=np.int32), n_prompts)),
        "idx": pa.array(np.tile(idx, d_mlp)),
        "k": pa.array(np.ascontiguousarray(k.T, np.float32).ravel()),
        "kv": pa.array(np.ascontiguousarray(kv.T, np.float32).ravel()),
    })
