"""A prompt's bag of heuristics on the embedded model: groups, remainder and total add up, the norm's readout is
exact on every family, an ablation empties its group, nothing is classified behind the user's back, the figure."""

from __future__ import annotations

import math

import numpy as np
import pytest

from neurolab.analysis import heuristic_bag as bag_module
from neurolab.analysis.ablation import neuron_ablation
from neurolab.analysis.classification import ClassifySettings, classify_operator
from neurolab.analysis.failures import _threshold
from neurolab.analysis.heuristic_bag import GROUP_COLUMNS, heuristic_bag, logit_diff_readout
from neurolab.capture.trace import Pass, intervened, run, run_pass
from neurolab.heuristics import parse
from neurolab.store import Store
from neurolab.viz.heuristic_bag import TOTAL, UNEXPLAINED, bag_figure

PROMPT = "23+45="


@pytest.fixture(scope="module")
def store(embedded, tmp_path_factory):
    """A real store where `+` (max_op 100) is classified on layer 3, the embedded model's first heuristics layer."""
    s = Store(tmp_path_factory.mktemp("heuristic-bag") / "store.duckdb")
    classify_operator(embedded, s, "+", 100, settings=ClassifySettings(top_n=200), layers=[3])
    yield s
    s.close()


@pytest.fixture(scope="module")
def bag(embedded, store):
    return heuristic_bag(embedded, store, PROMPT)


def _logit_gap(model, text: str, answer: int) -> tuple[float, int]:
    """logit(answer) - the best other logit, and that other token, from a plain run."""
    logits = run(model, [text], logits=True).logits[0]
    answer_id = model.number_token_ids[answer]
    rivals = logits.clone()
    rivals[answer_id] = -math.inf
    return float(logits[answer_id] - rivals.max()), int(rivals.argmax())


def test_groups_and_remainder_add_up_to_the_models_logit_difference(embedded, store, bag):
    total, runner_id = _logit_gap(embedded, PROMPT, 68)
    assert bag.classified and bag.correct and bag.message == ""
    assert bag.total == pytest.approx(total, abs=1e-4) and bag.runner_up_token == embedded.token_str(runner_id)
    assert bag.answer_token == "68" and bag.runner_up_token != "68"
    assert list(bag.groups.columns) == GROUP_COLUMNS and len(bag.groups) >= 3
    assert bag.groups["contribution"].sum() + bag.remainder == pytest.approx(bag.total, abs=1e-5)
    assert bag.groups["contribution"].sum() > 0  # the heuristics push toward the answer
    sizes = bag.groups["contribution"].abs().to_numpy()
    assert (np.diff(sizes) <= 0).all()  # largest first
    # each neuron counted once, in the group of its best applying heuristic, and the groups are their sums
    assert bag.neurons["label"].is_unique
    for row in bag.groups.itertuples():
        members = bag.neurons[bag.neurons["heuristic"] == row.heuristic]
        assert sorted(members["label"]) == sorted(row.neurons)
        assert members["contribution"].sum() == pytest.approx(row.contribution, abs=1e-6)


def test_every_counted_neuron_applies_and_fires_by_the_failure_analysis_rule(embedded, store, bag):
    rows = store.atlas_rows(embedded.fingerprint, bag_module.RULES_VERSION)
    rows = rows[(rows["op"] == "+") & (rows["layer"] == 3)]
    sweep_id = bag_module._stored_run(embedded, store, "+", bag_module.PromptTemplate(), None, None).sweep_id
    acts = run(embedded, [PROMPT], [3]).neurons[3][0].numpy()
    op1, op2, result = np.array([23]), np.array([45]), np.array([68])
    for n in bag.neurons.itertuples():
        assert n.activation == pytest.approx(float(acts[n.neuron]), abs=1e-4)
        family, params = parse(n.heuristic)
        assert family.matching_set(params, op1, op2, result)[0]
        match = rows[(rows["neuron"] == n.neuron) & (rows["heuristic"] == n.heuristic)].iloc[0]
        k_map, _ = store.neuron_map(sweep_id, 3, n.neuron)
        assert n.activation >= _threshold(k_map, int(match["k"]), match["side"]) - 1e-6
        better = rows[(rows["neuron"] == n.neuron) & (rows["score"] > n.score)]
        for other in better.itertuples():  # a higher-scoring label must not apply (else it would be the group)
            fam, par = parse(other.heuristic)
            fires = n.activation >= _threshold(k_map, int(other.k), other.side)
            assert not (fam.matching_set(par, op1, op2, result)[0] and fires)


def test_the_readout_through_the_final_norm_is_exact_on_every_family(embedded, tiny_model):
    for model in (embedded, tiny_model):
        with intervened(model, None) as ops:
            inputs = {k: v.to(model.device) for k, v in model.encode([PROMPT]).items()}
            result = run_pass(model, Pass(inputs, ops=ops, residuals=[model.n_layers]))
            logits = result.logits[0].float()
            a, b = int(logits.argmax()), int(logits.argmin())
            vector, constant = logit_diff_readout(model, result.residuals[model.n_layers][0], a, b)
            readout = float(result.residuals[model.n_layers][0].float() @ vector) + constant
        assert readout == pytest.approx(float(logits[a] - logits[b]), rel=1e-4, abs=1e-4), model.adapter.family


def test_ablating_the_top_group_removes_it(embedded, store, bag):
    top = bag.groups.iloc[0]
    assert abs(top["contribution"]) > 0.5
    chosen = [(int(n.layer), int(n.neuron)) for n in bag.neurons[bag.neurons["heuristic"] == top["heuristic"]]
              .itertuples()]
    ablated = heuristic_bag(embedded, store, PROMPT, neuron_ablation(chosen, name="top group"))
    assert ablated.intervention == "top group"
    remaining = ablated.groups[ablated.groups["heuristic"] == top["heuristic"]]
    assert remaining.empty or remaining["contribution"].abs().max() < 1e-6
    labels = {f"L{layer}N{neuron}" for layer, neuron in chosen}
    hit = ablated.neurons[ablated.neurons["label"].isin(labels)]
    assert hit.empty or hit["contribution"].abs().max() < 1e-6
    assert ablated.total != pytest.approx(bag.total, abs=1e-3)
    assert ablated.groups["contribution"].sum() + ablated.remainder == pytest.approx(ablated.total, abs=1e-5)


def test_a_wrong_prompt_is_measured_against_the_models_answer(embedded, store):
    wrong = heuristic_bag(embedded, store, "150+140=")
    assert not wrong.correct and wrong.total < 0
    assert wrong.runner_up_token == "193"  # the model's own (wrong) top-1


def test_an_unclassified_operator_says_so_and_classifies_nothing(embedded, store):
    found = heuristic_bag(embedded, store, "23-5=")
    assert not found.classified and "nothing is classified for -" in found.message
    assert found.groups.empty and found.remainder == found.total
    assert found.total == pytest.approx(_logit_gap(embedded, "23-5=", 18)[0], abs=1e-4)
    assert store.query("SELECT count(*) AS n FROM neuron_heuristics WHERE op = '-'")["n"][0] == 0
    fig = bag_figure(found)
    assert list(fig.data[0].x) == [UNEXPLAINED, TOTAL] and "not classified" in fig.layout.title.text
    assert not heuristic_bag(embedded, store, PROMPT, max_op=50).classified  # + is classified on max_op 100 only


def test_labels_and_thresholds_are_read_from_the_store_once(embedded, store, bag, monkeypatch):
    def forbid(*args, **kwargs):
        raise AssertionError("read the classification again")

    monkeypatch.setattr(store, "atlas_rows", forbid)
    monkeypatch.setattr(store, "layer_maps", forbid)
    again = heuristic_bag(embedded, store, "12+7=")
    assert again.classified and not again.groups.empty


def test_the_waterfall_has_one_bar_per_group_then_the_remainder_and_the_total(bag):
    fig = bag_figure(bag)
    (trace,) = fig.data
    assert trace.type == "waterfall" and len(bag.groups) <= 12
    assert len(trace.x) == len(bag.groups) + 2 and list(trace.x[-2:]) == [UNEXPLAINED, TOTAL]
    assert list(trace.measure) == ["relative"] * (len(bag.groups) + 1) + ["total"]
    assert sum(trace.y[:-1]) == pytest.approx(trace.y[-1], abs=1e-5) and trace.y[-1] == pytest.approx(bag.total)
    assert "68" in fig.layout.title.text and bag.runner_up_token in fig.layout.title.text
    assert "logit" in fig.layout.yaxis.title.text
    assert bag.groups["neurons"].iloc[0][0] in trace.customdata[0]
    folded = bag_figure(bag, max_groups=2)
    assert len(folded.data[0].x) == 5 and "other heuristics" in folded.data[0].x[2]
    assert folded.data[0].y[2] == pytest.approx(bag.groups["contribution"].iloc[2:].sum(), abs=1e-6)
