"""The neuron classifier of ``../shared/science.md`` (part A, "Classifying a neuron").

A neuron implements a heuristic when, among its top-k prompts (k set per family), the fraction that satisfy the
heuristic reaches the threshold (0.6). :func:`classify` scores every neuron against every heuristic at once: one
sort per neuron; then, per distinct k, a histogram of the value the heuristics read (op1, op2, result, or the
prompt itself: the top-k membership matrix) over each neuron's top-k prompts, times the heuristics' masks over that
value; and per-neuron histograms of digit codes for the data-dependent patterns (:mod:`.patterns`). Names, matching
sets and display groups come from the family registry (:mod:`.families`). ``tests/heuristics_reference.py`` writes
the same rules as plain loops, to check this path against.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass

import numpy as np
import pandas as pd

from ..tasks.arithmetic import OPERATORS
from .families import FAMILIES, GROUPS, REGISTRY, Params
from .patterns import DigitPatterns

__all__ = ["COLUMNS", "FAMILIES", "GROUPS", "Heuristic", "classify", "matches", "static_heuristics"]

MODES = ("K", "KV", "hybrid")

MODULI = range(2, 11)
OPERAND_RANGE_SIZES = {"+": (10, 30, 50, 100), "-": (10, 30, 50, 100), "*": (3, 5, 10), "/": (10, 30, 50, 100)}
RESULT_RANGE_SIZES = {"+": (10, 30, 50), "-": (10, 30, 50), "*": (10, 30, 50, 100), "/": (2, 10, 100)}
MULTI_VALUE_TOP = 1000
MULTI_VALUE_SIZES = range(2, 6)
MULTI_VALUE_PERCENT = 95  # an integer so that "hold >= 95%" is compared exactly
CONSTANT_RTOL = 1e-6
#: result patterns that result 0 ("000") satisfies: a `*` neuron firing on result 0 does not also count as these
ZERO_DIGIT_PATTERNS = ("..0", ".0.", ".00", "0.0")
DIVISION_ZERO = "dropped: '/' heuristic about result 0"
MULTIPLICATION_ZERO = "dropped: '*' neuron whose top prompts all have result 0"
COLUMNS = ["neuron", "heuristic", "family", "group", "direct", "params", "score", "k", "base_rate", "lift", "side",
           "matched", "note"]
_CHUNK_CELLS = 1 << 23  # neurons x prompts sorted at once: ~0.3 GB of working memory


@dataclass(frozen=True, eq=False)
class Heuristic:
    """One heuristic on one operator's grid: the prompts that satisfy it and how many top prompts judge it.

    ``eq=False`` because ``mask`` is an array: compare heuristics by ``name``.
    """

    name: str
    family: str
    group: str
    direct: bool
    params: Params
    mask: np.ndarray  # bool [P]
    k: int


def _grid(op: str, op1, op2, result) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    if op not in OPERATORS:
        raise ValueError(f"unknown operator {op!r}; use one of {' '.join(OPERATORS)}")
    arrays = tuple(np.asarray(a, dtype=np.int64) for a in (op1, op2, result))
    if any(a.ndim != 1 or len(a) != len(arrays[0]) for a in arrays) or not len(arrays[0]):
        raise ValueError("op1, op2 and result must be non-empty 1-D arrays of the same length (one per prompt)")
    if min(a.min() for a in arrays) < 0 or max(a.max() for a in arrays) > 999:
        raise ValueError("operands and results must be in 0..999: digit patterns pad values to 3 digits")
    return arrays


def static_heuristics(op: str, op1: np.ndarray, op2: np.ndarray, result: np.ndarray, max_op: int,
                      max_single_token: int) -> list[Heuristic]:
    """Every data-independent heuristic of the operator's grid (mod, ranges, same operand) with its k.

    Left out as degenerate: heuristics no valid prompt satisfies, those every valid prompt satisfies (they would
    label every neuron with score 1.0), and those whose k truncates to 0 on a tiny grid. k = count * f is computed
    in integers (count * P // max_op**2), truncated like the published ``int()``; a k above P is capped at P.
    """
    op1, op2, result = _grid(op, op1, op2, result)
    n_prompts = len(op1)
    result_cap = max_op if op in ("*", "/") else n_prompts  # science.md: result k capped at max_op for * and /
    found = []

    def add(family: str, params: Params, k: int | None = None, cap: float = math.inf) -> None:
        """k None: the number of valid prompts that satisfy the heuristic (science.md's k = |S|)."""
        entry = REGISTRY[family]
        mask = entry.matching_set(params, op1, op2, result)
        k = min(int(mask.sum()) if k is None else k, cap, n_prompts)
        found.append(Heuristic(entry.format(params), family, entry.group, entry.direct, params, mask, k))

    def scaled(count: int) -> int:
        return count * n_prompts // max_op ** 2

    for n in MODULI:
        for m in range(n):
            for i in (1, 2):
                add("operand_mod", {"operand": i, "m": m, "n": n}, scaled(max_op // n * max_op))
            add("both_mod", {"m": m, "n": n}, scaled((max_op // n) ** 2))
            if op != "/":
                add("result_mod", {"m": m, "n": n}, scaled((max_op // n) ** 2), cap=result_cap)
    for size in OPERAND_RANGE_SIZES[op]:
        for lo in range(0, max_op, size):
            for i in (1, 2):  # k = |S| of this operand: the intended op2 k, not op1's
                add("operand_range", {"operand": i, "lo": lo, "hi": lo + size})
            add("both_range", {"lo": lo, "hi": lo + size})
    for size in RESULT_RANGE_SIZES[op]:
        for lo in range(0, int(result.max()) + 1, max(size // 3, 10)):
            add("result_range", {"lo": lo, "hi": lo + size}, cap=result_cap)
    add("same_operand", {}, math.isqrt(max_single_token) if op == "*" else max_op)
    return [h for h in found if 0 < h.mask.sum() < n_prompts and h.k >= 1]


def _division_zero(op: str, family: str, params: Params) -> bool:
    """science.md's `/` post-processing: heuristics about result 0 (ranges from 0, multi-values with 0) are dropped.
    ``result_value_000`` stays, as in the published code (its list of names to drop does not hold it)."""
    return op == "/" and ((family == "result_range" and params["lo"] == 0)
                          or (family == "multi_value" and 0 in params["values"]))


def _constant(activations: np.ndarray) -> np.ndarray:
    """Whether each neuron is (near) constant over the grid: its sort order would be grid order, not a heuristic."""
    top, low = activations.max(-1), activations.min(-1)
    return top - low <= CONSTANT_RTOL * np.maximum(1.0, np.maximum(np.abs(top), np.abs(low)))


def _tie_break(n_prompts: int, seed: int) -> np.ndarray:
    """The order ties are sorted in: seeded and random, so a plateau cannot rank prompts by grid order."""
    return np.random.default_rng(seed).permutation(n_prompts)


def _jobs(maps, kv_maps, mode: str, n_prompts: int) -> list[tuple[np.ndarray, tuple[bool, ...]]]:
    """Which map judges which heuristics, as (map, the ``direct`` values it judges)."""
    if mode not in MODES:
        raise ValueError(f"mode must be one of {MODES}")
    if mode != "K" and kv_maps is None:
        raise ValueError(f"mode {mode!r} judges heuristics on KV maps: pass kv_maps")
    maps = np.asarray(maps)
    kv_maps = maps if kv_maps is None else np.asarray(kv_maps)
    if maps.ndim != 2 or maps.shape[1] != n_prompts or maps.shape != kv_maps.shape:
        raise ValueError(f"maps must be [neurons, {n_prompts} prompts], kv_maps the same shape; "
                         f"got {maps.shape} and {kv_maps.shape}")
    used = {"K": [(maps, (False, True))], "KV": [(kv_maps, (False, True))],
            "hybrid": [(maps, (False,)), (kv_maps, (True,))]}[mode]
    if not all(np.isfinite(source).all() for source, _ in used):
        raise ValueError("maps contain NaN or infinite values")
    return used


# --- the vectorised classifier ----------------------------------------------------------------------------------------

def _reads(h: Heuristic) -> str:
    """The one value a heuristic depends on, or "prompt": its top-k count can then come from a histogram of it."""
    reads = REGISTRY[h.family].reads(h.params)
    return reads[0] if len(reads) == 1 else "prompt"


class _Static:
    """Top-k counts of the data-independent heuristics for a block of neurons.

    Per value read (op1, op2, result, or the whole prompt) and per distinct k (ascending), a histogram of that value
    over each neuron's top-k prompts grows by the next band of ranks and is multiplied by the heuristics' masks over
    the value; for the whole prompt the histogram is the top-k membership matrix. Float32 counts are exact below
    2**24 prompts.
    """

    def __init__(self, heuristics: list[Heuristic], op: str, grid: dict[str, np.ndarray]):
        self.ks = np.array([h.k for h in heuristics], dtype=np.int64)
        self.tables = []
        for name, values in grid.items():
            columns = [j for j, h in enumerate(heuristics) if _reads(h) == name]
            masks = np.zeros((int(values.max()) + 1, len(columns)), dtype=np.float32)
            for i, j in enumerate(columns):
                masks[values, i] = heuristics[j].mask
            groups = [(k, np.array(columns)[chosen], np.ascontiguousarray(masks[:, chosen]))
                      for k in np.unique(self.ks[columns]) for chosen in [np.flatnonzero(self.ks[columns] == k)]]
            self.tables.append((None if name == "prompt" else values, len(masks), groups))
        self.catalog = pd.DataFrame({
            "heuristic": [h.name for h in heuristics], "family": [h.family for h in heuristics],
            "group": [h.group for h in heuristics], "direct": [h.direct for h in heuristics],
            "params": [json.dumps(h.params) for h in heuristics], "k": self.ks,
            "base_rate": [h.mask.mean() for h in heuristics],
            "note": [DIVISION_ZERO if _division_zero(op, h.family, h.params) else "" for h in heuristics]})

    def counts(self, order: np.ndarray) -> np.ndarray:
        """[neurons, heuristics]: how many of each neuron's top-k prompts satisfy each heuristic."""
        counts = np.empty((len(order), len(self.ks)), dtype=np.int64)
        rows = np.arange(len(order))[:, None]
        for values, size, groups in self.tables:
            histogram, filled = np.zeros((len(order), size), dtype=np.float32), 0
            for k, cols, masks in groups:
                band, filled = order[:, filled:k], k
                if values is None:
                    histogram[rows, band] = 1.0
                else:
                    flat = (values[band] + rows * size).ravel()
                    histogram += np.bincount(flat, minlength=histogram.size).reshape(histogram.shape)
                counts[:, cols] = histogram @ masks
        return counts

    def rows(self, neurons: np.ndarray, orders: dict[str, np.ndarray]) -> pd.DataFrame:
        index = np.tile(np.arange(len(self.ks)), len(neurons))
        by_side = {side: self.counts(order).ravel() for side, order in orders.items()}
        return _rows(self.catalog, np.repeat(neurons, len(self.ks)), index, by_side, self.ks[index])


def _pattern_values(directs: tuple[bool, ...]) -> list[str]:
    """The values whose digit patterns are looked for: operands (indirect heuristics), the result (direct)."""
    return (["op1", "op2"] if False in directs else []) + (["result"] if True in directs else [])


class _Patterns:
    """Rows of the digit patterns of one value (op1, op2 or result): chosen per neuron, named by the registry.

    For `/` only full-value result patterns (``result_value_007``) are kept: the published code drops the result
    names containing ``pattern`` after the top 5 are chosen, so a wildcard pattern still takes its slot.
    """

    def __init__(self, op: str, of: str, values: np.ndarray, k: int):
        self.digits = DigitPatterns(values, k, full_values_only=op == "/" and of == "result")
        family = REGISTRY["result_pattern" if of == "result" else "operand_pattern"]
        params = [{"pattern": s, "of": of} for s in self.digits.strings]
        self.catalog = pd.DataFrame({
            "heuristic": [family.format(p) for p in params], "family": family.name, "group": family.group,
            "direct": family.direct, "params": [json.dumps(p) for p in params], "k": k,
            "base_rate": self.digits.base_rate, "note": ""})

    def rows(self, neurons: np.ndarray, orders: dict[str, np.ndarray]) -> pd.DataFrame:
        """Patterns chosen on any side, each scored on every side."""
        size, k = self.digits.size, self.digits.k
        tallies = {side: self.digits.counts(order) for side, order in orders.items()}
        ids = np.unique(np.concatenate([self.digits.chosen(*t) for t in tallies.values()]))
        rows, codes = ids // size, ids % size
        return _rows(self.catalog, neurons[rows], codes, {side: t[rows, codes] for side, (t, _) in tallies.items()}, k)


def _multi_values(k: int, counts: np.ndarray) -> set[tuple[int, tuple[int, ...]]]:
    """(row, values) where the n most common top-k results hold >= 95% while n - 1 do not (ties: smaller first)."""
    ranked = np.argsort(-counts, axis=1, kind="stable")[:, :max(MULTI_VALUE_SIZES)]
    held = np.take_along_axis(counts, ranked, axis=1).cumsum(axis=1)
    enough = held * 100 >= MULTI_VALUE_PERCENT * k
    found = set()
    for n in MULTI_VALUE_SIZES:
        if n <= ranked.shape[1]:
            for row in np.flatnonzero(enough[:, n - 1] & ~enough[:, n - 2]):
                found.add((int(row), tuple(sorted(int(v) for v in ranked[row, :n]))))
    return found


def _rows(catalog: pd.DataFrame, neurons: np.ndarray, index: np.ndarray, by_side: dict[str, np.ndarray],
          k: np.ndarray) -> pd.DataFrame:
    """Rows for (neuron, catalog row) pairs, given each side's top-k counts: the best side's score is kept."""
    score, lower = by_side["top"] / k, np.zeros(len(index), dtype=bool)
    if "bottom" in by_side:
        lower = by_side["bottom"] / k > score  # a tie stays "top"
        score = np.where(lower, by_side["bottom"] / k, score)
    frame = catalog.iloc[index].reset_index(drop=True)
    frame.insert(0, "neuron", neurons)
    frame["score"] = score
    frame["side"] = np.where(lower, "bottom", "top")
    return frame


def _finish(frame: pd.DataFrame, threshold: float) -> pd.DataFrame:
    frame = frame.astype(dict.fromkeys(("heuristic", "family", "group", "params", "side", "note"), "str")).assign(
        lift=frame["score"] / frame["base_rate"], matched=(frame["score"] >= threshold) & (frame["note"] == ""))
    return frame.sort_values(["neuron", "heuristic"], kind="stable", ignore_index=True)[COLUMNS]


def _empty() -> pd.DataFrame:
    types = {"neuron": "int64", "direct": "bool", "score": "float64", "k": "int64", "base_rate": "float64",
             "lift": "float64", "matched": "bool"}
    return pd.DataFrame({c: pd.Series(dtype=types.get(c, "str")) for c in COLUMNS})


def classify(maps: np.ndarray, op: str, op1: np.ndarray, op2: np.ndarray, result: np.ndarray, max_op: int,
             max_single_token: int, *, kv_maps: np.ndarray | None = None, mode: str = "K", threshold: float = 0.6,
             bottom: bool = False, seed: int = 0) -> pd.DataFrame:
    """Score every neuron (row of ``maps``, [neurons, P]) against every heuristic of the grid.

    Returns one row per (neuron, heuristic) scored, matched or not, with the columns of :data:`COLUMNS`:
    ``score`` (fraction of the top-k prompts that satisfy the heuristic), ``base_rate`` (its chance level: the
    share of valid prompts satisfying it), ``lift`` (score / base_rate), ``side`` ("bottom" where ``bottom`` is set
    and the ascending order scored higher), ``matched`` (score >= threshold and not dropped by science.md's
    post-processing; ``note`` says why a row was dropped). Patterns and multi-values are found per neuron (on either
    side), so they have rows only where found. ``mode`` "hybrid" judges result (direct) heuristics on ``kv_maps``
    and operand ones on ``maps``. A neuron constant on a map has no rows from that map (in hybrid mode a constant K
    map can still give KV rows). Ties are ordered by a permutation drawn from ``seed``; bottom-k is the top order
    reversed. Neurons are sorted in blocks, so memory stays near 0.3 GB whatever their number.
    """
    op1, op2, result = _grid(op, op1, op2, result)
    n_prompts = len(op1)
    static = static_heuristics(op, op1, op2, result, max_op, max_single_token)
    perm = _tie_break(n_prompts, seed)
    k_pattern, k_multi = n_prompts // max_op, min(MULTI_VALUE_TOP, n_prompts)
    grid = {"op1": op1, "op2": op2, "result": result, "prompt": np.arange(n_prompts)}
    parts, zero_neurons = [], []
    for source, directs in _jobs(maps, kv_maps, mode, n_prompts):
        scorer = _Static([h for h in static if h.direct in directs], op, grid)
        patterns = [_Patterns(op, of, grid[of], k_pattern) for of in _pattern_values(directs)] if k_pattern else []
        chunk = max(1, _CHUNK_CELLS // n_prompts)
        for start in range(0, len(source), chunk):
            block = np.asarray(source[start:start + chunk], dtype=np.float64)
            live = ~_constant(block)
            neurons = np.arange(start, start + len(block))[live]
            top = perm[np.argsort(-block[live][:, perm], axis=1, kind="stable")]
            orders = {"top": top, "bottom": top[:, ::-1]} if bottom else {"top": top}
            parts.append(scorer.rows(neurons, orders))
            parts.extend(pattern.rows(neurons, orders) for pattern in patterns)
            if True in directs and op == "/":
                parts.append(_multi_value_rows(op, result, k_multi, neurons, orders))
            if True in directs and op == "*" and k_pattern:
                all_zero = [(result[order[:, :k_pattern]] == 0).all(axis=1) for order in orders.values()]
                zero_neurons.extend(neurons[np.any(all_zero, axis=0)].tolist())
    if not parts:
        return _empty()
    frame = pd.concat(parts, ignore_index=True)
    cancelled = ([REGISTRY["result_mod"].format({"m": 0, "n": n}) for n in MODULI]
                 + [REGISTRY["result_pattern"].format({"pattern": p, "of": "result"}) for p in ZERO_DIGIT_PATTERNS])
    frame.loc[frame["neuron"].isin(zero_neurons) & frame["heuristic"].isin(cancelled), "note"] = MULTIPLICATION_ZERO
    return _finish(frame, threshold)


def _multi_value_rows(op: str, result: np.ndarray, k: int, neurons: np.ndarray,
                      orders: dict[str, np.ndarray]) -> pd.DataFrame:
    """`/` multi-value heuristics found on any side, each scored on every side."""
    size = int(result.max()) + 1
    tallies = {}
    for side, order in orders.items():
        flat = (result[order[:, :k]] + (np.arange(len(order)) * size)[:, None]).ravel()
        tallies[side] = np.bincount(flat, minlength=len(order) * size).reshape(len(order), size)
    found = sorted(set().union(*(_multi_values(k, t) for t in tallies.values())))
    values = [v for _, v in found]
    rows = np.array([row for row, _ in found], dtype=np.int64)
    member = np.zeros((len(found), size), dtype=bool)
    for i, chosen in enumerate(values):
        member[i, list(chosen)] = True
    params = [{"values": list(v)} for v in values]
    family = REGISTRY["multi_value"]
    catalog = pd.DataFrame({
        "heuristic": [family.format(p) for p in params], "family": family.name, "group": family.group,
        "direct": family.direct, "params": [json.dumps(p) for p in params], "k": k,
        "base_rate": member[:, result].mean(axis=1),
        "note": [DIVISION_ZERO if _division_zero(op, "multi_value", p) else "" for p in params]})
    by_side = {side: (t[rows] * member).sum(axis=1) for side, t in tallies.items()}
    return _rows(catalog, neurons[rows], np.arange(len(found)), by_side, k)


def matches(frame: pd.DataFrame) -> pd.DataFrame:
    """The matched rows of a :func:`classify` frame, by neuron, best score first."""
    matched = frame[frame["matched"]]
    return matched.sort_values(["neuron", "score"], ascending=[True, False], kind="stable", ignore_index=True)
