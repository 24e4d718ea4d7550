"""Reading neuron maps back from the store: exact, served from in-memory caches after the first read, and never
stale when a block is written later."""

from __future__ import annotations

import gzip
import shutil
from pathlib import Path

import numpy as np
import pytest

import neurolab.store.values as values_module
from neurolab.analysis.neuron_maps import load_neuron_map
from neurolab.analysis.sweep import NeuronSelection, run_sweep
from neurolab.store import Store

MAX_OP = 20
V1_STORE = Path(__file__).parent / "data" / "store-v1.duckdb.gz"


@pytest.fixture
def store(tmp_path) -> Store:
    s = Store(tmp_path / "reads.duckdb")
    yield s
    s.close()


def straightforward(store: Store, sweep_id: int) -> dict[tuple[int, int], tuple[np.ndarray, np.ndarray]]:
    """(layer, neuron) -> (K, KV) of every stored neuron, computed the plain way: the blocks from ``Store.blocks``,
    every file loaded whole (no memory map), the answers from ``Store.prompts``, KV = K x lens[answer] per prompt."""
    answers = store.prompts(sweep_id)["answer"].to_numpy()
    maps = {}
    for block in store.blocks(sweep_id).itertuples():  # oldest first: the newest block wins
        if not block.complete:
            continue
        k = np.load(store.values_dir / block.k_file).astype(np.float32)
        kv = None if block.kv_file is None else np.load(store.values_dir / block.kv_file).astype(np.float32)
        lens = None if block.lens_file is None else np.load(store.values_dir / block.lens_file)
        for row, n in enumerate(block.neurons):
            row_kv = kv[row] if kv is not None else np.array([k[row, i] * lens[row, a] for i, a in enumerate(answers)],
                                                             np.float32)
            maps[(int(block.layer), int(n))] = (k[row], row_kv)
    return maps


class Counter:
    """Wraps a callable and counts its calls."""

    def __init__(self, fn) -> None:
        self.fn, self.calls = fn, 0

    def __call__(self, *args, **kwargs):
        self.calls += 1
        return self.fn(*args, **kwargs)


def counted(store: Store, monkeypatch) -> tuple[Counter, Counter]:
    """Count the store's DuckDB cursors (every query goes through one) and the block files it opens."""
    cursors, opens = Counter(store.cursor), Counter(values_module._open)
    monkeypatch.setattr(store, "cursor", cursors)
    monkeypatch.setattr(values_module, "_open", opens)
    return cursors, opens


def test_reads_equal_the_straightforward_computation(embedded, store):
    sweep = run_sweep(embedded, store, "+", NeuronSelection("all", layers=(2, 3)), max_op=MAX_OP)
    extra = run_sweep(embedded, store, "-", NeuronSelection("list", neurons=((3, 5), (3, 40), (1, 7))), max_op=MAX_OP)
    for result in (sweep, extra):
        expected = straightforward(store, result.sweep_id)
        assert store.stored_neurons(result.sweep_id) == {
            layer: {n for (l2, n) in expected if l2 == layer} for layer in {layer for layer, _ in expected}}
        prompts = store.prompts(result.sweep_id)
        for (layer, n), (k, kv) in expected.items():
            got_k, got_kv = store.neuron_map(result.sweep_id, layer, n)
            assert got_k.dtype == got_kv.dtype == np.float32
            assert np.array_equal(got_k, k) and np.array_equal(got_kv, kv)
            assert np.array_equal(load_neuron_map(store, result.sweep_id, layer, n, "K").values, k)
            nmap = load_neuron_map(store, result.sweep_id, layer, n, "KV")
            assert np.array_equal(nmap.values, kv)
            assert nmap.prompts.equals(prompts)
        for layer in {layer for layer, _ in expected}:  # many neurons at once, in any order, repeated
            neurons = sorted(n for (l2, n) in expected if l2 == layer)[::-1]
            neurons = neurons + neurons[:3]
            k, kv = store.layer_maps(result.sweep_id, layer, neurons)
            assert np.array_equal(k, np.stack([expected[(layer, n)][0] for n in neurons]))
            assert np.array_equal(kv, np.stack([expected[(layer, n)][1] for n in neurons]))
    assert len(store.neuron_map(extra.sweep_id, 3, 6)[0]) == 0  # not stored: empty, as before


def test_reads_of_a_migrated_store_with_stored_kv_are_exact(tmp_path):
    path = tmp_path / "old.duckdb"
    with gzip.open(V1_STORE) as source, path.open("wb") as target:
        shutil.copyfileobj(source, target)
    store = Store(path)
    for sweep_id in store.sweeps()["sweep_id"]:
        expected = straightforward(store, int(sweep_id))
        assert expected and all(b is not None for b in store.blocks(int(sweep_id))["kv_file"])
        for layer in {layer for layer, _ in expected}:
            neurons = sorted(n for (l2, n) in expected if l2 == layer)
            k, kv = store.layer_maps(int(sweep_id), layer, neurons)
            assert np.array_equal(k, np.stack([expected[(layer, n)][0] for n in neurons]))
            assert np.array_equal(kv, np.stack([expected[(layer, n)][1] for n in neurons]))
            one_k, one_kv = store.neuron_map(int(sweep_id), layer, neurons[-1])
            assert np.array_equal(one_k, k[-1]) and np.array_equal(one_kv, kv[-1])
    store.close()


def test_a_second_read_asks_neither_duckdb_nor_the_file_system(embedded, store, monkeypatch):
    result = run_sweep(embedded, store, "+", NeuronSelection("all", layers=(3,)), max_op=MAX_OP)
    store.close()  # as a fresh dashboard: the first read opens everything
    cursors, opens = counted(store, monkeypatch)
    first = load_neuron_map(store, result.sweep_id, 3, 10, "KV")
    assert cursors.calls > 0 and opens.calls == 2  # the K block and its value lens
    cursors.calls = opens.calls = 0
    for n in (11, 12, 300):
        for kind in ("K", "KV"):
            load_neuron_map(store, result.sweep_id, 3, n, kind)
        store.neuron_map(result.sweep_id, 3, n)
    store.layer_maps(result.sweep_id, 3, list(range(512)))
    assert store.stored_neurons(result.sweep_id) == {3: set(range(512))}
    assert cursors.calls == 0 and opens.calls == 0
    again = load_neuron_map(store, result.sweep_id, 3, 10, "KV")
    assert np.array_equal(again.values, first.values) and again.prompts.equals(first.prompts)
    again.prompts["op1"] = -1  # a caller changing its copy changes nothing cached
    assert (load_neuron_map(store, result.sweep_id, 3, 10, "K").prompts["op1"] >= 0).all()
    assert cursors.calls == 0
    store.close()  # a reopened store (another process may have written meanwhile) asks again
    assert store.schema_version > 0  # reopened by another call first
    cursors.calls = 0
    store.neuron_map(result.sweep_id, 3, 10)
    assert cursors.calls > 0


def test_caches_are_bounded(embedded, store, monkeypatch):
    monkeypatch.setattr(values_module, "INDEX_CACHE_SIZE", 2)
    monkeypatch.setattr(values_module, "MMAP_CACHE_SIZE", 3)
    sweeps = [run_sweep(embedded, store, op, NeuronSelection("list", neurons=((3, 1), (2, 1))), max_op=10).sweep_id
              for op in "+-*"]
    for sweep_id in sweeps:
        for layer in (2, 3):
            store.neuron_map(sweep_id, layer, 1)
    assert [key[1] for key in values_module._INDEXES.items] == sweeps[1:]  # process-wide, least recent out
    assert len(values_module._MAPS.items) == 3


def test_a_block_written_later_is_read(embedded, store, monkeypatch):
    first = run_sweep(embedded, store, "+", NeuronSelection("list", neurons=((3, 5),)), max_op=MAX_OP)
    sweep_id = first.sweep_id
    assert store.stored_neurons(sweep_id) == {3: {5}} and len(store.neuron_map(sweep_id, 3, 9)[0]) == 0
    reads_during = []

    def read_meanwhile(done: int, total: int, *stage) -> None:  # another session reading while the blocks are written
        if done < total:
            reads_during.append((store.stored_neurons(sweep_id), len(store.neuron_map(sweep_id, 3, 9)[0])))
            store.neuron_map(sweep_id, 3, 5)

    second = run_sweep(embedded, store, "+", NeuronSelection("list", neurons=((3, 9), (2, 4))), max_op=MAX_OP,
                       progress=read_meanwhile)
    assert second.sweep_id == sweep_id and reads_during and reads_during[0] == ({3: {5}}, 0)
    expected = straightforward(store, sweep_id)
    assert store.stored_neurons(sweep_id) == {2: {4}, 3: {5, 9}}
    for layer, n in ((3, 9), (2, 4), (3, 5)):
        k, kv = store.neuron_map(sweep_id, layer, n)
        assert np.array_equal(k, expected[(layer, n)][0]) and np.array_equal(kv, expected[(layer, n)][1])
    assert np.array_equal(load_neuron_map(store, sweep_id, 3, 9, "KV").values, expected[(3, 9)][1])

    # a second store on the same file in this process writes a block: the first one's cached index is dropped
    other = Store(store.path)
    run_sweep(embedded, other, "+", NeuronSelection("list", neurons=((1, 3),)), max_op=MAX_OP)
    assert store.stored_neurons(sweep_id) == {1: {3}, 2: {4}, 3: {5, 9}}
    assert np.array_equal(store.neuron_map(sweep_id, 1, 3)[0], other.neuron_map(sweep_id, 1, 3)[0])
    other.close()
