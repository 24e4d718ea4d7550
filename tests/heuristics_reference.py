"""science.md's neuron classifier (part A, "Classifying a neuron") as plain loops over neurons and heuristics.

The slow, obvious reading of the rules, kept to check the vectorised :func:`neurolab.heuristics.classifier.classify`
against (``tests/test_heuristics.py``, ``benchmarks/bench_classify.py``). It shares only plumbing with the package:
input checks, the tie-break permutation, the constants of science.md and the output frame. Heuristic names,
matching sets, k rules, digit-pattern mining and the post-processing are written out again here, so a slip in the
family registry or the vectorised path shows up as a difference.
"""

from __future__ import annotations

import itertools
import json
import math

import numpy as np
import pandas as pd

from neurolab.heuristics.classifier import (
    CONSTANT_RTOL,
    DIVISION_ZERO,
    MODULI,
    MULTI_VALUE_PERCENT,
    MULTI_VALUE_SIZES,
    MULTI_VALUE_TOP,
    MULTIPLICATION_ZERO,
    OPERAND_RANGE_SIZES,
    RESULT_RANGE_SIZES,
    ZERO_DIGIT_PATTERNS,
    _empty,
    _finish,
    _grid,
    _jobs,
    _tie_break,
)
from neurolab.heuristics.families import DIRECT_FAMILIES, GROUPS
from neurolab.heuristics.patterns import TOP_PATTERNS

#: (name, family, params, mask [P], k) of one data-independent heuristic
Static = tuple[str, str, dict, np.ndarray, int]


def classify_reference(maps: np.ndarray, op: str, op1: np.ndarray, op2: np.ndarray, result: np.ndarray, max_op: int,
                       max_single_token: int, *, kv_maps: np.ndarray | None = None, mode: str = "K",
                       threshold: float = 0.6, bottom: bool = False, seed: int = 0) -> pd.DataFrame:
    """:func:`~neurolab.heuristics.classifier.classify`, same arguments and rows, one neuron and heuristic at a
    time, strings for digit patterns."""
    op1, op2, result = _grid(op, op1, op2, result)
    n_prompts = len(op1)
    static = _static(op, op1, op2, result, max_op, max_single_token)
    perm = _tie_break(n_prompts, seed)
    k_pattern, k_multi = n_prompts // max_op, min(MULTI_VALUE_TOP, n_prompts)
    texts = {of: [f"{v:03d}" for v in values] for of, values in (("op1", op1), ("op2", op2), ("result", result))}
    pattern_masks: dict[tuple[str, str], np.ndarray] = {}  # the grid's prompts that fit a pattern, once per pattern
    rows = []

    def emit(neuron, name, family, params, mask, k, scores, note=""):
        side = max(scores, key=scores.get)  # "top" on a tie
        rows.append({"neuron": neuron, "heuristic": name, "family": family, "group": GROUPS[family],
                     "direct": family in DIRECT_FAMILIES, "params": json.dumps(params), "score": scores[side],
                     "k": k, "base_rate": mask.mean(), "side": side, "note": note})

    for source, directs in _jobs(maps, kv_maps, mode, n_prompts):
        for neuron, activations in enumerate(np.asarray(source, dtype=np.float64)):
            if activations.max() - activations.min() <= CONSTANT_RTOL * max(1.0, np.abs(activations).max()):
                continue  # constant: its sort order would be grid order
            top = perm[np.argsort(-activations[perm], kind="stable")]
            orders = {"top": top, "bottom": top[::-1]} if bottom else {"top": top}
            first = len(rows)
            for name, family, params, mask, k in static:
                if (family in DIRECT_FAMILIES) in directs:
                    scores = {side: mask[order[:k]].sum() / k for side, order in orders.items()}
                    emit(neuron, name, family, params, mask, k, scores, _division_zero(op, family, params))
            values = (["op1", "op2"] if False in directs else []) + (["result"] if True in directs else [])
            for of in values if k_pattern else []:
                found = set()
                for order in orders.values():
                    found |= _chosen_patterns([texts[of][i] for i in order[:k_pattern]], k_pattern,
                                              full_values_only=op == "/" and of == "result")
                for p in sorted(found):
                    if (of, p) not in pattern_masks:
                        pattern_masks[of, p] = np.array([_fits(p, text) for text in texts[of]])
                    mask = pattern_masks[of, p]
                    scores = {side: mask[order[:k_pattern]].sum() / k_pattern for side, order in orders.items()}
                    family = "result_pattern" if of == "result" else "operand_pattern"
                    name = f"{of}_value_{p}" if "." not in p else f"{of}_pattern_{p}"
                    emit(neuron, name, family, {"pattern": p, "of": of}, mask, k_pattern, scores)
            if True in directs and op == "/":
                found = set()
                for order in orders.values():
                    counted: dict[int, int] = {}
                    for value in result[order[:k_multi]].tolist():
                        counted[value] = counted.get(value, 0) + 1
                    ranked = sorted(counted, key=lambda v: (-counted[v], v))
                    for n in MULTI_VALUE_SIZES:
                        held = [sum(counted[v] for v in ranked[:size]) * 100 for size in (n - 1, n)]
                        if n <= len(ranked) and held[0] < MULTI_VALUE_PERCENT * k_multi <= held[1]:
                            found.add(tuple(sorted(ranked[:n])))
                for chosen in sorted(found):
                    mask = np.isin(result, chosen)
                    scores = {side: mask[order[:k_multi]].sum() / k_multi for side, order in orders.items()}
                    params = {"values": list(chosen)}
                    emit(neuron, f"result_multi_value_{len(chosen)}={list(chosen)}", "multi_value", params, mask,
                         k_multi, scores, _division_zero(op, "multi_value", params))
            if True in directs and op == "*" and k_pattern:
                if any((result[order[:k_pattern]] == 0).all() for order in orders.values()):
                    cancelled = [f"result_0mod{n}" for n in MODULI] + [f"result_pattern_{p}"
                                                                        for p in ZERO_DIGIT_PATTERNS]
                    for row in rows[first:]:
                        if row["heuristic"] in cancelled:
                            row["note"] = MULTIPLICATION_ZERO
    return _finish(pd.DataFrame(rows), threshold) if rows else _empty()


def _static(op: str, op1: np.ndarray, op2: np.ndarray, result: np.ndarray, max_op: int,
            max_single_token: int) -> list[Static]:
    """The data-independent heuristics with science.md's k rules, degenerate ones left out."""
    n_prompts = len(op1)
    result_cap = max_op if op in ("*", "/") else n_prompts
    found: list[Static] = []
    for n in MODULI:
        for m in range(n):
            for i, operand in ((1, op1), (2, op2)):
                found.append((f"op{i}_{m}mod{n}", "operand_mod", {"operand": i, "m": m, "n": n}, operand % n == m,
                              (max_op // n) * max_op * n_prompts // max_op ** 2))
            found.append((f"both_operands_{m}mod{n}", "both_mod", {"m": m, "n": n},
                          (op1 % n == m) & (op2 % n == m), (max_op // n) ** 2 * n_prompts // max_op ** 2))
            if op != "/":
                found.append((f"result_{m}mod{n}", "result_mod", {"m": m, "n": n}, result % n == m,
                              min((max_op // n) ** 2 * n_prompts // max_op ** 2, result_cap)))
    for size in OPERAND_RANGE_SIZES[op]:
        for lo in range(0, max_op, size):
            hi = lo + size
            for i, operand in ((1, op1), (2, op2)):
                mask = (lo <= operand) & (operand < hi)
                found.append((f"op{i}_range_{lo}_{hi}", "operand_range", {"operand": i, "lo": lo, "hi": hi}, mask,
                              int(mask.sum())))
            mask = (lo <= op1) & (op1 < hi) & (lo <= op2) & (op2 < hi)
            found.append((f"both_operands_range_{lo}_{hi}", "both_range", {"lo": lo, "hi": hi}, mask, int(mask.sum())))
    for size in RESULT_RANGE_SIZES[op]:
        for lo in range(0, int(result.max()) + 1, max(size // 3, 10)):
            mask = (lo <= result) & (result < lo + size)
            found.append((f"result_range_{lo}_{lo + size}", "result_range", {"lo": lo, "hi": lo + size}, mask,
                          min(int(mask.sum()), result_cap)))
    found.append(("same_operand", "same_operand", {}, op1 == op2,
                  math.isqrt(max_single_token) if op == "*" else max_op))
    return [(name, family, params, mask, min(k, n_prompts)) for name, family, params, mask, k in found
            if 0 < mask.sum() < n_prompts and k >= 1]


def _division_zero(op: str, family: str, params: dict) -> str:
    """The note of science.md's `/` post-processing: ranges from result 0 and multi-values with 0 are dropped."""
    about_zero = ((family == "result_range" and params["lo"] == 0)
                  or (family == "multi_value" and 0 in params["values"]))
    return DIVISION_ZERO if op == "/" and about_zero else ""


def _chosen_patterns(texts: list[str], k: int, full_values_only: bool) -> set[str]:
    """The patterns chosen from one side's top-k values (3-digit texts, best first): the 5 highest-ranked with
    count >= k/10, then prefixes dropped (and, for `/` results, every pattern with a wildcard).

    Ranking, as published: count, then fewer wildcards, then first occurrence. The dict holds patterns in the order
    they first occur (values in order, each value's patterns in :func:`_wildcards` order) and ``sorted`` is stable.
    """
    counted: dict[str, int] = {}
    for text in texts:
        for pattern in _wildcards(text):
            counted[pattern] = counted.get(pattern, 0) + 1
    ranked = sorted(counted, key=lambda p: (-counted[p], p.count(".")))
    prefix = {p for p in ranked[:TOP_PATTERNS] if p[0] != "." and p[-1] == "."}  # 1.., 12.: ranges
    return {p for p in ranked[:TOP_PATTERNS]
            if counted[p] * 10 >= k and p not in prefix and not (full_values_only and "." in p)}


def _wildcards(text: str) -> list[str]:
    """Every pattern of a 3-digit text with each digit kept or replaced by '.', except '...', in the order of
    ``itertools.product((True, False), repeat=3)`` over "keep digit" (keep first)."""
    return ["".join(d if kept else "." for d, kept in zip(text, keep))
            for keep in itertools.product((True, False), repeat=3) if any(keep)]


def _fits(pattern: str, text: str) -> bool:
    return all(p in (".", d) for p, d in zip(pattern, text))
