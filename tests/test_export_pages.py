"""Issue 20 on the pages: every chart and table carries its Export control, whose downloads make real files only
when clicked; figure kinds rebuild from their provenance to the same figure data."""

from __future__ import annotations

import io
import json
import zipfile
from pathlib import Path
from typing import ClassVar

import pandas as pd
import plotly.io as pio
import pytest
from streamlit.runtime.media_file_manager import MediaFileManager
from streamlit.testing.v1 import AppTest, app_test

from neurolab.errors import InputError
from neurolab.export import kinds
from neurolab.export.bundle import DATA_FORMATS, FIGURE_FORMATS, PROVENANCE
from neurolab.export.provenance import Provenance

ROOT = Path(__file__).resolve().parent.parent
PAGES = ROOT / "pages"
CHART_FORMATS = (*FIGURE_FORMATS, *DATA_FORMATS, PROVENANCE)

pytestmark = pytest.mark.usefixtures("pages_store")


class RecordingFiles(MediaFileManager):
    """AppTest's own media file manager, remembered so a test can click a download (run its deferred callable)."""

    made: ClassVar[list[RecordingFiles]] = []

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        RecordingFiles.made.append(self)


@pytest.fixture
def files(monkeypatch):
    RecordingFiles.made.clear()
    monkeypatch.setattr(app_test, "MediaFileManager", RecordingFiles)
    return RecordingFiles.made


def download(at: AppTest, files: list[RecordingFiles], key: str) -> bytes:
    """What clicking the download button ``key`` hands the browser (its callable, run now)."""
    button = at.download_button(key=key)
    file_id = button.proto.deferred_file_id
    assert file_id and not button.proto.url, f"{key} is not deferred"
    data = files[-1]._deferred_callables[file_id]["callable"]()
    return data.encode() if isinstance(data, str) else data


def assert_controls(at: AppTest) -> None:
    """Each chart has one Export popover right after it, with every format; downloads are all deferred."""
    keys = {button.key for button in at.get("download_button")}
    for chart in at.get("plotly_chart"):
        missing = [fmt for fmt in CHART_FORMATS if f"{chart.key}_{fmt.replace('.', '_')}" not in keys]
        assert not missing, (chart.key, missing)
    assert len(at.get("popover")) >= len(at.get("plotly_chart"))
    assert all(button.proto.deferred_file_id for button in at.get("download_button"))


def page(path: str, **state) -> AppTest:
    at = AppTest.from_file(str(PAGES / path), default_timeout=600)
    for key, value in state.items():
        at.session_state[key] = value
    at.run()
    assert not at.exception, at.exception
    return at


def test_operand_grid_charts_export_their_files(embedded, files):
    at = page("2_Operand_Grid.py", max_op=20)
    at.button(key="run_sweep").click().run()
    assert not at.exception and not at.error
    assert [c.key for c in at.get("plotly_chart")] == ["grid_heatmap"]  # the open view; each has its control
    assert_controls(at)
    for view in ("Folded mod n", "By result", "Value lens", "Map"):
        at.session_state["grid_view"] = view
        at.run()
        assert_controls(at)
    assert not [b for b in at.get("download_button") if b.key == "grid_download"]  # the old CSV button is gone
    label = at.session_state["neuron"]

    frame = pd.read_csv(io.BytesIO(download(at, files, "grid_heatmap_csv")))
    assert len(frame) == 400 and {"op1", "op2", "K"} <= set(frame.columns)
    parquet = download(at, files, "grid_heatmap_parquet")
    table = pd.read_parquet(io.BytesIO(parquet))
    assert parquet[:4] == b"PAR1" and list(table.columns) == list(frame.columns)
    assert (table["K"] - frame["K"]).abs().max() < 1e-6 and table["K"].abs().max() > 0
    provenance = Provenance.from_json(download(at, files, "grid_heatmap_provenance_json").decode())
    assert provenance.kind == "heatmap" and provenance.selection["neuron"] == label
    assert provenance.selection["max_op"] == 20 and provenance.model["fingerprint"]
    at.session_state["grid_view"] = "Folded mod n"
    at.run()
    html = download(at, files, "grid_folded_html")
    assert b"<html>" in html[:100] and b"folded mod 10" in html
    at.session_state["grid_view"] = "Map"
    at.run()

    # the page's figure and the one rebuilt from the downloaded provenance have the same data
    rebuilt = kinds.rebuild(provenance, kinds_store())
    shown = json.loads(next(c for c in at.get("plotly_chart") if c.key == "grid_heatmap").proto.spec)
    assert shown["data"] == json.loads(pio.to_json(rebuilt.figure))["data"]

    report = zipfile.ZipFile(io.BytesIO(download(at, files, "grid_report")))
    names = report.namelist()
    summary = report.read(next(n for n in names if n.endswith(".md"))).decode()
    assert "accuracy" in summary.lower() and label in summary
    for stem in (f"{label}-K-add", f"{label}-lens-add", f"{label}-K-add-by-result"):
        assert f"{stem}.csv" in names and f"{stem}.provenance.json" in names and f"{stem}.html" in names


def kinds_store():
    from pages import shared_store

    return shared_store()


def test_home_charts_carry_the_export_control(embedded, files):
    at = page("0_Home.py")
    assert {c.key for c in at.get("plotly_chart")} >= {"next_token_chart", "neurons_chart"}
    assert_controls(at)
    tokens = pd.read_csv(io.BytesIO(download(at, files, "next_token_chart_csv")))
    assert tokens["probability"].between(0, 1).all() and len(tokens) == 5
    neurons = pd.read_csv(io.BytesIO(download(at, files, "neurons_chart_csv")))
    assert set(neurons["layer"]) == set(range(embedded.n_layers))


def test_ablation_lab_exports_charts_tables_graph_and_report(embedded, files):
    at = page("4_Ablation_Lab.py", lab_source="layer top-N", lab_top_n=10, max_op=20)
    at.toggle(key="ablation_on").set_value(True).run()
    assert not at.exception and not at.error
    assert [c.key for c in at.get("plotly_chart")] == ["lab_effect"]  # the open view; the others on opening
    shown = at.table[0].value  # the results that lost most, drawn as a static table
    assert shown.index.name == "answer" and len(shown) == 10 and "accuracy_lost" in shown.columns
    assert_controls(at)
    for view, keys in (("Accuracy", ["lab_accuracy"]), ("The current prompt", ["lab_clean_tokens",
                                                                              "lab_ablated_tokens"])):
        at.session_state["lab_view"] = view
        at.run()
        assert [c.key for c in at.get("plotly_chart")] == keys
        assert_controls(at)
    at.session_state["lab_view"] = "Effect over the grid"
    at.run()
    assert not [b for b in at.get("download_button") if b.key == "lab_download"]  # replaced by the chart's CSV
    prompts = pd.read_csv(io.BytesIO(download(at, files, "lab_effect_csv")))
    assert len(prompts) == 400 and {"p_before", "p_after", "correct_control"} <= set(prompts.columns)
    lost = pd.read_parquet(io.BytesIO(download(at, files, "lab_lost_parquet")))
    assert list(lost.columns) == ["answer", "prompts", "accuracy_lost", "mean_dp"]
    effect = Provenance.from_json(download(at, files, "lab_effect_provenance_json").decode())
    assert effect.kind == "ablation" and len(effect.selection["neurons"].split(",")) == 10
    assert effect.intervention["key"] == at.session_state["active_ablation"]

    graph = json.loads(download(at, files, "lab_graph"))
    labelled = {node["label"] for node in graph["nodes"] if node.get("importance") is not None}
    assert labelled == set(effect.selection["neurons"].split(","))  # the lab's neurons, one node each
    report = zipfile.ZipFile(io.BytesIO(download(at, files, "lab_report")))
    summary = report.read(next(n for n in report.namelist() if n.endswith(".md"))).decode()
    metrics = {m.label: m.value for m in at.metric}
    assert metrics["Accuracy, ablated"] in summary and metrics["Accuracy, clean"] in summary


def test_circuit_and_mathneuro_tables_export(embedded, files):
    at = page("5_Circuit.py", max_op=20)
    at.number_input(key="circuit_pairs").set_value(4).run()
    at.button(key="circuit_run").click().run()
    assert not at.exception and not at.error
    assert_controls(at)
    effects = pd.read_csv(io.BytesIO(download(at, files, "circuit_heatmap_csv")))
    assert "ie" in effects.columns and "L3 MLP" in set(effects["component"])  # every metric, in the data
    top = pd.read_csv(io.BytesIO(download(at, files, "circuit_top_csv")))
    assert len(top) == 10 and "ie" not in top.columns
    assert zipfile.ZipFile(io.BytesIO(download(at, files, "circuit_report"))).namelist()

    mn = page("6_MathNeuro.py", mn_samples=10)
    mn.toggle(key="mn_score").set_value(True).run()
    assert not mn.exception and not mn.error
    assert_controls(mn)
    matrices = pd.read_csv(io.BytesIO(download(mn, files, "mn_matrices_csv")))
    assert matrices["selected"].sum() > 0
    summary = pd.read_csv(io.BytesIO(download(mn, files, "mn_summary_csv")))
    assert list(summary["k"]) == [0.0001, 0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.15]


def test_atlas_exports_its_chart_filtered_rows_and_graph(embedded, files):
    from neurolab.analysis.classification import ClassifySettings, classify_operator

    classify_operator(embedded, kinds_store(), "+", 30, settings=ClassifySettings(top_n=30), layers=[3])
    at = page("3_Heuristic_Atlas.py")
    at.text_input(key="atlas_search").set_value("result").run()
    assert not at.exception and not at.error
    assert_controls(at)
    view = at.dataframe[-1].value
    rows = pd.read_csv(io.BytesIO(download(at, files, "atlas_table_csv")))
    assert len(rows) == len(view) > 0 and rows["heuristic"].str.contains("result").all()
    counted = pd.read_csv(io.BytesIO(download(at, files, "atlas_counts_csv")))
    assert counted.equals(rows)  # the chart's data: the filtered rows it counts
    provenance = Provenance.from_json(download(at, files, "atlas_counts_provenance_json").decode())
    assert provenance.selection["query"] == "result"
    assert figure_data(kinds.rebuild(provenance, kinds_store())) == json.loads(
        next(c for c in at.get("plotly_chart") if c.key == "atlas_counts").proto.spec)["data"]
    graph = json.loads(download(at, files, "atlas_graph"))
    neurons = {node["label"] for node in graph["nodes"] if node.get("importance") is not None}
    assert neurons == set(view["label"])


def figure_data(export) -> list:
    return json.loads(pio.to_json(export.figure))["data"]


@pytest.mark.parametrize("kind, selection", [
    ("heatmap", {"neuron": "L3N12", "max_op": 15, "map": "KV"}),
    ("folded", {"neuron": "L2N7", "max_op": 15, "mod": 5}),
    ("ablation", {"neurons": "L3N12,L3N40", "max_op": 15, "mode": "mean"}),
    ("mathneuro-matrices", {"samples": 8, "k": 0.05}),
    ("prediction", {"prompt": "31+18="}),
])
def test_a_figure_rebuilds_from_its_provenance(embedded, kind, selection):
    store = kinds_store()
    made = kinds.build(kind, embedded, store, selection)
    provenance = Provenance.from_json(made.provenance.to_json())  # as written to and read from the file
    again = kinds.rebuild(provenance, store)
    assert again.stem == made.stem and figure_data(again) == figure_data(made)
    assert again.data.equals(made.data)


def test_a_figure_under_a_weight_edit_rebuilds_with_its_masks(embedded):
    """The intervention comes back from its spec with its masks read from the store."""
    from neurolab.analysis.mathneuro import edit, math_specific, scores_for
    from neurolab.tasks.samples import load_samples

    store = kinds_store()
    samples = load_samples(n=8, max_single_token=embedded.max_single_token)
    edited = edit(math_specific(*scores_for(embedded, samples, store), 0.05), 0.0, "pruned K=0.05", "mathneuro")
    store.save_intervention(edited.to_json(), edited.tensors())
    made = kinds.build("heatmap", embedded, store, {"neuron": "L3N12", "max_op": 12}, edited)
    clean = kinds.build("heatmap", embedded, store, {"neuron": "L3N12", "max_op": 12})
    assert "under pruned K=0.05" in made.figure.layout.title.text and made.stem.endswith(edited.key)
    assert made.provenance.intervention["spec"]["tensors"]
    again = kinds.rebuild(Provenance.from_json(made.provenance.to_json()), store)
    assert figure_data(again) == figure_data(made) != figure_data(clean)


def test_selections_are_checked_with_clear_messages(embedded):
    store = kinds_store()
    with pytest.raises(InputError, match="unknown figure kind 'map'; known: heatmap"):
        kinds.build("map", embedded, store, {})
    with pytest.raises(InputError, match="missing neuron"):
        kinds.build("heatmap", embedded, store, {"op": "+"})
    with pytest.raises(InputError, match="unknown colour"):
        kinds.build("heatmap", embedded, store, {"neuron": "L3N1", "colour": "red"})
    with pytest.raises(InputError, match="op='%'"):
        kinds.build("heatmap", embedded, store, {"neuron": "L3N1", "op": "%"})
    with pytest.raises(InputError, match="layer 99 does not exist"):
        kinds.build("heatmap", embedded, store, {"neuron": "L99N1", "max_op": 10})
    assert kinds.selection("folded", {"neuron": "l3n12", "mod": "7", "max_op": None}) == {
        "op": "+", "max_op": 100, "template": "plain", "neuron": "L3N12", "map": "K", "mod": 7}


def test_rebuild_refuses_a_model_whose_weights_changed(embedded):
    made = kinds.build("prediction", embedded, kinds_store(), {})
    data = json.loads(made.provenance.to_json())
    data["model"]["fingerprint"] = "0" * 16
    with pytest.raises(InputError, match="other weights or precision"):
        kinds.rebuild(Provenance.from_json(json.dumps(data)), kinds_store())


# --- pages 7 (training dynamics) and 8 (anatomy), and the Atlas' significance and method agreement --------------

CHECKPOINTS = ROOT / "data" / "models" / "neurolab-arith" / "checkpoints"
#: the Training Dynamics page's settings small enough for a test (a 12 x 12 grid, 16 neurons classified)
DYNAMICS = {"max_op": 12, "classify_top": 16, "share_top": 8, "ablate_n": 4}


def shown_data(at: AppTest, key: str) -> list:
    return json.loads(next(c for c in at.get("plotly_chart") if c.key == key).proto.spec)["data"]


def assert_rebuilds(at: AppTest, files: list[RecordingFiles], key: str, kind: str) -> Provenance:
    """The chart's downloaded provenance names ``kind`` and rebuilds the figure the page shows."""
    provenance = Provenance.from_json(download(at, files, f"{key}_provenance_json").decode())
    assert provenance.kind == kind
    assert figure_data(kinds.rebuild(provenance, kinds_store())) == shown_data(at, key), key
    return provenance


def assert_tables(at: AppTest, *keys: str) -> None:
    downloads = {button.key for button in at.get("download_button")}
    for key in keys:
        assert {f"{key}_csv", f"{key}_parquet", f"{key}_provenance_json"} <= downloads, key


def test_training_dynamics_charts_and_tables_export_and_rebuild(embedded, files):
    at = page("7_Training_Dynamics.py")
    for key, value in DYNAMICS.items():
        at.number_input(key=f"dyn_{key}").set_value(value)
    at.text_input(key="dyn_series").set_value(f"{CHECKPOINTS / 'step-00250'},{CHECKPOINTS / 'step-04000'}").run()
    at.button(key="dyn_compute").click().run()
    at.button(key="dyn_templates").click().run()
    assert not at.exception and not at.error
    neuron = at.text_input(key="dyn_neuron").value
    at.selectbox(key="dyn_a").set_value("template plain")
    at.selectbox(key="dyn_b").set_value("checkpoint step-04000")
    at.text_input(key="dyn_compare_target").set_value(neuron).run()
    assert not at.exception and not at.error
    assert {c.key for c in at.get("plotly_chart")} == {"dyn_accuracy", "dyn_share", "dyn_ablation",
                                                      "dyn_intersection", "dyn_heatmap", "dyn_survival", "dyn_cmp_0",
                                                      "dyn_cmp_1"}
    assert_controls(at)
    assert_tables(at, "dyn_table", "dyn_neuron_table", "dyn_survival_table", "dyn_card", "dyn_heuristics",
                  "dyn_compare")

    table = pd.read_csv(io.BytesIO(download(at, files, "dyn_share_csv")))
    assert list(table["checkpoint"]) == ["step-00250", "step-04000"]
    assert {"share_any_raw", "share_any_significant", "intersection_significant"} <= set(table.columns)
    share = assert_rebuilds(at, files, "dyn_share", "dynamics")
    assert share.selection["metric"] == "share" and share.selection["classify_top"] == 16
    heatmap = assert_rebuilds(at, files, "dyn_heatmap", "dynamics-map")
    assert heatmap.selection["condition"] == "checkpoint step-04000" and heatmap.selection["neuron"] == neuron
    assert assert_rebuilds(at, files, "dyn_cmp_0", "dynamics-map").selection["condition"] == "template plain"
    assert assert_rebuilds(at, files, "dyn_cmp_1", "dynamics-map").selection["condition"] == \
        "checkpoint step-04000"
    survival = pd.read_csv(io.BytesIO(download(at, files, "dyn_survival_csv")))
    assert survival["survive_raw"].iloc[0] == 1.0 and len(survival) == 4  # the reference keeps all of its matches
    with pytest.raises(InputError, match="not computed"):
        kinds.build("dynamics-map", embedded, kinds_store(), {**heatmap.selection, "max_op": 13})


def test_anatomy_charts_and_tables_export_and_rebuild(embedded, files):
    at = page("8_Anatomy.py", max_op=20)
    if [b for b in at.button if b.key == "anatomy_run"]:  # the grid is not swept yet by another test of the module
        at.button(key="anatomy_run").click().run()
    at.number_input(key="anatomy_top_n").set_value(5)
    at.toggle(key="anatomy_fit_layer").set_value(True)
    at.toggle(key="anatomy_agreement").set_value(True).run()
    assert not at.exception and not at.error
    keys = {c.key for c in at.get("plotly_chart")}  # the neuron's "Shape" view, then the layer's charts
    assert keys == {"anatomy_decomposition", "anatomy_spectrum", "anatomy_shapes", "anatomy_fraction", "anatomy_patch",
                    "anatomy_agreement_scatter"}
    assert_controls(at)
    assert_tables(at, "anatomy_table", "anatomy_agreement_table")

    neuron = at.session_state["neuron"]
    decomposition = pd.read_csv(io.BytesIO(download(at, files, "anatomy_decomposition_csv")))
    assert len(decomposition) == 400 and (decomposition["additive"] + decomposition["interaction"]
                                          - decomposition["K"]).abs().max() < 1e-5
    for key, kind in (("anatomy_decomposition", "anatomy-decomposition"), ("anatomy_spectrum", "anatomy-spectrum"),
                      ("anatomy_shapes", "anatomy-shapes"), ("anatomy_patch", "anatomy-patch"),
                      ("anatomy_agreement_scatter", "anatomy-agreement")):
        provenance = assert_rebuilds(at, files, key, kind)
        assert provenance.selection["max_op"] == 20

    at.session_state["anatomy_view"] = "Helix fit"  # what clicking the tab sets
    at.run()
    at.toggle(key="anatomy_fit_neuron").set_value(True).run()
    assert not at.exception and "anatomy_decomposition" not in {c.key for c in at.get("plotly_chart")}
    assert_controls(at)
    assert assert_rebuilds(at, files, "anatomy_helix", "anatomy-helix").selection["neuron"] == neuron

    at.session_state["anatomy_view"] = "Inputs and outputs"
    at.run()
    thumbs = sorted(c.key for c in at.get("plotly_chart") if c.key.startswith("anatomy_thumb_"))
    assert thumbs and "anatomy_helix" not in {c.key for c in at.get("plotly_chart")}
    assert_controls(at)
    provenance = assert_rebuilds(at, files, thumbs[0], "anatomy-link")
    assert provenance.selection["neuron"] == neuron and provenance.selection["link"] == thumbs[0].split("_")[-1]
    rows = pd.read_csv(io.BytesIO(download(at, files, "anatomy_table_csv")))
    assert len(rows) == embedded.d_mlp and "shape" in rows.columns
    with pytest.raises(InputError, match="not gated"):
        kinds.build("anatomy-signs", embedded, kinds_store(), {"neuron": neuron, "max_op": 20})


def test_atlas_shows_significance_refreshes_and_compares_the_methods(embedded, files):
    from neurolab.analysis.classification import ClassifySettings, classify_operator

    classify_operator(embedded, kinds_store(), "+", 30, settings=ClassifySettings(top_n=30), layers=[3])
    at = page("3_Heuristic_Atlas.py", max_op=30)
    view = at.dataframe[-1].value
    assert {"p_value", "q_value", "significant"} <= set(view.columns) and set(view["layer"]) == {3}
    assert view["q_value"].between(0, 1).all() and view["p_value"].le(view["q_value"] + 1e-12).all()
    assert any("significant at FDR" in c.value for c in at.caption)
    counted = json.loads(next(c for c in at.get("plotly_chart") if c.key == "atlas_counts").proto.spec)["data"]
    assert any(trace["name"].endswith(", significant") for trace in counted)

    classify_operator(embedded, kinds_store(), "+", 30, settings=ClassifySettings(top_n=30), layers=[2])
    at.run()  # a new classification run: the cached rows are read again
    assert set(at.dataframe[-1].value["layer"]) == {2, 3}

    at.button(key="atlas_agreement").click().run()
    assert not at.exception and not at.error
    summary = at.dataframe[-2].value
    assert list(summary["layer"]) == [3] and -1 <= summary["rho_all"].iloc[0] <= 1
    ranking = at.dataframe[-1].value
    assert list(ranking["attribution_rank"]) == sorted(ranking["attribution_rank"]) and len(ranking) == 20
    assert_controls(at)
    assert_rebuilds(at, files, "atlas_agreement_scatter", "anatomy-agreement")
