"""Every figure of the dashboard by kind: one builder per chart, shared by the pages and ``python -m neurolab figure``.

A builder takes ``(model, store, selection, intervention, progress)`` and returns an :class:`Export` (figure, the
numbers behind it, provenance, file stem). It computes through the same core functions the pages call (cached in
the store) and draws with the same :mod:`neurolab.viz` functions, so a page's figure and the command line's are made
by one piece of code. Where a page already holds a result that is not cached in the store (a prompt's report, a grid
ablation, MathNeuro's masks), it hands it to the kind's ``*_export`` function, which the builder calls too.

A selection is a dict of plain values (the options of ``python -m neurolab figure KIND``); :func:`selection` checks
it and fills the defaults, and the complete selection goes into the provenance, so :func:`rebuild` makes the same
figure again.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np
import pandas as pd
import plotly.graph_objects as go

from ..analysis.ablation import GridAblation, ablate_grid, neuron_ablation
from ..analysis.atlas import atlas, counts, search
from ..analysis.circuit import RULES, circuit_effects
from ..analysis.classification import ClassifySettings
from ..analysis.dynamics import Dynamics, DynamicsSettings, checkpoint_results, parse_series, run_series
from ..analysis.failures import failure_analysis
from ..analysis.heuristic_bag import HeuristicBag, heuristic_bag
from ..analysis.knockout import heuristic_knockout, prompt_knockout
from ..analysis.mathneuro import by_matrix, math_specific, run_mathneuro, scores_for
from ..analysis.neuron_maps import MAP_KINDS, NeuronMap, load_neuron_map, neuron_map
from ..analysis.predict import EXAMPLE_PROMPT, PromptReport, report
from ..analysis.robustness import Robustness, template_robustness, templates_with
from ..analysis.sweep import NeuronSelection, find_sweep, grid_for, run_sweep
from ..analysis.value_lens import matching_set, number_line, result_predicate
from ..anatomy.agreement import agreement_summary, method_scores
from ..anatomy.helix import helix_fits, neuron_helix, patch_the_fit
from ..anatomy.layer import layer_anatomy
from ..anatomy.shape import Operands, additive_decomposition
from ..anatomy.spectrum import is_complete
from ..anatomy.wiring import stored_connections
from ..capture.interventions import Intervention, parse_neurons
from ..errors import InputError
from ..models.adapters import neuron_label, parse_neuron_label
from ..models.loading import LoadedModel, load_model
from ..progress import Progress
from ..store import Store
from ..tasks.arithmetic import OP_NAMES, OPERATORS
from ..tasks.grid import OperandGrid, parse_template
from ..tasks.samples import SampleSet, load_samples
from ..viz import anatomy as anatomy_figures
from ..viz import dynamics as dynamics_figures
from ..viz.ablation import accuracy_figure, effect_map_figure
from ..viz.circuit import circuit_heatmap
from ..viz.experiments import failure_figure, heuristic_knockout_figure, prompt_knockout_figure
from ..viz.figures import (
    atlas_counts_figure,
    folded_figure,
    grid_heatmap,
    heuristic_mask_figure,
    next_token_figure,
    number_line_figure,
    result_figure,
    top_neurons_figure,
)
from ..viz.heuristic_bag import bag_figure
from ..viz.mathneuro import k_sweep_figure, matrix_figure
from .bundle import Export
from .provenance import Provenance

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

GRID = {"op": "+", "max_op": 100, "template": "plain"}
NEURON = {**GRID, "neuron": REQUIRED, "map": "K"}
ATLAS = {"ops": [], "layers": [], "groups": [], "kind": "all", "query": "", "min_score": 0.6, "min_lift": 1.0}
ABLATION = {"op": "+", "max_op": 100, "neurons": REQUIRED, "mode": "zero", "seed": 0, "name": "", "origin": "manual"}
CIRCUIT = {"op": "+", "max_op": 100, "top": 200}
SAMPLES = {"samples": 100, "seed": 0, "single": False, "math": None, "general": None}
PROMPT = {"prompt": EXAMPLE_PROMPT, "per_layer": 10}
_DYNAMICS = DynamicsSettings()
DYNAMICS = {"series": "embedded", "op": "+", "max_op": _DYNAMICS.max_op, "classify_top": _DYNAMICS.classify_top,
            "share_top": _DYNAMICS.share_top, "ablate_n": _DYNAMICS.ablate_n}
ROBUSTNESS = {key: value for key, value in DYNAMICS.items() if key != "series"} | {"custom": ""}
ANATOMY_LAYER = {**GRID, "layer": REQUIRED}
ANATOMY_NEURON = {**GRID, "neuron": REQUIRED}
ANATOMY_LINKS = 4  # the strongest inputs and outputs the Anatomy page shows per direction


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


# --- one neuron over the grid: heatmap, overlay, folded, result, lens ------------------------------------------

def neuron_map_for(model: LoadedModel, store: Store, values: dict, intervention: Intervention | None = None,
                   progress: Progress | None = None) -> NeuronMap:
    """The selection's neuron map: from the grid's stored sweep when it holds the neuron, else computed for this
    neuron alone (one grid pass, then cached); with no sweep stored for the grid, the sweep is run first."""
    chosen = selection("heatmap", {key: values.get(key) for key in NEURON})
    grid = _grid(model, chosen)
    layer, neuron = parse_neuron_label(chosen["neuron"])
    if not 0 <= layer < model.n_layers or not 0 <= neuron < model.d_mlp:
        raise InputError(f"{chosen['neuron']} is outside layers 0..{model.n_layers - 1} x neurons "
                         f"0..{model.d_mlp - 1}")
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
    layer, neuron = parse_neuron_label(chosen["neuron"])
    if not 0 <= layer < model.n_layers or not 0 <= neuron < model.d_mlp:
        raise InputError(f"{chosen['neuron']} is outside layers 0..{model.n_layers - 1} x neurons "
                         f"0..{model.d_mlp - 1}")
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


# --- the Heuristic Atlas ---------------------------------------------------------------------------------------

def atlas_rows(store: Store, model: LoadedModel, intervention: Intervention | None) -> pd.DataFrame:
    """The model's classifications made under ``intervention`` (the clean model's without one)."""
    frame = atlas(store, model.fingerprint)
    return frame[frame["intervention"] == (intervention.key if intervention else "none")]


def atlas_view(frame: pd.DataFrame, values: dict) -> pd.DataFrame:
    """The Atlas' rows that pass the selection's search and filters."""
    chosen = selection("atlas", values)
    view = search(frame, chosen["query"])
    view = view[(view["score"] >= chosen["min_score"]) & (view["lift"] >= chosen["min_lift"])]
    for column, wanted in (("op", chosen["ops"]), ("layer", chosen["layers"]), ("grp", chosen["groups"])):
        if wanted:
            view = view[view[column].isin(wanted)]
    if chosen["kind"] != "all":
        view = view[view["direct"] == (chosen["kind"] == "direct")]
    return view


def atlas_export(model: LoadedModel, values: dict, intervention: Intervention | None, view: pd.DataFrame) -> Export:
    chosen = selection("atlas", values)
    return _export("atlas", model, chosen, intervention, "atlas-counts", view, atlas_counts_figure(counts(view)))


def _atlas(model: LoadedModel, store: Store, chosen: dict, intervention: Intervention | None,
           progress: Progress | None) -> Export:
    return atlas_export(model, chosen, intervention, atlas_view(atlas_rows(store, model, intervention), chosen))


# --- the Ablation Lab ------------------------------------------------------------------------------------------

def ablation_of(model: LoadedModel, values: dict) -> Intervention:
    """The selection's ablation, as the Ablation Lab makes it (a mean ablation averages over the plain grid)."""
    chosen = selection("ablation", values)
    return neuron_ablation(parse_neurons(chosen["neurons"]), chosen["mode"], grid_for(model, chosen["op"],
                                                                                      chosen["max_op"]),
                           chosen["name"], chosen["origin"])


def _ablation_params(result: GridAblation) -> dict:
    control = result.control
    return {"accuracy": result.summary(), "control": None if control is None else control.describe(),
            "control_key": None if control is None else control.key}


def ablation_export(model: LoadedModel, values: dict, result: GridAblation) -> Export:
    """The effect map; the data is every prompt's result (probability and correctness before, after, control)."""
    chosen = selection("ablation", values)
    return _export("ablation", model, chosen, result.intervention, f"ablation-{OP_NAMES[chosen['op']]}",
                   result.prompts, effect_map_figure(result), _ablation_params(result))


def ablation_accuracy_export(model: LoadedModel, values: dict, result: GridAblation) -> Export:
    chosen = selection("ablation-accuracy", values)
    summary = pd.DataFrame([{"condition": k, "accuracy": v} for k, v in result.summary().items()])
    return _export("ablation-accuracy", model, chosen, result.intervention,
                   f"ablation-accuracy-{OP_NAMES[chosen['op']]}", summary, accuracy_figure(result),
                   _ablation_params(result), titled=True)


def _ablation_kind(export: Callable[[LoadedModel, dict, GridAblation], Export]) -> Callable[..., Export]:
    def build(model: LoadedModel, store: Store, chosen: dict, intervention: Intervention | None,
              progress: Progress | None) -> Export:
        """The selection's ablation against the clean model (``intervention`` is not stacked on it: the lab
        measures the clean model against the ablation)."""
        result = ablate_grid(model, store, chosen["op"], ablation_of(model, chosen), chosen["max_op"],
                             control_seed=chosen["seed"], progress=progress)
        return export(model, chosen, result)
    return build


# --- the Circuit page ------------------------------------------------------------------------------------------

def _settings(model: LoadedModel, chosen: dict) -> ClassifySettings:
    return ClassifySettings(top_n=min(chosen["top"], model.d_mlp))


def _knockout(model: LoadedModel, store: Store, chosen: dict, intervention: Intervention | None,
              progress: Progress | None) -> Export:
    settings = _settings(model, chosen)
    table = heuristic_knockout(model, store, chosen["op"], chosen["max_op"], settings=settings, progress=progress,
                               intervention=intervention)
    return _export("knockout", model, chosen, intervention, f"knockout-heuristic-{OP_NAMES[chosen['op']]}", table,
                   heuristic_knockout_figure(table, chosen["op"]), {"settings": asdict(settings)})


def _prompt_knockout(model: LoadedModel, store: Store, chosen: dict, intervention: Intervention | None,
                     progress: Progress | None) -> Export:
    settings = _settings(model, chosen)
    curves = prompt_knockout(model, store, chosen["op"], chosen["max_op"], settings=settings, progress=progress,
                             intervention=intervention)
    return _export("prompt-knockout", model, chosen, intervention, f"knockout-prompt-{OP_NAMES[chosen['op']]}",
                   curves, prompt_knockout_figure(curves, chosen["op"]), {"settings": asdict(settings)})


def _patching(model: LoadedModel, store: Store, chosen: dict, intervention: Intervention | None,
              progress: Progress | None) -> Export:
    effects = circuit_effects(model, store, chosen["op"], chosen["max_op"], rule=chosen["rule"], n=chosen["pairs"],
                              seed=chosen["seed"], intervention=intervention, progress=progress)
    return _export("patching", model, chosen, intervention, f"patching-{OP_NAMES[chosen['op']]}-{chosen['rule']}",
                   effects, circuit_heatmap(effects), {"metric": "fraction"})


def failures_max_op(model: LoadedModel, max_op: int) -> int:
    """The Circuit page's default grid where the model errs: 50 beyond the classification's, within one token."""
    return min(model.max_single_token + 1, max_op + 50)


def _failures(model: LoadedModel, store: Store, chosen: dict, intervention: Intervention | None,
              progress: Progress | None) -> Export:
    settings = _settings(model, chosen)
    eval_max_op = chosen["eval_max_op"] or failures_max_op(model, chosen["max_op"])
    frame = failure_analysis(model, store, chosen["op"], chosen["max_op"], eval_max_op, chosen["count"],
                             settings=settings, progress=progress, intervention=intervention)
    return _export("failures", model, {**chosen, "eval_max_op": eval_max_op}, intervention,
                   f"failures-{OP_NAMES[chosen['op']]}", frame, failure_figure(frame, chosen["op"]),
                   {"settings": asdict(settings)})


# --- MathNeuro (the clean model's weights, as the page scores them) ---------------------------------------------

def samples_of(model: LoadedModel, chosen: dict) -> SampleSet:
    return load_samples(chosen["math"], chosen["general"], n=chosen["samples"], seed=chosen["seed"],
                        single=chosen["single"], max_single_token=model.max_single_token)


def mathneuro_export(model: LoadedModel, values: dict, evaluation: pd.DataFrame, samples: SampleSet) -> Export:
    chosen = selection("mathneuro", values)
    return _export("mathneuro", model, chosen, None, f"mathneuro-k-sweep-x{chosen['factor']:g}", evaluation,
                   k_sweep_figure(evaluation, chosen["factor"]), {"samples": samples.spec})


def matrices_export(model: LoadedModel, values: dict, table: pd.DataFrame, samples: SampleSet) -> Export:
    chosen = selection("mathneuro-matrices", values)
    return _export("mathneuro-matrices", model, chosen, None, f"mathneuro-matrices-k{chosen['k']:g}", table,
                   matrix_figure(table, chosen["k"]), {"samples": samples.spec})


def _mathneuro(model: LoadedModel, store: Store, chosen: dict, intervention: Intervention | None,
               progress: Progress | None) -> Export:
    if not chosen["ks"]:
        raise InputError("figure mathneuro: give at least one K (ks)")
    samples = samples_of(model, chosen)
    evaluation = run_mathneuro(model, samples, chosen["ks"], store, factor=chosen["factor"], seed=chosen["seed"],
                               progress=progress, k_general=chosen["k_general"])[3]
    return mathneuro_export(model, chosen, evaluation, samples)


def _matrices(model: LoadedModel, store: Store, chosen: dict, intervention: Intervention | None,
              progress: Progress | None) -> Export:
    samples = samples_of(model, chosen)
    math_scores, general_scores = scores_for(model, samples, store, progress=progress)
    table = by_matrix(model, math_specific(math_scores, general_scores, chosen["k"], chosen["k_general"]))
    return matrices_export(model, chosen, table, samples)


# --- one prompt (the home page) --------------------------------------------------------------------------------

def prompt_report(model: LoadedModel, values: dict, intervention: Intervention | None = None) -> PromptReport:
    chosen = selection("prediction", values)
    return report(model, chosen["prompt"], neurons_per_layer=chosen["per_layer"], intervention=intervention)


def prediction_export(model: LoadedModel, values: dict, intervention: Intervention | None,
                      result: PromptReport) -> Export:
    chosen = selection("prediction", values)
    data = pd.DataFrame(result.top_tokens, columns=["token", "probability"]).assign(
        answer=str(result.prompt.answer))
    return _export("prediction", model, chosen, intervention, f"prediction-{_slug(chosen['prompt'])}", data,
                   next_token_figure(result), {"answer_probability": result.answer_probability})


def neurons_export(model: LoadedModel, values: dict, intervention: Intervention | None,
                   result: PromptReport) -> Export:
    chosen = selection("prediction-neurons", values)
    data = pd.DataFrame([{"layer": n.layer, "neuron": n.neuron, "label": n.label, "activation": n.activation}
                         for layer in sorted(result.top_neurons) for n in result.top_neurons[layer]])
    return _export("prediction-neurons", model, chosen, intervention, f"neurons-{_slug(chosen['prompt'])}", data,
                   top_neurons_figure(result))


def bag_export(model: LoadedModel, values: dict, intervention: Intervention | None, bag: HeuristicBag) -> Export:
    chosen = selection("bag", values)
    data = bag.groups.assign(neurons=bag.groups["neurons"].map(",".join))
    params = {"answer": bag.answer_token, "runner_up": bag.runner_up_token, "total": bag.total,
              "remainder": bag.remainder, "classification_max_op": bag.max_op}
    return _export("bag", model, chosen, intervention, f"bag-{_slug(chosen['prompt'])}", data, bag_figure(bag), params,
                   titled=True)


def _prompt_kind(export: Callable[..., Export]) -> Callable[..., Export]:
    def build(model: LoadedModel, store: Store, chosen: dict, intervention: Intervention | None,
              progress: Progress | None) -> Export:
        return export(model, chosen, intervention, prompt_report(model, chosen, intervention))
    return build


def _bag(model: LoadedModel, store: Store, chosen: dict, intervention: Intervention | None,
         progress: Progress | None) -> Export:
    return bag_export(model, chosen, intervention, heuristic_bag(model, store, chosen["prompt"], intervention))


# --- training dynamics and template robustness (the Training Dynamics page) ------------------------------------

DYNAMICS_FIGURES: dict[str, Callable[[pd.DataFrame], go.Figure]] = {
    "accuracy": dynamics_figures.accuracy_figure, "share": dynamics_figures.share_figure,
    "ablation": dynamics_figures.ablation_figure, "intersection": dynamics_figures.intersection_figure}


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


# --- neuron anatomy (the Anatomy page) -------------------------------------------------------------------------

def anatomy_layer(model: LoadedModel, store: Store, values: dict, intervention: Intervention | None = None,
                  progress: Progress | None = None) -> tuple[pd.DataFrame, int]:
    """The layer's anatomy table and its sweep, as the Anatomy page makes them: every layer swept first (the
    wiring reads the others), then the layer's table (both cached in the store)."""
    chosen = selection("anatomy-shapes", {key: values.get(key) for key in ANATOMY_LAYER})
    grid = _grid(model, chosen)
    run_sweep(model, store, grid.op, NeuronSelection(), grid.max_op, grid.template, intervention, progress=progress)
    table = layer_anatomy(model, store, grid.op, chosen["layer"], "auto", grid.max_op, grid.template, intervention,
                          progress=progress)
    return table, find_sweep(model, store, grid, intervention)


@dataclass(frozen=True)
class NeuronAnatomy:
    """What the neuron figures draw: its layer's table row, its K map, and the grid's operands."""

    row: pd.Series
    k: np.ndarray
    operands: Operands
    complete: bool
    sweep_id: int


def anatomy_in(store: Store, table: pd.DataFrame, sweep_id: int, label: str, max_op: int) -> NeuronAnatomy:
    """One neuron of a layer's anatomy ``table`` (made on ``sweep_id``), read from the store."""
    layer, neuron = parse_neuron_label(label)
    label = neuron_label(layer, neuron)
    if label not in set(table["label"]):
        raise InputError(f"{label} is not among layer {layer}'s {len(table)} neurons with an anatomy")
    operands = Operands.from_prompts(store.cached_prompts(sweep_id))
    return NeuronAnatomy(table.set_index("label").loc[label], store.neuron_map(sweep_id, layer, neuron)[0], operands,
                         is_complete(operands, max_op), sweep_id)


def neuron_anatomy(model: LoadedModel, store: Store, values: dict, intervention: Intervention | None = None,
                   progress: Progress | None = None) -> NeuronAnatomy:
    """The selection's neuron: its layer's anatomy made (or read) first, as the page does."""
    chosen = selection("anatomy-decomposition", {key: values.get(key) for key in ANATOMY_NEURON})
    layer, _ = parse_neuron_label(chosen["neuron"])
    table, sweep_id = anatomy_layer(model, store, {**chosen, "layer": layer}, intervention, progress)
    return anatomy_in(store, table, sweep_id, chosen["neuron"], chosen["max_op"])


def _operand_frame(operands: Operands, **columns: np.ndarray) -> pd.DataFrame:
    return pd.DataFrame({"op1": operands.a, "op2": operands.b, "answer": operands.r, **columns})


def decomposition_export(model: LoadedModel, values: dict, intervention: Intervention | None,
                         anatomy: NeuronAnatomy) -> Export:
    """The map beside its additive decomposition; the data is each prompt's value and interaction."""
    chosen = selection("anatomy-decomposition", values)
    mu, _, _, interaction = additive_decomposition(anatomy.k, anatomy.operands)
    data = _operand_frame(anatomy.operands, K=anatomy.k, additive=anatomy.k - interaction, interaction=interaction)
    figure = anatomy_figures.decomposition_figure(anatomy.k, anatomy.operands, chosen["max_op"], chosen["neuron"])
    return _export("anatomy-decomposition", model, chosen, intervention,
                   f"{chosen['neuron']}-decomposition-{OP_NAMES[chosen['op']]}", data, figure, {"mean": mu})


def spectrum_export(model: LoadedModel, values: dict, intervention: Intervention | None,
                    anatomy: NeuronAnatomy) -> Export:
    """The spectrum; the data is, per quantity and period, the periodic share beside the residue AUROC."""
    chosen = selection("anatomy-spectrum", values)
    row = anatomy.row
    data = pd.DataFrame([{"quantity": name[6], "period": int(name.split(",")[1][:-1]), "share": float(row[name]),
                          "auroc": float(row[f"auroc{name[5:]}"])} for name in row.index if name.startswith("share[")])
    figure = anatomy_figures.spectrum_figure(anatomy.k, anatomy.operands, chosen["max_op"], row, anatomy.complete)
    return _export("anatomy-spectrum", model, chosen, intervention,
                   f"{chosen['neuron']}-spectrum-{OP_NAMES[chosen['op']]}", data, figure,
                   {"complete_grid": anatomy.complete})


def _anatomy_neuron_kind(export: Callable[..., Export]) -> Callable[..., Export]:
    def build(model: LoadedModel, store: Store, chosen: dict, intervention: Intervention | None,
              progress: Progress | None) -> Export:
        return export(model, chosen, intervention, neuron_anatomy(model, store, chosen, intervention, progress))
    return build


def helix_export(model: LoadedModel, values: dict, intervention: Intervention | None, frame: pd.DataFrame) -> Export:
    """The helix fit of a neuron's pre-activation (map, fit, residual); the data is :func:`neuron_helix`'s."""
    chosen = selection("anatomy-helix", values)
    return _export("anatomy-helix", model, chosen, intervention, f"{chosen['neuron']}-helix-{OP_NAMES[chosen['op']]}",
                   frame, anatomy_figures.helix_figure(frame, chosen["max_op"]))


def signs_export(model: LoadedModel, values: dict, intervention: Intervention | None, frame: pd.DataFrame) -> Export:
    chosen = selection("anatomy-signs", values)
    if "gate" not in set(frame["point"]):
        raise InputError(f"{model.name} is not gated: its neurons have no gate x up sign combinations")
    return _export("anatomy-signs", model, chosen, intervention, f"{chosen['neuron']}-signs-{OP_NAMES[chosen['op']]}",
                   frame, anatomy_figures.sign_map_figure(frame, chosen["max_op"]))


def _helix_kind(export: Callable[..., Export]) -> Callable[..., Export]:
    def build(model: LoadedModel, store: Store, chosen: dict, intervention: Intervention | None,
              progress: Progress | None) -> Export:
        """One pass over the grid for the neuron's pre-activation, then cached."""
        layer, neuron = parse_neuron_label(chosen["neuron"])
        if not 0 <= layer < model.n_layers or not 0 <= neuron < model.d_mlp:
            raise InputError(f"{chosen['neuron']} is outside layers 0..{model.n_layers - 1} x neurons "
                             f"0..{model.d_mlp - 1}")
        frame = neuron_helix(model, store, _grid(model, chosen), layer, neuron, intervention)
        return export(model, chosen, intervention, frame)
    return build


def link_export(model: LoadedModel, values: dict, intervention: Intervention | None, link: Any,
                link_map: np.ndarray, operands: Operands) -> Export:
    """A linked neuron's thumbnail (``link``: a row of :func:`stored_connections`, as the page iterates them)."""
    chosen = selection("anatomy-link", values)
    title = f"{link.label} TWERA {link.twera:+.3f}"
    return _export("anatomy-link", model, chosen, intervention,
                   f"{chosen['neuron']}-{link.direction}-{link.label}-{OP_NAMES[chosen['op']]}",
                   _operand_frame(operands, K=link_map), anatomy_figures.thumbnail(link_map, operands,
                                                                                   chosen["max_op"], title),
                   {"direction": link.direction, "twera": float(link.twera)})


def _link(model: LoadedModel, store: Store, chosen: dict, intervention: Intervention | None,
          progress: Progress | None) -> Export:
    anatomy = neuron_anatomy(model, store, chosen, intervention, progress)
    layer, neuron = parse_neuron_label(chosen["neuron"])
    links = stored_connections(model, store, anatomy.sweep_id, layer, neuron, count=ANATOMY_LINKS)
    found = links[links["label"] == chosen["link"]]
    if found.empty:
        raise InputError(f"{chosen['link']} is not among {chosen['neuron']}'s strongest links "
                         f"({', '.join(links['label']) or 'none'})")
    link = next(found.itertuples())
    link_map = store.neuron_map(anatomy.sweep_id, int(link.layer), int(link.neuron))[0]
    return link_export(model, chosen, intervention, link, link_map, anatomy.operands)


def shapes_export(model: LoadedModel, values: dict, intervention: Intervention | None, table: pd.DataFrame) -> Export:
    """Neurons per shape; the data is the layer's whole anatomy table."""
    chosen = selection("anatomy-shapes", values)
    return _export("anatomy-shapes", model, chosen, intervention,
                   f"anatomy-L{chosen['layer']}-{OP_NAMES[chosen['op']]}", table,
                   anatomy_figures.shapes_figure(table))


def _shapes(model: LoadedModel, store: Store, chosen: dict, intervention: Intervention | None,
            progress: Progress | None) -> Export:
    return shapes_export(model, chosen, intervention, anatomy_layer(model, store, chosen, intervention, progress)[0])


def fraction_table(table: pd.DataFrame, fits: pd.DataFrame) -> pd.DataFrame:
    """The layer's table with each neuron's helix result fraction and NRMSE (of its first pre-activation map)."""
    pre = fits[fits["point"] == fits["point"].iloc[0]]
    return table.merge(pre[["neuron", "result_fraction", "nrmse"]].rename(
        columns={"result_fraction": "result_fraction_pre"}), on="neuron")


def fraction_export(model: LoadedModel, values: dict, intervention: Intervention | None,
                    merged: pd.DataFrame) -> Export:
    chosen = selection("anatomy-fraction", values)
    data = merged[["layer", "neuron", "label", "shape", "result_fraction_pre", "nrmse", "direct_effect"]]
    return _export("anatomy-fraction", model, chosen, intervention,
                   f"anatomy-L{chosen['layer']}-fraction-{OP_NAMES[chosen['op']]}", data,
                   anatomy_figures.fraction_vs_effect_figure(merged))


def _fraction(model: LoadedModel, store: Store, chosen: dict, intervention: Intervention | None,
              progress: Progress | None) -> Export:
    """One pass over the grid for the layer's pre-activations, then the fits (cached)."""
    table, _ = anatomy_layer(model, store, chosen, intervention, progress)
    fits = helix_fits(model, store, _grid(model, chosen), chosen["layer"], table["neuron"].tolist(), intervention)
    return fraction_export(model, chosen, intervention, fraction_table(table, fits))


def patch_export(model: LoadedModel, values: dict, intervention: Intervention | None,
                 patched: pd.DataFrame) -> Export:
    chosen = selection("anatomy-patch", values)
    return _export("anatomy-patch", model, chosen, intervention,
                   f"anatomy-L{chosen['layer']}-patch-fit-{chosen['count']}-{OP_NAMES[chosen['op']]}", patched,
                   anatomy_figures.patch_fit_figure(patched))


def _patch(model: LoadedModel, store: Store, chosen: dict, intervention: Intervention | None,
           progress: Progress | None) -> Export:
    patched = patch_the_fit(model, store, _grid(model, chosen), chosen["layer"], chosen["count"], intervention,
                            progress)
    return patch_export(model, chosen, intervention, patched)


def agreement_export(model: LoadedModel, values: dict, intervention: Intervention | None,
                     scores: pd.DataFrame) -> Export:
    """Attribution against exact activation patching per neuron; the summary (rho, overlap of the top ``count``)
    goes into the provenance's parameters, and the data is every neuron's pair of scores."""
    chosen = selection("anatomy-agreement", values)
    summary = agreement_summary(scores, chosen["count"])
    return _export("anatomy-agreement", model, chosen, intervention,
                   f"agreement-L{chosen['layer']}-{OP_NAMES[chosen['op']]}", scores,
                   anatomy_figures.agreement_figure(scores, summary), {"summary": summary.to_dict("records")})


def agreement_scores(model: LoadedModel, store: Store, values: dict, intervention: Intervention | None = None,
                     progress: Progress | None = None) -> pd.DataFrame:
    """Both methods' scores for the selection's layer (exact activation patching: a forward pass per neuron and
    prompt pair, then cached)."""
    chosen = selection("anatomy-agreement", values)
    if not 0 <= chosen["layer"] < model.n_layers:
        raise InputError(f"layer {chosen['layer']} does not exist; the model has layers 0..{model.n_layers - 1}")
    return method_scores(model, store, _grid(model, chosen), [chosen["layer"]], chosen["pairs"], chosen["seed"],
                         intervention, progress)


def _agreement(model: LoadedModel, store: Store, chosen: dict, intervention: Intervention | None,
               progress: Progress | None) -> Export:
    return agreement_export(model, chosen, intervention, agreement_scores(model, store, chosen, intervention,
                                                                          progress))


# --- the registry ----------------------------------------------------------------------------------------------

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


KINDS: dict[str, Kind] = {kind.name: kind for kind in (
    Kind("heatmap", NEURON, "a neuron's K or KV map over the op1 x op2 grid", _neuron_kind(heatmap_export)),
    Kind("overlay", {**NEURON, "heuristic": REQUIRED}, "a heuristic's matching set on the grid, beside the heatmap",
         _neuron_kind(overlay_export)),
    Kind("folded", {**NEURON, "mod": 10}, "a neuron's map folded modulo n", _neuron_kind(folded_export)),
    Kind("result", NEURON, "a neuron's value against the result", _neuron_kind(result_export)),
    Kind("lens", {**GRID, "neuron": REQUIRED, "heuristic": None}, "a neuron's value vector on the number line",
         _lens),
    Kind("atlas", ATLAS, "classified neurons per layer and group (the Atlas' filtered rows)", _atlas),
    Kind("ablation", ABLATION, "an ablation's effect on p(answer) over the grid", _ablation_kind(ablation_export)),
    Kind("ablation-accuracy", ABLATION, "accuracy clean, ablated and under the random control",
         _ablation_kind(ablation_accuracy_export)),
    Kind("knockout", CIRCUIT, "accuracy after ablating each heuristic's neurons", _knockout),
    Kind("prompt-knockout", CIRCUIT, "accuracy against N heuristic vs random neurons per prompt", _prompt_knockout),
    Kind("patching", {"op": "+", "max_op": 100, "rule": "both", "pairs": 20, "seed": 0},
         "activation patching of every MLP and head at every position", _patching),
    Kind("failures", {**CIRCUIT, "eval_max_op": None, "count": 50}, "heuristic neurons of correct vs wrong prompts",
         _failures),
    Kind("mathneuro", {**SAMPLES, "ks": [0.001, 0.01, 0.025, 0.05], "factor": 0.0, "k_general": None},
         "MathNeuro's K sweep with the random and Wanda baselines", _mathneuro),
    Kind("mathneuro-matrices", {**SAMPLES, "k": 0.01, "k_general": None}, "math-specific weights per layer and matrix",
         _matrices),
    Kind("prediction", PROMPT, "a prompt's top next tokens", _prompt_kind(prediction_export)),
    Kind("prediction-neurons", PROMPT, "a prompt's most active neurons per layer", _prompt_kind(neurons_export)),
    Kind("bag", {"prompt": EXAMPLE_PROMPT}, "a prompt's bag of heuristics", _bag),
    Kind("dynamics", {**DYNAMICS, "metric": "accuracy"},
         "a series of checkpoints: accuracy, heuristic shares, ablation or intersection over training", _dynamics),
    Kind("dynamics-map", {**DYNAMICS, "custom": "", "condition": REQUIRED, "neuron": REQUIRED},
         "a neuron's map under one condition (checkpoint LABEL, template NAME, model NAME), read from the store",
         _dynamics_map),
    Kind("robustness", ROBUSTNESS, "the heuristics that survive a change of template", _robustness),
    Kind("anatomy-decomposition", ANATOMY_NEURON, "a neuron's map beside its additive decomposition",
         _anatomy_neuron_kind(decomposition_export)),
    Kind("anatomy-spectrum", ANATOMY_NEURON, "a neuron's spectrum: periodic shares beside residue AUROCs",
         _anatomy_neuron_kind(spectrum_export)),
    Kind("anatomy-helix", ANATOMY_NEURON, "the helix fit of a neuron's pre-activation", _helix_kind(helix_export)),
    Kind("anatomy-signs", ANATOMY_NEURON, "a gated neuron's gate x up sign combinations", _helix_kind(signs_export)),
    Kind("anatomy-link", {**ANATOMY_NEURON, "link": REQUIRED}, "one of a neuron's strongest inputs or outputs (TWERA)",
         _link),
    Kind("anatomy-shapes", ANATOMY_LAYER, "a layer's neurons per shape", _shapes),
    Kind("anatomy-fraction", ANATOMY_LAYER, "helix result fraction against direct effect", _fraction),
    Kind("anatomy-patch", {**ANATOMY_LAYER, "count": 20}, "accuracy with the top neurons patched to their fits",
         _patch),
    Kind("anatomy-agreement", {**ANATOMY_LAYER, "count": 20, "pairs": 50, "seed": 0},
         "attribution against exact activation patching per neuron", _agreement),
)}


def _kind(name: str) -> Kind:
    if name not in KINDS:
        raise InputError(f"unknown figure kind {name!r}; known: {', '.join(KINDS)}")
    return KINDS[name]


def build(kind: str, model: LoadedModel, store: Store, values: dict, intervention: Intervention | None = None,
          progress: Progress | None = None) -> Export:
    """The ``kind`` figure of ``model`` for the selection ``values``, under ``intervention``."""
    return _kind(kind)(model, store, values, intervention, progress)


def rebuild(provenance: Provenance, store: Store, progress: Progress | None = None) -> Export:
    """The figure a provenance describes, made again: its model (by name, revision, dtype and device; refused when
    the weights changed since), its intervention (masks from ``store``), then :func:`build`."""
    described = provenance.model
    model = load_model(described["name"], device=described["device"], dtype=described["dtype"],
                       revision=described.get("revision"))
    if model.fingerprint != described["fingerprint"]:
        raise InputError(f"{described['name']} is now {model.fingerprint}; the figure was made with "
                         f"{described['fingerprint']} (other weights or precision)")
    intervention = None
    if provenance.intervention:
        spec = provenance.intervention["spec"]
        tensors = store.load_intervention(provenance.intervention["key"])[1] if spec.get("tensors") else {}
        intervention = Intervention.from_json(spec, tensors)
    return build(provenance.kind, model, store, provenance.selection, intervention, progress)
