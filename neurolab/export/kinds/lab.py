"""The Ablation Lab's figure kinds: an ablation's effect map and accuracy."""

from __future__ import annotations

from collections.abc import Callable

import pandas as pd

from ...analysis.ablation import GridAblation, ablate_grid, neuron_ablation
from ...analysis.sweep import grid_for
from ...capture.interventions import Intervention, parse_neurons
from ...models.loading import LoadedModel
from ...progress import Progress
from ...store import Store
from ...tasks.arithmetic import OP_NAMES
from ...viz.ablation import accuracy_figure, effect_map_figure
from ..bundle import Export
from .base import REQUIRED, Kind, _export, selection

ABLATION = {"op": "+", "max_op": 100, "neurons": REQUIRED, "mode": "zero", "seed": 0, "name": "", "origin": "manual"}


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


#: this family's figure kinds, in the registry's order
FIGURE_KINDS: tuple[Kind, ...] = (
    Kind("ablation", ABLATION, "an ablation's effect on p(answer) over the grid", _ablation_kind(ablation_export)),
    Kind("ablation-accuracy", ABLATION, "accuracy clean, ablated and under the random control",
         _ablation_kind(ablation_accuracy_export)),
)
