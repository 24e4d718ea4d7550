"""The Operand Grid and Heuristic Atlas pages, driven with AppTest on the embedded model and a temp store."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from streamlit.testing.v1 import AppTest

ROOT = Path(__file__).resolve().parent.parent
GRID = str(ROOT / "pages" / "2_Operand_Grid.py")
ATLAS = str(ROOT / "pages" / "3_Heuristic_Atlas.py")


pytestmark = pytest.mark.usefixtures("pages_store")


def chart(at: AppTest, title: str) -> dict:
    """The one Plotly figure whose title contains ``title``."""
    found = [json.loads(c.proto.spec) for c in at.get("plotly_chart")]
    found = [f for f in found if title in f["layout"]["title"]["text"]]
    assert len(found) == 1, title
    return found[0]


def page(path: str) -> AppTest:
    at = AppTest.from_file(path, default_timeout=300)
    at.run()
    assert not at.exception, at.exception
    return at


def test_grid_page_offers_the_sweep_then_shows_the_neuron(embedded):
    at = page(GRID)
    at.number_input(key="max_op").set_value(40).run()
    assert "no stored neuron maps" in at.info[0].value and "would store all: 1,600 prompts" in at.info[0].value
    at.button(key="run_sweep").click().run()
    assert not at.exception and "Stored 1,600 prompts" in at.success[0].value
    charts = at.get("plotly_chart")
    assert [c.key for c in charts] == ["grid_heatmap"]  # one view drawn at a time: the map first
    heatmap = json.loads(charts[0].proto.spec)["data"][0]
    assert heatmap["zmid"] == 0 and heatmap["z"]["shape"] == "40, 40"
    at.text_input(key="grid_typed").set_value("L3N5").run()
    assert not at.error
    assert "L3N5" in json.loads(at.get("plotly_chart")[0].proto.spec)["layout"]["title"]["text"]
    at.session_state["grid_view"] = "Folded mod n"  # what clicking the tab sets
    at.run()
    assert [c.key for c in at.get("plotly_chart")] == ["grid_folded"]
    at.slider(key="grid_mod").set_value(7).run()
    assert chart(at, "folded mod 7")["data"][0]["z"]["shape"] == "7, 7"
    for view, title in (("By result", "against the result"), ("Value lens", "value vector on the number line")):
        at.session_state["grid_view"] = view
        at.run()
        assert len(at.get("plotly_chart")) == 1 and "L3N5" in chart(at, title)["layout"]["title"]["text"]
    assert chart(at, "value vector on the number line")["data"][0]["x"]
    at.session_state["grid_view"] = "Map"
    at.radio(key="grid_kind").set_value("KV").run()
    assert "KV map" in json.loads(at.get("plotly_chart")[0].proto.spec)["layout"]["title"]["text"]
    at.text_input(key="grid_typed").set_value("neuron 5").run()
    assert "not a neuron" in at.error[0].value


def test_atlas_classifies_filters_and_lists_matches_on_the_grid_page(embedded):
    at = page(ATLAS)
    assert "Nothing classified" in at.info[0].value
    at.number_input(key="atlas_top_n").set_value(50)
    at.button(key="atlas_classify").click().run()
    assert not at.exception and "classified" in at.success[0].value
    table = at.dataframe[-1].value
    assert len(table) > 0 and table["score"].min() >= 0.6
    at.number_input(key="atlas_min_lift").set_value(3.0).run()
    lifted = at.dataframe[-1].value
    assert 0 < len(lifted) < len(table) and lifted["lift"].min() >= 3
    at.number_input(key="atlas_min_lift").set_value(1.0).run()
    at.text_input(key="atlas_search").set_value("result range").run()
    filtered = at.dataframe[-1].value
    assert 0 < len(filtered) < len(table) and filtered["heuristic"].str.startswith("result_range").all()
    row = filtered.iloc[0]
    # what the Atlas' "open" button sets, then the grid page shows that neuron's matches
    grid = AppTest.from_file(GRID, default_timeout=300)
    grid.session_state["neuron"], grid.session_state["layer"] = row["label"], int(row["layer"])
    grid.run()
    assert not grid.exception and not grid.error
    matches = grid.dataframe[0].value
    assert row["heuristic"] in set(matches["heuristic"])
    grid.selectbox(key="grid_overlay").set_value(row["heuristic"]).run()
    titles = [json.loads(c.proto.spec)["layout"]["title"]["text"] for c in grid.get("plotly_chart")]
    assert any(row["heuristic"] in t for t in titles)


def test_grid_page_computes_a_neuron_that_no_sweep_stored(embedded):
    """Only the top-5 of layer 3 are stored (as for a big model); typing another neuron computes and caches it."""
    from neurolab.analysis.sweep import NeuronSelection, run_sweep
    from pages import shared_store

    store = shared_store()
    top = run_sweep(embedded, store, "*", NeuronSelection("top", top_n=5, layers=(3,), n_prompts=10), 20)
    other = next(n for n in range(embedded.d_mlp) if n not in top.neurons[3])
    at = page(GRID)
    at.text_input(key="grid_typed").set_value(f"L3N{top.neurons[3][0]}").run()  # a stored neuron; it stays
    at.selectbox(key="op").set_value("*")
    at.number_input(key="max_op").set_value(20).run()
    assert not at.info  # the sweep exists: no offer to run it
    at.text_input(key="grid_typed").set_value(f"L3N{other}").run()
    assert not at.exception and not at.error
    assert f"L3N{other}" in json.loads(at.get("plotly_chart")[0].proto.spec)["layout"]["title"]["text"]
    assert store.sweep_info(top.sweep_id)["stored"] == {3: 6}


LAB = str(ROOT / "pages" / "4_Ablation_Lab.py")
HOME = str(ROOT / "app.py")


def test_ablation_lab_toggles_on_and_off_and_every_page_follows(embedded):
    from pages import ACTIVE_KEY

    at = page(LAB)
    assert "No neuron chosen" in at.info[0].value  # nothing picked yet
    at.radio(key="lab_source").set_value("layer top-N").run()
    at.number_input(key="lab_top_n").set_value(30)
    at.number_input(key="max_op").set_value(40).run()
    at.toggle(key="ablation_on").set_value(True).run()
    assert not at.exception and not at.error
    values = {m.label: float(m.value) for m in at.metric}
    assert values["Accuracy, ablated"] < values["Accuracy, clean"] - 0.1
    assert values["Random control"] > values["Accuracy, ablated"]
    key = at.session_state[ACTIVE_KEY]
    assert key and any("Ablation active" in w.value for w in at.sidebar.warning)
    titles = [json.loads(c.proto.spec)["layout"]["title"]["text"] for c in at.get("plotly_chart")]
    assert any("Effect of the ablation" in t for t in titles)

    home = AppTest.from_file(HOME, default_timeout=300)
    home.session_state[ACTIVE_KEY] = key  # the same browser session, on the home page
    home.run()
    assert not home.exception and "under the ablation" in home.markdown[0].value
    assert any("Ablation active" in w.value for w in home.sidebar.warning)

    at.toggle(key="ablation_on").set_value(False).run()
    assert not at.exception and not at.session_state[ACTIVE_KEY]
    assert not any("Ablation active" in w.value for w in at.sidebar.warning)


def test_neurons_picked_on_the_grid_page_reach_the_lab(embedded):
    from pages import PICKS_KEY

    at = AppTest.from_file(LAB, default_timeout=300)
    at.session_state[PICKS_KEY] = ["L3N5", "L3N9"]
    at.run()
    assert not at.exception and "2 neurons (manual)" in at.caption[0].value


def test_circuit_page_computes_each_experiment_on_demand(embedded):
    at = AppTest.from_file(str(ROOT / "pages" / "5_Circuit.py"), default_timeout=600)
    at.run()
    assert not at.exception
    at.number_input(key="max_op").set_value(40)
    at.number_input(key="circuit_top_n").set_value(60)
    at.number_input(key="circuit_pairs").set_value(4).run()
    at.button(key="circuit_run").click().run()
    assert not at.exception and not at.error
    heatmap = json.loads(at.get("plotly_chart")[0].proto.spec)
    assert heatmap["data"][0]["type"] == "heatmap" and "L3 MLP" in heatmap["data"][0]["y"]
    at.button(key="knockout_prompt").click().run()
    assert not at.exception
    assert any("knockout" in json.loads(c.proto.spec)["layout"]["title"]["text"].lower()
               for c in at.get("plotly_chart"))
    at.number_input(key="failures_n").set_value(10)
    at.button(key="failures_run").click().run()
    assert not at.exception and not at.error
    assert len(at.dataframe) >= 1 and set(at.dataframe[-1].value["group"]) == {"correct", "wrong"}
    types = [json.loads(c.proto.spec)["data"][0]["type"] for c in at.get("plotly_chart")]
    assert types.count("heatmap") == 1 and len(types) == 3  # the earlier experiments are still shown
    assert "ie" not in at.dataframe[0].value.columns  # the patching table shows what is meaningful


def test_mathneuro_page_scores_prunes_applies_and_sweeps(embedded):
    from neurolab.analysis.classification import ClassifySettings, classify_operator
    from pages import ACTIVE_KEY, shared_store

    classify_operator(embedded, shared_store(), "+", 100, settings=ClassifySettings(top_n=50), layers=[3])

    at = AppTest.from_file(str(ROOT / "pages" / "6_MathNeuro.py"), default_timeout=600)
    at.run()
    assert not at.exception
    at.number_input(key="mn_samples").set_value(30)
    at.toggle(key="mn_score").set_value(True).run()
    assert not at.exception and not at.error
    assert list(at.dataframe[0].value["k"]) == [0.0001, 0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.15]
    assert not at.metric  # nothing evaluated until asked
    at.select_slider(key="mn_k").set_value(0.05).run()
    assert not at.metric and [b for b in at.button if b.key == "mn_evaluate"]
    at.button(key="mn_evaluate").click().run()
    values = {m.label: float(m.value) for m in at.metric}
    assert values["Math accuracy (mean of + - * /)"] < 0.9  # pruning math-specific weights costs math
    at.toggle(key="mn_apply").set_value(True).run()
    assert at.session_state[ACTIVE_KEY] and any("MathNeuro" in w.value for w in at.sidebar.warning)
    at.toggle(key="mn_apply").set_value(False).run()
    assert not at.session_state[ACTIVE_KEY]
    at.multiselect(key="mn_ks").set_value([0.05])
    at.button(key="mn_sweep").click().run()
    assert not at.exception
    sweep = next(d.value for d in at.dataframe if "method" in d.value.columns)
    assert set(sweep["method"]) == {"clean", "mathneuro", "random", "wanda"}
    random_row = sweep[sweep["method"] == "random"].iloc[0]
    assert random_row["math"] > sweep[sweep["method"] == "mathneuro"].iloc[0]["math"]
    overlap = next(d.value for d in at.dataframe if "lift" in d.value.columns)  # against the classification above
    assert len(overlap) and (overlap["chance"] > 0).all()


def test_the_atlas_and_the_model_page_compute_under_the_active_ablation(embedded):
    """Issue 19, item 4: with an ablation on, the Atlas classifies and lists under it and the Model page evaluates
    under it, and both say so."""
    from neurolab.analysis.ablation import neuron_ablation, top_n
    from neurolab.analysis.sweep import grid_for
    from neurolab.heuristics import RULES_VERSION
    from pages import ACTIVE_KEY, shared_store

    store = shared_store()
    grid = grid_for(embedded, "+", 40)
    chosen = neuron_ablation(top_n(embedded, store, grid, 3, 30), "zero", grid, "", "top-30 of layer 3")
    store.save_intervention(chosen.to_json(), chosen.tensors())

    atlas_page = AppTest.from_file(ATLAS, default_timeout=300)
    atlas_page.session_state[ACTIVE_KEY] = chosen.key
    atlas_page.run()
    assert not atlas_page.exception and "Nothing classified for this model under" in atlas_page.info[0].value
    clean_rows = (store.atlas_rows(embedded.fingerprint, RULES_VERSION, False)["intervention"] == "none").sum()
    atlas_page.number_input(key="max_op").set_value(40)
    atlas_page.number_input(key="atlas_top_n").set_value(20)
    atlas_page.button(key="atlas_classify").click().run()
    assert not atlas_page.exception and any("Classifications made under" in c.value for c in atlas_page.caption)
    assert "under" in chart(atlas_page, "")["layout"]["title"]["text"]
    classified = store.atlas_rows(embedded.fingerprint, RULES_VERSION, False)["intervention"].value_counts()
    assert classified[chosen.key] > 0 and classified.get("none", 0) == clean_rows  # nothing added to the clean model

    accuracy = {}
    for key in (None, chosen.key):
        model_page = AppTest.from_file(str(ROOT / "pages" / "1_Model.py"), default_timeout=300)
        model_page.session_state[ACTIVE_KEY] = key
        model_page.run()
        model_page.number_input(key="eval_sample").set_value(200)
        model_page.button(key="evaluate").click().run()
        assert not model_page.exception
        assert any("under" in c.value for c in model_page.caption) == (key is not None)
        frame = model_page.dataframe[0].value
        accuracy[key] = float(frame[frame["task"] == "+"]["accuracy"].iloc[0])
    assert accuracy[chosen.key] < accuracy[None] - 0.05
