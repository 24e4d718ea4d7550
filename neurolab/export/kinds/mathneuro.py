"""MathNeuro's figure kinds (the clean model's weights, as the page scores them)."""

from __future__ import annotations

import pandas as pd

from ...analysis.mathneuro import by_matrix, math_specific, run_mathneuro, scores_for
from ...capture.interventions import Intervention
from ...errors import InputError
from ...models.loading import LoadedModel
from ...progress import Progress
from ...store import Store
from ...tasks.samples import SampleSet, load_samples
from ...viz.mathneuro import k_sweep_figure, matrix_figure
from ..bundle import Export
from .base import Kind, _export, selection

SAMPLES = {"samples": 100, "seed": 0, "single": False, "math": None, "general": None}


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


#: this family's figure kinds, in the registry's order
FIGURE_KINDS: tuple[Kind, ...] = (
    Kind("mathneuro", {**SAMPLES, "ks": [0.001, 0.01, 0.025, 0.05], "factor": 0.0, "k_general": None},
         "MathNeuro's K sweep with the random and Wanda baselines", _mathneuro),
    Kind("mathneuro-matrices", {**SAMPLES, "k": 0.01, "k_general": None}, "math-specific weights per layer and matrix",
         _matrices),
)
