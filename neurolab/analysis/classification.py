"""The heuristics pipeline for one operator: sweep, importance, top-N neurons per layer, heuristic scores, stored.

Every step reads what the store already has and computes only what is missing, so the CLI and the pages can call
:func:`classify_operator` freely.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd

from ..heuristics.classifier import classify
from ..models.loading import LoadedModel
from ..store.connection import Store
from ..tasks.grid import OperandGrid, PromptTemplate
from .importance import PromptPairs, attribution_patching, first_heuristics_layer, prompt_pairs
from .sweep import run_sweep

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
            raise ValueError(f"maps must be one of {MAP_MODES}")
        if not 0 < self.threshold <= 1:
            raise ValueError("threshold must be in (0, 1]")


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


def top_neurons(importance: pd.DataFrame, layer: int, top_n: int) -> list[int]:
    """The layer's ``top_n`` neurons by importance (all of them when the layer is smaller)."""
    rows = importance[importance["layer"] == layer].sort_values("rank")
    return [int(n) for n in rows["neuron"].head(top_n)]


def ensure_importance(model: LoadedModel, store: Store, sweep_id: int, settings: ClassifySettings,
                      pairs: PromptPairs) -> pd.DataFrame:
    """Attribution-patching importance of every neuron, computed once per (sweep, prompts, seed) and stored."""
    stored = store.importance(sweep_id, "attribution", settings.n_prompts, settings.seed)
    if len(stored) == model.n_layers * model.d_mlp:
        return stored
    store.write_importance(sweep_id, settings.n_prompts, settings.seed, attribution_patching(model, pairs))
    return store.importance(sweep_id, "attribution", settings.n_prompts, settings.seed)


def classify_operator(
    model: LoadedModel,
    store: Store,
    op: str,
    max_op: int = 100,
    template: PromptTemplate | None = None,
    settings: ClassifySettings | None = None,
    layers: Sequence[int] | None = None,
    progress: Callable[[str, float], None] | None = None,
) -> Classification:
    """Classify the top-N neurons of ``layers`` (default: first_heuristics_layer .. last) for one operator.

    ``progress(stage, fraction)`` reports the stage ("sweep", "importance", "classify") and how far it is.
    """
    settings = settings or ClassifySettings()
    grid = OperandGrid.for_model(model, op, max_op, template)
    report = progress or (lambda stage, fraction: None)
    sweep = run_sweep(model, store, op, layers=None if layers is None else list(layers), max_op=max_op,
                      template=template, progress=lambda d, t: report("sweep", d / t))
    prompts = store.prompts(sweep.sweep_id)
    report("importance", 0.0)
    pairs = prompt_pairs(model, prompts, settings.n_prompts, settings.seed)
    importance = ensure_importance(model, store, sweep.sweep_id, settings, pairs)
    first, evidence = first_heuristics_layer(model, pairs)
    chosen = list(range(first, model.n_layers)) if layers is None else sorted(layers)
    done = set(store.classified_layers(sweep.sweep_id, settings.maps, settings.top_n, settings.threshold))
    op1, op2, result = (prompts[c].to_numpy() for c in ("op1", "op2", "answer"))
    for i, layer in enumerate(chosen):
        report("classify", i / len(chosen))
        if layer in done:
            continue
        neurons = top_neurons(importance, layer, settings.top_n)
        k_maps, kv_maps = store.layer_maps(sweep.sweep_id, layer, neurons)
        frame = classify(k_maps, op, op1, op2, result, max_op, model.max_single_token, kv_maps=kv_maps,
                         mode=settings.maps, threshold=settings.threshold, bottom=model.gated, seed=settings.seed)
        ids = np.asarray(neurons)
        frame["importance_rank"] = frame["neuron"].to_numpy()  # row i of the maps is the i-th most important
        frame["neuron"] = ids[frame["neuron"].to_numpy()]
        store.write_classification(sweep.sweep_id, settings.maps, settings.top_n, settings.threshold, layer, frame)
    report("classify", 1.0)
    scores = store.query(
        f"SELECT * EXCLUDE (sweep_id, maps, top_n, threshold) FROM heuristic_scores WHERE sweep_id=? AND maps=? "
        f"AND top_n=? AND threshold=? AND layer IN ({','.join(map(str, chosen))}) "
        f"ORDER BY layer, importance_rank, score DESC",
        [sweep.sweep_id, settings.maps, settings.top_n, settings.threshold])
    return Classification(sweep.sweep_id, chosen, first, evidence, scores, importance)
