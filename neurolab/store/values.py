"""Neuron values of sweeps: memory-mapped .npy blocks beside the DuckDB file, keyed in DuckDB.

A block holds some neurons of one layer of one sweep, neuron-major (``[neurons, prompts]``, float16), so one
neuron's map is one contiguous read (milliseconds for 90,000 prompts; DuckDB rows cost 8.6 B/value and blobs a
row-group read). Beside it, the block's value lens (``[neurons, numbers]`` float32: each neuron's direct logit on
each number token), from which KV = K x lens[answer] is computed at read time instead of stored. A chunk's values
are written into the block before its progress row commits, so a killed sweep recomputes only the missing chunks.
SQL users reach the values as ``neuron_values`` / ``activations``, streamed from the blocks (see ``query``).
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa

from ..errors import StoreError

VALUE_DTYPE = np.float16


def _open(path: Path, mode: str = "r") -> np.ndarray:
    return np.load(path, mmap_mode=mode)


class ValueBlocks:
    """Mixin of :class:`~neurolab.store.Store`: writing and reading value blocks."""

    def create_block(self, sweep_id: int, layer: int, neurons: list[int], n_prompts: int,
                     lens: np.ndarray | None) -> int:
        """A new, empty block for ``neurons`` of ``layer``; its files exist before its row does."""
        with self.cursor() as con:
            block_id = con.execute("SELECT nextval('block_ids')").fetchone()[0]
        folder = self.values_dir / f"sweep-{sweep_id}"
        folder.mkdir(parents=True, exist_ok=True)
        k_file = f"sweep-{sweep_id}/L{layer}-b{block_id}.k.npy"
        np.lib.format.open_memmap(self.values_dir / k_file, mode="w+", dtype=VALUE_DTYPE,
                                  shape=(len(neurons), n_prompts)).flush()
        lens_file = None
        if lens is not None:
            lens_file = f"sweep-{sweep_id}/L{layer}-b{block_id}.lens.npy"
            np.save(self.values_dir / lens_file, np.asarray(lens, np.float32))
        with self.cursor() as con:
            con.execute("INSERT INTO value_blocks (block_id, sweep_id, layer, neurons, k_file, lens_file) "
                        "VALUES (?, ?, ?, ?, ?, ?)", [block_id, sweep_id, layer, [int(n) for n in neurons],
                                                      k_file, lens_file])
        return block_id

    def write_block_values(self, block_id: int, lo: int, hi: int, k: np.ndarray, kv: np.ndarray | None = None) -> None:
        """Values ``[hi - lo, neurons]`` of prompts lo..hi into the block's files (flushed; progress is the
        caller's transaction, see :meth:`mark_chunks`)."""
        row = self._block(block_id)
        values = _open(self.values_dir / row["k_file"], "r+")
        values[:, lo:hi] = np.asarray(k).T
        values.flush()
        if row["kv_file"] is not None:
            if kv is None:
                raise StoreError(f"block {block_id} stores KV values: pass them")
            stored = _open(self.values_dir / row["kv_file"], "r+")
            stored[:, lo:hi] = np.asarray(kv).T
            stored.flush()

    def _block(self, block_id: int) -> dict:
        with self.cursor() as con:
            frame = con.execute("SELECT * FROM value_blocks WHERE block_id = ?", [block_id]).df()
        if frame.empty:
            raise StoreError(f"no value block {block_id} in {self.path}")
        return frame.iloc[0].to_dict()

    def blocks(self, sweep_id: int, layer: int | None = None) -> pd.DataFrame:
        """The sweep's blocks with ``done`` chunks and ``complete`` (every chunk written)."""
        with self.cursor() as con:
            frame = con.execute(
                """WITH done AS (SELECT block_id, count(*) AS done FROM block_progress GROUP BY block_id)
                   SELECT b.*, coalesce(d.done, 0) AS done,
                          coalesce(d.done, 0) = (s.n_prompts + s.chunk_size - 1) // s.chunk_size AS complete
                   FROM value_blocks b JOIN sweeps s USING (sweep_id) LEFT JOIN done d USING (block_id)
                   WHERE b.sweep_id = ? AND (?::INTEGER IS NULL OR b.layer = ?)
                   ORDER BY b.block_id""", [sweep_id, layer, layer]).df()
        return frame

    def block_chunks(self, block_id: int) -> set[int]:
        with self.cursor() as con:
            return {r[0] for r in con.execute("SELECT chunk FROM block_progress WHERE block_id = ?",
                                              [block_id]).fetchall()}

    def stored_neurons(self, sweep_id: int) -> dict[int, set[int]]:
        """Layer -> neurons whose values are complete in the store."""
        found: dict[int, set[int]] = {}
        for row in self.blocks(sweep_id).itertuples():
            if row.complete:
                found.setdefault(int(row.layer), set()).update(int(n) for n in row.neurons)
        return found

    def _locate(self, sweep_id: int, layer: int, neurons: list[int]) -> dict[int, tuple[dict, int]]:
        """neuron -> (its complete block's row, its row in that block); the newest block wins."""
        found = {}
        wanted = set(neurons)
        for row in self.blocks(sweep_id, layer).itertuples():
            if not row.complete:
                continue
            for i, n in enumerate(row.neurons):
                if int(n) in wanted:
                    found[int(n)] = (row._asdict(), i)
        return found

    def _answers(self, sweep_id: int) -> np.ndarray:
        with self.cursor() as con:
            return con.sql(f"SELECT answer FROM prompts WHERE sweep_id = {int(sweep_id)} ORDER BY idx"
                           ).fetchnumpy()["answer"]

    def layer_maps(self, sweep_id: int, layer: int, neurons: list[int]) -> tuple[np.ndarray, np.ndarray]:
        """K and KV maps (float32, ``[len(neurons), n_prompts]``) of stored neurons; a StoreError names the missing."""
        where = self._locate(sweep_id, layer, neurons)
        missing = [n for n in neurons if n not in where]
        if missing:
            raise StoreError(f"L{layer}: neurons {missing[:5]} of sweep {sweep_id} are not stored")
        answers = self._answers(sweep_id)
        n_prompts = len(answers)
        k = np.empty((len(neurons), n_prompts), np.float32)
        kv = np.empty_like(k)
        for i, n in enumerate(neurons):
            block, row = where[n]
            k[i] = _open(self.values_dir / block["k_file"])[row]
            if block["kv_file"] is not None:
                kv[i] = _open(self.values_dir / block["kv_file"])[row]
            else:
                kv[i] = k[i] * _open(self.values_dir / block["lens_file"])[row][answers]
        return k, kv

    def neuron_map(self, sweep_id: int, layer: int, neuron: int) -> tuple[np.ndarray, np.ndarray]:
        """One neuron's K and KV values over the grid in prompt order (empty arrays when it is not stored)."""
        if neuron not in self._locate(sweep_id, layer, [neuron]):
            return np.empty(0, np.float32), np.empty(0, np.float32)
        k, kv = self.layer_maps(sweep_id, layer, [neuron])
        return k[0], kv[0]

    def layer_summary(self, sweep_id: int, layer: int) -> pd.DataFrame:
        """Per stored neuron of a layer: mean, max, min and standard deviation of K over the grid."""
        where = self._locate(sweep_id, layer, sorted(self.stored_neurons(sweep_id).get(layer, ())))
        rows = []
        for n, (block, row) in sorted(where.items()):
            values = np.asarray(_open(self.values_dir / block["k_file"])[row], np.float32)
            rows.append((n, values.mean(), values.max(), values.min(), values.std()))
        return pd.DataFrame(rows, columns=["neuron", "mean_k", "max_k", "min_k", "std_k"])

    def value_batches(self) -> pa.RecordBatchReader:
        """Every complete block's values as rows (sweep_id, layer, neuron, idx, k, kv), streamed block by block.

        The blocks and answers are looked up first: DuckDB pulls the batches while a query runs, so pulling must not
        query the database again."""
        schema = pa.schema([("sweep_id", pa.int32()), ("layer", pa.int32()), ("neuron", pa.int32()),
                            ("idx", pa.int32()), ("k", pa.float32()), ("kv", pa.float32())])
        with self.cursor() as con:
            sweeps = [r[0] for r in con.execute("SELECT sweep_id FROM sweeps ORDER BY sweep_id").fetchall()]
        plan = [(sweep_id, self._answers(sweep_id), [r._asdict() for r in self.blocks(sweep_id).itertuples()
                                                     if r.complete]) for sweep_id in sweeps]

        def batches() -> Iterator[pa.RecordBatch]:
            for sweep_id, answers, blocks in plan:
                for block in blocks:
                    k = np.asarray(_open(self.values_dir / block["k_file"]), np.float32)
                    if block["kv_file"] is not None:
                        kv = np.asarray(_open(self.values_dir / block["kv_file"]), np.float32)
                    else:
                        kv = k * _open(self.values_dir / block["lens_file"])[:, answers]
                    size, n_prompts = k.size, k.shape[1]
                    yield pa.RecordBatch.from_arrays([
                        pa.array(np.full(size, sweep_id, np.int32)), pa.array(np.full(size, block["layer"], np.int32)),
                        pa.array(np.repeat(np.asarray(block["neurons"], np.int32), n_prompts)),
                        pa.array(np.tile(np.arange(n_prompts, dtype=np.int32), k.shape[0])),
                        pa.array(k.ravel()), pa.array(kv.ravel())], schema=schema)

        return pa.RecordBatchReader.from_batches(schema, batches())

    def disk_bytes(self, sweep_id: int | None = None) -> int:
        """Bytes the value blocks take on disk (of one sweep, or all)."""
        folder = self.values_dir if sweep_id is None else self.values_dir / f"sweep-{sweep_id}"
        return sum(f.stat().st_size for f in folder.rglob("*.npy")) if folder.exists() else 0
