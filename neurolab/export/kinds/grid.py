"""The operand grid's figure kinds: one neuron over the grid (heatmap, overlay, folded, result, lens)."""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import pandas as pd

from ...analysis.neuron_maps import NeuronMap, load_neuron_map, neuron_map
from ...analysis.sweep import find_sweep, run_sweep
from ...analysis.value_lens import matching_set, number_line, result_predicate
from ...capture.interventions import Intervention
from ...errors import InputError
from ...models.loading import LoadedModel
from ...progress import Progress
from ...store import Store
from ...tasks.arithmetic import OP_NAMES
from ...viz.figures import (
    folded_figure,
    grid_heatmap,
    heuristic_mask_figure,
    number_line_figure,
    result_figure,
)
from ..bundle import Export
from .base import GRID, REQUIRED, Kind, _export, _grid, _slug, checked_neuron, selection

NEURON = {**GRID, "neuron": REQUIRED, "map": "K"}


def neuron_map_for(model: LoadedModel, store: Store, values: dict, intervention: Intervention | None = None,
                   progress: Progress | None = None) -> NeuronMap:
    """The selection's neuron map: from the grid's stored sweep when it holds the neuron, else computed for this
    neuron alone (one grid pass, then cached); with no sweep stored for the grid, the sweep is run first."""
    chosen = selection("heatmap", {key: values.get(key) for key in NEURON})
    grid = _grid(model, chosen)
    layer, neuron = checked_neuron(model, chosen["neuron"])
    sweep_id = find_sweep(model, store, grid, intervention)
    stored = {} if sweep_id is None else store.stored_neurons(sweep_id)
    if not any(stored.values()):
        sweep_id = run_sweep(model, store, grid.op, max_op=grid.max_op, template=grid.template,
                             intervention=intervention, progress=progress).sweep_id
        stored = store.stored_neurons(sweep_id)
    if neuron in stored.get(layer, set()):
        return load_neuron_map(store, sweep_id, layer, neuron, chosen["map"], prompts=store.cached_prompts(sweep_id))
    return neuron_map(model, store, grid.op, layer, neuron, chosen["map"], grid.max_op, grid.template, intervention,
                      progress)


def _map_stem(chosen: dict) -> str:
    return f"{chosen['neuron']}-{chosen['map']}-{OP_NAMES[chosen['op']]}"


def heatmap_export(model: LoadedModel, values: dict, intervention: Intervention | None, nmap: NeuronMap) -> Export:
    chosen = selection("heatmap", values)
    figure = grid_heatmap(nmap, chosen["max_op"], chosen["op"])
    return _export("heatmap", model, chosen, intervention, _map_stem(chosen), nmap.to_frame(), figure)


def overlay_export(model: LoadedModel, values: dict, intervention: Intervention | None, nmap: NeuronMap) -> Export:
    chosen = selection("overlay", values)
    p = nmap.prompts
    mask = matching_set(chosen["heuristic"], p["op1"].to_numpy(), p["op2"].to_numpy(), p["answer"].to_numpy())
    if mask is None:
        raise InputError(f"{chosen['heuristic']!r} is not a heuristic name neurolab knows")
    figure = heuristic_mask_figure(nmap, mask, chosen["max_op"], chosen["heuristic"])
    return _export("overlay", model, chosen, intervention, f"{_map_stem(chosen)}-{_slug(chosen['heuristic'])}",
                   nmap.to_frame().assign(matches=mask), figure)


def folded_export(model: LoadedModel, values: dict, intervention: Intervention | None, nmap: NeuronMap) -> Export:
    chosen = selection("folded", values)
    n = chosen["mod"]
    if not 2 <= n <= chosen["max_op"]:
        raise InputError(f"fold modulo 2..{chosen['max_op']}, not {n}")
    folded = nmap.folded(n)
    rows, cols = np.indices(folded.shape)
    data = pd.DataFrame({"op1_mod": rows.ravel(), "op2_mod": cols.ravel(), "mean": folded.ravel()})
    return _export("folded", model, chosen, intervention, f"{_map_stem(chosen)}-mod{n}", data,
                   folded_figure(nmap, n))


def result_export(model: LoadedModel, values: dict, intervention: Intervention | None, nmap: NeuronMap) -> Export:
    chosen = selection("result", values)
    return _export("result", model, chosen, intervention, f"{_map_stem(chosen)}-by-result", nmap.by_result(),
                   result_figure(nmap))


def _neuron_kind(export: Callable[..., Export]) -> Callable[..., Export]:
    def build(model: LoadedModel, store: Store, chosen: dict, intervention: Intervention | None,
              progress: Progress | None) -> Export:
        return export(model, chosen, intervention, neuron_map_for(model, store, chosen, intervention, progress))
    return build


def _lens(model: LoadedModel, store: Store, chosen: dict, intervention: Intervention | None,
          progress: Progress | None) -> Export:
    """The value vector's direct logits on the grid's results: weights only, so no intervention applies."""
    layer, neuron = checked_neuron(model, chosen["neuron"])
    line = number_line(model, layer, neuron)
    results = np.asarray(_grid(model, chosen).answers)
    heuristic = chosen["heuristic"]
    predicate = result_predicate(heuristic) if heuristic else None
    satisfied = predicate(np.arange(len(line))) if predicate else None
    figure = number_line_figure(line, chosen["neuron"], results, satisfied, heuristic or "")
    values = np.unique(results)
    data = pd.DataFrame({"number": values, "logit": line[values]})
    if satisfied is not None:
        data["satisfies"] = satisfied[values]
    return _export("lens", model, chosen, None, f"{chosen['neuron']}-lens-{OP_NAMES[chosen['op']]}", data, figure)


#: this family's figure kinds, in the registry's order
FIGURE_KINDS: tuple[Kind, ...] = (
    Kind("heatmap", NEURON, "a neuron's K or KV map over the op1 x op2 grid", _neuron_kind(heatmap_export)),
    Kind("overlay", {**NEURON, "heuristic": REQUIRED}, "a heuristic's matching set on the grid, beside the heatmap",
         _neuron_kind(overlay_export)),
    Kind("folded", {**NEURON, "mod": 10}, "a neuron's map folded modulo n", _neuron_kind(folded_export)),
    Kind("result", NEURON, "a neuron's value against the result", _neuron_kind(result_export)),
    Kind("lens", {**GRID, "neuron": REQUIRED, "heuristic": None}, "a neuron's value vector on the number line",
         _lens),
)
