"""Ablations over a whole grid: accuracy before/after, the effect map, a reproducible random control, the CLI."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest

from neurolab.analysis import ablation as ablation_module
from neurolab.analysis.ablation import ablate_grid, heuristic_neurons, neuron_ablation, random_control, top_n
from neurolab.analysis.classification import ClassifySettings, classify_operator
from neurolab.analysis.sweep import grid_for, stored_answers
from neurolab.capture import kept, trace
from neurolab.errors import InputError
from neurolab.store import Store

MAX_OP = 100


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    s = Store(tmp_path_factory.mktemp("ablation") / "store.duckdb")
    yield s
    s.close()


@pytest.fixture(scope="module")
def heuristic_top50(embedded, store):
    """The 50 most important layer-3 neurons that have a heuristic for `+` (the issue's measurement)."""
    result = classify_operator(embedded, store, "+", MAX_OP, settings=ClassifySettings(top_n=200), layers=[3])
    ranked = result.matched.drop_duplicates("neuron").sort_values("importance_rank")
    return [(3, int(n)) for n in ranked["neuron"].head(50)]


def test_heuristic_neurons_break_addition_and_the_random_control_does_not(embedded, store, heuristic_top50):
    result = ablate_grid(embedded, store, "+", neuron_ablation(heuristic_top50, origin="heuristic"), MAX_OP)
    summary = result.summary()
    print("top-50 heuristic neurons of layer 3:", summary)  # reported in the note
    assert summary["before"] > 0.99 and summary["after"] < 0.6 and summary["control"] > 0.95
    effect = result.effect_map()
    assert effect.shape == (MAX_OP, MAX_OP) and np.nanmean(effect) < -0.2
    lost = result.results_lost(5)
    assert (lost["accuracy_lost"] > 0).all() and list(lost.columns) == ["answer", "prompts", "accuracy_lost", "mean_dp"]


def test_the_random_control_is_reproducible_and_matches_the_ablation(embedded, store, heuristic_top50):
    grid = grid_for(embedded, "+", MAX_OP)
    chosen = neuron_ablation([*heuristic_top50[:20], (2, 5), (2, 9)])
    a, b = random_control(embedded, store, grid, chosen, seed=3), random_control(embedded, store, grid, chosen, 3)
    assert a == b and a.key == b.key and a.origin == "random control"
    other = random_control(embedded, store, grid, chosen, seed=4)
    assert other.key != a.key
    drawn = a.steps[0].neurons
    assert sorted(layer for layer, _ in drawn) == sorted(layer for layer, _ in chosen.steps[0].neurons)
    assert not set(drawn) & set(chosen.steps[0].neurons)
    pool = set(top_n(embedded, store, grid, 3, 200))
    assert {n for n in drawn if n[0] == 3} <= pool


def test_toggling_an_ablation_back_on_computes_nothing(embedded, store, monkeypatch):
    chosen = neuron_ablation(top_n(embedded, store, grid_for(embedded, "-", 40), 3, 8))
    first = ablate_grid(embedded, store, "-", chosen, 40)

    def forbid(*args, **kwargs):
        raise AssertionError("recomputed a cached grid")

    monkeypatch.setattr("neurolab.analysis.sweep.stream", forbid)
    again = ablate_grid(embedded, store, "-", chosen, 40)
    assert again.summary() == first.summary()
    assert np.isnan(again.effect_map()).sum() == 40 * 40 - len(grid_for(embedded, "-", 40))  # off-grid cells


def test_mean_ablation_and_heuristic_selection(embedded, store, heuristic_top50):
    grid = grid_for(embedded, "+", MAX_OP)
    mean = ablate_grid(embedded, store, "+", neuron_ablation(heuristic_top50[:10], "mean", grid), MAX_OP,
                       control_seed=None)
    assert mean.control is None and mean.summary()["after"] < mean.summary()["before"]
    assert heuristic_neurons(embedded, store, grid, "result_range_40_50")
    with pytest.raises(InputError, match="no neuron matches"):
        heuristic_neurons(embedded, store, grid, "no_such_heuristic")


def test_cli_ablate_prints_before_after_and_control(tmp_path):
    cmd = [sys.executable, "-m", "neurolab", "ablate", "--op", "*", "--top-n", "20", "--layer", "3", "--max-op", "40",
           "--store", str(tmp_path / "s.duckdb"), "--quiet", "--json"]
    result = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr
    summary = json.loads(result.stdout)
    assert summary["neurons"] == 20 and summary["origin"] == "top-20 of layer 3"
    assert summary["accuracy_after"] < summary["accuracy_before"] and "accuracy_control" in summary
    bad = subprocess.run([*cmd[:6], "--neurons", "L3N1", "--top-n", "3"], capture_output=True, text=True, timeout=300)
    assert bad.returncode == 2 and "one way" in bad.stderr and "Traceback" not in bad.stderr


def test_a_new_toggle_is_one_pass_shown_before_it_is_stored(embedded, store, monkeypatch):
    """The ablated grid and its control run as one side-by-side pass; the store gets them after the result."""
    grid = grid_for(embedded, "*", 30)
    ablate_grid(embedded, store, "*", neuron_ablation([(3, 1)]), 30)  # the clean grid, computed and kept
    kept.cache_for(embedded.device).clear()  # as after a restart: the answers are stored, nothing is kept
    writes, batches = [], []
    real = trace.run_side_by_side

    def recording(model, prompts, interventions, **kwargs):
        batches.append(len(interventions))
        return real(model, prompts, interventions, **kwargs)

    monkeypatch.setattr(ablation_module, "run_side_by_side", recording)
    monkeypatch.setattr(ablation_module, "later", writes.append)  # hold the writes back
    chosen = neuron_ablation(top_n(embedded, store, grid, 2, 6))
    result = ablate_grid(embedded, store, "*", chosen, 30)
    assert batches == [2] and len(writes) == 2
    assert stored_answers(embedded, store, grid, chosen) is None  # shown first ...
    for write in writes:
        write()
    stored = stored_answers(embedded, store, grid, chosen)  # ... stored after, whole
    assert np.array_equal(stored["correct"].to_numpy(), result.prompts["correct_after"].to_numpy())
    assert stored_answers(embedded, store, grid, result.control) is not None
    monkeypatch.setattr(trace, "run", lambda *a, **k: pytest.fail("the clean grid was kept by the toggle"))
    assert trace.keep_clean(embedded, grid.prompts)
