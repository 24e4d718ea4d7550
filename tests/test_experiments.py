"""Causal checks on the embedded model: heuristic and prompt knockout, failure analysis, their CLI and figures."""

from __future__ import annotations

import argparse
import json

import numpy as np
import pandas as pd
import pytest
import torch

from neurolab.analysis import failures, knockout
from neurolab.analysis.classification import ClassifySettings
from neurolab.analysis.failures import failure_analysis, failure_summary
from neurolab.analysis.knockout import heuristic_knockout, prompt_knockout
from neurolab.capture.interventions import ablation
from neurolab.capture.trace import run
from neurolab.cli import experiments, options
from neurolab.errors import InterventionError
from neurolab.store import Store
from neurolab.viz.experiments import failure_figure, heuristic_knockout_figure, prompt_knockout_figure

SETTINGS = ClassifySettings(top_n=100)


@pytest.fixture(scope="module")
def store(tmp_path_factory) -> Store:
    s = Store(tmp_path_factory.mktemp("experiments") / "store.duckdb")
    yield s
    s.close()


@pytest.fixture(scope="module")
def heuristic(embedded, store) -> pd.DataFrame:
    return heuristic_knockout(embedded, store, "+", settings=SETTINGS, min_neurons=8, max_prompts=300)


@pytest.fixture(scope="module")
def prompt(embedded, store) -> pd.DataFrame:
    return prompt_knockout(embedded, store, "+", settings=SETTINGS, ns=(0, 10, 40), n_prompts=60)


@pytest.fixture(scope="module")
def failed(embedded, store) -> pd.DataFrame:
    return failure_analysis(embedded, store, "+", eval_max_op=150, n=20, settings=SETTINGS)


def test_row_mask_equals_ablating_each_prompts_neurons_alone(embedded):
    prompts = ["12+34=", "5+7=", "99+1=", "40+41=", "3+3="]
    gen = torch.Generator().manual_seed(0)
    masks = {layer: torch.rand(len(prompts), embedded.d_mlp, generator=gen) < 0.2 for layer in (2, 3)}
    masked = run(embedded, prompts, [3], logits=True, row_mask=masks, batch_size=2)  # masks sliced per chunk
    clean = run(embedded, prompts, [3], logits=True)
    assert (clean.logits - masked.logits).abs().max() > 1  # the mask does something
    for i, text in enumerate(prompts):
        neurons = [(layer, int(n)) for layer, mask in masks.items() for n in mask[i].nonzero().flatten()]
        alone = run(embedded, [text], [3], logits=True, intervention=ablation(neurons))
        torch.testing.assert_close(alone.logits, masked.logits[i:i + 1], atol=1e-4, rtol=0)
        torch.testing.assert_close(alone.neurons[3], masked.neurons[3][i:i + 1], atol=1e-5, rtol=0)
    with pytest.raises(InterventionError, match="row_mask"):
        run(embedded, prompts, (), row_mask={3: masks[3][:2]})


def test_heuristic_knockout_hurts_related_prompts_more(heuristic):
    assert list(heuristic.columns[:4]) == ["heuristic", "group", "direct", "neurons"]
    assert {"related_prompts", "related_accuracy", "unrelated_accuracy"} <= set(heuristic.columns)
    assert len(heuristic) >= 3 and (heuristic["neurons"] >= 8).all()
    assert (heuristic["related_prompts"] <= 300).all()
    assert (heuristic["unrelated_prompts"] <= heuristic["related_prompts"]).all()
    assert heuristic[["related_accuracy", "unrelated_accuracy"]].apply(lambda c: c.between(0, 1)).all().all()
    assert heuristic["related_accuracy"].mean() < heuristic["unrelated_accuracy"].mean() - 0.1


def test_prompt_knockout_heuristic_curve_falls_below_random(prompt):
    assert len(prompt) == 6 and set(prompt["arm"]) == {"heuristic", "random"}
    curves = prompt.pivot(index="n", columns="arm", values="accuracy")
    assert curves.loc[0].tolist() == [1.0, 1.0]  # sampled prompts are correct
    assert curves.loc[40, "heuristic"] < curves.loc[40, "random"] - 0.2
    neurons = prompt.pivot(index="n", columns="arm", values="neurons")
    np.testing.assert_allclose(neurons["heuristic"], neurons["random"])  # as many random neurons


def test_failure_analysis_wrong_prompts_lack_the_right_neurons(failed):
    assert len(failed) == 40 and failed["group"].value_counts().tolist() == [20, 20]
    assert (failed["fire_and_should"] <= failed["should_fire"]).all()
    assert (failed["fire_and_should"] <= failed["fire_total"]).all()
    summary = failure_summary(failed).set_index("group")
    assert summary.loc["wrong", "fire_share"] < summary.loc["correct", "fire_share"]
    assert summary.loc["wrong", "fire_and_should"] < summary.loc["correct", "fire_and_should"]


def test_reruns_are_served_from_the_store(embedded, store, heuristic, prompt, failed, monkeypatch):
    def fail(*args, **kwargs):
        raise AssertionError("recomputed")

    for module in (knockout, failures):
        monkeypatch.setattr(module, "classification", fail)
        monkeypatch.setattr(module, "run", fail)
    pd.testing.assert_frame_equal(
        heuristic_knockout(embedded, store, "+", settings=SETTINGS, min_neurons=8, max_prompts=300), heuristic)
    pd.testing.assert_frame_equal(
        prompt_knockout(embedded, store, "+", settings=SETTINGS, ns=(0, 10, 40), n_prompts=60), prompt)
    pd.testing.assert_frame_equal(failure_analysis(embedded, store, "+", eval_max_op=150, n=20, settings=SETTINGS),
                                  failed)
    with pytest.raises(AssertionError, match="recomputed"):  # another setting is another result
        prompt_knockout(embedded, store, "+", settings=SETTINGS, ns=(0, 10, 40), n_prompts=60, seed=1)


def test_figures_build(heuristic, prompt, failed):
    for fig, traces in ((heuristic_knockout_figure(heuristic, "+"), 2), (prompt_knockout_figure(prompt, "+"), 2),
                        (failure_figure(failed, "+"), 2)):
        assert len(fig.data) == traces
        assert fig.layout.title.text and fig.layout.xaxis.title.text and fig.layout.yaxis.title.text


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser()
    parents = {"model": options.model_options(), "store": options.store_options(), "grid": options.grid_options(),
               "importance": options.importance_options(), "intervention": options.intervention_options(),
               "quiet": options.quiet_option()}
    experiments.add_parsers(parser.add_subparsers(dest="command", required=True), parents)
    return parser


def test_cli_commands(embedded, store, prompt, failed, tmp_path, capsys, monkeypatch):
    monkeypatch.setattr(options, "load", lambda args: embedded)
    common = ["--op", "+", "--top-n", "100", "--store", str(store.path), "--quiet"]
    args = _parser().parse_args(["knockout", "--kind", "prompt", "--ns", "0,10,40", "--n-prompts", "60", "--json",
                                 "--out", str(tmp_path / "k.csv"), *common])
    assert args.run(args) == 0
    printed = capsys.readouterr().out
    records = json.loads(printed[:printed.rindex("]") + 1])
    assert [r["n"] for r in records] == [0, 10, 40] and "heuristic_accuracy" in records[0]
    assert len(pd.read_csv(tmp_path / "k.csv")) == 3
    args = _parser().parse_args(["failures", "--n", "20", *common])
    assert args.run(args) == 0
    out = capsys.readouterr().out
    assert "correct" in out and "wrong" in out and "fire_and_should" in out
    assert _parser().parse_args(["knockout", *common]).kind == "heuristic"
