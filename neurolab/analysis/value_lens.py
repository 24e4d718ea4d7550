"""What a neuron writes: its value vector's logit lens on the number tokens, and whether it fits its heuristic.

A *direct* heuristic neuron (e.g. ``result_range_40_50``) should promote the results its heuristic is about; the
agreement check reads the numbers its value vector promotes most and asks how many satisfy the heuristic.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from ..heuristics.families import Predicate, parse
from ..models.loading import LoadedModel


def number_line(model: LoadedModel, layer: int, neuron: int) -> np.ndarray:
    """``[max_single_token + 1]``: the neuron's direct logit on each number token per unit of activation."""
    return model.number_logit_lens(layer)[neuron].numpy()


def matching_set(heuristic: str, op1: np.ndarray, op2: np.ndarray, result: np.ndarray) -> np.ndarray | None:
    """Which prompts satisfy a heuristic, read from its name by the family registry (None for a name no family
    writes)."""
    parsed = parse(heuristic)
    return None if parsed is None else parsed[0].matching_set(parsed[1], op1, op2, result)


def result_predicate(heuristic: str) -> Predicate | None:
    """Which result values a result heuristic is about (None for operand heuristics and unknown names)."""
    parsed = parse(heuristic)
    return None if parsed is None else parsed[0].result_predicate(parsed[1])


def agreement(model: LoadedModel, matches: pd.DataFrame, results: np.ndarray, top: int = 10) -> pd.DataFrame:
    """For each matched direct heuristic (rows with layer, neuron, heuristic, side): the share of the neuron's
    most promoted results that satisfy the heuristic, beside the chance share.

    Only results that occur on the grid count. A neuron matched on its bottom side (negative activations) writes
    minus its value vector, so its most *suppressed* numbers are the promoted ones. It agrees when at least half
    of its top-m promoted results satisfy the heuristic, with m = min(top, number of satisfying results).
    """
    values = np.unique(results)
    lenses = {layer: model.number_logit_lens(layer).numpy()[:, values] for layer in matches["layer"].unique()}
    rows = []
    for row in matches.itertuples():
        predicate = result_predicate(row.heuristic)
        if predicate is None:
            continue
        satisfied = predicate(values)
        if not satisfied.any():
            continue
        line = lenses[row.layer][row.neuron] * (-1 if getattr(row, "side", "top") == "bottom" else 1)
        m = int(min(top, satisfied.sum()))
        promoted = values[np.argsort(-line, kind="stable")[:m]]
        share = float(predicate(promoted).mean())
        rows.append({"layer": row.layer, "neuron": row.neuron, "heuristic": row.heuristic,
                     "promoted": promoted.tolist(), "share": share, "chance": float(satisfied.mean()),
                     "agrees": share >= 0.5})
    return pd.DataFrame(rows, columns=["layer", "neuron", "heuristic", "promoted", "share", "chance", "agrees"])
