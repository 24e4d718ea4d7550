"""MathNeuro's claims where they can fail (issue 23): the language task's held-out split, a separate non-math K,
conditions with bootstrap intervals, the scaling study, single-sample robustness, the frontier, the CLI, the charts."""

from __future__ import annotations

import argparse

import numpy as np
import pytest
import torch

from neurolab.analysis import mathneuro as mn
from neurolab.analysis import mathneuro_claims as mc
from neurolab.errors import InputError
from neurolab.store import Store
from neurolab.tasks.language import facts
from neurolab.tasks.samples import builtin_general, load_samples
from neurolab.tasks.splits import language_split
from neurolab.viz.mathneuro import frontier_figure, scaling_figure


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    return Store(tmp_path_factory.mktemp("claims") / "s.duckdb")


def _texts(chosen) -> set[str]:
    return {f"{f.prompt} {f.answer}" for f in chosen}


def test_language_split_disjoint_and_used():
    samples, heldout = language_split(0)
    assert not set(samples) & set(heldout) and set(samples) | set(heldout) == set(facts())
    assert language_split(0) == (samples, heldout) and language_split(1)[0] != samples
    for relation in {f.relation for f in facts()}:
        ours = [f for f in samples if f.relation == relation]
        theirs = [f for f in heldout if f.relation == relation]
        assert 0 <= len(ours) - len(theirs) <= 1
    built = load_samples(n=1000)
    assert set(built.general) == _texts(samples) and not set(built.general) & _texts(heldout)
    assert set(load_samples(n=30, seed=3).general) <= _texts(samples)
    assert len(builtin_general(1000)) == len(facts())  # without a split: every fact, as before
    assert built.spec["general"]["builtin"] == "facts-half-v1"


def test_nonmath_measured_on_heldout_facts(embedded, store):
    samples, heldout = language_split(0)
    assert mn.nonmath_accuracy(embedded) == mn.facts_accuracy(embedded, heldout)
    measured = mc.stored_nonmath(embedded, None, store)
    assert measured["nonmath"] == mn.nonmath_accuracy(embedded)
    assert measured["nonmath_samples_half"] == mn.facts_accuracy(embedded, samples)


def test_k_general(embedded, store):
    samples = load_samples(n=20, max_single_token=embedded.max_single_token)
    math_scores, general_scores = mn.scores_for(embedded, samples, store)
    same = mn.math_specific(math_scores, general_scores, 0.03)
    assert all(torch.equal(same[n], m) for n, m in mn.math_specific(math_scores, general_scores, 0.03, 0.03).items())
    wider = mn.math_specific(math_scores, general_scores, 0.03, 0.08)
    assert all((wider[n] <= same[n]).all() for n in same) and mn.mask_counts(wider) < mn.mask_counts(same)
    _, _, plain, _ = mn.run_mathneuro(embedded, samples, [0.03], store)
    _, _, separate, _ = mn.run_mathneuro(embedded, samples, [0.03], store, k_general=0.08)
    assert int(separate["math_specific"].iloc[0]) == mn.mask_counts(wider) < int(plain["math_specific"].iloc[0])


def test_bootstrap_matches_resampling():
    rng = np.random.default_rng(1)
    values = (rng.random(400) < 0.3).astype(int) - (rng.random(400) < 0.1).astype(int)
    mean, lo, hi = mc.bootstrap_mean(values, seed=0, n_boot=4000)
    resampled = values[rng.integers(0, values.size, size=(4000, values.size))].mean(axis=1)
    assert mean == values.mean() and lo < mean < hi
    assert abs(lo - np.quantile(resampled, 0.025)) < 0.01 and abs(hi - np.quantile(resampled, 0.975)) < 0.01
    assert mc.bootstrap_mean(np.ones(50)) == (1.0, 1.0, 1.0)
    assert mc.bootstrap_mean(values, seed=5) == mc.bootstrap_mean(values, seed=5)


def test_conditions(embedded):
    out, ckpt, fewshot = mc.parse_conditions("out-of-range,step-01000,fewshot", prompts=50)
    prompts, targets = mc.condition_prompts(embedded, out)
    assert len(prompts) == 50 == len(targets) and prompts == mc.condition_prompts(embedded, out)[0]
    assert any(max(int(t) for t in p.rstrip("=").split("+")) >= 100 for p in prompts)
    assert len(mc.condition_prompts(embedded, mc.Condition(max_op=150, prompts=0))[0]) == 150 * 150
    assert mc.condition_model(embedded, ckpt).fingerprint != embedded.fingerprint
    assert mc.condition_prompts(embedded, fewshot)[0][0].count("=") == 4
    custom = mc.parse_conditions("step-00500:spaced:120:-")[0]
    assert (custom.checkpoint, custom.template, custom.max_op, custom.op) == ("step-00500", "spaced", 120, "-")
    for bad in ("nowhere", "a:b:c:+", "::100:%", ","):
        with pytest.raises(InputError):
            mc.parse_conditions(bad)
    with pytest.raises(InputError, match="checkpoint"):
        mc.condition_model(embedded, mc.Condition(checkpoint="step-99999"))


def test_scaling_study_cached_and_controlled(embedded, store):
    cond = mc.Condition(max_op=150, prompts=300)
    table = mc.scaling_study(embedded, [cond], store, factors=(1.0, 1.5), n_samples=20)
    assert len(table) == 4 and set(table["method"]) == {"mathneuro", "random"}
    unchanged = table[table["factor"] == 1.0]
    assert (unchanged["gain"] == 0).all() and (unchanged["gain_lo"] == 0).all()
    at_15 = table[table["factor"] == 1.5].set_index("method")
    assert at_15.loc["mathneuro", "weights"] == at_15.loc["random", "weights"] > 0
    assert at_15.loc["mathneuro", "gain_hi"] < 0 and abs(at_15.loc["random", "gain"]) < 0.02
    gap = at_15.loc["mathneuro", "gain"] - at_15.loc["random", "gain"]
    assert at_15.loc["mathneuro", "vs_control"] == pytest.approx(gap) and np.isnan(at_15.loc["random", "vs_control"])
    assert ((table["acc_lo"] <= table["accuracy"]) & (table["accuracy"] <= table["acc_hi"])).all()
    best = mc.best_scaling(table).iloc[0]
    assert best["best_factor"] == 1.0 and not best["beats_control"]
    stored = len(store.analyses())
    again = mc.scaling_study(embedded, [cond], store, factors=(1.0, 1.5), n_samples=20)
    assert len(store.analyses()) == stored and again.equals(table)
    assert len(scaling_figure(table).data) == 2


def test_single_sample_study(embedded, store):
    per_pair, summary = mc.single_sample_study(embedded, store, pairs=2, k=0.01, reference_samples=20,
                                               eval_prompts=60)
    assert list(per_pair["pair"]) == ["reference", "0", "1"]
    singles = per_pair.iloc[1:]
    assert ((singles["jaccard"] > 0) & (singles["jaccard"] < 1)).all() and per_pair["jaccard"].iloc[0] == 1.0
    assert singles["math_sample"].nunique() == 2
    drop = summary.set_index("metric").loc["math_drop"]
    assert drop["min"] <= drop["mean"] <= drop["max"] < 0 and drop["20 samples"] < 0


def test_frontier_and_cli(embedded, store, tmp_path):
    samples = load_samples(n=20, max_single_token=embedded.max_single_token)
    table = mc.frontier(embedded, samples, [0.01, 0.03], [None, 0.08], store, eval_prompts=60)
    assert list(zip(table["k"], table["k_general"])) == [(0.01, 0.01), (0.03, 0.03), (0.01, 0.08), (0.03, 0.08)]
    assert table["weights"].iloc[3] < table["weights"].iloc[1]
    best = mc.frontier_best(table)
    assert best is None or (best["within"] and best["math_drop"] == table[table["within"]]["math_drop"].min())
    assert len(frontier_figure(table).data) == 2

    from neurolab.cli import mathneuro as cli
    from neurolab.cli import options

    parser = argparse.ArgumentParser()
    sub = parser.add_subparsers(dest="command")
    parents = {"model": options.model_options(), "store": options.store_options(), "grid": options.grid_options(),
               "intervention": options.intervention_options(), "quiet": options.quiet_option()}
    cli.add_parsers(sub, parents)
    args = parser.parse_args(["mathneuro-study", "frontier", "--samples", "20", "--top-k", "0.01,0.03",
                              "--k-generals", "k,0.08", "--prompts", "60", "--store", str(store.path),
                              "--out", str(tmp_path), "--quiet"])
    stored = len(store.analyses())
    assert args.run(args) == 0 and len(store.analyses()) == stored  # all cached by the call above
    assert (tmp_path / "frontier.csv").exists()
    args = parser.parse_args(["mathneuro", "--k-general", "0.08", "--samples", "20", "--top-k", "0.03",
                              "--store", str(store.path), "--quiet"])
    assert args.k_general == 0.08 and args.run(args) == 0
    with pytest.raises(InputError):
        cli.parse_k_generals("k,big")
    with pytest.raises(InputError):
        cli.parse_k_general(1.5)
    with pytest.raises(InputError):
        cli.parse_factors("-1")


def test_page_k_general_and_frontier(embedded, pages_store):
    from pathlib import Path

    from streamlit.testing.v1 import AppTest

    page = Path(__file__).resolve().parent.parent / "pages" / "6_MathNeuro.py"
    at = AppTest.from_file(str(page), default_timeout=600)
    at.run()
    at.number_input(key="mn_samples").set_value(10)
    at.toggle(key="mn_score").set_value(True).run()
    assert not at.exception and not at.error
    at.select_slider(key="mn_k").set_value(0.05).run()
    at.select_slider(key="mn_k_general").set_value(0.15).run()
    assert not at.exception and not at.error
    at.multiselect(key="mn_frontier_ks").set_value([0.05])
    at.multiselect(key="mn_frontier_kgs").set_value(["= K", 0.1])
    at.number_input(key="mn_frontier_prompts").set_value(50)
    at.button(key="mn_frontier_run").click().run()
    assert not at.exception
    front = next(d.value for d in at.dataframe if "math_drop" in d.value.columns)
    assert list(front["k_general"]) == [0.05, 0.1] and front["weights"].iloc[1] < front["weights"].iloc[0]
