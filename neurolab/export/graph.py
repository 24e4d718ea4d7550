"""Picked or labelled neurons as a graph file that circuit-tracer's and Neuronpedia's graph viewers read.

The shape is Neuronpedia's attribution-graph schema (``apps/webapp/app/api/graph/graph-schema.json``), which
circuit-tracer's ``create_graph_files`` writes: top-level ``metadata`` (``slug``, ``scan``, ``prompt``,
``prompt_tokens``, ``info``), ``qParams`` (the saved subgraph: pinned nodes), ``nodes`` and ``links``.

What neurolab's numbers mean, where they differ from circuit-tracer's:

- A node is one MLP *neuron* of the model itself (``feature_type`` "mlp neuron"), not a transcoder feature; there are
  no error or embedding nodes, and only the neurons asked for (no pruning). ``node_id`` is ``{layer}_{neuron}_{pos}``
  as circuit-tracer writes it; ``feature`` is ``layer * d_mlp + neuron`` (unique per model).
- ``clerp`` is the neuron's heuristic labels with their scores (``result_range_50_100 (0.83); op1_mod_10 (0.71)``):
  the stored classification of the operator, grid and template under the same condition (clean model or the active
  intervention), as the Heuristic Atlas lists them; empty for an unlabelled neuron.
- ``influence``: circuit-tracer's pruning value (the cumulative share of influence, most influential node first, so
  a viewer's node threshold of 0.8 keeps the nodes covering 80%), computed from the neuron's importance: its
  attribution-patching score on the operator's grid for the clean model (neurolab's ranking; the raw score is in
  ``importance``). Not the prompt's own influence.
- With a prompt: ``activation`` is the neuron's activation at the last position (where the answer is read), under
  the intervention; one logit node for the correct answer; each link neuron -> answer carries the neuron's *direct
  effect* activation x (W_out[n] . r) with r the readout of logit(answer) - logit(runner-up) through the final norm
  frozen at this prompt (:func:`neurolab.analysis.heuristic_bag.logit_diff_readout`, as the bag of heuristics
  computes it): a difference of two logits, not one demeaned logit, and no paths through later layers.
  Without a prompt there are no logit nodes or links and ``activation`` is null.
- Extra node fields other tools ignore: ``label`` (L3N12), ``labels`` (every matched heuristic), ``importance``,
  ``importance_rank``, ``map`` (mean/max/min/std of the neuron's stored activation map over the grid, null when its
  map is not stored) and ``direct_effect``.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from typing import Any

import numpy as np
import pandas as pd

from .. import __version__
from ..analysis.ablation import importance_of
from ..analysis.atlas import atlas, search
from ..analysis.heuristic_bag import direct_effects
from ..analysis.predict import check_prompt
from ..analysis.sweep import find_sweep, grid_for
from ..capture.interventions import CLEAN, Intervention, by_layer, check_neurons, parse_neurons
from ..errors import InputError
from ..models.adapters import neuron_label
from ..models.loading import LoadedModel
from ..store import Store
from ..tasks.arithmetic import OP_NAMES
from ..tasks.grid import OperandGrid, PromptTemplate, parse_template
from .provenance import git_commit

FEATURE_TYPE = "mlp neuron"
#: labels written into a node's ``clerp`` (all of them are in ``labels``)
CLERP_LABELS = 3
_MEANING = (
    "Nodes are MLP neurons of the model itself (no transcoder features, no error or embedding nodes). clerp: the "
    "neuron's heuristic labels (score) from neurolab's classification under the same condition. influence: "
    "cumulative share of the neurons' attribution-patching importance on the operator's grid (clean model), most "
    "important first, for the viewer's node threshold. activation: at the prompt's last position. Link weight: the "
    "neuron's direct effect on logit(answer) - logit(runner-up) through the final norm frozen at the prompt (direct "
    "logit attribution), not an attribution through later layers.")


def neuron_graph(model: LoadedModel, store: Store, labels: Sequence[str | tuple[int, int]] | str, op: str,
                 max_op: int = 100, template: str | PromptTemplate = "plain",
                 intervention: Intervention | None = None, prompt: str | None = None) -> dict[str, Any]:
    """The graph of ``labels`` (``["L3N12", "L3N40"]``, ``"L3N12,L3N40"`` or (layer, neuron) pairs) for operator
    ``op`` on its ``max_op`` grid: a dict for ``json.dumps`` (see the module docstring for every field)."""
    neurons = _neurons(model, labels)
    grid = _grid(model, op, max_op, template)
    intervention = intervention or CLEAN
    heuristics = _labels(model, store, grid, intervention)
    ranked = importance_of(model, store, grid).set_index(["layer", "neuron"])
    summaries = _map_summaries(model, store, grid, intervention, neurons)
    live = _live(model, prompt, grid, neurons, intervention) if prompt else None
    importance = np.array([float(ranked.loc[pair, "score"]) for pair in neurons])
    influence = _influence(importance)
    position = len(live["tokens"]) - 1 if live else 0
    nodes = []
    for i, (layer, neuron) in enumerate(neurons):
        matched = heuristics.get((layer, neuron), [])
        nodes.append({
            "node_id": f"{layer}_{neuron}_{position}", "feature": layer * model.d_mlp + neuron, "layer": str(layer),
            "ctx_idx": position, "feature_type": FEATURE_TYPE, "jsNodeId": f"{layer}_{neuron}-0",
            "clerp": "; ".join(f"{m['heuristic']} ({m['score']:.2f})" for m in matched[:CLERP_LABELS]),
            "influence": float(influence[i]), "activation": live["activation"][i] if live else None,
            "label": neuron_label(layer, neuron), "labels": matched, "importance": float(importance[i]),
            "importance_rank": int(ranked.loc[(layer, neuron), "rank"]), "map": summaries.get((layer, neuron)),
            "direct_effect": live["effect"][i] if live else None})
    links = []
    if live:
        answer = live["answer"]
        nodes.append(answer)
        links = [{"source": node["node_id"], "target": answer["node_id"], "weight": node["direct_effect"]}
                 for node in nodes[:-1]]
    return {
        "metadata": _metadata(model, grid, intervention, prompt, live, len(neurons)),
        "qParams": {"pinnedIds": [node["node_id"] for node in nodes], "supernodes": [], "linkType": "both",
                    "clickedId": "", "sg_pos": ""},
        "nodes": nodes,
        "links": links,
    }


def atlas_neurons(model: LoadedModel, store: Store, op: str, max_op: int = 100,
                  template: str | PromptTemplate = "plain", intervention: Intervention | None = None,
                  query: str = "", layers: Sequence[int] | None = None,
                  min_score: float = 0.0, limit: int | None = None) -> list[tuple[int, int]]:
    """The classified neurons of ``op``'s grid under the condition that the Atlas' filters keep (a search
    ``query`` as the Atlas reads it, ``layers``, ``min_score``), best-scoring first, at most ``limit``."""
    grid = _grid(model, op, max_op, template)
    rows = _rows(model, store, grid, intervention or CLEAN)
    if rows.empty:
        raise InputError(f"nothing is classified for {op} (max_op {max_op}) under this condition yet: run "
                         f"`python -m neurolab classify --op {op} --max-op {max_op}` or the Heuristic Atlas first")
    rows = search(rows, query)
    rows = rows[rows["score"] >= min_score]
    if layers is not None:
        rows = rows[rows["layer"].isin(list(layers))]
    pairs = list(dict.fromkeys((int(r.layer), int(r.neuron)) for r in rows.itertuples()))
    if not pairs:
        raise InputError(f"no classified neuron of {op} passes these filters (query {query!r}, layers {layers}, "
                         f"min score {min_score})")
    return pairs[:limit]


def _grid(model: LoadedModel, op: str, max_op: int, template: str | PromptTemplate) -> OperandGrid:
    return grid_for(model, op, max_op, template if isinstance(template, PromptTemplate) else parse_template(template))


def _rows(model: LoadedModel, store: Store, grid: OperandGrid, intervention: Intervention) -> pd.DataFrame:
    """The Atlas' rows of this grid and condition, one per (neuron, heuristic) with its best score, best first (ties:
    larger lift first, then by name, so that a file is the same every time)."""
    rows = atlas(store, model.fingerprint)
    rows = rows[(rows["op"] == grid.op) & (rows["max_op"] == grid.max_op) & (rows["template"] == grid.template.key)
                & (rows["intervention"] == intervention.key)]
    rows = rows.sort_values(["score", "lift", "heuristic"], ascending=[False, False, True], kind="stable")
    return rows.drop_duplicates(["layer", "neuron", "heuristic"])


def _neurons(model: LoadedModel, labels: Sequence[str | tuple[int, int]] | str) -> list[tuple[int, int]]:
    """Distinct (layer, neuron) pairs in the order given; a clear error for none or a neuron the model lacks."""
    if isinstance(labels, str):
        labels = [labels]
    pairs: list[tuple[int, int]] = []
    for item in labels:
        pairs += list(parse_neurons(item)) if isinstance(item, str) else [(int(item[0]), int(item[1]))]
    pairs = list(dict.fromkeys(pairs))
    if not pairs:
        raise InputError("no neurons to export: give labels such as L3N12,L3N40")
    check_neurons(model, pairs)
    return pairs


def _labels(model: LoadedModel, store: Store, grid: OperandGrid,
            intervention: Intervention) -> dict[tuple[int, int], list[dict]]:
    """(layer, neuron) -> its matched heuristics on this grid and condition, best score first (the best score of
    each heuristic over the stored classification runs)."""
    rows = _rows(model, store, grid, intervention)
    found: dict[tuple[int, int], list[dict]] = {}
    for row in rows.itertuples():
        found.setdefault((int(row.layer), int(row.neuron)), []).append(
            {"heuristic": row.heuristic, "score": round(float(row.score), 4), "lift": round(float(row.lift), 4),
             "group": row.grp, "side": row.side})
    return found


def _map_summaries(model: LoadedModel, store: Store, grid: OperandGrid, intervention: Intervention,
                   neurons: list[tuple[int, int]]) -> dict[tuple[int, int], dict[str, float]]:
    """Summary numbers of the stored activation maps (K) over the grid of the neurons that have one."""
    sweep_id = find_sweep(model, store, grid, intervention)
    stored = {} if sweep_id is None else store.stored_neurons(sweep_id)
    found = {}
    for layer, ids in by_layer(neurons).items():
        ids = [n for n in ids if n in stored.get(layer, set())]
        if not ids:
            continue
        k_maps, _ = store.layer_maps(sweep_id, layer, ids)
        for n, values in zip(ids, k_maps):
            found[(layer, n)] = {"mean_k": float(values.mean()), "max_k": float(values.max()),
                                 "min_k": float(values.min()), "std_k": float(values.std())}
    return found


def _influence(importance: np.ndarray) -> np.ndarray:
    """circuit-tracer's pruning value: the cumulative share of |importance| up to and including each node, most
    important first (so the most important node has the smallest value and the last one 1)."""
    weight = np.abs(importance)
    order = np.argsort(-weight, kind="stable")
    total = weight.sum()
    shares = np.cumsum(weight[order]) / total if total > 0 else np.linspace(1 / len(weight), 1, len(weight))
    influence = np.empty(len(weight))
    influence[order] = shares
    return influence


def _live(model: LoadedModel, text: str, grid: OperandGrid, neurons: list[tuple[int, int]],
          intervention: Intervention) -> dict[str, Any]:
    """One pass of the prompt under the intervention: the neurons' last-position activations and direct effects on
    logit(answer) - logit(runner-up), the prompt's tokens, and the answer's logit node."""
    text = text.strip()
    parsed = check_prompt(model, text)
    if parsed.op != grid.op:
        raise InputError(f"the prompt {text!r} is of operator {parsed.op!r}, the graph's neurons of {grid.op!r}")
    answer_id = model.number_token_ids[parsed.answer]
    grouped = by_layer(neurons)
    found = direct_effects(model, text, answer_id, grouped, intervention)
    activation, effect = {}, {}
    for layer, ids in grouped.items():
        for n, a, e in zip(ids, found.activation[layer].tolist(), found.effect[layer].tolist()):
            activation[(layer, n)], effect[(layer, n)] = a, e
    logits, runner_id = found.logits, found.runner_id
    tokens = [model.token_str(int(t)) for t in found.input_ids]
    probability = float(logits.softmax(-1)[answer_id])
    answer = model.token_str(answer_id)
    layer = str(model.n_layers + 1)  # circuit-tracer's logit layer
    position = len(tokens) - 1
    node = {"node_id": f"{layer}_{answer_id}_{position}", "feature": answer_id, "layer": layer, "ctx_idx": position,
            "feature_type": "logit", "jsNodeId": f"L_{answer_id}-{position}", "token_prob": probability,
            "is_target_logit": True, "clerp": f'Output "{answer}" (p={probability:.3f})', "influence": None,
            "activation": None}
    return {"tokens": tokens, "answer": node, "activation": [activation[pair] for pair in neurons],
            "effect": [effect[pair] for pair in neurons], "runner_up": model.token_str(runner_id),
            "total": found.total, "correct": found.correct}


def _metadata(model: LoadedModel, grid: OperandGrid, intervention: Intervention, prompt: str | None,
              live: dict[str, Any] | None, count: int) -> dict[str, Any]:
    condition = {"key": intervention.key, "description": intervention.describe(),
                 "spec": intervention.to_json() if intervention else None}
    neurolab = {"model": model.name, "source": model.source, "family": model.adapter.family,
                "fingerprint": model.fingerprint, "dtype": model.dtype, "revision": model.revision,
                "op": grid.op, "max_op": grid.max_op, "template": grid.template.key, "intervention": condition}
    if live:
        neurolab |= {"answer_correct": live["correct"], "runner_up": live["runner_up"],
                     "logit_difference": live["total"]}
    stamp = time.time()
    return {
        "slug": f"neurolab-{model.name}-{OP_NAMES[grid.op]}-{count}-neurons".replace(" ", "-").lower(),
        "scan": model.name,
        "prompt": prompt.strip() if prompt else "",
        "prompt_tokens": live["tokens"] if live else [],
        "schema_version": 1,
        "transcoder_list": [],
        "info": {
            "description": f"{count} neurons of {model.name} for {grid.op!r} (max_op {grid.max_op}) under "
                           f"{intervention.describe()}. {_MEANING}",
            "generator": {"name": "neurolab", "version": __version__, "commit": git_commit()},
            "create_time_ms": int(stamp * 1000),
            "neurolab": neurolab,
        },
    }

