"""One prompt's figure kinds (the home page): prediction, prediction-neurons, bag."""

from __future__ import annotations

from collections.abc import Callable

import pandas as pd

from ...analysis.heuristic_bag import HeuristicBag, heuristic_bag
from ...analysis.predict import EXAMPLE_PROMPT, PromptReport, report
from ...capture.interventions import Intervention
from ...models.loading import LoadedModel
from ...progress import Progress
from ...store import Store
from ...viz.figures import (
    next_token_figure,
    top_neurons_figure,
)
from ...viz.heuristic_bag import bag_figure
from ..bundle import Export
from .base import Kind, _export, _slug, selection

PROMPT = {"prompt": EXAMPLE_PROMPT, "per_layer": 10}


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


#: this family's figure kinds, in the registry's order
FIGURE_KINDS: tuple[Kind, ...] = (
    Kind("prediction", PROMPT, "a prompt's top next tokens", _prompt_kind(prediction_export)),
    Kind("prediction-neurons", PROMPT, "a prompt's most active neurons per layer", _prompt_kind(neurons_export)),
    Kind("bag", {"prompt": EXAMPLE_PROMPT}, "a prompt's bag of heuristics", _bag),
)
