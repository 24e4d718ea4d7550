"""The heuristics pipeline for one operator: sweep, importance, top-N neurons per layer, heuristic scores, stored.

Every step reads what the store already has and computes only what is missing, so the CLI and the pages can call
:func:`classify_operator` freely.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass

import numpy as np
import pandas as pd

from ..capture.interventions import Intervention
from ..errors import InputError
from ..heuristics import RULES_VERSION
from ..heuristics.classifier import classify
from ..models.loading import LoadedModel
from ..progress import Progress, report, staged
from ..store import Store
from ..tasks.grid import PromptTemplate
from .importance import ensure_importance, first_heuristics_layer, prompt_pairs, stored_correctness
from .sweep import NeuronSelection, grid_for, open_sweep, run_sweep

MAP_MODES = ("K", "KV", "hybrid")


@dataclass(frozen=True)
class ClassifySettings:
    """Everything a classification run's results depend on besides the model and grid (stored with them)."""

    maps: str = "hybrid"
    top_n: int = 200
    threshold: float = 0.6
    n_prompts: int = 50
    seed: int = 0

    def __post_init__(self) -> None:
        if self.maps not in MAP_MODES:
            raise InputError(f"maps must be one of {MAP_MODES}")
        if not 0 < self.threshold <= 1:
            raise InputError("threshold must be in (0, 1]")
        if self.top_n < 1 or self.n_prompts < 1:
            raise InputError("top_n and n_prompts must be at least 1")

    def key(self) -> dict:
        """What the stored scores are keyed by, beside the sweep (model, grid, intervention): these settings and
        the version of the classifier's rules."""
        return {**asdict(self), "rules": RULES_VERSION}


@dataclass
class Classification:
    """The stored scores of one operator's classification and how the layers were chosen."""

    sweep_id: int
    layers: list[int]
    first_layer: int
    evidence: pd.DataFrame  # per layer: promotion of the answer by the MLP output
    scores: pd.DataFrame  # every (layer, neuron, heuristic) score, matched or not
    importance: pd.DataFrame

    @property
    def matched(self) -> pd.DataFrame:
        return self.scores[self.scores["matched"]]

    def coverage(self) -> pd.DataFrame:
        """Per layer: top neurons analysed, those with >= 1 heuristic, and per display group."""
        analysed = self.scores.groupby("layer")["neuron"].nunique().rename("top_neurons")
        any_match = self.matched.groupby("layer")["neuron"].nunique().rename("with_heuristic")
        by_group = self.matched.groupby(["layer", "grp"])["neuron"].nunique().unstack(fill_value=0)
        table = pd.concat([analysed, any_match, by_group], axis=1).fillna(0).astype(int)
        return table.reset_index()


def classify_operator(
    model: LoadedModel,
    store: Store,
    op: str,
    max_op: int = 100,
    template: PromptTemplate | None = None,
    settings: ClassifySettings | None = None,
    layers: Sequence[int] | None = None,
    progress: Progress | None = None,
    intervention: Intervention | None = None,
) -> Classification:
    """Classify the top-N neurons of ``layers`` (default: first_heuristics_layer .. last) for one operator.

    Only the top-N neurons per layer are swept (the paper's selection), so this scales to 8B models.
    ``progress`` reports the stages "importance", "maps" (prompts) and "classify" (layers).
    """
    settings = settings or ClassifySettings()
    grid = grid_for(model, op, max_op, template)
    report(progress, 0, 1, "importance")
    sweep_id = open_sweep(model, store, grid, intervention)
    correct = stored_correctness(store, sweep_id, len(grid))
    pairs = prompt_pairs(model, grid, settings.n_prompts, settings.seed, correct, intervention)
    importance = ensure_importance(model, store, sweep_id, grid, settings.n_prompts, settings.seed, intervention)
    first, evidence = first_heuristics_layer(model, pairs, intervention=intervention)
    chosen = list(range(first, model.n_layers)) if layers is None else sorted(set(layers))
    selection = NeuronSelection("top", settings.top_n, layers=tuple(chosen), n_prompts=settings.n_prompts,
                                seed=settings.seed)
    sweep = run_sweep(model, store, op, selection, max_op, template, intervention,
                      progress=staged(progress, "maps"))  # the answers and the top-N maps, one pass
    prompts = store.prompts(sweep.sweep_id)
    key = settings.key()
    done = set(store.classified_layers(sweep.sweep_id, key))
    op1, op2, result = (prompts[c].to_numpy() for c in ("op1", "op2", "answer"))
    for i, layer in enumerate(chosen):
        report(progress, i, len(chosen), "classify")
        if layer in done:
            continue
        neurons = sweep.neurons[layer]
        k_maps, kv_maps = store.layer_maps(sweep.sweep_id, layer, neurons)
        frame = classify(k_maps, op, op1, op2, result, max_op, model.max_single_token, kv_maps=kv_maps,
                         mode=settings.maps, threshold=settings.threshold, bottom=model.gated, seed=settings.seed)
        ids = np.asarray(neurons)
        frame["importance_rank"] = frame["neuron"].to_numpy()  # row i of the maps is the i-th most important
        frame["neuron"] = ids[frame["neuron"].to_numpy()]
        store.write_classification(sweep.sweep_id, key, layer, frame)
    report(progress, len(chosen), len(chosen), "classify")
    scores = store.heuristic_scores(sweep.sweep_id, key, chosen)
    return Classification(sweep.sweep_id, chosen, first, evidence, scores, importance)
