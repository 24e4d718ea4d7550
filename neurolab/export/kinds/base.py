"""What every figure kind module shares: the :class:`Kind` record, the selection's keys and parsers (:data:`PARSE`,
:func:`selection`), the registry the package fills, and the helpers the builders use (:func:`_export`)."""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import pandas as pd
import plotly.graph_objects as go

from ...analysis.circuit import RULES
from ...analysis.neuron_maps import MAP_KINDS
from ...analysis.sweep import grid_for
from ...capture.interventions import Intervention, check_neurons
from ...errors import InputError
from ...models.adapters import neuron_label, parse_neuron_label
from ...models.loading import LoadedModel
from ...progress import Progress
from ...store import Store
from ...tasks.arithmetic import OPERATORS
from ...tasks.grid import OperandGrid, parse_template
from ...viz import dynamics as dynamics_figures
from ..bundle import Export
from ..provenance import Provenance

REQUIRED = object()  # a selection key without a default


def _choice(options: tuple[str, ...]) -> Callable[[Any], str]:
    def parse(value: Any) -> str:
        if str(value) not in options:
            raise ValueError(f"use one of {', '.join(options)}")
        return str(value)
    return parse


def _items(value: Any) -> list[str]:
    """A list from a list or from comma-separated text (as the command line writes it)."""
    parts = value.split(",") if isinstance(value, str) else list(value)
    return [str(part).strip() for part in parts if str(part).strip()]


def _neuron(value: Any) -> str:
    return neuron_label(*parse_neuron_label(str(value)))


def _flag(value: Any) -> bool:
    if isinstance(value, str):
        if value.lower() not in ("true", "false", "1", "0", "yes", "no"):
            raise ValueError("use true or false")
        return value.lower() in ("true", "1", "yes")
    return bool(value)


#: how each selection key reads a value (from a page, the command line's text, or a provenance's JSON)
PARSE: dict[str, Callable[[Any], Any]] = {
    "op": _choice(OPERATORS), "max_op": int, "template": str, "neuron": _neuron, "map": _choice(MAP_KINDS),
    "mod": int, "heuristic": str,
    "ops": lambda v: [_choice(OPERATORS)(x) for x in _items(v)], "layers": lambda v: [int(x) for x in _items(v)],
    "groups": _items, "kind": _choice(("all", "direct", "indirect")), "query": str, "min_score": float,
    "min_lift": float,
    "neurons": lambda v: ",".join(_neuron(x) for x in _items(v)), "mode": _choice(("zero", "mean")), "seed": int,
    "name": str, "origin": str,
    "top": int, "rule": _choice(RULES), "pairs": int, "eval_max_op": int, "count": int,
    "samples": int, "single": _flag, "ks": lambda v: sorted(float(x) for x in _items(v)), "factor": float,
    "k": float, "k_general": float, "math": str, "general": str,
    "prompt": str, "per_layer": int,
    "series": str, "classify_top": int, "share_top": int, "ablate_n": int, "custom": str, "condition": str,
    "metric": lambda v: _choice(tuple(DYNAMICS_FIGURES))(v), "layer": int, "link": _neuron,
}

#: the operand grid's selection keys (the grid and anatomy kinds start from them)
GRID = {"op": "+", "max_op": 100, "template": "plain"}


# --- the selection ---------------------------------------------------------------------------------------------

def selection(kind: str, values: dict[str, Any]) -> dict[str, Any]:
    """``values`` checked against ``kind``'s keys, parsed, with the defaults filled in (None counts as not given,
    as the command line passes its unset options); a clear InputError naming unknown, missing or bad keys."""
    keys = _kind(kind).keys
    given = {key: value for key, value in values.items() if value is not None}
    unknown = sorted(set(given) - set(keys))
    missing = [key for key, default in keys.items() if default is REQUIRED and key not in given]
    if unknown or missing:
        problems = ([f"unknown {', '.join(unknown)}"] if unknown else []) + (
            [f"missing {', '.join(missing)}"] if missing else [])
        raise InputError(f"figure {kind}: {'; '.join(problems)} (its selection: {', '.join(keys)})")
    chosen = {}
    for key, default in keys.items():
        if key not in given:
            chosen[key] = list(default) if isinstance(default, list) else default
            continue
        try:
            chosen[key] = PARSE[key](given[key])
        except (TypeError, ValueError) as error:
            raise InputError(f"figure {kind}: {key}={given[key]!r}: {error}") from None
    return chosen


def _grid(model: LoadedModel, chosen: dict) -> OperandGrid:
    try:
        return grid_for(model, chosen["op"], chosen["max_op"], parse_template(chosen.get("template")))
    except ValueError as error:
        raise InputError(str(error)) from None


def _slug(text: str) -> str:
    words = {"+": "plus", "-": "minus", "*": "times", "/": "div", "=": ""}
    text = "".join(words.get(c, c) for c in text)
    return re.sub(r"[^A-Za-z0-9._]+", "-", text).strip("-") or "figure"


def _export(kind: str, model: LoadedModel, chosen: dict, intervention: Intervention | None, stem: str,
            data: pd.DataFrame, figure: go.Figure, params: dict | None = None, titled: bool = False) -> Export:
    """The export of a figure made under ``intervention``: its title says so (unless the figure's own title names
    it already: ``titled``), its stem ends with the intervention's key."""
    if intervention:
        if not titled:
            title = figure.layout.title.text or ""
            figure.update_layout(title_text=f"{title}<br><sup>under {intervention.describe()}</sup>")
        stem += f"-under-{intervention.key}"
    provenance = Provenance.of(kind, model, chosen, intervention, params)
    return Export(stem, provenance, data.reset_index(drop=True), figure)


#: the dynamics kind's line chart per metric (here for :data:`PARSE`'s ``metric``)
DYNAMICS_FIGURES: dict[str, Callable[[pd.DataFrame], go.Figure]] = {
    "accuracy": dynamics_figures.accuracy_figure, "share": dynamics_figures.share_figure,
    "ablation": dynamics_figures.ablation_figure, "intersection": dynamics_figures.intersection_figure}


@dataclass(frozen=True)
class Kind:
    """One figure kind: its name, selection keys with their defaults (:data:`REQUIRED`: none), what it draws, and
    its builder, which takes a checked selection (calling the kind checks it)."""

    name: str
    keys: dict[str, Any]
    about: str
    builder: Callable[..., Export]

    def __call__(self, model: LoadedModel, store: Store, values: dict, intervention: Intervention | None = None,
                 progress: Progress | None = None) -> Export:
        return self.builder(model, store, selection(self.name, values), intervention, progress)


#: every figure kind by name, in the registry's order: the package neurolab.export.kinds fills it from its family
#: modules
KINDS: dict[str, Kind] = {}


def _kind(name: str) -> Kind:
    if name not in KINDS:
        raise InputError(f"unknown figure kind {name!r}; known: {', '.join(KINDS)}")
    return KINDS[name]


def checked_neuron(model: LoadedModel, label: str) -> tuple[int, int]:
    """``L3N12`` as (layer, neuron), with a clear error for a neuron the model does not have."""
    layer, neuron = parse_neuron_label(label)
    check_neurons(model, [(layer, neuron)])
    return layer, neuron
