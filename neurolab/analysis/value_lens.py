"""What a neuron writes: its value vector's logit lens on the number tokens, and whether it fits its heuristic.

A *direct* heuristic neuron (e.g. ``result_range_40_50``) should promote the results its heuristic is about; the
agreement check reads the numbers its value vector promotes most and asks how many satisfy the heuristic.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable

import numpy as np
import pandas as pd

from ..models.loading import LoadedModel

Predicate = Callable[[np.ndarray], np.ndarray]


def number_line(model: LoadedModel, layer: int, neuron: int) -> np.ndarray:
    """``[max_single_token + 1]``: the neuron's direct logit on each number token per unit of activation."""
    return model.number_logit_lens(layer)[neuron].numpy()


def _pattern(pattern: str) -> Predicate:
    digits = [(i, int(c)) for i, c in enumerate(pattern) if c != "."]
    return lambda v: np.all([(v // 10 ** (2 - i)) % 10 == d for i, d in digits], axis=0)


def _value_predicate(rule: str) -> Predicate | None:
    """The value rule at the end of a heuristic name: ``3mod7``, ``range_40_50``, ``value_123``, ``pattern_.2.``,
    ``multi_value_2=[3, 4]``."""
    if m := re.fullmatch(r"range_(\d+)_(\d+)", rule):
        lo, hi = int(m.group(1)), int(m.group(2))
        return lambda v: (v >= lo) & (v < hi)
    if m := re.fullmatch(r"(\d+)mod(\d+)", rule):
        r, n = int(m.group(1)), int(m.group(2))
        return lambda v: v % n == r
    if m := re.fullmatch(r"value_(\d+)", rule):
        value = int(m.group(1))
        return lambda v: v == value
    if m := re.fullmatch(r"pattern_([\d.]{3})", rule):
        return _pattern(m.group(1))
    if m := re.fullmatch(r"multi_value_\d+=(\[.*\])", rule):
        values = json.loads(m.group(1))
        return lambda v: np.isin(v, values)
    return None


def matching_set(heuristic: str, op1: np.ndarray, op2: np.ndarray, result: np.ndarray) -> np.ndarray | None:
    """Which prompts satisfy a heuristic, parsed from its name (None for a name neurolab does not know)."""
    if heuristic == "same_operand":
        return op1 == op2
    for prefix, operands in (("both_operands_", (op1, op2)), ("op1_", (op1,)), ("op2_", (op2,)),
                             ("result_", (result,))):
        if heuristic.startswith(prefix):
            predicate = _value_predicate(heuristic[len(prefix):])
            if predicate is None:
                return None
            return np.logical_and.reduce([predicate(np.asarray(v)) for v in operands])
    return None


def result_predicate(heuristic: str) -> Predicate | None:
    """Which result values a result heuristic is about (None for operand heuristics)."""
    return _value_predicate(heuristic[len("result_"):]) if heuristic.startswith("result_") else None


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
        rows.append({"layer": row.layer, "neuron": row.neuron, "heuristic": row.heuristic, "promoted": promoted.tolist(),
                     "share": share, "chance": float(satisfied.mean()), "agrees": share >= 0.5})
    return pd.DataFrame(rows, columns=["layer", "neuron", "heuristic", "promoted", "share", "chance", "agrees"])
