"""Training dynamics and template robustness (the Training Dynamics page): dynamics, dynamics-map, robustness."""

from __future__ import annotations

import numpy as np
import pandas as pd

from ...analysis.dynamics import Dynamics, DynamicsSettings, checkpoint_results, parse_series, run_series
from ...analysis.neuron_maps import NeuronMap, load_neuron_map
from ...analysis.robustness import Robustness, template_robustness, templates_with
from ...capture.interventions import Intervention
from ...errors import InputError
from ...models.adapters import parse_neuron_label
from ...models.loading import LoadedModel, load_model
from ...progress import Progress
from ...store import Store
from ...tasks.arithmetic import OP_NAMES
from ...viz import dynamics as dynamics_figures
from ...viz.figures import (
    grid_heatmap,
)
from ..bundle import Export
from .base import DYNAMICS_FIGURES, REQUIRED, Kind, _export, _slug, selection

_DYNAMICS = DynamicsSettings()
DYNAMICS = {"series": "embedded", "op": "+", "max_op": _DYNAMICS.max_op, "classify_top": _DYNAMICS.classify_top,
            "share_top": _DYNAMICS.share_top, "ablate_n": _DYNAMICS.ablate_n}
ROBUSTNESS = {key: value for key, value in DYNAMICS.items() if key != "series"} | {"custom": ""}


def dynamics_settings(chosen: dict) -> DynamicsSettings:
    """The settings a selection names (the page's four; the rest at their defaults)."""
    return DynamicsSettings(max_op=chosen["max_op"], classify_top=chosen["classify_top"],
                            share_top=chosen["share_top"], ablate_n=chosen["ablate_n"])


def dynamics_of(store: Store, values: dict, progress: Progress | None = None,
                compute: bool = True) -> Dynamics | None:
    """The selection's series (computed, or only read with ``compute=False``: None when not stored)."""
    chosen = {key: values.get(key, default) for key, default in DYNAMICS.items()}
    return run_series(store, parse_series(chosen["series"]), chosen["op"], settings=dynamics_settings(chosen),
                      progress=progress, compute=compute)


def dynamics_export(model: LoadedModel, values: dict, table: pd.DataFrame) -> Export:
    """One line chart of the series' table (``metric``: accuracy, share, ablation, intersection); the data is the
    whole table, one row per checkpoint. ``model`` only names who made it: the series names its own models."""
    chosen = selection("dynamics", values)
    return _export("dynamics", model, chosen, None, f"dynamics-{chosen['metric']}-{OP_NAMES[chosen['op']]}", table,
                   DYNAMICS_FIGURES[chosen["metric"]](table))


def _dynamics(model: LoadedModel, store: Store, chosen: dict, intervention: Intervention | None,
              progress: Progress | None) -> Export:
    return dynamics_export(model, chosen, dynamics_of(store, chosen, progress).table())


def condition_sweep(model: LoadedModel, store: Store, values: dict) -> int:
    """The sweep a condition classified: ``checkpoint LABEL`` (of the selection's series), ``template NAME``
    (plain, spaced, fewshot, custom: ``model`` under it) or ``model NAME``; read from the store only."""
    chosen = selection("dynamics-map", values)
    kind, _, name = chosen["condition"].partition(" ")
    settings = dynamics_settings(chosen)
    if kind == "checkpoint":
        found = dynamics_of(store, chosen, compute=False)
        summary = None if found is None else found.summary
    elif kind == "template":
        templates = templates_with(chosen["custom"] or None)
        if name not in templates:
            raise InputError(f"condition {chosen['condition']!r}: the templates are {', '.join(templates)}")
        found = checkpoint_results(model, store, chosen["op"], templates[name], settings, compute=False)
        summary = None if found is None else found[0].assign(checkpoint=name)
    elif kind == "model":
        found = checkpoint_results(load_model(name), store, chosen["op"], settings=settings, compute=False)
        summary = None if found is None else found[0].assign(checkpoint=name)
    else:
        raise InputError(f"condition {chosen['condition']!r}: write 'checkpoint LABEL', 'template NAME' or "
                         "'model NAME'")
    if summary is None:
        raise InputError(f"{chosen['condition']} is not computed for {chosen['op']} with these settings (the "
                         "Training Dynamics page or `python -m neurolab dynamics` computes it)")
    rows = summary[summary["checkpoint"] == name]
    if rows.empty:
        raise InputError(f"no checkpoint {name!r} in the series; it has {', '.join(summary['checkpoint'])}")
    sweep_id = rows["sweep_id"].iloc[0] if "sweep_id" in rows else np.nan
    if pd.isna(sweep_id):
        raise InputError(f"{chosen['condition']} classified nothing (its accuracy on {chosen['op']} is 0): no map")
    return int(sweep_id)


def dynamics_map_export(model: LoadedModel, values: dict, nmap: NeuronMap) -> Export:
    """A neuron's map under one condition of the series, the templates or another model."""
    chosen = selection("dynamics-map", values)
    return _export("dynamics-map", model, chosen, None,
                   f"{chosen['neuron']}-{_slug(chosen['condition'])}-{OP_NAMES[chosen['op']]}", nmap.to_frame(),
                   grid_heatmap(nmap, chosen["max_op"], chosen["op"]))


def _dynamics_map(model: LoadedModel, store: Store, chosen: dict, intervention: Intervention | None,
                  progress: Progress | None) -> Export:
    nmap = load_neuron_map(store, condition_sweep(model, store, chosen), *parse_neuron_label(chosen["neuron"]))
    return dynamics_map_export(model, chosen, nmap)


def templates_of(values: dict) -> dict:
    return templates_with(values.get("custom") or None)


def survival_table(result: Robustness) -> pd.DataFrame:
    """Per template: its summary (accuracy, shares) and the share of the reference's matches that survive."""
    return result.summary.merge(result.survival(), on="template")


def robustness_export(model: LoadedModel, values: dict, result: Robustness) -> Export:
    chosen = selection("robustness", values)
    survival = survival_table(result)
    return _export("robustness", model, chosen, None, f"robustness-{OP_NAMES[chosen['op']]}", survival,
                   dynamics_figures.survival_figure(survival))


def _robustness(model: LoadedModel, store: Store, chosen: dict, intervention: Intervention | None,
                progress: Progress | None) -> Export:
    """The model's neurons under plain, spaced, fewshot (and ``custom``): each template's results cached."""
    result = template_robustness(model, store, chosen["op"], templates_of(chosen), dynamics_settings(chosen),
                                 progress)
    return robustness_export(model, chosen, result)


#: this family's figure kinds, in the registry's order
FIGURE_KINDS: tuple[Kind, ...] = (
    Kind("dynamics", {**DYNAMICS, "metric": "accuracy"},
         "a series of checkpoints: accuracy, heuristic shares, ablation or intersection over training", _dynamics),
    Kind("dynamics-map", {**DYNAMICS, "custom": "", "condition": REQUIRED, "neuron": REQUIRED},
         "a neuron's map under one condition (checkpoint LABEL, template NAME, model NAME), read from the store",
         _dynamics_map),
    Kind("robustness", ROBUSTNESS, "the heuristics that survive a change of template", _robustness),
)
