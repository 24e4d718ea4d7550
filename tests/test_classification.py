"""The heuristics pipeline on the embedded model: importance, first heuristics layer, stored classification."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pandas as pd
import pytest

from neurolab.analysis.atlas import atlas, normalise_query, search, search_hint
from neurolab.analysis.classification import ClassifySettings, classify_operator
from neurolab.analysis.importance import activation_patching, attribution_patching, first_heuristics_layer, prompt_pairs
from neurolab.analysis.sweep import grid_for, run_sweep
from neurolab.analysis.value_lens import agreement, matching_set, result_predicate
from neurolab.store import Store

MAX_OP = 100


@pytest.fixture(scope="module")
def store(tmp_path_factory) -> Store:
    s = Store(tmp_path_factory.mktemp("classify") / "store.duckdb")
    yield s
    s.close()


@pytest.fixture(scope="module")
def plus(embedded, store):
    settings = ClassifySettings(top_n=100)
    return classify_operator(embedded, store, "+", MAX_OP, settings=settings)


def test_attribution_patching_tracks_exact_activation_patching(embedded, store):
    sweep = run_sweep(embedded, store, "+", max_op=MAX_OP)
    pairs = prompt_pairs(embedded, grid_for(embedded, "+", MAX_OP), 20, 1, store.prompts(sweep.sweep_id)["correct"])
    assert len(pairs.clean) == 20 and all(a != b for a, b in zip(pairs.clean_answer, pairs.corrupt_answer))
    approx = attribution_patching(embedded, pairs, layers=[3])
    exact = activation_patching(embedded, pairs, layers=[3])
    merged = approx.merge(exact, on=["layer", "neuron"], suffixes=("_attr", "_act"))
    rho = merged["mean_attr"].rank().corr(merged["mean_act"].rank())  # Spearman
    assert rho > 0.5, rho
    top_exact = set(merged.nlargest(20, "mean_act")["neuron"])
    top_attr = set(merged.nlargest(20, "mean_attr")["neuron"])
    assert len(top_exact & top_attr) >= 8


def test_first_heuristics_layer_is_where_the_mlp_starts_promoting_the_answer(embedded, store):
    pairs = prompt_pairs(embedded, grid_for(embedded, "+", MAX_OP), 50)  # correctness probed, not read
    first, evidence = first_heuristics_layer(embedded, pairs)
    assert list(evidence["layer"]) == list(range(embedded.n_layers))
    best = evidence["promotion"].max()
    assert first >= 1 and evidence.loc[first, "promotion"] >= 0.05 * best
    assert (evidence.loc[: first - 1, "promotion"] < 0.05 * best).all()
    assert evidence["promotion"].iloc[-1] > 0  # the last MLP promotes the answer


def test_classification_is_stored_queryable_and_cached(embedded, store, plus):
    assert plus.layers == list(range(plus.first_layer, embedded.n_layers))
    coverage = plus.coverage()
    assert (coverage["top_neurons"] == 100).all()
    assert (coverage["with_heuristic"] > 10).all(), coverage
    scores = plus.scores
    assert (~scores["matched"]).any() and scores["matched"].any()  # sub-threshold scores are kept too
    assert ((scores["score"] >= 0.6) | ~scores["matched"]).all()
    ranges = store.query("SELECT DISTINCT neuron FROM neuron_heuristics WHERE fingerprint=? AND op='+' AND "
                         "family='result_range' AND layer=3 AND score >= 0.8", [embedded.fingerprint])
    assert len(ranges) > 0
    again = classify_operator(embedded, store, "+", MAX_OP, settings=ClassifySettings(top_n=100))
    pd.testing.assert_frame_equal(again.scores, plus.scores)


def test_direct_neurons_promote_their_heuristics_results(embedded, store, plus):
    direct = plus.matched[plus.matched["direct"]]
    checked = agreement(embedded, direct, store.prompts(plus.sweep_id)["answer"].to_numpy())
    assert len(checked) > 20
    assert checked["share"].mean() > 2 * checked["chance"].mean()
    assert checked["agrees"].mean() > 0.3
    ranges = checked[checked["heuristic"].str.startswith("result_range")]
    assert ranges["share"].mean() > 2 * ranges["chance"].mean()


def test_atlas_search(embedded, store, plus):
    frame = atlas(store, embedded.fingerprint)
    assert set(frame["op"]) == {"+"} and frame["score"].min() >= 0.6
    assert normalise_query("result 0 mod 10") == "result_0mod10"
    assert normalise_query("op1 range 100-150") == "op1_range_100_150"
    found = search(frame, "result range")
    assert len(found) and found["heuristic"].str.startswith("result_range").all()
    one = frame.iloc[0]
    assert set(search(frame, one["label"].lower())["label"]) == {one["label"]}  # a neuron label
    assert set(search(frame, f"L{one['layer']}")["layer"]) == {one["layer"]}
    ranged = frame[frame["heuristic"].str.match(r"op[12]_range_\d+_\d+$")].iloc[0]
    target, lo, hi = ranged["heuristic"].split("_range_")[0], *map(int, ranged["heuristic"].split("_")[-2:])
    inner = search(frame, f"{target} range {lo + 1}-{hi - 1}")  # a narrower range: the covering heuristics
    assert ranged["heuristic"] in set(inner["heuristic"])
    assert set(search(frame, "0 mod 10")["heuristic"]) <= {h for h in frame["heuristic"] if "_0mod10" in h}
    assert search(frame, "no such thing").empty and "L3N170" in search_hint(frame, "no such thing")


def test_matching_sets_from_names():
    op1, op2 = np.arange(30), np.arange(30)[::-1]
    result = op1 + op2
    assert matching_set("op1_3mod7", op1, op2, result).sum() == 4
    assert matching_set("same_operand", op1, op2, result).sum() == 0
    assert matching_set("op2_range_10_20", op1, op2, result).sum() == 10
    assert matching_set("result_pattern_..9", op1, op2, result).all()
    assert result_predicate("op1_3mod7") is None
    assert list(result_predicate("result_range_40_50")(np.array([39, 40, 49, 50]))) == [False, True, True, False]


def test_cli_classify_writes_every_score(tmp_path):
    out = tmp_path / "scores.csv"
    result = subprocess.run(
        [sys.executable, "-m", "neurolab", "classify", "--op", "-", "--top-n", "20", "--layers", "3",
         "--store", str(tmp_path / "s.duckdb"), "--out", str(out), "--quiet"],
        capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr
    assert "first heuristics layer" in result.stdout and "with_heuristic" in result.stdout
    frame = pd.read_csv(out)
    assert set(frame["layer"]) == {3} and frame["neuron"].nunique() == 20
    assert (frame["score"] < 0.6).any() and {"heuristic", "score", "base_rate", "matched"} <= set(frame.columns)
