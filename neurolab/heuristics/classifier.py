"""Heuristic families and the neuron classifier of ``../shared/science.md`` (part A, "Classifying a neuron").

A neuron implements a heuristic when, among its top-k prompts (k set per family), the fraction that satisfy the
heuristic reaches the threshold (0.6). :func:`classify` scores every neuron against every heuristic at once: one
sort per neuron; then, per distinct k, a histogram of the value the heuristics read (op1, op2, result, or the
prompt itself: the top-k membership matrix) over each neuron's top-k prompts, times the heuristics' masks over that
value; and per-neuron histograms of digit codes for the data-dependent patterns. :func:`classify_reference` is the
same definition as plain loops; it exists so that the tests and the benchmark can check the fast path against it.
"""

from __future__ import annotations

import itertools
import json
import math
from collections import Counter
from dataclasses import dataclass, replace
from functools import lru_cache

import numpy as np
import pandas as pd

from ..tasks.arithmetic import OPERATORS

FAMILIES: tuple[str, ...] = ("operand_mod", "both_mod", "result_mod", "operand_range", "both_range", "result_range",
                             "operand_pattern", "result_pattern", "same_operand", "multi_value")
#: science.md's display groups (a full-value pattern such as ``result_value_123`` is a pattern)
GROUPS = {"operand_mod": "modulo", "both_mod": "modulo", "result_mod": "modulo", "operand_range": "range",
          "both_range": "range", "result_range": "range", "operand_pattern": "pattern", "result_pattern": "pattern",
          "same_operand": "other", "multi_value": "other"}
#: result heuristics: the neuron's value vector can write the answer itself; the others act through later layers
DIRECT_FAMILIES = frozenset({"result_mod", "result_range", "result_pattern", "multi_value"})
MODES = ("K", "KV", "hybrid")

MODULI = range(2, 11)
OPERAND_RANGE_SIZES = {"+": (10, 30, 50, 100), "-": (10, 30, 50, 100), "*": (3, 5, 10), "/": (10, 30, 50, 100)}
RESULT_RANGE_SIZES = {"+": (10, 30, 50), "-": (10, 30, 50), "*": (10, 30, 50, 100), "/": (2, 10, 100)}
TOP_PATTERNS = 5
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
    params: dict
    mask: np.ndarray  # bool [P]
    k: int


def _heuristic(name: str, family: str, params: dict, mask: np.ndarray, k: int) -> Heuristic:
    return Heuristic(name, family, GROUPS[family], family in DIRECT_FAMILIES, params, mask, k)


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

    def scaled(count: int) -> int:
        return count * n_prompts // max_op ** 2

    operands = ((1, op1), (2, op2))
    found = []
    for n in MODULI:
        for m in range(n):
            for i, values in operands:
                found.append(_heuristic(f"op{i}_{m}mod{n}", "operand_mod", {"operand": i, "m": m, "n": n},
                                        values % n == m, scaled(max_op // n * max_op)))
            found.append(_heuristic(f"both_operands_{m}mod{n}", "both_mod", {"m": m, "n": n},
                                    (op1 % n == m) & (op2 % n == m), scaled((max_op // n) ** 2)))
            if op != "/":
                found.append(_heuristic(f"result_{m}mod{n}", "result_mod", {"m": m, "n": n}, result % n == m,
                                        min(scaled((max_op // n) ** 2), result_cap)))
    for size in OPERAND_RANGE_SIZES[op]:
        for lo in range(0, max_op, size):
            hi = lo + size
            for i, values in operands:
                mask = (lo <= values) & (values < hi)  # k = |S| of this operand: the intended op2 k, not op1's
                found.append(_heuristic(f"op{i}_range_{lo}_{hi}", "operand_range", {"operand": i, "lo": lo, "hi": hi},
                                        mask, int(mask.sum())))
            mask = (lo <= op1) & (op1 < hi) & (lo <= op2) & (op2 < hi)
            found.append(_heuristic(f"both_operands_range_{lo}_{hi}", "both_range", {"lo": lo, "hi": hi}, mask,
                                    int(mask.sum())))
    for size in RESULT_RANGE_SIZES[op]:
        for lo in range(0, int(result.max()) + 1, max(size // 3, 10)):
            mask = (lo <= result) & (result < lo + size)
            found.append(_heuristic(f"result_range_{lo}_{lo + size}", "result_range", {"lo": lo, "hi": lo + size},
                                    mask, min(int(mask.sum()), result_cap)))
    found.append(_heuristic("same_operand", "same_operand", {}, op1 == op2,
                            math.isqrt(max_single_token) if op == "*" else max_op))
    return [replace(h, k=min(h.k, n_prompts)) for h in found if 0 < h.mask.sum() < n_prompts and h.k >= 1]


def _division_zero(op: str, family: str, params: dict) -> bool:
    """science.md's `/` post-processing: heuristics about result 0 (ranges from 0, multi-values with 0) are dropped."""
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


# --- digit patterns -------------------------------------------------------------------------------------------------

def _prefix(pattern: str) -> bool:
    """``1..`` / ``12.``: a range of values, left to the range families."""
    return pattern[0] != "." and pattern[-1] == "."


def _pattern_values(op: str, directs: tuple[bool, ...]) -> list[str]:
    """The values whose digit patterns are looked for: operands (indirect), the result (direct; never for `/`)."""
    return (["op1", "op2"] if False in directs else []) + (["result"] if True in directs and op != "/" else [])


def _pattern_name(of: str, pattern: str) -> str:
    return f"{of}_value_{pattern}" if "." not in pattern else f"{of}_pattern_{pattern}"


@lru_cache(maxsize=1)
def _pattern_table() -> tuple[tuple[tuple[bool, ...], ...], tuple[int, ...], tuple[str, ...], np.ndarray]:
    """Every 3-digit wildcard pattern but ``...``, numbered: per keep-mask an offset plus the kept digits read as a
    number. Also each pattern's tie rank: more kept digits first, then the pattern text."""
    keeps = tuple(keep for keep in itertools.product((True, False), repeat=3) if any(keep))
    offsets, strings = [], []
    for keep in keeps:
        offsets.append(len(strings))
        for code in range(10 ** sum(keep)):
            digits = iter(f"{code:0{sum(keep)}d}")
            strings.append("".join(next(digits) if kept else "." for kept in keep))
    ranked = sorted(range(len(strings)), key=lambda i: (strings[i].count("."), strings[i]))
    tie_rank = np.empty(len(strings), dtype=np.int64)
    tie_rank[ranked] = np.arange(len(strings))
    return keeps, tuple(offsets), tuple(strings), tie_rank


class _Patterns:
    """Wildcard-pattern counts of one value (op1, op2 or result) over each neuron's top-k prompts."""

    def __init__(self, of: str, values: np.ndarray, k: int):
        keeps, offsets, strings, tie_rank = _pattern_table()
        digits = np.stack([values // 100 % 10, values // 10 % 10, values % 10], axis=1)
        self.codes = np.stack([offset + digits[:, list(keep)] @ 10 ** np.arange(sum(keep) - 1, -1, -1)
                               for keep, offset in zip(keeps, offsets)], axis=1)  # [P, 7]
        self.size = len(strings)
        self.k = k
        self.tie_key = self.size - 1 - tie_rank
        self.prefix = np.array([_prefix(s) for s in strings])
        grid_counts = np.bincount(self.codes.ravel(), minlength=self.size)
        family = "result_pattern" if of == "result" else "operand_pattern"
        self.catalog = pd.DataFrame({
            "heuristic": [_pattern_name(of, s) for s in strings], "family": family, "group": GROUPS[family],
            "direct": family in DIRECT_FAMILIES, "params": [json.dumps({"pattern": s, "of": of}) for s in strings],
            "k": k, "base_rate": grid_counts / len(values), "note": ""})

    def counts(self, order: np.ndarray) -> np.ndarray:
        """[neurons, patterns]: how many of each neuron's top-k values fit each pattern."""
        flat = (self.codes[order[:, :self.k]] + (np.arange(len(order)) * self.size)[:, None, None]).ravel()
        return np.bincount(flat, minlength=len(order) * self.size).reshape(len(order), self.size)

    def found(self, counts: np.ndarray) -> np.ndarray:
        """Flat (neuron * patterns + pattern) ids of the 5 most frequent patterns with count >= k/10, prefixes
        dropped after choosing (ties: more kept digits first, then the pattern text)."""
        key = counts * self.size + self.tie_key
        best = np.argpartition(-key, TOP_PATTERNS - 1, axis=1)[:, :TOP_PATTERNS]
        kept = (np.take_along_axis(counts, best, axis=1) * 10 >= self.k) & ~self.prefix[best]
        rows = np.broadcast_to(np.arange(len(counts))[:, None], best.shape)
        return rows[kept] * self.size + best[kept]

    def rows(self, neurons: np.ndarray, orders: dict[str, np.ndarray]) -> pd.DataFrame:
        """Patterns found on any side, each scored on every side."""
        tallies = {side: self.counts(order) for side, order in orders.items()}
        ids = np.unique(np.concatenate([self.found(t) for t in tallies.values()]))
        rows, codes = ids // self.size, ids % self.size
        return _rows(self.catalog, neurons[rows], codes, {side: t[rows, codes] for side, t in tallies.items()}, self.k)


# --- the vectorised classifier ----------------------------------------------------------------------------------------

def _reads(h: Heuristic) -> str:
    """The one value a heuristic depends on: its top-k count can then come from a histogram of that value."""
    if h.family in ("operand_mod", "operand_range"):
        return f"op{h.params['operand']}"
    return "result" if h.family in ("result_mod", "result_range") else "prompt"


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
    frame = frame.astype({c: "str" for c in ("heuristic", "family", "group", "params", "side", "note")}).assign(
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
        patterns = [_Patterns(of, grid[of], k_pattern) for of in _pattern_values(op, directs)] if k_pattern else []
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
    cancelled = [f"result_0mod{n}" for n in MODULI] + [f"result_pattern_{p}" for p in ZERO_DIGIT_PATTERNS]
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
    catalog = pd.DataFrame({
        "heuristic": [f"result_multi_value_{len(v)}={list(v)}" for v in values], "family": "multi_value",
        "group": GROUPS["multi_value"], "direct": True, "params": [json.dumps(p) for p in params], "k": k,
        "base_rate": member[:, result].mean(axis=1),
        "note": [DIVISION_ZERO if _division_zero(op, "multi_value", p) else "" for p in params]})
    by_side = {side: (t[rows] * member).sum(axis=1) for side, t in tallies.items()}
    return _rows(catalog, neurons[rows], np.arange(len(found)), by_side, k)


def matches(frame: pd.DataFrame) -> pd.DataFrame:
    """The matched rows of a :func:`classify` frame, by neuron, best score first."""
    matched = frame[frame["matched"]]
    return matched.sort_values(["neuron", "score"], ascending=[True, False], kind="stable", ignore_index=True)


# --- the loop reference -----------------------------------------------------------------------------------------------

def classify_reference(maps: np.ndarray, op: str, op1: np.ndarray, op2: np.ndarray, result: np.ndarray, max_op: int,
                       max_single_token: int, *, kv_maps: np.ndarray | None = None, mode: str = "K",
                       threshold: float = 0.6, bottom: bool = False, seed: int = 0) -> pd.DataFrame:
    """:func:`classify` written as plain loops over neurons and heuristics, strings for patterns: slow, kept only
    to check the vectorised path (tests, ``benchmarks/bench_classify.py``)."""
    op1, op2, result = _grid(op, op1, op2, result)
    n_prompts = len(op1)
    static = static_heuristics(op, op1, op2, result, max_op, max_single_token)
    perm = _tie_break(n_prompts, seed)
    k_pattern, k_multi = n_prompts // max_op, min(MULTI_VALUE_TOP, n_prompts)
    texts = {of: [f"{v:03d}" for v in values] for of, values in (("op1", op1), ("op2", op2), ("result", result))}
    pattern_masks: dict[tuple[str, str], np.ndarray] = {}
    rows = []

    def emit(neuron, name, family, params, mask, k, scores, note=""):
        side = max(scores, key=scores.get)  # "top" on a tie
        rows.append({"neuron": neuron, "heuristic": name, "family": family, "group": GROUPS[family],
                     "direct": family in DIRECT_FAMILIES, "params": json.dumps(params), "score": scores[side],
                     "k": k, "base_rate": mask.mean(), "side": side, "note": note})

    for source, directs in _jobs(maps, kv_maps, mode, n_prompts):
        for neuron, activations in enumerate(np.asarray(source, dtype=np.float64)):
            if _constant(activations):
                continue
            top = perm[np.argsort(-activations[perm], kind="stable")]
            orders = {"top": top, "bottom": top[::-1]} if bottom else {"top": top}
            first = len(rows)
            for h in static:
                if h.direct in directs:
                    scores = {side: h.mask[order[:h.k]].sum() / h.k for side, order in orders.items()}
                    note = DIVISION_ZERO if _division_zero(op, h.family, h.params) else ""
                    emit(neuron, h.name, h.family, h.params, h.mask, h.k, scores, note)
            for of in _pattern_values(op, directs) if k_pattern else []:
                found = set()
                for order in orders.values():
                    counted = Counter(p for i in order[:k_pattern] for p in _wildcards(texts[of][i]))
                    best = sorted(counted.items(), key=lambda item: (-item[1], item[0].count("."), item[0]))
                    found |= {p for p, count in best[:TOP_PATTERNS] if count * 10 >= k_pattern and not _prefix(p)}
                for p in sorted(found):
                    if (of, p) not in pattern_masks:
                        pattern_masks[of, p] = np.array([_fits(p, text) for text in texts[of]])
                    mask = pattern_masks[of, p]
                    scores = {side: mask[order[:k_pattern]].sum() / k_pattern for side, order in orders.items()}
                    family = "result_pattern" if of == "result" else "operand_pattern"
                    emit(neuron, _pattern_name(of, p), family, {"pattern": p, "of": of}, mask, k_pattern, scores)
            if True in directs and op == "/":
                found = set()
                for order in orders.values():
                    counted = Counter(result[order[:k_multi]].tolist())
                    ranked = sorted(counted, key=lambda v: (-counted[v], v))
                    for n in MULTI_VALUE_SIZES:
                        held = [sum(counted[v] for v in ranked[:size]) * 100 for size in (n - 1, n)]
                        if n <= len(ranked) and held[0] < MULTI_VALUE_PERCENT * k_multi <= held[1]:
                            found.add(tuple(sorted(ranked[:n])))
                for values in sorted(found):
                    mask = np.isin(result, values)
                    scores = {side: mask[order[:k_multi]].sum() / k_multi for side, order in orders.items()}
                    params = {"values": list(values)}
                    note = DIVISION_ZERO if _division_zero(op, "multi_value", params) else ""
                    emit(neuron, f"result_multi_value_{len(values)}={list(values)}", "multi_value", params, mask,
                         k_multi, scores, note)
            if True in directs and op == "*" and k_pattern:
                if any((result[order[:k_pattern]] == 0).all() for order in orders.values()):
                    for row in rows[first:]:
                        name = row["heuristic"]
                        if name.startswith("result_0mod") or name in [f"result_pattern_{p}"
                                                                      for p in ZERO_DIGIT_PATTERNS]:
                            row["note"] = MULTIPLICATION_ZERO
    return _finish(pd.DataFrame(rows), threshold) if rows else _empty()


def _wildcards(text: str) -> list[str]:
    """Every pattern of a 3-digit text with each digit kept or replaced by '.', except '...'."""
    return ["".join(d if kept else "." for d, kept in zip(text, keep))
            for keep in itertools.product((True, False), repeat=3) if any(keep)]


def _fits(pattern: str, text: str) -> bool:
    return all(p in (".", d) for p, d in zip(pattern, text))
