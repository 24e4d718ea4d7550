"""Migrating a store written by an earlier release, in place: a backup copy first, then one transaction.

v1 -> v2: model fingerprints gain the dtype (v1 always ran float32, and the new fingerprint is a pure function of
the old one and the dtype, so migrated results stay cache hits); sweeps gain the intervention key (``none``);
classifications gain the importance run they used (the sweep's only attribution run; NULL when ambiguous) and
rules version 1 (neurolab 0.1's classifier: a classification with today's rules is computed anew); importance runs
become ``attribution-v1`` (0.1 drew its prompts by another rule, so today's runs are computed anew); neuron
values move from long DuckDB rows to .npy blocks, kept in float32 with their stored KV so nothing is lost.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import duckdb
import numpy as np
import pandas as pd

from ..errors import StoreError
from ..models.fingerprints import model_fingerprint
from .schema import SCHEMA_VERSION, TABLES_V2

RENAMED_V1 = ("models", "sweeps", "heuristic_scores", "classification_runs")


def backup_path(path: Path, version: int) -> Path:
    candidate, n = path.with_name(f"{path.name}.v{version}.bak"), 1
    while candidate.exists():
        candidate, n = path.with_name(f"{path.name}.v{version}.bak{n}"), n + 1
    return candidate


def migrate(con: duckdb.DuckDBPyConnection, path: Path, values_dir: Path, version: int) -> None:
    """Bring a store from ``version`` to :data:`SCHEMA_VERSION`; the untouched original is kept as a backup."""
    if version != 1:
        raise StoreError(f"no migration from schema {version} to {SCHEMA_VERSION}")
    con.execute("CHECKPOINT")  # the file alone now holds everything: copy it
    backup = backup_path(path, version)
    shutil.copy2(path, backup)
    written: list[Path] = []
    try:
        blocks, progress = _write_blocks(con, values_dir, written)
        _migrate_tables(con, blocks, progress, backup)
    except BaseException as error:
        for file in written:
            file.unlink(missing_ok=True)
        if isinstance(error, duckdb.Error):
            raise StoreError(f"migrating the store {path} from schema 1 failed ({str(error).splitlines()[0]}); it "
                             f"was rolled back, and a copy of the original is at {backup}") from None
        raise


def _write_blocks(con: duckdb.DuckDBPyConnection, values_dir: Path,
                  written: list[Path]) -> tuple[pd.DataFrame, pd.DataFrame]:
    """One float32 block (K and stored KV) per (sweep, layer) of ``neuron_values``, with its completed chunks."""
    sweeps = con.execute("SELECT sweep_id, n_prompts FROM sweeps").fetchall()
    rows, progress = [], []
    for sweep_id, n_prompts in sweeps:
        layers = [r[0] for r in con.execute("SELECT DISTINCT layer FROM sweep_progress WHERE sweep_id = ? "
                                            "ORDER BY layer", [sweep_id]).fetchall()]
        for layer in layers:
            got = con.sql(f"SELECT neuron, idx, k, kv FROM neuron_values WHERE sweep_id = {int(sweep_id)} "
                          f"AND layer = {int(layer)}").fetchnumpy()
            neurons = np.unique(got["neuron"])
            row = np.searchsorted(neurons, got["neuron"])
            block_id = len(rows) + 1
            files = {}
            for column in ("k", "kv"):
                values = np.zeros((len(neurons), n_prompts), np.float32)
                values[row, got["idx"]] = got[column]
                files[column] = f"sweep-{sweep_id}/L{layer}-b{block_id}.{column}.npy"
                target = values_dir / files[column]
                target.parent.mkdir(parents=True, exist_ok=True)
                np.save(target, values)
                written.append(target)
            rows.append({"block_id": block_id, "sweep_id": sweep_id, "layer": layer,
                         "neurons": neurons.astype(np.int32).tolist(), "k_file": files["k"], "kv_file": files["kv"]})
            chunks = con.execute("SELECT chunk FROM sweep_progress WHERE sweep_id = ? AND layer = ?",
                                 [sweep_id, layer]).fetchall()
            progress.extend({"block_id": block_id, "chunk": c[0]} for c in chunks)
    blocks = pd.DataFrame(rows, columns=["block_id", "sweep_id", "layer", "neurons", "k_file", "kv_file"])
    return blocks, pd.DataFrame(progress, columns=["block_id", "chunk"], dtype="int64")


def _migrate_tables(con: duckdb.DuckDBPyConnection, blocks: pd.DataFrame, progress: pd.DataFrame,
                    backup: Path) -> None:
    fingerprints = [r[0] for r in con.execute(
        "SELECT fingerprint FROM models UNION SELECT fingerprint FROM sweeps").fetchall()]
    fp_map = pd.DataFrame({"old": fingerprints, "new": [model_fingerprint(f, "float32") for f in fingerprints]})
    runs = con.execute("SELECT sweep_id, any_value(n_prompts) AS n_prompts, any_value(seed) AS seed FROM importance "
                       "WHERE method = 'attribution' GROUP BY sweep_id HAVING count(DISTINCT (n_prompts, seed)) = 1"
                       ).df()
    con.execute("BEGIN TRANSACTION")
    try:
        for name, frame in (("fp_map", fp_map), ("run_map", runs), ("new_blocks", blocks),
                            ("new_progress", progress)):
            con.register(name, frame)
        con.execute("DROP VIEW IF EXISTS activations; DROP VIEW IF EXISTS neuron_heuristics;")
        for table in RENAMED_V1:
            con.execute(f"ALTER TABLE {table} RENAME TO {table}_v1")
        con.execute(f"CREATE SEQUENCE block_ids START {len(blocks) + 1}")
        con.execute(TABLES_V2)
        con.execute("""
            INSERT INTO models SELECT m.new, o.fingerprint, 'float32', NULL, o.name, o.source, o.family, o.n_layers,
                   o.d_mlp, o.max_single_token, o.registered FROM models_v1 o JOIN fp_map m ON o.fingerprint = m.old;
            INSERT INTO sweeps SELECT o.sweep_id, m.new, o.op, o.template, o.max_op, o.op1_from, 'none', o.n_prompts,
                   o.chunk_size, o.created FROM sweeps_v1 o JOIN fp_map m ON o.fingerprint = m.old;
            INSERT INTO heuristic_scores SELECT o.sweep_id, o.maps, o.top_n, o.threshold, r.n_prompts, r.seed, 1,
                   o.* EXCLUDE (sweep_id, maps, top_n, threshold)
                   FROM heuristic_scores_v1 o LEFT JOIN run_map r USING (sweep_id);
            INSERT INTO classification_runs SELECT o.sweep_id, o.maps, o.top_n, o.threshold, r.n_prompts, r.seed,
                   1, o.layer, o.created FROM classification_runs_v1 o LEFT JOIN run_map r USING (sweep_id);
            INSERT INTO value_blocks (block_id, sweep_id, layer, neurons, k_file, kv_file)
                   SELECT block_id, sweep_id, layer, neurons::INTEGER[], k_file, kv_file FROM new_blocks;
            INSERT INTO block_progress SELECT * FROM new_progress;
        """)
        con.execute("UPDATE importance SET method = method || '-v1'")  # 0.1 chose its prompts another way
        for table in (*(f"{t}_v1" for t in RENAMED_V1), "neuron_values", "sweep_progress"):
            con.execute(f"DROP TABLE {table}")
        con.execute("INSERT INTO meta VALUES ('schema_version', ?), ('migrated_from', '1'), ('backup', ?)",
                    [str(SCHEMA_VERSION), str(backup)])
        con.execute("COMMIT")
    except BaseException:
        con.execute("ROLLBACK")
        raise
    finally:
        for name in ("fp_map", "run_map", "new_blocks", "new_progress"):
            con.unregister(name)
