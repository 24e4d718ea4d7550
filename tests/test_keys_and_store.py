"""Every cached result is keyed by everything it depends on; the store has a schema version and migrates old files."""

from __future__ import annotations

import gzip
import shutil
import subprocess
import sys
from pathlib import Path

import duckdb
import numpy as np
import pandas as pd
import pytest

import neurolab.analysis.importance as importance_module
from neurolab.analysis.classification import ClassifySettings, classify_operator
from neurolab.analysis.importance import ensure_importance
from neurolab.analysis.neuron_maps import neuron_map
from neurolab.analysis.sweep import FULL_SWEEP_LIMIT, NeuronSelection, grid_for, plan_sweep, run_sweep
from neurolab.capture.interventions import ablation
from neurolab.models.loading import load_model
from neurolab.store import SCHEMA_VERSION, Store

V1_STORE = Path(__file__).parent / "data" / "store-v1.duckdb.gz"  # written by neurolab 0.1 (`classify`, `sweep`)
MAX_OP = 20


@pytest.fixture
def store(tmp_path):
    s = Store(tmp_path / "keys.duckdb")
    yield s
    s.close()


@pytest.fixture
def no_computation(monkeypatch):
    """Make any model pass fail: an identical rerun must be served from the store."""
    def forbid(*args, **kwargs):
        raise AssertionError("computed although everything was cached")

    monkeypatch.setattr("neurolab.analysis.sweep.stream", forbid)
    monkeypatch.setattr(importance_module, "attribution_patching", forbid)
    return forbid


def test_sweep_keys_dtype_and_intervention(embedded, store, no_computation, monkeypatch):
    monkeypatch.undo()
    half = load_model("embedded", dtype="bfloat16")
    assert half.fingerprint != embedded.fingerprint and half.weights_fingerprint == embedded.weights_fingerprint
    selection = NeuronSelection("list", neurons=((3, 5),))
    clean = run_sweep(embedded, store, "+", selection, MAX_OP)
    low = run_sweep(half, store, "+", selection, MAX_OP)
    ablated = run_sweep(embedded, store, "+", selection, MAX_OP, intervention=ablation(["L3N5"]))
    assert len({clean.sweep_id, low.sweep_id, ablated.sweep_id}) == 3
    k_clean, k_low, k_ablated = (store.neuron_map(r.sweep_id, 3, 5)[0] for r in (clean, low, ablated))
    assert np.allclose(k_clean, k_low, atol=0.05) and not np.array_equal(k_clean, k_low)
    assert np.all(k_ablated == 0)
    assert store.sweeps().set_index("sweep_id").loc[ablated.sweep_id, "intervention"] == ablation(["L3N5"]).key
    monkeypatch.setattr("neurolab.analysis.sweep.stream", no_computation)
    for model in (embedded, half):
        assert run_sweep(model, store, "+", selection, MAX_OP).cached
    again = run_sweep(embedded, store, "+", selection, MAX_OP, intervention=ablation(["L3N5"]))
    assert again.cached and again.sweep_id == ablated.sweep_id


def test_importance_keyed_by_prompts_and_seed(embedded, store, monkeypatch, no_computation):
    monkeypatch.undo()
    sweep = run_sweep(embedded, store, "+", NeuronSelection("none"), MAX_OP)
    grid = grid_for(embedded, "+", MAX_OP)
    first = ensure_importance(embedded, store, sweep.sweep_id, grid, n_prompts=10, seed=0)
    other = ensure_importance(embedded, store, sweep.sweep_id, grid, n_prompts=10, seed=7)
    fewer = ensure_importance(embedded, store, sweep.sweep_id, grid, n_prompts=5, seed=0)
    assert not np.allclose(first["score"], other["score"]) and not np.allclose(first["score"], fewer["score"])
    monkeypatch.setattr(importance_module, "attribution_patching", no_computation)
    again = ensure_importance(embedded, store, sweep.sweep_id, grid, n_prompts=10, seed=7)
    assert np.array_equal(again["score"], other["score"])


def test_classification_keyed_by_prompts_and_seed(embedded, store, monkeypatch, no_computation):
    """The bug: `classify --prompts 10 --seed 7` after a default classify returned the first run's rows."""
    monkeypatch.undo()
    base = classify_operator(embedded, store, "+", MAX_OP, settings=ClassifySettings(top_n=15), layers=[3])
    changed = classify_operator(embedded, store, "+", MAX_OP, settings=ClassifySettings(top_n=15, n_prompts=10,
                                                                                        seed=7), layers=[3])
    assert set(base.scores["neuron"]) != set(changed.scores["neuron"])  # other importance run, other top-15
    runs = store.query("SELECT DISTINCT n_prompts, seed FROM classification_runs ORDER BY n_prompts")
    assert runs.values.tolist() == [[10, 7], [50, 0]]
    monkeypatch.setattr("neurolab.analysis.sweep.stream", no_computation)
    monkeypatch.setattr(importance_module, "attribution_patching", no_computation)
    monkeypatch.setattr("neurolab.analysis.classification.classify", no_computation)
    again = classify_operator(embedded, store, "+", MAX_OP, settings=ClassifySettings(top_n=15, n_prompts=10, seed=7),
                              layers=[3])
    assert again.scores.equals(changed.scores)


def test_neuron_selection_top_list_none_and_on_demand(embedded, store):
    answers = run_sweep(embedded, store, "-", NeuronSelection("none"), MAX_OP)
    assert store.sweep_info(answers.sweep_id)["stored"] == {} and store.sweep_info(answers.sweep_id)["answered"]
    top = run_sweep(embedded, store, "-", NeuronSelection("top", top_n=7, layers=(2, 3), n_prompts=10), MAX_OP)
    assert top.sweep_id == answers.sweep_id and store.sweep_info(top.sweep_id)["stored"] == {2: 7, 3: 7}
    ranked = ensure_importance(embedded, store, top.sweep_id, grid_for(embedded, "-", MAX_OP), n_prompts=10)
    best = ranked[ranked["layer"] == 3].nsmallest(7, "rank")["neuron"].tolist()
    assert top.neurons[3] == best
    outside = next(n for n in range(embedded.d_mlp) if n not in best)
    on_demand = neuron_map(embedded, store, "-", 3, outside, max_op=MAX_OP)  # not stored: computed, then cached
    assert store.sweep_info(top.sweep_id)["stored"] == {2: 7, 3: 8}
    full = Store(store.path.with_name("full.duckdb"))
    k_full = full.neuron_map(run_sweep(embedded, full, "-", NeuronSelection("all", layers=(3,)), MAX_OP).sweep_id,
                             3, outside)[0]
    assert np.array_equal(on_demand.values, k_full)
    sql = store.query(f"SELECT k FROM activations WHERE sweep_id = {top.sweep_id} AND layer = 3 AND neuron = "
                      f"{outside} ORDER BY idx")
    assert np.array_equal(sql["k"].to_numpy(), k_full)  # SQL users reach the values too
    full.close()


def test_plan_for_llama3_8b_shape_defaults_to_top_n():
    """32 layers x 14,336 neurons, a 300x300 grid: the full sweep is ~84 GB, so 'auto' records the top 200."""
    auto = plan_sweep(32, 14336, 1000, 90_000, NeuronSelection())
    full = plan_sweep(32, 14336, 1000, 90_000, NeuronSelection("all"))
    assert auto.mode == "top" and auto.values == 90_000 * 200 * 32 and auto.bytes(1000) < 1.5e9
    assert full.mode == "all" and full.bytes(1000) > FULL_SWEEP_LIMIT
    assert plan_sweep(4, 512, 1000, 10_000, NeuronSelection()).mode == "all"  # the embedded model: everything


def test_cli_dry_run_prints_the_plan():
    result = subprocess.run([sys.executable, "-m", "neurolab", "sweep", "--op", "+", "--dry-run", "--max-op", "50"],
                            capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr
    assert "all: 2,500 prompts x 2,048 neurons in 4 layers = 5,120,000 values" in result.stdout


def test_a_store_written_by_the_previous_release_migrates_in_place(tmp_path, embedded, monkeypatch, no_computation):
    monkeypatch.undo()
    path = tmp_path / "old.duckdb"
    with gzip.open(V1_STORE) as source, path.open("wb") as target:
        shutil.copyfileobj(source, target)
    original = path.read_bytes()
    old = duckdb.connect(str(path), read_only=True)
    counts = {t: old.execute(f"SELECT count(*) FROM {t}").fetchone()[0]
              for t in ("prompts", "importance", "heuristic_scores", "classification_runs")}
    k_old, kv_old = (old.execute("SELECT k, kv FROM neuron_values WHERE sweep_id = 1 AND layer = 3 AND neuron = 42 "
                                 "ORDER BY idx").fetchnumpy()[c] for c in ("k", "kv"))
    old.close()

    store = Store(path)
    assert store.schema_version == SCHEMA_VERSION
    backup = Path(store.query("SELECT value FROM meta WHERE key = 'backup'")["value"][0])
    assert backup.read_bytes() == original  # the untouched copy beside it
    for table, count in counts.items():
        assert len(store.query(f"SELECT * FROM {table}")) == count
    k, kv = store.neuron_map(1, 3, 42)
    assert np.array_equal(k, k_old) and np.array_equal(kv, kv_old)  # values kept exactly (float32, stored KV)
    assert set(store.sweeps()["fingerprint"]) == {embedded.fingerprint}  # old keys now carry the dtype
    # the migrated results are cache hits for today's code: nothing is recomputed
    monkeypatch.setattr("neurolab.analysis.sweep.stream", no_computation)
    assert run_sweep(embedded, store, "+", NeuronSelection("all", layers=(3,)), max_op=8).cached
    # 0.1's importance (another prompt rule) and classification (rules 1) stay, under their own keys; today's are
    # computed anew, from the migrated maps (no sweep pass)
    assert set(store.query("SELECT DISTINCT method FROM importance")["method"]) == {"attribution-v1"}
    again = classify_operator(embedded, store, "+", 8, settings=ClassifySettings(top_n=10), layers=[3])
    assert len(again.scores) and set(again.scores["layer"]) == {3}
    assert store.query("SELECT DISTINCT rules FROM classification_runs ORDER BY 1")["rules"].tolist() == [1, 2]
    assert len(store.query("SELECT * FROM heuristic_scores WHERE rules = 1")) == counts["heuristic_scores"]
    store.close()
    assert Store(path).schema_version == SCHEMA_VERSION  # reopening does not migrate twice


def test_cached_analyses_are_keyed_by_their_spec(store):
    calls = []

    def compute():
        calls.append(1)
        return pd.DataFrame({"n": [len(calls)]})

    spec = {"fingerprint": "f", "op": "+", "intervention": "none", "n": 5}
    assert store.cached_frame("demo", spec, compute)["n"].tolist() == [1]
    assert store.cached_frame("demo", dict(reversed(spec.items())), compute)["n"].tolist() == [1]  # cached
    assert store.cached_frame("demo", {**spec, "n": 6}, compute)["n"].tolist() == [2]  # a setting changed
    assert len(store.analyses("demo")) == 2
