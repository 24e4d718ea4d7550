"""Neuron values of sweeps: memory-mapped .npy blocks beside the DuckDB file, keyed in DuckDB.

A block holds some neurons of one layer of one sweep, neuron-major (``[neurons, prompts]``, float16), so one
neuron's map is one contiguous read (milliseconds for 90,000 prompts; DuckDB rows cost 8.6 B/value and blobs a
row-group read). Beside it, the block's value lens (``[neurons, numbers]`` float32: each neuron's direct logit on
each number token), from which KV = K x lens[answer] is computed at read time instead of stored. A chunk's values
are written into the block before its progress row commits, so a killed sweep recomputes only the missing chunks.
SQL users reach the values as ``neuron_values`` / ``activations``, streamed from the blocks (see ``query``).

Reads (``neuron_map``, ``layer_maps``, ``stored_neurons``, ``layer_summary``) ask DuckDB once per sweep, not once per
neuron: a sweep's **index** (neuron -> its complete block and row, the prompts' answers, and on demand its prompt
rows) is kept in memory, and opened memory maps are kept too, each in a small process-wide LRU (bounded whatever the
number of stores: a map holds a file descriptor). An index is keyed by the value folder, the sweep and the DuckDB
connection it was read on (a reopened store, e.g. after a migration or another process's writes, reads again), and
reused only while no block was created for the sweep since (by any store on that folder in this process) and it is
*settled*: every block of the sweep complete and every prompt answered (complete blocks and answered prompts never
change). While a sweep is being written its index is read again on every call. A memory map is keyed by the file's
path and identity (device, inode, size, modification time).
"""

from __future__ import annotations

import os
import threading
from collections import OrderedDict
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa

from ..errors import StoreError

VALUE_DTYPE = np.float16
#: sweep indexes kept in memory (all stores of the process together)
INDEX_CACHE_SIZE = 16
#: memory-mapped block files kept open (all stores together; each holds a file descriptor and address space, no memory)
MMAP_CACHE_SIZE = 64
#: rows of a block converted at once by ``layer_maps`` (bounds its temporary memory)
_ROWS_AT_ONCE = 64


def _open(path: Path, mode: str = "r") -> np.ndarray:
    return np.load(path, mmap_mode=mode)


#: (resolved value folder, sweep id) -> blocks created for that sweep in this process; an index read at an older
#: count is stale
_GENERATIONS: dict[tuple[str, int], int] = {}
_GENERATIONS_LOCK = threading.Lock()


def _generation(folder: str, sweep_id: int) -> int:
    return _GENERATIONS.get((folder, sweep_id), 0)


def _bump_generation(folder: str, sweep_id: int) -> None:
    with _GENERATIONS_LOCK:
        _GENERATIONS[(folder, sweep_id)] = _GENERATIONS.get((folder, sweep_id), 0) + 1


@dataclass(frozen=True)
class _Block:
    block_id: int
    layer: int
    k_file: str
    kv_file: str | None
    lens_file: str | None


@dataclass
class _SweepIndex:
    """What reads need of one sweep, read from DuckDB in one go (see the module's docstring)."""

    generation: int
    n_prompts: int | None  # None: no such sweep
    located: dict[int, dict[int, tuple[_Block, int]]]  # layer -> neuron -> (its complete block, its row there)
    answers: np.ndarray  # [answered prompts] intp, in prompt order: the lens column of each prompt's answer
    settled: bool
    prompts: pd.DataFrame | None = field(default=None, repr=False)


class _LRU:
    """A bounded mapping, least recently used first out; its own lock (never held while another lock is taken)."""

    def __init__(self, size: Callable[[], int]) -> None:
        self.size = size  # read at every insertion (tests lower the module constant)
        self.items: OrderedDict = OrderedDict()
        self.lock = threading.Lock()

    def get(self, key):
        with self.lock:
            value = self.items.get(key)
            if value is not None:
                self.items.move_to_end(key)
            return value

    def put(self, key, value) -> None:
        with self.lock:
            self.items[key] = value
            self.items.move_to_end(key)
            while len(self.items) > self.size():
                self.items.popitem(last=False)


#: (resolved value folder, sweep id, DuckDB connection) -> the sweep's index
_INDEXES = _LRU(lambda: INDEX_CACHE_SIZE)
#: (resolved block file, its device, inode, size and modification time) -> the file, memory-mapped read-only
_MAPS = _LRU(lambda: MMAP_CACHE_SIZE)


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
        try:
            with self.cursor() as con:
                con.execute("INSERT INTO value_blocks (block_id, sweep_id, layer, neurons, k_file, lens_file) "
                            "VALUES (?, ?, ?, ?, ?, ?)", [block_id, sweep_id, layer, [int(n) for n in neurons],
                                                          k_file, lens_file])
        finally:
            _bump_generation(self._folder(), int(sweep_id))  # after the row: a read in between sees it unsettled
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

    # -- reads: one DuckDB look-up per sweep, memory maps kept open (see the module's docstring) --

    def _folder(self) -> str:
        """The value folder, resolved (the caches' key: two stores on one file share their entries)."""
        folder = self.__dict__.get("_resolved_values_dir")
        if folder is None:
            folder = self.__dict__["_resolved_values_dir"] = str(self.values_dir.resolve())
        return folder

    def _sweep_index(self, sweep_id: int, fresh: bool = False) -> _SweepIndex:
        """The sweep's index: the cached one while it cannot be stale, else read from DuckDB (and cached)."""
        sweep_id, folder = int(sweep_id), self._folder()
        with self._lock:
            if not fresh and self._con is not None:
                index = _INDEXES.get((folder, sweep_id, self._con))
                if index is not None and index.settled and index.generation == _generation(folder, sweep_id):
                    return index
            index, connection = self._read_index(sweep_id, folder)
            _INDEXES.put((folder, sweep_id, connection), index)
            return index

    def _read_index(self, sweep_id: int, folder: str) -> tuple[_SweepIndex, object]:
        """The sweep's index read from DuckDB, and the connection it was read on."""
        generation = _generation(folder, sweep_id)  # before reading: a block created meanwhile makes it stale
        with self.cursor() as con:
            sweep = con.execute("SELECT n_prompts FROM sweeps WHERE sweep_id = ?", [sweep_id]).fetchone()
            rows = con.execute(
                """WITH done AS (SELECT block_id, count(*) AS done FROM block_progress GROUP BY block_id)
                   SELECT b.block_id, b.layer, b.neurons, b.k_file, b.kv_file, b.lens_file,
                          coalesce(d.done, 0) = (s.n_prompts + s.chunk_size - 1) // s.chunk_size AS complete
                   FROM value_blocks b JOIN sweeps s USING (sweep_id) LEFT JOIN done d USING (block_id)
                   WHERE b.sweep_id = ? ORDER BY b.block_id""", [sweep_id]).fetchall()
            answers = con.sql(f"SELECT answer FROM prompts WHERE sweep_id = {sweep_id} ORDER BY idx"
                              ).fetchnumpy()["answer"]
            connection = self._con
        located: dict[int, dict[int, tuple[_Block, int]]] = {}
        for block_id, layer, neurons, k_file, kv_file, lens_file, complete in rows:
            if not complete:
                continue
            block = _Block(int(block_id), int(layer), k_file, kv_file, lens_file)
            where = located.setdefault(int(layer), {})
            for row, n in enumerate(neurons):  # the newest block wins
                where[int(n)] = (block, row)
        n_prompts = None if sweep is None else int(sweep[0])
        settled = n_prompts is not None and all(r[-1] for r in rows) and len(answers) == n_prompts
        answers = np.array(answers, np.intp)
        answers.flags.writeable = False  # shared by every read of the sweep
        return _SweepIndex(generation, n_prompts, located, answers, settled), connection

    def _mapped(self, file: str) -> np.ndarray:
        """The block file ``file`` (relative to the value folder), memory-mapped read-only; kept open."""
        path = os.path.join(self._folder(), file)
        info = os.stat(path)
        key = (path, info.st_dev, info.st_ino, info.st_size, info.st_mtime_ns)
        values = _MAPS.get(key)
        if values is None:
            values = _open(Path(path))
            _MAPS.put(key, values)
        return values

    def _located(self, sweep_id: int, layer: int, neurons: list[int]) -> tuple[_SweepIndex, dict]:
        """The sweep's index and ``layer``'s neuron -> (block, row); read again once when a neuron is missing (a
        block written by something the cache cannot see is then found, never a stale miss)."""
        index = self._sweep_index(sweep_id)
        where = index.located.get(int(layer), {})
        if index.settled and any(int(n) not in where for n in neurons):
            index = self._sweep_index(sweep_id, fresh=True)
            where = index.located.get(int(layer), {})
        return index, where

    def stored_neurons(self, sweep_id: int) -> dict[int, set[int]]:
        """Layer -> neurons whose values are complete in the store."""
        index = self._sweep_index(sweep_id)
        return {layer: set(where) for layer, where in sorted(index.located.items())}

    def _locate(self, sweep_id: int, layer: int, neurons: list[int]) -> dict[int, tuple[_Block, int]]:
        """neuron -> (its complete block, its row in that block); the newest block wins."""
        _, where = self._located(sweep_id, layer, neurons)
        return {int(n): where[int(n)] for n in neurons if int(n) in where}

    def _answers(self, sweep_id: int) -> np.ndarray:
        return self._sweep_index(sweep_id).answers

    def cached_prompts(self, sweep_id: int) -> pd.DataFrame:
        """:meth:`prompts` of a sweep, read from DuckDB once while the sweep is settled (a copy: changing it changes
        nothing cached)."""
        index = self._sweep_index(sweep_id)
        if not index.settled:
            return self.prompts(sweep_id)
        with self._lock:
            if index.prompts is None:
                index.prompts = self.prompts(sweep_id)
            return index.prompts.copy(deep=False)

    def layer_maps(self, sweep_id: int, layer: int, neurons: list[int]) -> tuple[np.ndarray, np.ndarray]:
        """K and KV maps (float32, ``[len(neurons), n_prompts]``) of stored neurons; a StoreError names the missing."""
        index, where = self._located(sweep_id, layer, neurons)
        missing = [n for n in neurons if int(n) not in where]
        if missing:
            raise StoreError(f"L{layer}: neurons {missing[:5]} of sweep {sweep_id} are not stored")
        answers = index.answers
        n_prompts = len(answers)
        k = np.empty((len(neurons), n_prompts), np.float32)
        kv = np.empty_like(k)
        by_block: dict[_Block, tuple[list[int], list[int]]] = {}
        for i, n in enumerate(neurons):
            block, row = where[int(n)]
            out, rows = by_block.setdefault(block, ([], []))
            out.append(i)
            rows.append(row)
        for block, (out, rows) in by_block.items():
            k_values = self._mapped(block.k_file)
            kv_values = self._mapped(block.kv_file) if block.kv_file is not None else None
            lens = self._mapped(block.lens_file) if kv_values is None else None
            for lo in range(0, len(out), _ROWS_AT_ONCE):
                o, r = out[lo:lo + _ROWS_AT_ONCE], rows[lo:lo + _ROWS_AT_ONCE]
                if len(o) == 1:  # one neuron (a click on the grid): plain row reads, no gather
                    k[o[0]] = k_values[r[0]]
                    if kv_values is not None:
                        kv[o[0]] = kv_values[r[0]]
                    else:
                        np.multiply(k[o[0]], np.take(lens[r[0]], answers), out=kv[o[0]])
                    continue
                part = np.asarray(k_values[r], np.float32)
                k[o] = part
                if kv_values is not None:
                    kv[o] = kv_values[r]
                else:  # KV = K x lens[answer], with the answer's lens column gathered once per row
                    kv[o] = part * np.take(np.asarray(lens[r]), answers, axis=1)
        return k, kv

    def neuron_map(self, sweep_id: int, layer: int, neuron: int) -> tuple[np.ndarray, np.ndarray]:
        """One neuron's K and KV values over the grid in prompt order (empty arrays when it is not stored)."""
        _, where = self._located(sweep_id, layer, [neuron])
        if int(neuron) not in where:
            return np.empty(0, np.float32), np.empty(0, np.float32)
        k, kv = self.layer_maps(sweep_id, layer, [neuron])
        return k[0], kv[0]

    def layer_summary(self, sweep_id: int, layer: int) -> pd.DataFrame:
        """Per stored neuron of a layer: mean, max, min and standard deviation of K over the grid."""
        where = self._sweep_index(sweep_id).located.get(int(layer), {})
        rows = []
        for n, (block, row) in sorted(where.items()):
            values = np.asarray(self._mapped(block.k_file)[row], np.float32)
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
