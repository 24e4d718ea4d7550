"""Do attribution patching (the paper's ranking) and exact activation patching agree on a layer's neurons?

RelP (arXiv 2508.21258) reports a correlation of 0.006 between the two on GPT-2-Large's MLP neurons. Both methods
exist in :mod:`neurolab.analysis.importance`; here they run on the same prompt pairs and are compared per layer:
Spearman's rho of the per-neuron scores (mean + std over prompts, the ranking score) over the layer's top neurons by
either method, the overlap of the two top-k sets, and every neuron's pair of scores for a scatter. Exact activation
patching costs a forward pass per neuron and prompt: meant for small models (the embedded one: seconds per layer).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pandas as pd

from ..analysis.importance import activation_patching, attribution_patching, prompt_pairs, stored_correctness
from ..analysis.sweep import open_sweep
from ..capture.interventions import CLEAN, Intervention
from ..models.loading import LoadedModel
from ..progress import Progress
from ..store import Store
from ..tasks.grid import OperandGrid


def spearman(x: np.ndarray, y: np.ndarray) -> float:
    """Spearman's rho (average ranks for ties); NaN with fewer than 3 points or a constant side."""
    x, y = pd.Series(np.asarray(x, np.float64)), pd.Series(np.asarray(y, np.float64))
    if len(x) < 3 or x.nunique() < 2 or y.nunique() < 2:
        return float("nan")
    return float(np.corrcoef(x.rank(), y.rank())[0, 1])


def method_scores(model: LoadedModel, store: Store, grid: OperandGrid, layers: Sequence[int], n_prompts: int = 50,
                  seed: int = 0, intervention: Intervention | None = None,
                  progress: Progress | None = None) -> pd.DataFrame:
    """Per neuron of ``layers``: attribution and activation patching's mean and score on the same prompt pairs
    (columns ``layer, neuron, attribution, activation, attribution_mean, activation_mean``). Cached per layer set."""
    intervention = intervention or CLEAN
    layers = sorted(set(layers))
    spec = {"fingerprint": model.fingerprint, "op": grid.op, "max_op": grid.max_op, "template": grid.template.key,
            "intervention": intervention.key, "layers": layers, "n_prompts": n_prompts, "seed": seed}

    def compute() -> pd.DataFrame:
        sweep_id = open_sweep(model, store, grid, intervention)
        pairs = prompt_pairs(model, grid, n_prompts, seed, stored_correctness(store, sweep_id, len(grid)),
                             intervention)
        both = [attribution_patching(model, pairs, layers, intervention=intervention),
                activation_patching(model, pairs, layers, progress=progress, intervention=intervention)]
        wide = pd.concat(both).pivot_table(index=["layer", "neuron"], columns="method", values=["score", "mean"])
        return pd.DataFrame({
            "layer": wide.index.get_level_values(0), "neuron": wide.index.get_level_values(1),
            "attribution": wide[("score", "attribution")].to_numpy(),
            "activation": wide[("score", "activation")].to_numpy(),
            "attribution_mean": wide[("mean", "attribution")].to_numpy(),
            "activation_mean": wide[("mean", "activation")].to_numpy(), "prompts": len(pairs.clean)})

    return store.cached_frame("anatomy-agreement", spec, compute)


def agreement_summary(scores: pd.DataFrame, top_k: int = 20) -> pd.DataFrame:
    """Per layer: Spearman's rho over all its neurons and over the union of both methods' top-``top_k``, Pearson's r
    of the mean effects, and the overlap |top-k(attribution) & top-k(activation)| / k."""
    rows = []
    for layer, part in scores.groupby("layer"):
        k = min(top_k, len(part))
        top_attr = set(part.nlargest(k, "attribution")["neuron"])
        top_act = set(part.nlargest(k, "activation")["neuron"])
        union = part[part["neuron"].isin(top_attr | top_act)]
        rows.append({"layer": int(layer), "neurons": len(part), "rho_all": spearman(part["attribution"],
                                                                                   part["activation"]),
                     "rho_top": spearman(union["attribution"], union["activation"]),
                     "pearson_mean": float(np.corrcoef(part["attribution_mean"], part["activation_mean"])[0, 1]),
                     "top_k": k, "overlap": len(top_attr & top_act) / k if k else float("nan")})
    return pd.DataFrame(rows)
