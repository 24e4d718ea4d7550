"""Sweeps and their prompts: the key a grid's results live under, and the model's answer on every prompt."""

from __future__ import annotations

from dataclasses import dataclass

import pandas as pd

from ..errors import StoreError

PROMPT_COLUMNS = ["sweep_id", "idx", "op1", "op2", "answer", "prompt", "top1", "top1_prob", "answer_prob", "correct"]


@dataclass(frozen=True)
class SweepKey:
    """Everything a sweep's results depend on: the model (weights and dtype), the grid, the intervention."""

    fingerprint: str
    op: str
    template: str
    max_op: int
    op1_from: int = 0
    intervention: str = "none"


class SweepTables:
    """Mixin of :class:`~neurolab.store.Store`: models, sweeps and prompt rows."""

    def register_model(self, fingerprint: str, weights: str, dtype: str, revision: str | None, name: str,
                       source: str, family: str, n_layers: int, d_mlp: int, max_single_token: int) -> None:
        with self.cursor() as con:
            con.execute(
                "INSERT INTO models (fingerprint, weights, dtype, revision, name, source, family, n_layers, d_mlp, "
                "max_single_token) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?) ON CONFLICT DO NOTHING",
                [fingerprint, weights, dtype, revision, name, source, family, n_layers, d_mlp, max_single_token])

    def sweep_id(self, key: SweepKey, n_prompts: int, chunk_size: int, create: bool = True) -> int | None:
        """The id of the sweep with this key; created (with its chunking fixed for good) when asked and absent."""
        where = "fingerprint=? AND op=? AND template=? AND max_op=? AND op1_from=? AND intervention=?"
        values = [key.fingerprint, key.op, key.template, key.max_op, key.op1_from, key.intervention]
        with self.cursor() as con:
            row = con.execute(f"SELECT sweep_id, n_prompts FROM sweeps WHERE {where}", values).fetchone()
            if row is not None:
                if row[1] != n_prompts:
                    raise StoreError(f"sweep {row[0]} in {self.path} has {row[1]} prompts, expected {n_prompts}")
                return row[0]
            if not create:
                return None
            return con.execute(
                "INSERT INTO sweeps (fingerprint, op, template, max_op, op1_from, intervention, n_prompts, "
                "chunk_size) VALUES (?, ?, ?, ?, ?, ?, ?, ?) RETURNING sweep_id", [*values, n_prompts, chunk_size],
            ).fetchone()[0]

    def write_chunk(self, sweep_id: int, chunks: dict[int, int], prompts: pd.DataFrame | None) -> None:
        """Commit one chunk: its prompt rows (when computed) and the progress of the blocks it filled
        (``chunks``: block id -> chunk), in one transaction; the values are already in the blocks."""
        progress = pd.DataFrame({"block_id": list(chunks), "chunk": list(chunks.values())}, dtype="int64")
        relations = {"chunk_progress": progress}
        if prompts is not None:
            relations["chunk_prompts"] = prompts.assign(sweep_id=sweep_id)[PROMPT_COLUMNS]
        with self.transaction(**relations) as con:
            if prompts is not None:
                con.execute("INSERT INTO prompts SELECT * FROM chunk_prompts ON CONFLICT DO NOTHING")
            con.execute("INSERT INTO block_progress SELECT * FROM chunk_progress ON CONFLICT DO NOTHING")

    def chunk_size(self, sweep_id: int) -> int:
        """The prompts per chunk a sweep was created with."""
        with self.cursor() as con:
            row = con.execute("SELECT chunk_size FROM sweeps WHERE sweep_id = ?", [sweep_id]).fetchone()
        if row is None:
            raise StoreError(f"no sweep {sweep_id} in {self.path}")
        return int(row[0])

    def answered(self, sweep_id: int) -> set[int]:
        """Indices of the prompts whose answers are stored."""
        with self.cursor() as con:
            return set(con.sql(f"SELECT idx FROM prompts WHERE sweep_id = {int(sweep_id)}").fetchnumpy()["idx"]
                       .tolist())

    def sweeps(self, fingerprint: str | None = None) -> pd.DataFrame:
        """Every sweep (optionally of one model) with ``answered`` (prompt rows stored)."""
        with self.cursor() as con:
            return con.execute(
                """SELECT s.*, (SELECT count(*) FROM prompts p WHERE p.sweep_id = s.sweep_id) AS answered
                   FROM sweeps s WHERE ?::VARCHAR IS NULL OR s.fingerprint = ? ORDER BY s.sweep_id""",
                [fingerprint, fingerprint]).df()

    def sweep_info(self, sweep_id: int) -> dict:
        """One sweep's row (key, size, chunking) and ``stored``: layer -> number of complete neurons."""
        frame = self.sweeps()
        row = frame[frame["sweep_id"] == sweep_id]
        if row.empty:
            raise StoreError(f"no sweep {sweep_id} in {self.path}")
        info = row.iloc[0].to_dict()
        info["stored"] = {layer: len(ns) for layer, ns in sorted(self.stored_neurons(sweep_id).items())}
        return info

    def prompts(self, sweep_id: int) -> pd.DataFrame:
        """Every stored prompt row of a sweep, in grid order."""
        with self.cursor() as con:
            return con.execute("SELECT * EXCLUDE (sweep_id) FROM prompts WHERE sweep_id=? ORDER BY idx",
                               [sweep_id]).df()
