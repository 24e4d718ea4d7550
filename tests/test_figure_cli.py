"""``python -m neurolab figure`` and ``graph`` on the embedded model and a real temp store: the files a page's Export
control writes (figure, CSV, provenance), a figure rebuilt from its provenance, every kind of an operator at once,
the neurons' graph JSON in the shape circuit-tracer and Neuronpedia read, and clear errors (exit code 2)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from xml.etree import ElementTree

import jsonschema
import pandas as pd
import pytest

from neurolab.analysis.atlas import atlas
from neurolab.analysis.classification import ClassifySettings, classify_operator
from neurolab.analysis.heuristic_bag import heuristic_bag
from neurolab.capture.interventions import ablation
from neurolab.cli import figures
from neurolab.cli.commands import main
from neurolab.export import kinds
from neurolab.export.graph import atlas_neurons, neuron_graph
from neurolab.export.provenance import Provenance
from neurolab.store import Store

ROOT = Path(__file__).resolve().parents[1]

MAX_OP = 20
PROMPT = "7+8="
#: Neuronpedia's graph schema (apps/webapp/app/api/graph/graph-schema.json), the keys it requires
SCHEMA = {
    "type": "object", "required": ["metadata", "qParams", "nodes", "links"],
    "properties": {
        "metadata": {"type": "object", "required": ["slug", "scan", "prompt_tokens", "prompt"],
                     "properties": {"prompt_tokens": {"type": "array", "items": {"type": "string"}}}},
        "qParams": {"type": "object"},
        "nodes": {"type": "array", "items": {
            "type": "object",
            "required": ["node_id", "feature", "layer", "ctx_idx", "feature_type", "jsNodeId", "clerp"],
            "properties": {"node_id": {"type": "string"}, "feature": {"type": ["integer", "null"]},
                           "layer": {"type": ["string", "integer"]}, "ctx_idx": {"type": "integer"},
                           "feature_type": {"type": "string"}, "jsNodeId": {"type": "string"},
                           "clerp": {"type": "string"}, "influence": {"type": ["number", "null"]},
                           "activation": {"type": ["number", "null"]}}}},
        "links": {"type": "array", "items": {
            "type": "object", "required": ["source", "target", "weight"],
            "properties": {"source": {"type": "string"}, "target": {"type": "string"}, "weight": {"type": "number"}}}},
    },
}


@pytest.fixture(scope="module")
def store_path(embedded, tmp_path_factory):
    """A real store where `+` (max_op 20) is classified (top 20 neurons per layer)."""
    path = tmp_path_factory.mktemp("figure-cli") / "store.duckdb"
    store = Store(path)
    classify_operator(embedded, store, "+", MAX_OP, settings=ClassifySettings(top_n=20))
    store.close()
    return path


@pytest.fixture(scope="module")
def store(store_path):
    s = Store(store_path)
    yield s
    s.close()


@pytest.fixture(scope="module")
def labelled(embedded, store):
    """Two classified neurons (their best heuristics) and one the classification never looked at."""
    rows = atlas(store, embedded.fingerprint)
    best = rows[(rows["op"] == "+") & (rows["max_op"] == MAX_OP)].sort_values("score", ascending=False)
    classified = list(dict.fromkeys(best["label"]))[:2]
    ranked = set(best["label"])
    unlabelled = next(f"L3N{n}" for n in range(embedded.d_mlp) if f"L3N{n}" not in ranked)
    return classified, unlabelled, best


def test_the_graph_has_the_viewers_shape_with_labels_as_clerp(embedded, store, labelled):
    classified, unlabelled, rows = labelled
    graph = neuron_graph(embedded, store, [*classified, unlabelled], "+", MAX_OP)
    jsonschema.validate(graph, SCHEMA)
    assert json.loads(json.dumps(graph)) == graph  # plain JSON, nothing lost
    nodes = {node["label"]: node for node in graph["nodes"]}
    assert list(nodes) == [*classified, unlabelled] and graph["links"] == []  # no prompt: no logit node, no links
    for label in classified:
        node, mine = nodes[label], rows[rows["label"] == label]
        top = mine[mine["score"] == mine["score"].max()].sort_values(["lift", "heuristic"], ascending=[False, True])
        assert node["clerp"].startswith(f"{top['heuristic'].iloc[0]} ({top['score'].iloc[0]:.2f})")
        assert node["clerp"].count("(") == min(3, mine["heuristic"].nunique()) == min(3, len(node["labels"]))
        assert node["feature_type"] == "mlp neuron" and node["activation"] is None
        layer, neuron = (int(x) for x in label[1:].split("N"))
        assert node["node_id"] == f"{layer}_{neuron}_0" and node["feature"] == layer * embedded.d_mlp + neuron
        assert node["map"] is not None and node["map"]["max_k"] >= node["map"]["mean_k"]  # its map is stored
    assert nodes[unlabelled]["clerp"] == "" and nodes[unlabelled]["labels"] == []
    # influence: cumulative share of importance, most important first, the last one 1
    order = sorted(nodes.values(), key=lambda node: -abs(node["importance"]))
    assert [node["influence"] for node in order] == sorted(node["influence"] for node in order)
    assert order[-1]["influence"] == pytest.approx(1.0)
    info = graph["metadata"]["info"]
    assert info["neurolab"]["fingerprint"] == embedded.fingerprint and info["neurolab"]["intervention"]["key"] == "none"
    assert "direct effect" in info["description"]
    assert graph["qParams"]["pinnedIds"] == [node["node_id"] for node in graph["nodes"]]


def test_a_prompt_adds_the_answer_logit_and_direct_effects_that_match_the_bag(embedded, store, labelled):
    classified, unlabelled, _ = labelled
    bag = heuristic_bag(embedded, store, PROMPT, max_op=MAX_OP)
    fired = bag.neurons.head(3)  # classified neurons that fire here, with the bag's direct effects
    assert len(fired) == 3
    graph = neuron_graph(embedded, store, [*classified, *fired["label"], unlabelled], "+", MAX_OP, prompt=PROMPT)
    jsonschema.validate(graph, SCHEMA)
    meta = graph["metadata"]
    assert meta["prompt"] == PROMPT and "".join(meta["prompt_tokens"]) == PROMPT
    logit = graph["nodes"][-1]
    assert logit["feature_type"] == "logit" and logit["is_target_logit"] and '"15"' in logit["clerp"]
    assert logit["token_prob"] > 0.5 and logit["feature"] == embedded.number_token_ids[15]
    neurons = graph["nodes"][:-1]
    assert all(node["ctx_idx"] == len(meta["prompt_tokens"]) - 1 for node in graph["nodes"])
    assert [(link["source"], link["target"], link["weight"]) for link in graph["links"]] == [
        (node["node_id"], logit["node_id"], node["direct_effect"]) for node in neurons]
    assert all(isinstance(node["activation"], float) for node in neurons)
    effects = {node["label"]: node["direct_effect"] for node in neurons}
    for label, contribution in zip(fired["label"], fired["contribution"]):
        assert effects[label] == pytest.approx(float(contribution), rel=1e-4, abs=1e-6)
    assert meta["info"]["neurolab"]["logit_difference"] == pytest.approx(bag.total, abs=1e-4)
    assert meta["info"]["neurolab"]["runner_up"] == bag.runner_up_token


def test_an_ablated_neuron_writes_nothing_under_its_ablation(embedded, store, labelled):
    classified, _, _ = labelled
    layer, neuron = (int(x) for x in classified[0][1:].split("N"))
    graph = neuron_graph(embedded, store, classified, "+", MAX_OP, intervention=ablation([(layer, neuron)]),
                         prompt=PROMPT)
    node = graph["nodes"][0]
    assert node["activation"] == 0.0 and node["direct_effect"] == 0.0 and node["clerp"] == ""  # not classified there
    assert graph["metadata"]["info"]["neurolab"]["intervention"]["spec"]["steps"][0]["neurons"] == [classified[0]]


def test_atlas_filters_choose_the_neurons(embedded, store, labelled):
    _, _, rows = labelled
    best = rows.iloc[0]
    chosen = atlas_neurons(embedded, store, "+", MAX_OP, query=best["heuristic"], layers=[int(best["layer"])])
    assert (int(best["layer"]), int(best["neuron"])) == chosen[0] and {layer for layer, _ in chosen} == {best["layer"]}
    assert len(atlas_neurons(embedded, store, "+", MAX_OP, limit=3)) == 3


@pytest.mark.parametrize(("labels", "op", "prompt", "message"), [
    ([], "+", None, "no neurons"),
    (["L9N1"], "+", None, "layer"),
    (["L1N99999"], "+", None, "neurons 0.."),
    (["L1x"], "+", None, "L1x"),
    (["L1N1"], "+", "8-7=", "operator"),
])
def test_bad_input_is_a_clear_error(embedded, store, labels, op, prompt, message):
    from neurolab.errors import InputError

    with pytest.raises(InputError, match=message):
        neuron_graph(embedded, store, labels, op, MAX_OP, prompt=prompt)


def test_the_graph_command_writes_the_json(embedded, store_path, labelled, tmp_path, capsys):
    classified, _, _ = labelled
    out = tmp_path / "graph.json"
    assert main(["graph", "--labels", ",".join(classified), "--op", "+", "--max-op", str(MAX_OP), "--prompt", PROMPT,
                 "--store", str(store_path), "--out", str(out)]) == 0
    graph = json.loads(out.read_text())
    jsonschema.validate(graph, SCHEMA)
    assert [n["label"] for n in graph["nodes"][:-1]] == classified and all(n["clerp"] for n in graph["nodes"])
    assert str(out) in capsys.readouterr().out
    out = tmp_path / "atlas.json"
    assert main(["graph", "--from-atlas", "--limit", "5", "--op", "+", "--max-op", str(MAX_OP),
                 "--store", str(store_path), "--out", str(out)]) == 0
    nodes = json.loads(out.read_text())["nodes"]
    assert len(nodes) == 5 and all(node["clerp"] for node in nodes)
    assert main(["graph", "--op", "+", "--max-op", str(MAX_OP), "--store", str(store_path), "--out", str(out)]) == 2
    assert "--labels" in capsys.readouterr().err


# --- python -m neurolab figure -------------------------------------------------------------------------------------

def _figure(store_path, *args: str) -> int:
    return main(["figure", *args, "--store", str(store_path), "--quiet"])


@pytest.fixture(scope="module")
def heatmap(embedded, store_path, labelled, tmp_path_factory):
    """``figure heatmap`` of a classified neuron as SVG and as HTML, in-process."""
    neuron = labelled[0][0]
    folder = tmp_path_factory.mktemp("heatmap")
    for fmt in ("svg", "html"):
        assert _figure(store_path, "heatmap", "--neuron", neuron, "--op", "+", "--max-op", str(MAX_OP), "--format",
                       fmt, "--out", str(folder / f"map.{fmt}")) == 0
    return neuron, folder


def test_a_heatmap_is_written_with_its_data_and_provenance(embedded, heatmap):
    neuron, folder = heatmap
    svg = (folder / "map.svg").read_bytes()
    root = ElementTree.fromstring(svg)
    assert root.tag.endswith("svg") and len(svg) > 5_000 and neuron.encode() in svg  # the title names the neuron
    html = (folder / "map.html").read_text()
    assert html.lstrip().lower().startswith(("<html", "<!doctype")) and "Plotly.newPlot" in html and neuron in html
    data = pd.read_csv(folder / "map.csv")
    assert len(data) == MAX_OP * MAX_OP and {"op1", "op2", "K"} <= set(data.columns) and data["K"].std() > 0
    provenance = Provenance.read(folder / "map.provenance.json")
    assert provenance.kind == "heatmap" and provenance.selection["neuron"] == neuron
    assert provenance.selection["max_op"] == MAX_OP and provenance.model["fingerprint"] == embedded.fingerprint
    assert sorted(p.name for p in folder.iterdir()) == ["map.csv", "map.html", "map.provenance.json", "map.svg"]


def test_from_a_provenance_the_same_figure_comes_back(embedded, store_path, store, heatmap, tmp_path):
    folder = heatmap[1]
    assert _figure(store_path, "--from", str(folder / "map.provenance.json"), "--out", str(tmp_path / "again.svg")) == 0
    assert (tmp_path / "again.csv").read_bytes() == (folder / "map.csv").read_bytes()
    assert Provenance.read(tmp_path / "again.provenance.json").selection == Provenance.read(
        folder / "map.provenance.json").selection
    original = kinds.build("heatmap", embedded, store, Provenance.read(folder / "map.provenance.json").selection)
    rebuilt = kinds.rebuild(Provenance.read(tmp_path / "again.provenance.json"), store)
    assert rebuilt.figure.to_dict()["data"] == original.figure.to_dict()["data"]


def test_all_writes_every_figure_of_an_operator(store_path, labelled, tmp_path):
    folder = tmp_path / "all"
    assert _figure(store_path, "--all", "--op", "+", "--max-op", str(MAX_OP), "--top-n", "20", "--format", "svg",
                   "--out", str(folder)) == 0
    expected = {name for name in kinds.KINDS if name not in figures.NOT_OF_AN_OPERATOR}
    stems = sorted(path.name.removesuffix(".svg") for path in folder.glob("*.svg"))
    assert len(stems) == len(expected)
    provenances = [Provenance.read(folder / f"{stem}.provenance.json") for stem in stems]
    assert {p.kind for p in provenances} == expected
    assert all((folder / f"{stem}.csv").stat().st_size > 0 for stem in stems)
    neuron_kinds = [p for p in provenances if "neuron" in p.selection]
    assert {p.selection["neuron"] for p in neuron_kinds} == {labelled[0][0]}  # the best classified neuron
    assert all(p.selection.get("op", "+") == "+" and p.selection.get("ops", ["+"]) == ["+"] for p in provenances)


def test_an_unknown_kind_lists_the_kinds_with_exit_code_2(store_path, tmp_path, capsys):
    assert _figure(store_path, "heatmapp", "--out", str(tmp_path / "x.svg")) == 2
    error = capsys.readouterr().err
    assert error.startswith("error: unknown figure kind 'heatmapp'") and all(name in error for name in kinds.KINDS)
    assert _figure(store_path, "heatmap", "--op", "+", "--out", str(tmp_path / "x.svg")) == 2
    assert "missing neuron" in capsys.readouterr().err
    assert _figure(store_path, "heatmap", "--neuron", "L1N1", "--out", str(tmp_path / "x.txt")) == 2
    assert "--format" in capsys.readouterr().err
    assert not any(tmp_path.iterdir())


def test_the_help_lists_every_kind(capsys):
    with pytest.raises(SystemExit):
        main(["figure", "--help"])
    described = " ".join(capsys.readouterr().out.split())
    assert all(name in described for name in kinds.KINDS)


def test_the_command_line_writes_a_figure(labelled, tmp_path):
    """In a process of its own, on a store of its own (the module's store is open here): the map is swept first."""
    out = tmp_path / "folded.html"
    done = subprocess.run(
        [sys.executable, "-m", "neurolab", "figure", "folded", "--neuron", labelled[0][0], "--op", "+", "--max-op",
         str(MAX_OP), "--mod", "5", "--out", str(out), "--quiet"],
        capture_output=True, text=True, cwd=ROOT, timeout=300,
        env={**os.environ, "NEUROLAB_STORE": str(tmp_path / "own.duckdb")})
    assert done.returncode == 0, done.stderr
    assert "folded" in done.stdout and str(out) in done.stdout
    assert "Plotly.newPlot" in out.read_text()
    assert len(pd.read_csv(tmp_path / "folded.csv")) == 25
    assert Provenance.read(tmp_path / "folded.provenance.json").selection["mod"] == 5
