"""The Circuit page's figure kinds: knockout, prompt-knockout, patching, failures."""

from __future__ import annotations

from dataclasses import asdict

from ...analysis.circuit import circuit_effects
from ...analysis.classification import ClassifySettings
from ...analysis.failures import failure_analysis
from ...analysis.knockout import heuristic_knockout, prompt_knockout
from ...capture.interventions import Intervention
from ...models.loading import LoadedModel
from ...progress import Progress
from ...store import Store
from ...tasks.arithmetic import OP_NAMES
from ...viz.circuit import circuit_heatmap
from ...viz.experiments import failure_figure, heuristic_knockout_figure, prompt_knockout_figure
from ..bundle import Export
from .base import Kind, _export

CIRCUIT = {"op": "+", "max_op": 100, "top": 200}


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


#: this family's figure kinds, in the registry's order
FIGURE_KINDS: tuple[Kind, ...] = (
    Kind("knockout", CIRCUIT, "accuracy after ablating each heuristic's neurons", _knockout),
    Kind("prompt-knockout", CIRCUIT, "accuracy against N heuristic vs random neurons per prompt", _prompt_knockout),
    Kind("patching", {"op": "+", "max_op": 100, "rule": "both", "pairs": 20, "seed": 0},
         "activation patching of every MLP and head at every position", _patching),
    Kind("failures", {**CIRCUIT, "eval_max_op": None, "count": 50}, "heuristic neurons of correct vs wrong prompts",
         _failures),
)
