"""Digit patterns (science.md part A): which wildcard patterns a neuron's top-k values share, counted for many
neurons at once.

Values are written with 3 digits; a pattern keeps each digit or replaces it by ``.`` (``...`` excepted). Per neuron,
the 5 highest-ranked patterns with count >= k/10 are chosen. Ranking, as in the published code: higher count first,
then fewer wildcards, then first occurrence among the top-k values. First occurrence means: walk the top-k values
in activation order (rank 0 first) and, within one value, its patterns in :data:`KEEPS` order,
``itertools.product((True, False), repeat=3)`` over "keep digit" (``123``, ``12.``, ``1.3``, ``1..``, ``.23``,
``.2.``, ``..3``); a pattern's occurrence index is ``rank * 7 + slot``. The published code enumerates a value's
patterns by bit mask instead (``1..``, ``.2.``, ``12.``, ``..3``, ``1.3``, ``.23``, ``123``), but only patterns
with the same number of wildcards can tie, and within each such class both orders agree, so the ranking is the same.
Prefix patterns (``1..``, ``12.``: ranges) are dropped after choosing, so they still take a slot, as published.
"""

from __future__ import annotations

import itertools
from functools import lru_cache

import numpy as np

#: a value's patterns in enumeration order: which of its 3 digits each keeps (``...`` left out)
KEEPS: tuple[tuple[bool, ...], ...] = tuple(keep for keep in itertools.product((True, False), repeat=3) if any(keep))
TOP_PATTERNS = 5


def is_prefix(pattern: str) -> bool:
    """``1..`` / ``12.``: a range of values, left to the range families."""
    return pattern[0] != "." and pattern[-1] == "."


@lru_cache(maxsize=1)
def pattern_table() -> tuple[tuple[int, ...], tuple[str, ...]]:
    """Every pattern, numbered: per keep-mask of :data:`KEEPS` an offset, plus the kept digits read as a number.
    Returns the offsets and the pattern strings (999 of them)."""
    offsets, strings = [], []
    for keep in KEEPS:
        offsets.append(len(strings))
        for code in range(10 ** sum(keep)):
            digits = iter(f"{code:0{sum(keep)}d}")
            strings.append("".join(next(digits) if kept else "." for kept in keep))
    return tuple(offsets), tuple(strings)


class DigitPatterns:
    """Pattern counts of one value (op1, op2 or result, [P]) over each neuron's top-k prompts, and the choice.

    ``full_values_only`` drops, after choosing, every pattern with a wildcard too (science.md: for `/`, result digit
    patterns are dropped but full-value ones kept).
    """

    def __init__(self, values: np.ndarray, k: int, full_values_only: bool = False):
        offsets, self.strings = pattern_table()
        digits = np.stack([values // 100 % 10, values // 10 % 10, values % 10], axis=1)
        self.codes = np.stack([offset + digits[:, list(keep)] @ 10 ** np.arange(sum(keep) - 1, -1, -1)
                               for keep, offset in zip(KEEPS, offsets)], axis=1)  # [P, 7]: slot order
        self.size = len(self.strings)
        self.k = k
        self.kept_digits = np.array([3 - s.count(".") for s in self.strings])
        self.dropped = np.array([is_prefix(s) or (full_values_only and "." in s) for s in self.strings])
        #: [patterns]: the share of valid prompts whose value fits each pattern (its chance level)
        self.base_rate = np.bincount(self.codes.ravel(), minlength=self.size) / len(values)

    def counts(self, order: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """[neurons, patterns] twice: how many of each neuron's top-k values (``order``: [neurons, >= k] prompt
        indices, best first) fit each pattern, and each pattern's first occurrence index (``k * 7`` if none)."""
        n_neurons, n_slots = len(order), len(KEEPS)
        flat = (self.codes[order[:, :self.k]] + (np.arange(n_neurons) * self.size)[:, None, None]).ravel()
        counts = np.bincount(flat, minlength=n_neurons * self.size).reshape(n_neurons, self.size)
        first = np.full(n_neurons * self.size, self.k * n_slots)
        occurrence = np.broadcast_to(np.arange(self.k * n_slots), (n_neurons, self.k * n_slots)).ravel()
        np.minimum.at(first, flat, occurrence)  # C order of [neurons, k, 7] is rank * 7 + slot within a neuron
        return counts, first.reshape(n_neurons, self.size)

    def chosen(self, counts: np.ndarray, first: np.ndarray) -> np.ndarray:
        """Flat (neuron * patterns + pattern) ids of each neuron's 5 highest-ranked patterns with count >= k/10,
        less the dropped ones. Ranked by one key (count, kept digits, earlier first occurrence), unique per neuron
        among the patterns that occur, so the choice never depends on how a sort breaks ties."""
        span = self.k * len(KEEPS) + 1
        key = (counts * 4 + self.kept_digits) * span + (span - 1 - first)
        best = np.argpartition(-key, TOP_PATTERNS - 1, axis=1)[:, :TOP_PATTERNS]
        kept = (np.take_along_axis(counts, best, axis=1) * 10 >= self.k) & ~self.dropped[best]
        rows = np.broadcast_to(np.arange(len(counts))[:, None], best.shape)
        return rows[kept] * self.size + best[kept]
